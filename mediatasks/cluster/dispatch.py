"""The service's Dispatcher on Celery: each phase of a job is one canvas sent to the broker."""

from __future__ import annotations

from typing import Any

from celery import _state

from mediatasks.cluster import canvas
from mediatasks.errors import BrokerUnavailable
from mediatasks.models import JobSpec

# A broker that is down is said once, in about a second, not retried for half a minute.
_RETRY = {"max_retries": 1, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 1}


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

    def analyse(self, spec: JobSpec) -> None:
        self._send(canvas.analyse_workflow(self.app, spec))

    def encode(self, spec: JobSpec, *, chunks: int, queue: str) -> None:
        self._send(canvas.encode_workflow(self.app, spec, chunks=chunks, queue=queue))

    def discard(self, spec: JobSpec) -> None:
        self._send(canvas.cleanup(self.app, spec, remove=True))
