"""Jobs a page at a time, newest first, for the HTTP API's cursor pagination."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import and_, or_, select
from sqlalchemy.engine import Engine

from mediatasks.history.schema import jobs
from mediatasks.history.store import History
from mediatasks.service.records import JobRecord


def page_jobs(engine: Engine, *, statuses: Iterable[str] | None = None,
              batch_id: str | None = None, since: datetime | None = None,
              after: tuple[datetime, str] | None = None, limit: int = 50) -> list[JobRecord]:
    """Jobs by creation time, newest first (ties by id); ``after``: the (created_at, id) of the
    last job of the previous page."""
    query = select(jobs).order_by(jobs.c.created_at.desc(), jobs.c.id).limit(limit)
    if statuses is not None:
        query = query.where(jobs.c.status.in_(sorted(set(statuses))))
    if batch_id is not None:
        query = query.where(jobs.c.batch_id == batch_id)
    if since is not None:
        query = query.where(jobs.c.created_at >= _naive_utc(since, engine))
    if after is not None:
        when = _naive_utc(after[0], engine)
        query = query.where(or_(jobs.c.created_at < when,
                                and_(jobs.c.created_at == when, jobs.c.id > after[1])))
    with engine.connect() as conn:
        return [History._job(row, []) for row in conn.execute(query)]


def _naive_utc(value: datetime, engine: Engine) -> datetime:
    """SQLite compares the stored text: naive UTC, as the history writes it there."""
    from datetime import UTC

    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    if engine.dialect.name == "sqlite":
        return value.replace(tzinfo=None)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
