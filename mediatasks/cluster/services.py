"""The job service as the workers (and the CLI) build it: the SQL history for storage, the
result backend for live state, Celery for dispatch, Redis pub/sub for the bus, webhooks told of
every event."""

from __future__ import annotations

import os
from typing import Any

from mediatasks.cluster.bus import bus_for
from mediatasks.cluster.dispatch import CeleryDispatcher
from mediatasks.cluster.webhooks import CelerySender
from mediatasks.errors import MediatasksError
from mediatasks.history import History
from mediatasks.history.webhooks import SqlWebhookStore
from mediatasks.service import JobService
from mediatasks.service.webhooks import Webhooks

_histories: dict[tuple[int, str | None], History] = {}


def open_history(url: str | None) -> History:
    """The history at ``url``, once per process (prefork children must not share the parent's
    connections).

    Raises:
        MediatasksError: it cannot be opened (the message names the setting).
    """
    from sqlalchemy.exc import SQLAlchemyError

    key = (os.getpid(), url)
    if key not in _histories:
        try:
            _histories[key] = History(url)
        except SQLAlchemyError as exc:
            first = " ".join(str(exc).split("\n")[0].split())
            raise MediatasksError(f"cannot open the job history at {url or 'the default SQLite'}: "
                                  f"{first}", hint="check MEDIATASKS_DATABASE_URL") from exc
    return _histories[key]


def service_for(app: Any, database_url: str | None) -> JobService:
    from mediatasks.settings import get_settings

    history = open_history(database_url)
    return JobService(history, kv=app.backend, dispatcher=CeleryDispatcher(app), bus=bus_for(app),
                      where=f"the history at {history.url}", roots=get_settings().root_paths,
                      library_log=history, notifier=webhooks_for(app, database_url))


def webhooks_for(app: Any, database_url: str | None) -> Webhooks:
    """The webhooks over the job history, sending through ``app``."""
    from mediatasks.settings import get_settings

    settings = get_settings()
    history = open_history(database_url)
    return Webhooks(SqlWebhookStore(history.engine), history, sender=CelerySender(app),
                    progress_step=settings.webhook_progress_step,
                    progress_every=settings.webhook_progress_every,
                    retry_for=settings.webhook_retry_for, backoff=settings.webhook_backoff,
                    # A retry waits in a worker, unacknowledged: well within the visibility
                    # timeout, or the broker hands it to a second worker.
                    backoff_max=min(3600.0, settings.visibility_timeout / 2))
