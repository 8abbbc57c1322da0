"""The job history's tables and their migrations.

The schema is versioned: ``schema_version`` holds the version applied, and ``MIGRATIONS`` lists, in
order, the steps that take a database from one version to the next. ``migrate`` applies the
missing ones in one transaction each, so every process may call it at start-up.

A step creates what its version had, not what the tables below have now: a fresh database goes
through every step, exactly as an old one does. Steps check before they add, because SQLite's
driver commits DDL as it goes, so a step cut short may have left part of its work behind.

    v1  jobs, tasks
    v2  jobs.batch_id (indexed); operations: what each job did to files in the library (for undo)
    v3  jobs.chunks_reused; 64-bit sizes on PostgreSQL
    v4  events: every change of every job, in order; jobs.note; jobs.status wide enough for
        every state of the lifecycle
    v5  tasks.argv and tasks.log_tail: the last command each task ran and its stderr tail;
        indexes on jobs.finished_at, tasks.finished_at and tasks.retries for the metrics
    v6  webhook_subscriptions, webhook_deliveries, webhook_attempts: the webhook outbox
    v7  api_keys (hashed keys of the HTTP API, their scopes and webhook defaults);
        idempotency_keys (an Idempotency-Key and the job it created)
    v8  webhook_subscriptions.state: what the relay keeps of the events it read (JSON);
        idempotency_keys.response: the answer a batch's Idempotency-Key returns again;
        webhook_attempts_expired: attempts removed by expiry, by outcome (the metric counts on);
        indexes on jobs.output (the submit's check for a job writing the same output),
        idempotency_keys.created_at and webhook_deliveries.created_at (their expiry)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    inspect,
    select,
    text,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

metadata = MetaData()

schema_version = Table("schema_version", metadata, Column("version", Integer, nullable=False))


def _jobs_v1_columns() -> list[Column[Any]]:
    """The jobs columns as version 1 created them: frozen, later columns come with their step."""
    return [
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
    ]


jobs = Table(
    "jobs", metadata,
    *[c for c in _jobs_v1_columns() if c.name not in {"size_in", "size_out"}],
    Column("size_in", BigInteger),  # v3: was Integer
    Column("size_out", BigInteger),  # v3: was Integer
    Column("batch_id", String(64)),  # v2
    Column("chunks_reused", Integer),  # v3
    Column("note", Text),  # v4
)
_jobs_batch_index = Index("ix_jobs_batch_id", jobs.c.batch_id)  # v2

def _tasks_v1_columns() -> list[Column[Any]]:
    """The tasks columns as version 1 created them."""
    return [
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
    ]


# Keyed by (id, name): a task that replaces itself (plan) hands its id on to the chord's body.
tasks = Table(
    "tasks", metadata,
    *_tasks_v1_columns(),
    Column("argv", Text),  # v5: shlex-joined argv of the last ffmpeg/ffprobe the task ran
    Column("log_tail", Text),  # v5: the last ~4 KB of its stderr
)
# v5: the metrics read recent rows (a bounded window) and the tasks that were retried.
_metrics_indexes = (
    Index("ix_jobs_finished_at", jobs.c.finished_at),
    Index("ix_tasks_finished_at", tasks.c.finished_at),
    Index("ix_tasks_retries", tasks.c.retries),
)


# One row per change a job made to the library, written before the change (see mediatasks.library);
# undo reads them newest first. Sizes and mtimes in nanoseconds outgrow 32 bits: BigInteger.
operations = Table(
    "operations", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_id", String(64), nullable=False, index=True),
    Column("batch_id", String(64), index=True),
    Column("seq", Integer, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("src", Text),
    Column("dst", Text),
    Column("size", BigInteger),
    Column("mtime_ns", BigInteger),
    Column("sha256", String(64)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("undone_at", DateTime(timezone=True)),
)


# The event log (v4): ``seq`` orders every event of every job; followers read after a seq.
events = Table(
    "events", metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("job_id", String(64), nullable=False, index=True),
    Column("batch_id", String(64), index=True),
    Column("type", String(32), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("data", Text, nullable=False, default="{}"),
)


# The webhook outbox (v5): a subscription per job or batch id, with the last event seq relayed;
# one delivery per webhook message (its id is the Standard Webhooks message id); every attempt.
webhook_subscriptions = Table(
    "webhook_subscriptions", metadata,
    Column("key", String(64), primary_key=True),
    Column("url", Text, nullable=False),
    Column("secret", Text, nullable=False),
    Column("key_id", String(32)),
    Column("cursor", Integer, nullable=False, default=0),
    Column("progress_pct", Integer),
    Column("progress_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("state", Text),  # v8: RelayState as JSON
)

webhook_deliveries = Table(
    "webhook_deliveries", metadata,
    Column("id", String(40), primary_key=True),
    Column("key", String(64), nullable=False, index=True),
    Column("job_id", String(64)),
    Column("type", String(32), nullable=False),
    Column("url", Text, nullable=False),
    Column("payload", Text, nullable=False),
    Column("status", String(16), nullable=False, index=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("last_attempt_at", DateTime(timezone=True)),
    Column("next_attempt_at", DateTime(timezone=True)),
)

webhook_attempts = Table(
    "webhook_attempts", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("delivery_id", String(40), nullable=False, index=True),
    Column("n", Integer, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("status_code", Integer),
    Column("latency_ms", Float, nullable=False),
    Column("error", Text),
    Column("outcome", String(16), nullable=False),
)

# The HTTP API's keys (v7): only the sha256 of the secret is kept, and a short prefix to show.
api_keys = Table(
    "api_keys", metadata,
    Column("id", String(32), primary_key=True),
    Column("name", Text, nullable=False),
    Column("prefix", String(16), nullable=False),
    Column("hash", String(128), nullable=False),
    Column("scopes", Text, nullable=False),
    Column("webhook_url", Text),
    Column("webhook_secret", Text),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("last_used_at", DateTime(timezone=True)),
    Column("revoked_at", DateTime(timezone=True)),
)

# An Idempotency-Key of one API key, the hash of the body it came with and the job it made (v7),
# or for POST /v1/batches the batch's id and (v8) the answer it gave, as JSON.
idempotency_keys = Table(
    "idempotency_keys", metadata,
    Column("key_id", String(32), nullable=False),
    Column("idem_key", String(255), nullable=False),
    Column("body_hash", String(64), nullable=False),
    Column("job_id", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("response", Text),  # v8
    UniqueConstraint("key_id", "idem_key", name="uq_idempotency_key"),
)

# v8: how many attempts expiry removed, by outcome: mediatasks_webhook_attempts_total adds them,
# so the counter never goes down.
webhook_attempts_expired = Table(
    "webhook_attempts_expired", metadata,
    Column("outcome", String(16), primary_key=True),
    Column("attempts", BigInteger, nullable=False),
)

# v8: submit looks up the job writing an output (a hash index on PostgreSQL: a path may be
# longer than a B-tree entry allows); the upkeep expires old Idempotency-Keys and deliveries.
_v8_indexes = (
    Index("ix_jobs_output", jobs.c.output, postgresql_using="hash"),
    Index("ix_idempotency_keys_created_at", idempotency_keys.c.created_at),
    Index("ix_webhook_deliveries_created_at", webhook_deliveries.c.created_at),
)


def _v1(conn: Connection) -> None:
    """Jobs and their tasks."""
    v1 = MetaData()
    Table("jobs", v1, *_jobs_v1_columns())
    Table("tasks", v1, *_tasks_v1_columns())
    v1.create_all(conn)


def _v2(conn: Connection) -> None:
    """Batches of jobs, and the operations each job did to files in the library."""
    if "batch_id" not in {c["name"] for c in inspect(conn).get_columns("jobs")}:
        conn.execute(text("ALTER TABLE jobs ADD COLUMN batch_id VARCHAR(64)"))
    _jobs_batch_index.create(conn, checkfirst=True)
    metadata.create_all(conn, tables=[operations])


def _v3(conn: Connection) -> None:
    """How many chunks a job reused from an earlier attempt; sizes past 2 GiB on PostgreSQL."""
    if "chunks_reused" not in {c["name"] for c in inspect(conn).get_columns("jobs")}:
        conn.execute(text("ALTER TABLE jobs ADD COLUMN chunks_reused INTEGER"))
    if conn.dialect.name == "postgresql":  # SQLite's INTEGER is 64-bit already
        conn.execute(text("ALTER TABLE jobs ALTER COLUMN size_in TYPE BIGINT, "
                          "ALTER COLUMN size_out TYPE BIGINT"))


def _v4(conn: Connection) -> None:
    """The event log; a note on jobs (why nothing was published); room for every state name."""
    if "note" not in {c["name"] for c in inspect(conn).get_columns("jobs")}:
        conn.execute(text("ALTER TABLE jobs ADD COLUMN note TEXT"))
    if conn.dialect.name == "postgresql":  # SQLite does not enforce VARCHAR lengths
        conn.execute(text("ALTER TABLE jobs ALTER COLUMN status TYPE VARCHAR(32)"))
    metadata.create_all(conn, tables=[events])


def _task_logs(conn: Connection) -> None:
    """What each task ran: its last command and stderr tail; indexes for the metrics' queries."""
    have = {c["name"] for c in inspect(conn).get_columns("tasks")}
    for name in ("argv", "log_tail"):
        if name not in have:
            conn.execute(text(f"ALTER TABLE tasks ADD COLUMN {name} TEXT"))
    for index in _metrics_indexes:
        index.create(conn, checkfirst=True)


def _webhooks(conn: Connection) -> None:
    """The webhook outbox: subscriptions, deliveries and their attempts."""
    metadata.create_all(conn, tables=[webhook_subscriptions, webhook_deliveries,
                                      webhook_attempts])



def _api_keys(conn: Connection) -> None:
    """The HTTP API's keys and the Idempotency-Keys it has seen."""
    metadata.create_all(conn, tables=[api_keys, idempotency_keys])  # checks first


def _relay_state_and_lookups(conn: Connection) -> None:
    """The webhook relay's state; a batch's answer kept for its Idempotency-Key; indexes for
    submit's output check and for expiry."""
    if "state" not in {c["name"] for c in inspect(conn).get_columns("webhook_subscriptions")}:
        conn.execute(text("ALTER TABLE webhook_subscriptions ADD COLUMN state TEXT"))
    if "response" not in {c["name"] for c in inspect(conn).get_columns("idempotency_keys")}:
        conn.execute(text("ALTER TABLE idempotency_keys ADD COLUMN response TEXT"))
    for index in _v8_indexes:
        index.create(conn, checkfirst=True)
    metadata.create_all(conn, tables=[webhook_attempts_expired])  # checks first


MIGRATIONS: list[Callable[[Connection], None]] = [_v1, _v2, _v3, _v4, _task_logs, _webhooks,
                                                  _api_keys, _relay_state_and_lookups]
SCHEMA_VERSION = len(MIGRATIONS)


def current_version(conn: Connection) -> int:
    if not inspect(conn).has_table("schema_version"):
        return 0
    value = conn.execute(select(func.max(schema_version.c.version))).scalar()
    return int(value or 0)


def migrate(engine: Engine, *, attempts: int = 6) -> int:
    """Bring the database to ``SCHEMA_VERSION``; return the version it is at.

    Several processes may open a new database at the same moment (a worker and the CLI). One that
    loses a race (a table or column the other has just made) tries again once the other is done:
    the version it then reads tells it what is left, and every step checks before it adds.
    """
    for attempt in range(attempts):
        try:
            return _migrate(engine)
        except DBAPIError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.1 * 2 ** attempt)
    raise AssertionError("unreachable")


def _migrate(engine: Engine) -> int:
    with engine.begin() as conn:
        if not inspect(conn).has_table("schema_version"):
            metadata.create_all(conn, tables=[schema_version])
        if conn.dialect.name == "postgresql":  # one inserter at a time (SQLite's write is one)
            conn.execute(text("LOCK TABLE schema_version IN SHARE ROW EXCLUSIVE MODE"))
        # One statement: two processes never both find the table empty and both insert.
        conn.execute(text("INSERT INTO schema_version (version) SELECT 0 WHERE NOT EXISTS "
                          "(SELECT 1 FROM schema_version)"))
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
