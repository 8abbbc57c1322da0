"""Live job state kept in the result backend's key-value store: the plan summary, each chunk's
progress, and the first error. Workers write it; ``mediatasks run`` reads it to draw progress.

Flower does not show custom result meta, and a chord's task ids are only known inside the plan
task, so progress lives under keys derived from the job id.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger(__name__)


class KeyValue(Protocol):
    def get(self, key: str) -> Any: ...
    def set(self, key: str, value: Any) -> Any: ...
    def mget(self, keys: list[str]) -> Any: ...


def _job_key(job_id: str) -> str:
    return f"mediatasks-job-{job_id}"


def _progress_key(job_id: str, index: int) -> str:
    return f"mediatasks-progress-{job_id}-{index}"


def _error_key(job_id: str) -> str:
    return f"mediatasks-error-{job_id}"


def _cancel_key(job_id: str) -> str:
    return f"mediatasks-cancel-{job_id}"


def _published_key(job_id: str) -> str:
    return f"mediatasks-published-{job_id}"


def _attempt_key(job_id: str) -> str:
    return f"mediatasks-attempt-{job_id}"


def _loads(raw: Any) -> Any:
    if raw is None:
        return None
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8")
    return json.loads(raw)


@dataclass(frozen=True)
class Snapshot:
    """What a follower sees of a job at one moment."""

    planned: bool
    chunks: int
    frames_total: int
    frames_done: int
    chunks_done: int
    fps: float
    error: str | None


class JobState:
    """Read and write one job's live state."""

    def __init__(self, store: KeyValue, job_id: str):
        self.store = store
        self.job_id = job_id
        self._last_write = 0.0

    def record_plan(self, chunks: int, frames: int, queue: str, warnings: list[str]) -> None:
        self.store.set(_job_key(self.job_id), json.dumps(
            {"chunks": chunks, "frames": frames, "queue": queue, "warnings": warnings}))

    def report(self, index: int, frames: int, fps: float, *, done: bool = False) -> bool:
        """Progress of one chunk; throttled to two writes a second unless ``done``.

        Returns whether it was written (callers send their Flower event at the same pace).
        """
        now = time.monotonic()
        if not done and now - self._last_write < 0.5:
            return False
        self._last_write = now
        try:
            self.store.set(_progress_key(self.job_id, index),
                           json.dumps({"frames": frames, "fps": fps, "done": done}))
        except Exception:  # progress must never fail an encode
            log.exception("could not record progress")
        return True

    def record_error(self, message: str) -> None:
        """Keep the first error of the job: the root cause, not the chord's echo of it."""
        if self.store.get(_error_key(self.job_id)) is None:
            self.store.set(_error_key(self.job_id), json.dumps(message))

    def request_cancel(self) -> None:
        self.store.set(_cancel_key(self.job_id), json.dumps(True))

    def cancelled(self) -> bool:
        return bool(_loads(self.store.get(_cancel_key(self.job_id))))

    def record_published(self, result: dict[str, Any]) -> None:
        """The job's final result, once its output is in place: a redelivered publish (the worker
        died before acking) returns this instead of publishing again."""
        self.store.set(_published_key(self.job_id), json.dumps(result))

    def published(self) -> dict[str, Any] | None:
        value = _loads(self.store.get(_published_key(self.job_id)))
        return value if isinstance(value, dict) else None

    def record_attempt(self, attempt: int) -> None:
        self.store.set(_attempt_key(self.job_id), json.dumps(attempt))

    def attempt(self) -> int:
        """The job's current attempt (0 until it is retried)."""
        value = _loads(self.store.get(_attempt_key(self.job_id)))
        return int(value) if isinstance(value, int) else 0

    def reset(self) -> None:
        """Forget the error, the cancel flag and the plan (before the job is run again)."""
        for key in (_error_key(self.job_id), _cancel_key(self.job_id), _job_key(self.job_id),
                    _published_key(self.job_id)):
            self.store.set(key, json.dumps(None))

    def error(self) -> str | None:
        value = _loads(self.store.get(_error_key(self.job_id)))
        return str(value) if value is not None else None

    def plan(self) -> dict[str, Any] | None:
        value = _loads(self.store.get(_job_key(self.job_id)))
        return value if isinstance(value, dict) else None

    def snapshot(self) -> Snapshot:
        plan = self.plan()
        if plan is None:
            return Snapshot(False, 0, 0, 0, 0, 0.0, self.error())
        n = int(plan["chunks"])
        raw = self.store.mget([_progress_key(self.job_id, i) for i in range(n)]) if n else []
        entries = [_loads(r) for r in raw or []]
        frames = sum(int(e["frames"]) for e in entries if e)
        done = sum(1 for e in entries if e and e.get("done"))
        fps = sum(float(e["fps"]) for e in entries if e and not e.get("done"))
        return Snapshot(True, n, int(plan["frames"]), frames, done, fps, self.error())
