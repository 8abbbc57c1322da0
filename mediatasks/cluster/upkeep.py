"""Each worker looks, now and then, for stalled jobs, webhooks left behind and expired files (a
thread of its own: the check asks every worker, this one included, what it holds)."""

from __future__ import annotations

import logging
import random
import threading
from typing import Any

from celery import bootsteps

from mediatasks.settings import get_settings

log = logging.getLogger(__name__)


def upkeep_once(app: Any) -> None:
    from mediatasks.cluster.services import open_history, service_for, webhooks_for
    from mediatasks.history.keys import SqlKeyStore
    from mediatasks.service.keys import Keys
    from mediatasks.service.upkeep import collect_garbage, find_stalled

    settings = get_settings()
    service = service_for(app, settings.database_url)
    stalled = find_stalled(service, quiet_for=settings.stall_after, retries=settings.stall_retries)
    if stalled:
        log.warning("stalled jobs found and handled: %s", ", ".join(stalled))
    webhooks = webhooks_for(app, settings.database_url)
    try:
        resent = webhooks.catch_up()
        if resent:
            log.warning("webhooks caught up: %d delivery(ies) sent", len(resent))
    except Exception:
        log.exception("webhooks not caught up")
    keys = Keys(SqlKeyStore(open_history(settings.database_url).engine))
    swept = collect_garbage(service, work_dir=settings.work_dir,
                            older_than=settings.gc_after_days * 86400, webhooks=webhooks,
                            keys=keys, idempotency_hours=settings.api_idempotency_hours)
    if swept.work_dirs or swept.trash_dirs or swept.deliveries or swept.subscriptions:
        log.warning("expired: %d work folder(s), %d trash folder(s), %d webhook delivery(ies), "
                    "%d webhook subscription(s)", len(swept.work_dirs), len(swept.trash_dirs),
                    swept.deliveries, swept.subscriptions)


class Upkeep(bootsteps.StartStopStep):  # type: ignore[misc]
    """Runs ``upkeep_once`` every ``MEDIATASKS_UPKEEP_INTERVAL`` seconds (with some jitter, so
    that workers started together do not all look at once)."""

    requires = {"celery.worker.components:Pool"}

    def __init__(self, worker: Any, **kwargs: Any):
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self, worker: Any) -> None:
        interval = get_settings().upkeep_interval
        if interval <= 0:
            return

        def loop() -> None:
            while not self.stopping.wait(interval * random.uniform(0.8, 1.2)):
                try:
                    upkeep_once(worker.app)
                except Exception:
                    log.exception("upkeep failed")

        self.thread = threading.Thread(target=loop, name="mediatasks-upkeep", daemon=True)
        self.thread.start()

    def stop(self, worker: Any) -> None:
        self.stopping.set()
