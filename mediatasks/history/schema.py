"""The job history's tables and their migrations.

The schema is versioned: ``schema_version`` holds the version applied, and ``MIGRATIONS`` lists, in
order, the steps that take a database from one version to the next. ``migrate`` applies the
missing ones in one transaction each, so every process may call it at start-up.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import (
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    inspect,
    select,
)
from sqlalchemy.engine import Connection, Engine

metadata = MetaData()

schema_version = Table("schema_version", metadata, Column("version", Integer, nullable=False))

jobs = Table(
    "jobs", metadata,
    Column("id", String(64), primary_key=True),
    Column("input", Text, nullable=False, default=""),
    Column("output", Text, nullable=False, default=""),
    Column("settings", Text, nullable=False, default="{}"),
    Column("status", String(16), nullable=False, index=True),
    Column("error", Text),
    Column("result_id", String(64)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
    Column("chunks", Integer),
    Column("frames_in", Integer),
    Column("frames_out", Integer),
    Column("size_in", Integer),
    Column("size_out", Integer),
)

# Keyed by (id, name): a task that replaces itself (plan) hands its id on to the chord's body.
tasks = Table(
    "tasks", metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(128), primary_key=True),
    Column("job_id", String(64), nullable=False, index=True),
    Column("queue", String(64)),
    Column("worker", String(255)),
    Column("state", String(16), nullable=False),
    Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
    Column("retries", Integer, nullable=False, default=0),
    Column("error", Text),
)


def _v1(conn: Connection) -> None:
    """Jobs and their tasks."""
    metadata.create_all(conn, tables=[jobs, tasks])


MIGRATIONS: list[Callable[[Connection], None]] = [_v1]
SCHEMA_VERSION = len(MIGRATIONS)


def current_version(conn: Connection) -> int:
    if not inspect(conn).has_table("schema_version"):
        return 0
    value = conn.execute(select(schema_version.c.version)).scalar()
    return int(value or 0)


def migrate(engine: Engine) -> int:
    """Bring the database to ``SCHEMA_VERSION``; return the version it is at."""
    with engine.begin() as conn:
        if not inspect(conn).has_table("schema_version"):
            metadata.create_all(conn, tables=[schema_version])
            conn.execute(schema_version.insert().values(version=0))
    version = 0
    for target, step in enumerate(MIGRATIONS, start=1):
        with engine.begin() as conn:
            version = current_version(conn)
            if version >= target:
                continue
            step(conn)
            conn.execute(schema_version.update().values(version=target))
            version = target
    return version
