"""Webhooks on the cluster: the delivery task (io queue) that POSTs one signed message, and the
sender that hands deliveries to it. The bookkeeping is ``mediatasks.service.webhooks``'."""

from __future__ import annotations

import logging
import re
import time
from datetime import datetime
from typing import Any

import httpx
from celery import Task
from celery.exceptions import Reject

from mediatasks.cluster.app import app
from mediatasks.service.webhooks import Outcome, Webhooks

log = logging.getLogger(__name__)

_DELIVERY_ID = re.compile(r"msg_[0-9a-f]{32}")


class CelerySender:
    """Sends ``mediatasks.deliver_webhook`` through ``app``'s broker."""

    def __init__(self, app: Any):
        self.app = app

    def send(self, delivery_id: str, *, attempt: int, delay: float = 0.0,
             until: datetime | None = None) -> None:
        from mediatasks.cluster.dispatch import CeleryDispatcher

        signature = self.app.signature("mediatasks.deliver_webhook", kwargs={
            "delivery_id": delivery_id, "attempt": attempt,
            "until": until.isoformat() if until else None})
        # Through the dispatcher's door: a broker that is down is said within a second, and
        # nobody subscribes to the task's result.
        CeleryDispatcher(self.app)._send(signature.set(countdown=delay) if delay else signature)


def webhooks_for(app: Any, database_url: str | None) -> Webhooks:
    """The webhooks over the job history, sending through ``app``."""
    from mediatasks.cluster.services import open_history
    from mediatasks.history.webhooks import SqlWebhookStore
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


def post(url: str, body: str, headers: dict[str, str], *, timeout: float
         ) -> tuple[Outcome, int | None, float, str | None]:
    """POST the message: (outcome, status code, latency in ms, error)."""
    started = time.monotonic()
    try:
        with httpx.Client(timeout=timeout, follow_redirects=False) as client:
            response = client.post(url, content=body.encode(), headers=headers)
    except httpx.TimeoutException as exc:
        return "timeout", None, _ms(started), f"no answer within {timeout:g}s ({type(exc).__name__})"
    except httpx.HTTPError as exc:
        return "connection_error", None, _ms(started), " ".join(f"{exc or type(exc).__name__}"
                                                                .split())[:500]
    latency = _ms(started)
    if 200 <= response.status_code < 300:
        return "delivered", response.status_code, latency, None
    said = " ".join(response.text.split())[:200]
    return ("http_error", response.status_code, latency,
            f"HTTP {response.status_code}" + (f": {said}" if said else ""))


def _ms(started: float) -> float:
    return (time.monotonic() - started) * 1000


@app.task(bind=True, name="mediatasks.deliver_webhook")
def deliver_webhook(self: Task, *, delivery_id: str, attempt: int,
                    until: str | None = None) -> dict[str, Any]:
    """One attempt to deliver one webhook; the next one, when needed, is sent with a countdown."""
    from mediatasks.settings import get_settings

    if not isinstance(delivery_id, str) or not _DELIVERY_ID.fullmatch(delivery_id) \
            or not isinstance(attempt, int):
        log.error("mediatasks.deliver_webhook[%s]: message rejected: not a delivery id",
                  self.request.id)
        raise Reject("not a delivery id", requeue=False)
    settings = get_settings()
    hooks = webhooks_for(self.app, settings.database_url)
    ready = hooks.prepare(delivery_id, attempt)
    if ready is None:
        return {"dropped": "delivered, failed, or tried since"}
    delivery, headers = ready
    outcome, code, latency, error = post(delivery.url, delivery.payload, headers,
                                         timeout=settings.webhook_timeout)
    delay = hooks.attempted(delivery, outcome=outcome, latency_ms=latency, status_code=code,
                            error=error, until=datetime.fromisoformat(until) if until else None)
    if outcome != "delivered":
        log.warning("webhook %s to %s: %s%s", delivery.id, delivery.url, error or outcome,
                    f"; next attempt in {delay:g}s" if delay is not None else "; given up")
    return {"delivery": delivery.id, "outcome": outcome, "status_code": code}
