"""The Celery application: ``celery -A mediatasks worker -Q cpu,gpu,io``."""

from celery import Celery

app = Celery("mediatasks", include=["mediatasks.tasks"])
app.config_from_object("celeryconfig")

import mediatasks.history.signals  # noqa: E402  (workers write the job history)
import mediatasks.workers  # noqa: E402,F401  (gpu workers survey their hardware encoders)
