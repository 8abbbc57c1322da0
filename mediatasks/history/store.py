"""Reading and writing the job history: one row per job, one per task, one per library operation."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, func, or_, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool

from mediatasks.history.schema import events, jobs, migrate, operations, tasks
from mediatasks.library.oplog import Operation as Operation
from mediatasks.models import JobSpec
from mediatasks.service.lifecycle import ACTIVE, TERMINAL
from mediatasks.service.records import Event, JobRecord, TaskRecord

__all__ = ["TERMINAL", "Event", "History", "JobRecord", "Operation", "TaskRecord"]


def default_url() -> str:
    """SQLite in the user's state directory."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local",
                                                             "state")
    path = Path(base) / "mediatasks" / "history.sqlite"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def _engine(url: str) -> Engine:
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if url.startswith("sqlite"):
        # Several worker processes write at once: WAL and a generous busy timeout.
        engine = create_engine(url, poolclass=NullPool, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=2, max_overflow=2)


def _now() -> datetime:
    return datetime.now(UTC)


def _utc(value: datetime | None) -> datetime | None:
    """SQLite hands timestamps back naive; they were written in UTC."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _log_values(log: tuple[str, str] | None) -> dict[str, str]:
    return {} if log is None else {"argv": log[0], "log_tail": log[1]}


class History:
    """The job history at ``url`` (SQLite by default, PostgreSQL by URL); migrated on open."""

    def __init__(self, url: str | None = None):
        self.url = url or default_url()
        self.engine = _engine(self.url)
        migrate(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    # -- writes -------------------------------------------------------------------------------

    def create_job(self, spec: JobSpec, *, status: str, event: str,
                   data: dict[str, Any]) -> Event | None:
        """Record a new job and its first event; None if the job is recorded already."""
        size_in = os.path.getsize(spec.input) if os.path.exists(spec.input) else None
        with self.engine.begin() as conn:
            if conn.execute(select(jobs.c.id).where(jobs.c.id == spec.job_id)).first():
                return None
            conn.execute(jobs.insert().values(
                id=spec.job_id, input=spec.input, output=spec.output,
                settings=spec.model_dump_json(), status=status,
                created_at=_now(), size_in=size_in, batch_id=spec.batch_id))
            return self._append(conn, spec.job_id, spec.batch_id, event, data)

    def job_submitted(self, spec: JobSpec, **_: Any) -> None:
        """Record a queued job (kept for callers that only record)."""
        self.create_job(spec, status="queued", event="job.queued",
                        data={"input": spec.input, "output": spec.output})

    def transition(self, job_id: str, *, current: str, new: str, event: str,
                   data: dict[str, Any], fields: dict[str, Any]) -> Event | None:
        """Move the job from ``current`` to ``new`` with its event, in one transaction; None when
        the job is no longer in ``current`` (another process moved it first)."""
        allowed = {"chunks", "frames_in", "frames_out", "size_out", "chunks_reused", "error",
                   "started_at", "finished_at", "settings", "note", "output", "result_id"}
        values = {k: v for k, v in fields.items() if k in allowed}
        with self.engine.begin() as conn:
            done = conn.execute(jobs.update().where(jobs.c.id == job_id)
                                .where(jobs.c.status == current)
                                .values(status=new, **values))
            if done.rowcount != 1:
                return None
            batch_id = conn.execute(select(jobs.c.batch_id).where(jobs.c.id == job_id)).scalar()
            return self._append(conn, job_id, batch_id, event, data)

    def append_event(self, job_id: str, event: str, data: dict[str, Any],
                     fields: dict[str, Any] | None = None) -> Event:
        allowed = {"chunks", "frames_in"}
        values = {k: v for k, v in (fields or {}).items() if k in allowed}
        with self.engine.begin() as conn:
            if values:
                conn.execute(jobs.update().where(jobs.c.id == job_id).values(**values))
            batch_id = conn.execute(select(jobs.c.batch_id).where(jobs.c.id == job_id)).scalar()
            return self._append(conn, job_id, batch_id, event, data)

    @staticmethod
    def _append(conn: Connection, job_id: str, batch_id: str | None, kind: str,
                data: dict[str, Any]) -> Event:
        at = _now()
        result = conn.execute(events.insert().values(job_id=job_id, batch_id=batch_id, type=kind,
                                                     at=at, data=json.dumps(data, default=str)))
        key = result.inserted_primary_key
        assert key is not None
        return Event(seq=int(key[0]), job_id=job_id, batch_id=batch_id, type=kind, at=at,
                     data=data)

    def events(self, key: str, *, after: int = 0, limit: int = 10000) -> list[Event]:
        """Events of the job ``key``, or of every job of the batch ``key``, after ``after``."""
        query = (select(events).where(or_(events.c.job_id == key, events.c.batch_id == key))
                 .where(events.c.seq > after).order_by(events.c.seq).limit(limit))
        with self.engine.connect() as conn:
            return [Event(seq=r.seq, job_id=r.job_id, batch_id=r.batch_id, type=r.type,
                          at=_utc(r.at) or r.at, data=json.loads(r.data or "{}"))
                    for r in conn.execute(query)]

    def last_event_at(self, job_id: str) -> datetime | None:
        with self.engine.connect() as conn:
            value = conn.execute(select(func.max(events.c.at))
                                 .where(events.c.job_id == job_id)).scalar()
        return _utc(value)

    def prune_events(self, *, before: datetime, types: tuple[str, ...]) -> int:
        """Remove events of those types, of jobs that ended, written before ``before``."""
        ended = select(jobs.c.id).where(jobs.c.status.in_(sorted(TERMINAL)))
        with self.engine.begin() as conn:
            done = conn.execute(events.delete().where(events.c.type.in_(types))
                                .where(events.c.at < before).where(events.c.job_id.in_(ended)))
            return int(done.rowcount or 0)

    def _ensure_job(self, conn: Any, job_id: str) -> None:
        if not conn.execute(select(jobs.c.id).where(jobs.c.id == job_id)).first():
            conn.execute(jobs.insert().values(id=job_id, input="", output="", settings="{}",
                                              status="queued", created_at=_now()))

    def task_started(self, task_id: str, job_id: str, *, name: str, queue: str | None,
                     worker: str | None) -> None:
        now = _now()
        with self.engine.begin() as conn:
            self._ensure_job(conn, job_id)
            this = (tasks.c.id == task_id) & (tasks.c.name == name)
            row = conn.execute(select(tasks.c.id).where(this)).first()
            if row:
                conn.execute(tasks.update().where(this).values(
                    state="STARTED", worker=worker, queue=queue, started_at=now,
                    finished_at=None))
            else:
                conn.execute(tasks.insert().values(
                    id=task_id, job_id=job_id, name=name, queue=queue, worker=worker,
                    state="STARTED", started_at=now, retries=0))

    def task_retried(self, task_id: str, *, name: str, error: str,
                     log: tuple[str, str] | None = None) -> None:
        """The task will run again; ``log``: its last command and stderr tail (see task_finished)."""
        with self.engine.begin() as conn:
            conn.execute(tasks.update().where((tasks.c.id == task_id) & (tasks.c.name == name))
                         .values(state="RETRY", retries=tasks.c.retries + 1, error=error,
                                 **_log_values(log)))

    def task_finished(self, task_id: str, *, name: str, state: str,
                      error: str | None = None, log: tuple[str, str] | None = None) -> None:
        """The task ended; ``log``: (argv, stderr tail) of the command it ran, kept when given (a
        run that ran no command leaves an earlier run's)."""
        with self.engine.begin() as conn:
            conn.execute(tasks.update().where((tasks.c.id == task_id) & (tasks.c.name == name))
                         .values(state=state, error=error, finished_at=_now(),
                                 **_log_values(log)))

    def record_operation(self, job_id: str, kind: str, *, batch_id: str | None = None,
                         src: str | Path | None = None, dst: str | Path | None = None,
                         size: int | None = None, mtime_ns: int | None = None,
                         sha256: str | None = None) -> int:
        """Append one operation to the job's log; return its id. ``seq`` counts from 1 per job."""
        with self.engine.begin() as conn:
            last = conn.execute(select(func.max(operations.c.seq))
                                .where(operations.c.job_id == job_id)).scalar()
            result = conn.execute(operations.insert().values(
                job_id=job_id, batch_id=batch_id, seq=int(last or 0) + 1, kind=kind,
                src=None if src is None else str(src), dst=None if dst is None else str(dst),
                size=size, mtime_ns=mtime_ns, sha256=sha256, created_at=_now()))
            key = result.inserted_primary_key
            assert key is not None
            return int(key[0])

    def mark_undone(self, op_id: int) -> None:
        """Mark the operation undone (also how a change recorded but not made is withdrawn)."""
        with self.engine.begin() as conn:
            conn.execute(operations.update().where(operations.c.id == op_id)
                         .where(operations.c.undone_at.is_(None)).values(undone_at=_now()))

    # -- reads --------------------------------------------------------------------------------

    @staticmethod
    def _job(row: Any, task_rows: list[Any]) -> JobRecord:
        m = row._mapping
        return JobRecord(
            job_id=m["id"], status=m["status"], input=m["input"], output=m["output"],
            settings=json.loads(m["settings"] or "{}"), error=m["error"],
            result_id=m["result_id"], created_at=m["created_at"], started_at=m["started_at"],
            finished_at=m["finished_at"], chunks=m["chunks"], frames_in=m["frames_in"],
            frames_out=m["frames_out"], size_in=m["size_in"], size_out=m["size_out"],
            batch_id=m["batch_id"], chunks_reused=m["chunks_reused"], note=m["note"],
            tasks=tuple(TaskRecord(id=t.id, name=t.name, queue=t.queue, worker=t.worker,
                                   state=t.state, started_at=t.started_at,
                                   finished_at=t.finished_at, retries=t.retries, error=t.error,
                                   argv=t.argv, log_tail=t.log_tail)
                        for t in task_rows))

    def jobs_in_batch(self, batch_id: str) -> list[JobRecord]:
        """The batch's jobs, oldest first."""
        query = select(jobs).where(jobs.c.batch_id == batch_id).order_by(jobs.c.created_at, jobs.c.id)
        with self.engine.connect() as conn:
            return [self._job(row, []) for row in conn.execute(query)]

    def active_job_writing(self, output: str, *, other_than: str | None = None
                           ) -> JobRecord | None:
        """A job not yet ended that writes ``output`` (through ix_jobs_output)."""
        query = (select(jobs).where(jobs.c.output == output)
                 .where(jobs.c.status.in_(sorted(ACTIVE))).order_by(jobs.c.created_at).limit(1))
        if other_than is not None:
            query = query.where(jobs.c.id != other_than)
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return self._job(row, []) if row is not None else None

    def operations(self, job_or_batch_id: str) -> list[Operation]:
        """The operations of a job, or of a batch (recorded with its id, or by one of its jobs), by id."""
        in_batch = select(jobs.c.id).where(jobs.c.batch_id == job_or_batch_id)
        query = (select(operations)
                 .where(or_(operations.c.job_id == job_or_batch_id,
                            operations.c.batch_id == job_or_batch_id,
                            operations.c.job_id.in_(in_batch)))
                 .order_by(operations.c.id))
        with self.engine.connect() as conn:
            return [Operation(**{**row._mapping, "created_at": _utc(row.created_at),
                                 "undone_at": _utc(row.undone_at)})
                    for row in conn.execute(query)]

    def get(self, job_id: str) -> JobRecord | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(jobs).where(jobs.c.id == job_id)).first()
            if row is None:
                return None
            task_rows = list(conn.execute(select(tasks).where(tasks.c.job_id == job_id)
                                          .order_by(tasks.c.started_at)))
            return self._job(row, task_rows)

    def list_jobs(self, *, statuses: Iterable[str] | None = None, status: str | None = None,
                  limit: int = 100) -> list[JobRecord]:
        query = select(jobs).order_by(jobs.c.created_at.desc(), jobs.c.id).limit(limit)
        wanted = set(statuses) if statuses is not None else ({status} if status else None)
        if wanted is not None:
            query = query.where(jobs.c.status.in_(sorted(wanted)))
        with self.engine.connect() as conn:
            return [self._job(row, []) for row in conn.execute(query)]
