"""The figures `/metrics` shows, read from the job history with aggregate queries.

Every worker writes its jobs, tasks and events to the one shared history, so reading it at scrape
time gives the whole cluster's figures: no counters in worker processes, no push gateway.

What each query reads, so that a scrape stays cheap on a big history:

- jobs by state: ``GROUP BY status`` on the indexed column;
- totals over every job (durations of ended jobs, frames, bytes): one pass over ``jobs``, one row
  per job, so they are true counters that only grow (a retried job leaves the failed ones);
- retries: the sum over the tasks that were retried, read from the index on ``tasks.retries``;
- recent figures (chunk encode times, encode speed): the rows that finished in the last
  ``window`` (an hour by default), through the indexes on ``finished_at``;
- webhooks: attempts by outcome and deliveries by status, where those tables exist.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, case, column, func, inspect, select, table
from sqlalchemy.engine import Connection, Engine

from mediatasks.history.schema import jobs, tasks
from mediatasks.service.lifecycle import STATUSES, TERMINAL

WINDOW = timedelta(hours=1)
# Seconds. A whole job: from a minute to a day; one chunk: seconds to an hour.
JOB_BUCKETS: tuple[float, ...] = (60, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400)
CHUNK_BUCKETS: tuple[float, ...] = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600)
ENCODE_TASK = "mediatasks.encode_chunk"
# Jobs that ran to their end have frames_out; the published ones also both sizes.
_FINISHED = ("succeeded", "kept", "undone")
_PUBLISHED = ("succeeded", "undone")


@dataclass(frozen=True)
class Histogram:
    """Observations in buckets: ``counts[i]`` of them were at most ``buckets[i]`` (cumulative)."""

    buckets: tuple[float, ...]
    counts: tuple[int, ...]
    count: int = 0
    total: float = 0.0


@dataclass(frozen=True)
class Figures:
    """The history's figures at one moment."""

    jobs_by_state: dict[str, int]
    job_seconds: dict[str, Histogram]  # by how the job ended
    frames_encoded: int  # frames_out of every job that finished
    bytes_in: int  # sources of the published jobs
    bytes_out: int  # their outputs
    retries: int  # every task retry ever recorded
    chunk_seconds: Histogram  # encode_chunk tasks that succeeded within the window
    encode_fps: float | None  # frames per second of the jobs that succeeded within the window
    window: timedelta = WINDOW
    webhook_attempts: dict[str, int] | None = None  # by outcome; None without the table
    webhook_deliveries: dict[str, int] | None = None  # by status; None without the table
    at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def bytes_saved(self) -> int:
        return self.bytes_in - self.bytes_out


def _seconds(conn: Connection, end: Any, start: Any) -> ColumnElement[Any]:
    """``end - start`` in seconds, as each database spells it."""
    if conn.dialect.name == "sqlite":
        return (func.julianday(end) - func.julianday(start)) * 86400.0
    return func.extract("epoch", end - start)


def _bucketed(seconds: ColumnElement[Any], buckets: Sequence[float]) -> list[Any]:
    return [func.sum(case((seconds <= limit, 1), else_=0)) for limit in buckets]


def _histogram(row: Any, buckets: tuple[float, ...]) -> Histogram:
    count, total, *counts = row
    return Histogram(buckets=buckets, counts=tuple(int(c or 0) for c in counts),
                     count=int(count or 0), total=float(total or 0.0))


def _by(conn: Connection, name: str, key: str) -> dict[str, int] | None:
    """Rows of a table that may not exist here (the webhooks' tables), counted by ``key``."""
    if not inspect(conn).has_table(name):
        return None
    t = table(name, column(key))
    rows = conn.execute(select(t.c[key], func.count()).group_by(t.c[key]))
    return {str(k): int(n) for k, n in rows if k is not None}


def read_figures(engine: Engine, *, window: timedelta = WINDOW,
                 now: datetime | None = None) -> Figures:
    """Read every figure from the history at ``engine`` (see the module's docstring)."""
    now = now or datetime.now(UTC)
    since = now - window
    with engine.connect() as conn:
        by_state = dict.fromkeys(STATUSES, 0)
        for status, n in conn.execute(select(jobs.c.status, func.count()).group_by(jobs.c.status)):
            by_state[str(status)] = int(n)

        took = _seconds(conn, jobs.c.finished_at, jobs.c.started_at)
        ended = conn.execute(
            select(jobs.c.status, func.count(), func.sum(took), *_bucketed(took, JOB_BUCKETS))
            .where(jobs.c.status.in_(sorted(TERMINAL)))
            .where(jobs.c.started_at.is_not(None)).where(jobs.c.finished_at.is_not(None))
            .group_by(jobs.c.status))
        empty = Histogram(buckets=JOB_BUCKETS, counts=(0,) * len(JOB_BUCKETS))
        job_seconds = dict.fromkeys(sorted(TERMINAL), empty)
        job_seconds.update({str(r[0]): _histogram(r[1:], JOB_BUCKETS) for r in ended})

        published = jobs.c.status.in_(_PUBLISHED) & jobs.c.size_out.is_not(None)
        frames, size_in, size_out = conn.execute(select(
            func.coalesce(func.sum(jobs.c.frames_out), 0),
            func.coalesce(func.sum(case((published, jobs.c.size_in), else_=0)), 0),
            func.coalesce(func.sum(case((published, jobs.c.size_out), else_=0)), 0),
        )).one()

        retries = conn.execute(select(func.coalesce(func.sum(tasks.c.retries), 0))
                               .where(tasks.c.retries > 0)).scalar()

        chunk = _seconds(conn, tasks.c.finished_at, tasks.c.started_at)
        chunks = conn.execute(
            select(func.count(), func.sum(chunk), *_bucketed(chunk, CHUNK_BUCKETS))
            .where(tasks.c.finished_at >= since).where(tasks.c.name == ENCODE_TASK)
            .where(tasks.c.state == "SUCCESS").where(tasks.c.started_at.is_not(None))).one()

        recent_frames, recent_seconds = conn.execute(
            select(func.sum(jobs.c.frames_out), func.sum(took))
            .where(jobs.c.finished_at >= since).where(jobs.c.status.in_(_FINISHED))
            .where(jobs.c.started_at.is_not(None)).where(jobs.c.frames_out.is_not(None))).one()
        fps = (float(recent_frames) / float(recent_seconds)
               if recent_frames and recent_seconds and recent_seconds > 0 else None)

        attempts = _by(conn, "webhook_attempts", "outcome")
        deliveries = _by(conn, "webhook_deliveries", "status")
    return Figures(jobs_by_state=by_state, job_seconds=job_seconds, frames_encoded=int(frames),
                   bytes_in=int(size_in), bytes_out=int(size_out), retries=int(retries or 0),
                   chunk_seconds=_histogram(chunks, CHUNK_BUCKETS), encode_fps=fps,
                   window=window, webhook_attempts=attempts, webhook_deliveries=deliveries,
                   at=now)


__all__ = ["CHUNK_BUCKETS", "JOB_BUCKETS", "WINDOW", "Figures", "Histogram", "read_figures"]
