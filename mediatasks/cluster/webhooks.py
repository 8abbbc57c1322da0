"""Webhooks on the cluster: the sender that hands a delivery to ``mediatasks.deliver_webhook`` (a
task on the io queue, in ``tasks``) and the POST that task makes. The bookkeeping is
``mediatasks.service.webhooks``'."""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import Any

import httpx

from mediatasks.cluster.dispatch import CeleryDispatcher
from mediatasks.service.webhook_messages import Outcome

log = logging.getLogger(__name__)


class CelerySender:
    """Sends ``mediatasks.deliver_webhook`` through ``app``'s broker."""

    def __init__(self, app: Any):
        self.app = app

    def send(self, delivery_id: str, *, attempt: int, delay: float = 0.0,
             until: datetime | None = None) -> None:
        signature = self.app.signature("mediatasks.deliver_webhook", kwargs={
            "delivery_id": delivery_id, "attempt": attempt,
            "until": until.isoformat() if until else None})
        # Through the dispatcher's door: a broker that is down is said within a second, and
        # nobody subscribes to the task's result.
        CeleryDispatcher(self.app)._send(signature.set(countdown=delay) if delay else signature)


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
