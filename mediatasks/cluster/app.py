"""The Celery application: ``celery -A mediatasks worker -Q cpu,gpu,io``."""

from celery import Celery

app = Celery("mediatasks", include=["mediatasks.cluster.tasks"])
app.config_from_object("celeryconfig")
if app.conf.task_serializer == "auth":
    # Registers the signing serializer; JSON stays decodable for results and events, while task
    # and control consumers accept only "auth" (accept_content).
    app.setup_security(allowed_serializers=["json"])

import mediatasks.cluster.signals  # noqa: E402  (workers write each task's row)
import mediatasks.cluster.workers  # noqa: E402,F401  (gpu workers survey their hardware encoders)
from mediatasks.cluster.upkeep import Upkeep  # noqa: E402

app.steps["worker"].add(Upkeep)
