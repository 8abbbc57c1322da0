"""The one typed settings object, read from ``MEDIATASKS_*`` environment variables."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_work_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mediatasks" / "work"


class Settings(BaseSettings):
    """Everything configurable, with the environment variable named after each field."""

    model_config = SettingsConfigDict(env_prefix="MEDIATASKS_", frozen=True, extra="ignore")

    broker_url: str = "redis://localhost:6379/0"
    result_backend: str | None = None
    # Job history: SQLite in the user's state directory when unset; postgresql://… at scale.
    database_url: str | None = None
    work_dir: Path = Field(default_factory=_default_work_dir)
    # Where jobs may read and write (folders separated by ':'): every path of a job must lie under
    # one, after symlinks are resolved. A cluster worker refuses to start without it.
    roots: str = ""

    ffmpeg: str = "ffmpeg"
    ffprobe: str = "ffprobe"
    redis_server: str = "redis-server"

    # A worker on the gpu queue test-encodes each hardware encoder at start-up (a few seconds).
    hardware_survey: bool = True
    visibility_timeout: int = Field(default=14400, ge=10)
    chunk_seconds: float = Field(default=30.0, gt=0)
    min_chunk_frames: int = Field(default=12, ge=1)
    # Threads each encoder ffmpeg of this worker gets (-threads); unset: the encoder's default.
    encoder_threads: int | None = Field(default=None, ge=1)
    # An encode that reports no progress for this long is killed and retried.
    stall_timeout: float = Field(default=300.0, gt=0)
    task_soft_time_limit: int = Field(default=4 * 3600, ge=10)
    task_time_limit: int = Field(default=4 * 3600 + 300, ge=10)
    max_retries: int = Field(default=4, ge=0)
    retry_backoff: int = Field(default=10, ge=1)
    retry_backoff_max: int = Field(default=600, ge=1)
    result_expires: int = Field(default=3 * 24 * 3600, ge=60)
    # A job with no task alive anywhere and no event for this long is stalled (and sent again
    # up to stall_retries times): a broker that lost its messages never leaves a job hanging.
    stall_after: float = Field(default=900.0, gt=0)
    stall_retries: int = Field(default=1, ge=0)
    # Work folders of ended jobs, the library trash and old progress events expire after this.
    gc_after_days: float = Field(default=7.0, gt=0)
    # How often each worker looks for stalled jobs and expired files (0: never; `mediatasks gc`).
    upkeep_interval: float = Field(default=300.0, ge=0)
    # Message signing (Celery's auth serializer): this process's private key and certificate, and
    # the certificates it trusts (a directory or a glob). All three or none.
    signing_key: Path | None = None
    signing_cert: Path | None = None
    signing_cert_store: str | None = None
    # Webhooks (docs/api.md#webhooks): how long a delivery is retried, each attempt's time-out,
    # the first retry's delay (doubling, at most an hour and half the visibility timeout), and how
    # often job.progress is sent (each step percent, or after this many seconds).
    webhook_retry_for: float = Field(default=86400.0, gt=0)
    webhook_timeout: float = Field(default=10.0, gt=0)
    webhook_backoff: float = Field(default=10.0, gt=0)
    webhook_progress_step: int = Field(default=10, ge=1, le=100)
    webhook_progress_every: float = Field(default=30.0, gt=0)
    # The secret `submit --webhook-url` signs with ("whsec_" + base64; see docs/api.md#webhooks).
    webhook_secret: str | None = None
    # The HTTP API (`mediatasks api`): requests per API key (the `limits` library's notation),
    # the largest request body in bytes, and how long an Idempotency-Key is remembered.
    api_rate_limit: str = "120/minute"
    api_max_body: int = Field(default=1_048_576, ge=1024)
    api_idempotency_hours: float = Field(default=24, gt=0)

    @field_validator("work_dir", mode="before")
    @classmethod
    def _expand(cls, value: object) -> object:
        if isinstance(value, str):
            return Path(os.path.expanduser(value))
        return value

    @model_validator(mode="after")
    def _signing_complete(self) -> Settings:
        given = [self.signing_key, self.signing_cert, self.signing_cert_store]
        if any(given) and not all(given):
            raise ValueError("message signing needs MEDIATASKS_SIGNING_KEY, MEDIATASKS_SIGNING_CERT "
                             "and MEDIATASKS_SIGNING_CERT_STORE together: set all three or none")
        return self

    @property
    def signing(self) -> bool:
        return self.signing_key is not None

    @property
    def root_paths(self) -> tuple[Path, ...]:
        return tuple(Path(os.path.expanduser(p)) for p in self.roots.split(":") if p.strip())

    @property
    def backend_url(self) -> str:
        return self.result_backend or self.broker_url


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings of this process, read once."""
    return Settings()
