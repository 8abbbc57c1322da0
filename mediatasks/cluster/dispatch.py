"""The service's Dispatcher on Celery: each phase of a job is one canvas sent to the broker."""

from __future__ import annotations

import base64
import json
import logging
import re
from typing import Any

from celery import _state

from mediatasks.cluster import canvas
from mediatasks.errors import BrokerUnavailable
from mediatasks.fingerprint import KnownSource
from mediatasks.models import JobSpec
from mediatasks.profiles import QUEUES

log = logging.getLogger(__name__)

# A broker that is down is said once, in about a second, not retried for half a minute.
_RETRY = {"max_retries": 1, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 1}


def _longest_first(spec: JobSpec, chunks: int) -> list[int] | None:
    """The chunks in the order to send them, longest first, from the job's saved plan; None
    (by index) when the plan cannot be read here."""
    from mediatasks.scheduling import longest_first
    from mediatasks.settings import get_settings
    from mediatasks.steps.plan import load_plan

    try:
        plan = load_plan(get_settings().work_dir / spec.job_id)
    except (OSError, ValueError):
        return None
    if len(plan.chunks) != chunks:
        return None
    return longest_first([c.frames for c in plan.chunks])


class CeleryDispatcher:
    """Sends job phases through ``app``'s broker."""

    def __init__(self, app: Any):
        self.app = app

    def _send(self, signature: Any) -> None:
        # Nobody here waits for the phase's result (the service follows events): Celery is told
        # not to subscribe to it, which would retry for half a minute against a backend that is
        # down and leave a pending result to be torn down at exit.
        blocks = _state.task_join_will_block()
        _state._set_task_join_will_block(True)
        try:
            result = signature.apply_async(retry_policy=_RETRY)
            del result
        except Exception as exc:  # kombu and redis-py raise their own connection errors
            url = self.app.conf.broker_url
            first = " ".join(str(exc).split())[:200]
            raise BrokerUnavailable(f"cannot reach the broker at {url}: {first}",
                                    hint="start redis-server or set MEDIATASKS_BROKER_URL"
                                    ) from exc
        finally:
            _state._set_task_join_will_block(blocks)

    def analyse(self, spec: JobSpec, *, known: KnownSource | None = None) -> None:
        self._send(canvas.analyse_workflow(self.app, spec, known=known))

    def encode(self, spec: JobSpec, *, chunks: int, queue: str) -> None:
        self._send(canvas.encode_workflow(self.app, spec, chunks=chunks, queue=queue,
                                          order=_longest_first(spec, chunks)))

    def discard(self, spec: JobSpec) -> None:
        self._send(canvas.cleanup(self.app, spec, remove=True))

    def live_jobs(self) -> set[str] | None:
        """What the workers hold (running, reserved, waiting for a retry) and what waits in
        the broker's queues, by job id; None when no worker answers or the queues cannot be
        read (a job is then never taken for stalled)."""
        inspect = self.app.control.inspect(timeout=1.0)
        found: set[str] = set()
        answered = False
        for ask in (inspect.active, inspect.reserved, inspect.scheduled):
            try:
                replies = ask()
            except Exception as exc:
                log.debug("inspect failed: %s", exc)
                return None
            if replies:
                answered = True
            for tasks in (replies or {}).values():
                for task in tasks:
                    found |= _job_ids(repr(task))
        if not answered:
            return None
        queued = self._queued()
        return None if queued is None else found | queued

    def _queued(self) -> set[str] | None:
        try:
            with self.app.connection_for_read() as conn:
                client = getattr(conn.default_channel, "client", None)
                if client is None or not hasattr(client, "lrange"):
                    return self._queues_empty(conn)
                found: set[str] = set()
                for queue in QUEUES:
                    for key in client.scan_iter(match=f"{queue}*"):
                        for raw in client.lrange(key, 0, -1):
                            found |= _job_ids(_text(raw))
                # Deliveries of workers that died come back after the visibility timeout.
                for raw in client.hvals("unacked"):
                    found |= _job_ids(_text(raw))
                return found
        except Exception as exc:
            log.debug("cannot read the queues: %s", exc)
            return None

    def _queues_empty(self, conn: Any) -> set[str] | None:
        """A broker whose queues cannot be listed (AMQP): only empty queues say anything."""
        for queue in QUEUES:
            try:
                _, count, _ = conn.default_channel.queue_declare(queue=queue, passive=True)
            except Exception:
                return None
            if count:
                return None
        return set()


_JOB_ID = re.compile(r"job_id\W{1,12}([0-9a-f]{32})")


def _job_ids(text: str) -> set[str]:
    return set(_JOB_ID.findall(text))


def _text(raw: Any) -> str:
    """A queued kombu message: its body is base64 JSON inside JSON; the headers' kwargsrepr
    (and the decoded body) name the job."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    try:
        message = json.loads(text)
        if isinstance(message, list):  # unacked: [message, exchange, routing key]
            message = message[0]
        body = message.get("body", "")
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body).decode("utf-8", "replace")
        return text + str(body)
    except (ValueError, TypeError, AttributeError):
        return text
