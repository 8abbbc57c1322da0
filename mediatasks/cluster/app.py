"""The Celery application: ``celery -A mediatasks worker -Q cpu,gpu,io``."""

from celery import Celery

app = Celery("mediatasks", include=["mediatasks.cluster.tasks"])
app.config_from_object("celeryconfig")

import mediatasks.cluster.signals  # noqa: E402  (workers write each task's row)
import mediatasks.cluster.workers  # noqa: E402,F401  (gpu workers survey their hardware encoders)
from mediatasks.cluster.upkeep import Upkeep  # noqa: E402

app.steps["worker"].add(Upkeep)
