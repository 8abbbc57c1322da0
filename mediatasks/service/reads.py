"""Reading jobs, batches and their events, and following them as they change."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

from mediatasks.errors import InvalidOptions
from mediatasks.jobstate import JobState
from mediatasks.library import OperationLog
from mediatasks.service.lifecycle import SETTLED, batch_status, parse_status
from mediatasks.service.ports import Dispatcher, EventBus, JobStore, KeyValue, Notifier
from mediatasks.service.records import Event, JobRecord

log = logging.getLogger(__name__)


class JobNotFound(InvalidOptions):
    """No job (or batch) with that id in the history."""


class JobReader:
    """The read side of the job service: what the history and the bus say."""

    def __init__(self, store: JobStore, *, kv: KeyValue | None = None,
                 dispatcher: Dispatcher | None = None, bus: EventBus | None = None,
                 where: str = "the job history", roots: tuple[Path, ...] = (),
                 library_log: OperationLog | None = None, notifier: Notifier | None = None):
        self.store = store
        self.notifier = notifier  # told of every event after the bus (webhooks)
        self.library_log = library_log  # where library changes are recorded (for undo)
        self.kv = kv
        self.dispatcher = dispatcher
        self.bus = bus
        self.where = where
        self.roots = roots  # where jobs may read and write; () leaves it to the workers
        self._last_progress: dict[tuple[str, int], float] = {}

    # -- reads --------------------------------------------------------------------------------

    def find(self, job_id: str) -> JobRecord | None:
        return self.store.get(job_id)

    def get(self, job_id: str) -> JobRecord:
        record = self.store.get(job_id)
        if record is None:
            raise JobNotFound(f"no job {job_id} in {self.where}", hint="see 'mediatasks jobs list'")
        return record

    def list_jobs(self, *, status: str | None = None, limit: int = 50) -> list[JobRecord]:
        statuses = parse_status(status) if status else None
        return self.store.list_jobs(statuses=statuses, limit=limit)

    def batch(self, batch_id: str) -> list[JobRecord]:
        """The batch's jobs, oldest first (empty: no such batch)."""
        return self.store.jobs_in_batch(batch_id)

    def batch_status(self, batch_id: str) -> str:
        return batch_status(r.status for r in self.batch(batch_id))

    def is_batch(self, some_id: str) -> bool:
        return self.store.get(some_id) is None and bool(self.store.jobs_in_batch(some_id))

    def events(self, key: str, *, after: int = 0) -> list[Event]:
        """The events of a job or a batch.

        Raises:
            JobNotFound: no such job or batch.
        """
        self._check_key(key)
        return self.store.events(key, after=after)

    def live(self, job_id: str) -> JobState | None:
        return JobState(self.kv, job_id) if self.kv is not None else None

    def _check_key(self, key: str) -> None:
        if self.store.get(key) is None and not self.store.jobs_in_batch(key):
            raise JobNotFound(f"no job or batch {key} in {self.where}",
                              hint="see 'mediatasks jobs list'")

    def _ended(self, key: str) -> bool:
        record = self.store.get(key)
        if record is not None:
            return record.status in SETTLED
        jobs = self.store.jobs_in_batch(key)
        return all(r.status in SETTLED for r in jobs)

    def follow(self, key: str, *, after: int = 0, idle: float = 1.0) -> Iterator[Event | None]:
        """Every event of a job or batch after ``after``, as they come, until it has ended.

        Waits on the event bus between reads (no polling while events flow); yields None when
        nothing came for ``idle`` seconds, so a caller can check on its workers. The log in the
        store is the truth: the bus only wakes the follower up, and a wake-up that was lost costs
        at most ``idle`` seconds.

        Raises:
            JobNotFound: no such job or batch.
        """
        self._check_key(key)
        subscription = None
        if self.bus is not None:
            try:
                subscription = self.bus.subscribe(key)
            except Exception as exc:  # the broker is away: fall back to reading the log
                log.debug("no live events: %s", exc)
        last = after
        try:
            while True:
                ended = self._ended(key)
                fresh = self.store.events(key, after=last)
                for event in fresh:
                    last = event.seq
                    yield event
                if ended:
                    return
                if fresh:
                    continue
                woke = False
                if subscription is not None:
                    try:
                        woke = subscription.get(idle)
                    except Exception as exc:
                        log.debug("live events lost: %s", exc)
                        subscription = None
                else:
                    time.sleep(idle)
                if not woke:
                    yield None
        finally:
            if subscription is not None:
                subscription.close()
