"""What the service hands out: jobs, their tasks and their events, as frozen models."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from mediatasks.service.lifecycle import TERMINAL


def _utc(value: datetime) -> datetime:
    """Times are UTC: a naive one (SQLite hands them back so) was written in UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


Utc = Annotated[datetime, AfterValidator(_utc)]


class TaskRecord(BaseModel):
    """One task of a job, as `jobs show` prints it."""

    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    queue: str | None
    worker: str | None
    state: str
    started_at: Utc | None
    finished_at: Utc | None
    retries: int
    error: str | None
    argv: str | None = None  # the last ffmpeg/ffprobe it ran (the one that failed, if one did)
    log_tail: str | None = None  # that command's stderr, the last ~4 KB


class JobRecord(BaseModel):
    """One job, as `jobs list`, `jobs show` and `status` print it."""

    model_config = ConfigDict(frozen=True)

    job_id: str
    status: str
    input: str
    output: str
    settings: dict[str, Any]
    error: str | None
    result_id: str | None
    batch_id: str | None = None
    created_at: Utc
    started_at: Utc | None
    finished_at: Utc | None
    chunks: int | None
    frames_in: int | None
    frames_out: int | None
    size_in: int | None
    size_out: int | None
    chunks_reused: int | None = None
    note: str | None = None
    tasks: tuple[TaskRecord, ...] = ()

    @property
    def ended(self) -> bool:
        return self.status in TERMINAL


class Event(BaseModel):
    """One change of a job: a transition, a chunk finished, progress. ``seq`` orders all events."""

    model_config = ConfigDict(frozen=True)

    seq: int
    job_id: str
    batch_id: str | None = None
    type: str
    at: Utc
    data: dict[str, Any] = Field(default_factory=dict)

    @property
    def ends_job(self) -> bool:
        return self.type.startswith("job.") and self.type.removeprefix("job.") in TERMINAL


class ApiKey(BaseModel):
    """An HTTP API key as stored: never its secret, only the prefix shown in lists."""

    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    prefix: str
    scopes: tuple[str, ...]
    webhook_url: str | None = None
    webhook_secret: str | None = Field(default=None, repr=False)
    created_at: Utc
    last_used_at: Utc | None = None
    revoked_at: Utc | None = None
