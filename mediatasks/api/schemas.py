"""What the API takes and gives: request bodies as strict pydantic models, jobs as JSON."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mediatasks.service.lifecycle import LABELS
from mediatasks.service.progress import progress_of
from mediatasks.service.records import Event, JobRecord

Path_ = Field(min_length=1, max_length=4096, description="An absolute path under MEDIATASKS_ROOTS.")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class JobIn(Strict):
    """The options of `mediatasks submit`."""

    input: str = Path_
    output: str = Path_
    video_codec: str = Field(default="libx264", min_length=1, max_length=64)
    crf: float | None = Field(default=None, ge=0, le=63)
    preset: str | None = Field(default=None, min_length=1, max_length=64)
    video_opt: list[str] = Field(default_factory=list, max_length=64,
                                 description="KEY=VALUE passed to the encoder, as --video-opt.")
    audio_codec: str = Field(default="copy", min_length=1, max_length=64)
    chunk_seconds: float | None = Field(default=None, ge=0.1, le=86400)
    overwrite: bool = False
    hold: bool = Field(default=False, description="Wait for approve (or reject) once planned.")
    strict: bool = False
    webhook_url: str | None = Field(default=None, min_length=1, max_length=2048,
                                    pattern=r"^https?://",
                                    description="Where this job's events are delivered.")


class BatchIn(Strict):
    """A policy (the YAML file's content, as JSON) and the files or folders it applies to."""

    policy: dict[str, Any] = Field(default_factory=dict)
    inputs: list[str] = Field(min_length=1, max_length=1000)
    output_dir: str | None = Field(default=None, min_length=1, max_length=4096)
    on_error: Literal["continue", "stop"] = "continue"
    chunk_seconds: float | None = Field(default=None, ge=0.1, le=86400)
    hold: bool = False
    webhook_url: str | None = Field(default=None, min_length=1, max_length=2048,
                                    pattern=r"^https?://")


class ProbeIn(Strict):
    input: str = Path_


def job_json(record: JobRecord, events: list[Event] | None = None) -> dict[str, Any]:
    """A job as the API shows it (``events`` given: with its progress and its tasks)."""
    out: dict[str, Any] = {
        "id": record.job_id,
        "status": record.status,
        "label": LABELS.get(record.status, record.status),
        "batch_id": record.batch_id,
        "input": record.input,
        "output": record.output,
        "error": record.error,
        "note": record.note,
        "created_at": _iso(record.created_at),
        "started_at": _iso(record.started_at),
        "finished_at": _iso(record.finished_at),
        "frames_in": record.frames_in,
        "frames_out": record.frames_out,
        "chunks": record.chunks,
        "chunks_reused": record.chunks_reused,
        "size_in": record.size_in,
        "size_out": record.size_out,
        "hold": bool(record.settings.get("hold")),
    }
    if events is not None:
        out["progress"] = progress_of(events).as_dict()
        if record.status == "succeeded":
            out["progress"]["percent"] = 100.0
        out["tasks"] = [{"name": t.name, "state": t.state, "queue": t.queue, "worker": t.worker,
                         "retries": t.retries, "error": t.error} for t in record.tasks]
    return out


def event_json(event: Event) -> dict[str, Any]:
    return event.model_dump(mode="json")


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
