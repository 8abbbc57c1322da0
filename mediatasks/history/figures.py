"""The figures `/metrics` shows, read from the job history with aggregate queries.

Every worker writes its jobs, tasks and events to the one shared history, so reading it at scrape
time gives the whole cluster's figures: no counters in worker processes, no push gateway.

What each query reads, so that a scrape stays cheap on a big history:

- jobs by state: ``GROUP BY status`` on the indexed column;
- totals over every job (frames, bytes): one light pass over ``jobs``, so they are true counters
  that only grow;
- retries: the sum over the tasks that were retried, read from the index on ``tasks.retries``;
- recent figures (job durations, chunk encode times, encode speed): the rows that finished in the
  last ``window`` (an hour by default), read through the indexes on ``finished_at`` and bucketed
  here: a duration is worked out row by row, too slow for every row of a big history at every
  scrape;
- webhooks: attempts by outcome (with those expiry removed, so it only grows) and deliveries by
  status.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Table, case, func, select
from sqlalchemy.engine import Connection, Engine

from mediatasks.history.schema import (
    jobs,
    tasks,
    webhook_attempts,
    webhook_attempts_expired,
    webhook_deliveries,
)
from mediatasks.service.lifecycle import STATUSES, TERMINAL

WINDOW = timedelta(hours=1)
# Seconds. A whole job: from a minute to a day; one chunk: seconds to an hour.
JOB_BUCKETS: tuple[float, ...] = (60, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400)
CHUNK_BUCKETS: tuple[float, ...] = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600)
ENCODE_TASK = "mediatasks.encode_chunk"
# Jobs that ran to their end have frames_out (a retry clears it); the published ones both sizes.
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
    job_seconds: dict[str, Histogram]  # jobs that ended within the window, by how they ended
    frames_encoded: int  # frames_out of every job that finished
    bytes_in: int  # sources of the published jobs
    bytes_out: int  # their outputs
    retries: int  # every task retry ever recorded
    chunk_seconds: Histogram  # encode_chunk tasks that succeeded within the window
    encode_fps: float | None  # frames per second of the jobs that succeeded within the window
    window: timedelta = WINDOW
    webhook_attempts: dict[str, int] = field(default_factory=dict)  # by outcome
    webhook_deliveries: dict[str, int] = field(default_factory=dict)  # by status
    at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def bytes_saved(self) -> int:
        return self.bytes_in - self.bytes_out


def _histogram(seconds: Sequence[float], buckets: tuple[float, ...]) -> Histogram:
    return Histogram(buckets=buckets,
                     counts=tuple(sum(1 for x in seconds if x <= limit) for limit in buckets),
                     count=len(seconds), total=float(sum(seconds)))


def _took(row: Any) -> float:
    """Seconds from ``started_at`` to ``finished_at`` of a row (both as the database hands them)."""
    return max(0.0, float((row.finished_at - row.started_at).total_seconds()))


def _by(conn: Connection, t: Table, key: str) -> dict[str, int]:
    """Rows of a table counted by ``key``."""
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

        # The window's rows, through the index on finished_at (a condition on status would lead
        # the database to its index on status: a scan of most jobs); durations in Python.
        ended = list(conn.execute(
            select(jobs.c.status, jobs.c.started_at, jobs.c.finished_at, jobs.c.frames_out)
            .where(jobs.c.finished_at >= since).where(jobs.c.started_at.is_not(None))))
        job_seconds = {state: _histogram([_took(r) for r in ended if r.status == state],
                                         JOB_BUCKETS) for state in sorted(TERMINAL)}
        done = [r for r in ended if r.frames_out is not None]  # ran to the end (retry clears it)
        frames_done, seconds_done = sum(r.frames_out for r in done), sum(_took(r) for r in done)
        fps = frames_done / seconds_done if frames_done and seconds_done > 0 else None

        published = jobs.c.status.in_(_PUBLISHED) & jobs.c.size_out.is_not(None)
        frames, size_in, size_out = conn.execute(select(
            func.coalesce(func.sum(jobs.c.frames_out), 0),
            func.coalesce(func.sum(case((published, jobs.c.size_in), else_=0)), 0),
            func.coalesce(func.sum(case((published, jobs.c.size_out), else_=0)), 0),
        )).one()

        retries = conn.execute(select(func.coalesce(func.sum(tasks.c.retries), 0))
                               .where(tasks.c.retries > 0)).scalar()

        chunks = conn.execute(
            select(tasks.c.started_at, tasks.c.finished_at)
            .where(tasks.c.finished_at >= since).where(tasks.c.name == ENCODE_TASK)
            .where(tasks.c.state == "SUCCESS").where(tasks.c.started_at.is_not(None)))
        chunk_seconds = _histogram([_took(r) for r in chunks], CHUNK_BUCKETS)

        attempts = _by(conn, webhook_attempts, "outcome")
        x = webhook_attempts_expired
        for outcome, n in conn.execute(select(x.c.outcome, x.c.attempts)):
            attempts[str(outcome)] = attempts.get(str(outcome), 0) + int(n)
        deliveries = _by(conn, webhook_deliveries, "status")
    return Figures(jobs_by_state=by_state, job_seconds=job_seconds, frames_encoded=int(frames),
                   bytes_in=int(size_in), bytes_out=int(size_out), retries=int(retries or 0),
                   chunk_seconds=chunk_seconds, encode_fps=fps,
                   window=window, webhook_attempts=attempts, webhook_deliveries=deliveries,
                   at=now)


__all__ = ["CHUNK_BUCKETS", "JOB_BUCKETS", "WINDOW", "Figures", "Histogram", "read_figures"]
