"""The job service as the workers (and the CLI) build it: the SQL history for storage, the
result backend for live state, Celery for dispatch, Redis pub/sub for the bus."""

from __future__ import annotations

import os
from typing import Any

from mediatasks.cluster.bus import bus_for
from mediatasks.cluster.dispatch import CeleryDispatcher
from mediatasks.errors import MediatasksError
from mediatasks.history import History
from mediatasks.service import JobService

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
    from mediatasks.cluster.webhooks import webhooks_for
    from mediatasks.settings import get_settings

    history = open_history(database_url)
    return JobService(history, kv=app.backend, dispatcher=CeleryDispatcher(app), bus=bus_for(app),
                      where=f"the history at {history.url}", roots=get_settings().root_paths,
                      library_log=history, notifier=webhooks_for(app, database_url))
