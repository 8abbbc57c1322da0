"""In-memory storage, dispatch and bus for the job service: for tests and for trying the service
without servers (like httpx's mock transport or dramatiq's stub broker)."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from mediatasks.fingerprint import KnownSource
from mediatasks.models import JobSpec
from mediatasks.service.records import Event, JobRecord
from mediatasks.service.webhook_messages import Attempt, Delivery, RelayState, Subscription

_FIELDS = {"chunks", "frames_in", "frames_out", "size_out", "chunks_reused", "error", "started_at",
           "finished_at", "settings", "note", "output", "result_id"}


class MemoryStore:
    """A JobStore in a dict; transitions are compare-and-set under a lock, as the SQL one is."""

    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self.log: list[Event] = []
        self._lock = threading.Lock()

    def _record(self, row: dict[str, Any]) -> JobRecord:
        import json

        settings = row["settings"]
        return JobRecord(**{**row, "settings": json.loads(settings) if isinstance(settings, str)
                            else settings})

    def create_job(self, spec: JobSpec, *, status: str, event: str,
                   data: dict[str, Any]) -> Event | None:
        with self._lock:
            if spec.job_id in self.jobs:
                return None
            size_in = os.path.getsize(spec.input) if os.path.exists(spec.input) else None
            self.jobs[spec.job_id] = {
                "job_id": spec.job_id, "status": status, "input": spec.input,
                "output": spec.output, "settings": spec.model_dump_json(), "error": None,
                "result_id": None, "batch_id": spec.batch_id, "created_at": datetime.now(UTC),
                "started_at": None, "finished_at": None, "chunks": None, "frames_in": None,
                "frames_out": None, "size_in": size_in, "size_out": None, "chunks_reused": None,
                "note": None}
            return self._append(spec.job_id, event, data)

    def get(self, job_id: str) -> JobRecord | None:
        row = self.jobs.get(job_id)
        return self._record(row) if row is not None else None

    def list_jobs(self, *, statuses: Iterable[str] | None = None,
                  limit: int = 100) -> list[JobRecord]:
        wanted = set(statuses) if statuses is not None else None
        rows = [r for r in reversed(self.jobs.values()) if wanted is None or r["status"] in wanted]
        return [self._record(r) for r in rows[:limit]]

    def jobs_in_batch(self, batch_id: str) -> list[JobRecord]:
        return [self._record(r) for r in self.jobs.values() if r["batch_id"] == batch_id]

    def active_job_writing(self, output: str, *, other_than: str | None = None
                           ) -> JobRecord | None:
        from mediatasks.service.lifecycle import ACTIVE

        for row in self.jobs.values():
            if row["output"] == output and row["status"] in ACTIVE and row["job_id"] != other_than:
                return self._record(row)
        return None

    def transition(self, job_id: str, *, current: str, new: str, event: str,
                   data: dict[str, Any], fields: dict[str, Any]) -> Event | None:
        with self._lock:
            row = self.jobs[job_id]
            if row["status"] != current:
                return None
            row.update({k: v for k, v in fields.items() if k in _FIELDS}, status=new)
            return self._append(job_id, event, data)

    def append_event(self, job_id: str, event: str, data: dict[str, Any],
                     fields: dict[str, Any] | None = None) -> Event:
        with self._lock:
            self.jobs[job_id].update({k: v for k, v in (fields or {}).items()
                                      if k in {"chunks", "frames_in"}})
            return self._append(job_id, event, data)

    def _append(self, job_id: str, kind: str, data: dict[str, Any]) -> Event:
        event = Event(seq=len(self.log) + 1, job_id=job_id, batch_id=self.jobs[job_id]["batch_id"],
                      type=kind, at=datetime.now(UTC), data=data)
        self.log.append(event)
        return event

    def events(self, key: str, *, after: int = 0, limit: int = 10000) -> list[Event]:
        return [e for e in self.log if (e.job_id == key or e.batch_id == key) and e.seq > after
                ][:limit]


    def last_event_at(self, job_id: str) -> datetime | None:
        times = [e.at for e in self.log if e.job_id == job_id]
        return max(times) if times else None

    def prune_events(self, *, before: datetime, types: tuple[str, ...]) -> int:
        from mediatasks.service.lifecycle import TERMINAL

        ended = {j for j, row in self.jobs.items() if row["status"] in TERMINAL}
        keep = [e for e in self.log
                if not (e.type in types and e.at < before and e.job_id in ended)]
        removed = len(self.log) - len(keep)
        self.log[:] = keep
        return removed


class MemoryDispatcher:
    """Records what would have been sent to the workers; ``live`` is what they hold."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, dict[str, Any]]] = []
        self.live: set[str] | None = set()

    def live_jobs(self) -> set[str] | None:
        return self.live

    def analyse(self, spec: JobSpec, *, known: KnownSource | None = None) -> None:
        self.sent.append(("analyse", spec.job_id, {"attempt": spec.attempt,
                                                   **({"known": True} if known else {})}))

    def encode(self, spec: JobSpec, *, chunks: int, queue: str) -> None:
        self.sent.append(("encode", spec.job_id, {"chunks": chunks, "queue": queue}))

    def discard(self, spec: JobSpec) -> None:
        self.sent.append(("discard", spec.job_id, {}))


class MemoryKeyValue(dict[str, Any]):
    """The result backend's get/set/mget over a dict."""

    def set(self, key: str, value: Any) -> None:
        self[key] = value

    def mget(self, keys: list[str]) -> list[Any]:
        return [self.get(k) for k in keys]


class MemoryWebhookStore:
    """A WebhookStore in dicts; the cursor moves by compare-and-set under a lock, as in SQL.
    ``log`` is the JobStore whose events ``lagging`` compares the cursors with."""

    def __init__(self, log: MemoryStore):
        self.jobs = log
        self.subscriptions: dict[str, Subscription] = {}
        self.rows: dict[str, Delivery] = {}
        self.attempts: dict[str, list[Attempt]] = {}
        self._lock = threading.Lock()

    def subscribe(self, subscription: Subscription) -> None:
        with self._lock:
            old = self.subscriptions.get(subscription.key)
            self.subscriptions[subscription.key] = subscription if old is None else old.model_copy(
                update={"url": subscription.url, "secret": subscription.secret,
                        "key_id": subscription.key_id})

    def subscription(self, key: str) -> Subscription | None:
        return self.subscriptions.get(key)

    def advance(self, key: str, *, cursor_was: int, cursor: int, progress_pct: int | None,
                progress_at: datetime | None, state: RelayState,
                deliveries: Sequence[Delivery]) -> bool:
        with self._lock:
            sub = self.subscriptions.get(key)
            if sub is None or sub.cursor != cursor_was:
                return False
            if any(d.id in self.rows for d in deliveries):
                raise ValueError("duplicate delivery id")  # the SQL primary key refuses it too
            self.subscriptions[key] = sub.model_copy(update={
                "cursor": cursor, "progress_pct": progress_pct, "progress_at": progress_at,
                "state": state.model_copy(deep=True)})
            self.rows.update((d.id, d) for d in deliveries)
            return True

    def lagging(self, limit: int = 1000) -> list[Subscription]:
        last = {k: max((e.seq for e in self.jobs.events(k)), default=0)
                for k in self.subscriptions}
        return [s for k, s in self.subscriptions.items() if last[k] > s.cursor][:limit]

    def _full(self, row: Delivery) -> Delivery:
        return row.model_copy(update={"history": tuple(self.attempts.get(row.id, []))})

    def delivery(self, delivery_id: str) -> Delivery | None:
        row = self.rows.get(delivery_id)
        return self._full(row) if row is not None else None

    def deliveries(self, key: str) -> list[Delivery]:
        return [self._full(d) for d in self.rows.values() if d.key == key]

    def record_attempt(self, delivery_id: str, attempt: Attempt, *, status: str,
                       next_attempt_at: datetime | None) -> None:
        with self._lock:
            row = self.rows[delivery_id]
            self.attempts.setdefault(delivery_id, []).append(attempt)
            self.rows[delivery_id] = row.model_copy(update={
                "attempts": row.attempts + 1, "status": status, "last_attempt_at": attempt.at,
                "next_attempt_at": next_attempt_at})

    def reopen(self, delivery_id: str, *, next_attempt_at: datetime) -> None:
        with self._lock:
            self.rows[delivery_id] = self.rows[delivery_id].model_copy(
                update={"status": "pending", "next_attempt_at": next_attempt_at})

    def due(self, before: datetime, limit: int = 1000) -> list[Delivery]:
        return [self._full(d) for d in self.rows.values() if d.status == "pending"
                and d.next_attempt_at is not None and d.next_attempt_at < before][:limit]

    def prune_deliveries(self, *, before: datetime) -> tuple[int, int]:
        with self._lock:
            old = [d.id for d in self.rows.values() if d.status != "pending"
                   and d.created_at < before
                   and (d.last_attempt_at is None or d.last_attempt_at < before)]
            attempts = sum(len(self.attempts.pop(i, [])) for i in old)
            for i in old:
                del self.rows[i]
        return len(old), attempts

    def prune_subscriptions(self, *, ended_before: datetime) -> int:
        from mediatasks.service.lifecycle import TERMINAL

        def ended(key: str, created_at: datetime) -> bool:
            rows = [r for r in self.jobs.jobs.values() if key in (r["job_id"], r["batch_id"])]
            if not rows:
                return created_at < ended_before
            return all(r["status"] in TERMINAL and r["finished_at"] is not None
                       and r["finished_at"] < ended_before for r in rows)

        with self._lock:
            busy = {d.key for d in self.rows.values()}
            gone = [k for k, s in self.subscriptions.items()
                    if k not in busy and ended(k, s.created_at)]
            for k in gone:
                del self.subscriptions[k]
        return len(gone)


class MemorySender:
    """Records the deliveries that would have been handed to the delivery task."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, int, float, datetime | None]] = []

    def send(self, delivery_id: str, *, attempt: int, delay: float = 0.0,
             until: datetime | None = None) -> None:
        self.sent.append((delivery_id, attempt, delay, until))
