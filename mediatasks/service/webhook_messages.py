"""Webhook messages, pure: the models of a subscription, a delivery and its attempts; events
mapped to messages (with the progress throttle); payloads, signatures and the retry backoff.

``mediatasks.service.webhooks`` relays the event log through these and keeps the books.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field
from standardwebhooks import Webhook

from mediatasks.errors import InvalidOptions
from mediatasks.service.lifecycle import TERMINAL, batch_status
from mediatasks.service.progress import Progress
from mediatasks.service.records import Event, JobRecord

Outcome = Literal["delivered", "http_error", "timeout", "connection_error"]
BACKOFF_MAX = 3600.0

_TYPES = {"job.queued": "job.queued", "job.encoding": "job.started",
          "job.awaiting_approval": "job.awaiting_approval", "job.succeeded": "job.succeeded",
          "job.kept": "job.succeeded", "job.failed": "job.failed",
          "job.cancelled": "job.cancelled", "job.rejected": "job.cancelled"}
PROGRESS_EVENTS = {"job.planned", "chunk.progress", "chunk.finished"}
# The summary of a job's end that a receiver may want (job.succeeded's event data).
_SUMMARY = ("frames_in", "frames_out", "duration", "size_in", "size_out", "bitrate", "saved_percent",
            "encode_fps", "chunks", "chunks_reused", "warnings", "outcome", "note")


class RelayState(Progress):
    """What a relay keeps of the events it has read, so that the next one reads only those
    after the cursor: of a job, its progress; of a batch, each job's last state."""

    jobs: dict[str, str] = Field(default_factory=dict)


class Subscription(BaseModel):
    """Where the webhooks of a job or a batch go, and how far its relay has read the log
    (``state``: None for one made before the relay kept it, rebuilt from the log once)."""

    model_config = ConfigDict(frozen=True)

    key: str
    url: str
    secret: str
    key_id: str | None = None
    cursor: int = 0
    progress_pct: int | None = None
    progress_at: datetime | None = None
    state: RelayState | None = None
    created_at: datetime


class Attempt(BaseModel):
    """One try to deliver a message."""

    model_config = ConfigDict(frozen=True)

    n: int
    at: datetime
    status_code: int | None = None
    latency_ms: float
    error: str | None = None
    outcome: Outcome


class Delivery(BaseModel):
    """One webhook message to one URL; ``id`` is its Standard Webhooks message id."""

    model_config = ConfigDict(frozen=True)

    id: str
    key: str
    job_id: str | None
    type: str
    url: str
    payload: str
    status: Literal["pending", "delivered", "failed"] = "pending"
    attempts: int = 0
    created_at: datetime
    last_attempt_at: datetime | None = None
    next_attempt_at: datetime | None = None
    history: tuple[Attempt, ...] = ()

def check_url(url: str) -> str:
    """The URL, if webhooks can be sent to it.

    Raises:
        InvalidOptions: not an http or https URL with a host.
    """
    parts = urlsplit(url.strip())
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise InvalidOptions(f"webhook URL '{url}' is not an http:// or https:// URL",
                             hint="give a URL such as https://example.com/hooks")
    return url.strip()


def check_secret(secret: str | None, *, setting: str = "MEDIATASKS_WEBHOOK_SECRET") -> str:
    """The signing secret, if it is one ("whsec_" and base64).

    Raises:
        InvalidOptions: missing, empty or not base64 (naming ``setting`` and how to make one).
    """
    how = (f"set {setting} to 'whsec_' followed by base64 of 24 to 64 random bytes, e.g. "
           "\"whsec_$(openssl rand -base64 32)\"")
    if not secret:
        raise InvalidOptions(f"webhooks need a signing secret and {setting} is not set", hint=how)
    try:
        Webhook(secret)
    except Exception:
        raise InvalidOptions(f"{setting} is not a webhook secret", hint=how) from None
    return secret


def message_id(key: str, seq: int, kind: str) -> str:
    """The Standard Webhooks message id of the message ``kind`` made from event ``seq`` of
    ``key``: the same however many relays read it, on every retry and on replay."""
    return "msg_" + hashlib.sha256(f"{key}.{seq}.{kind}".encode()).hexdigest()[:32]


def payload(kind: str, at: datetime, data: dict[str, Any]) -> str:
    """The message body, in the Standard Webhooks shape."""
    return json.dumps({"type": kind, "timestamp": at.astimezone(UTC).isoformat(), "data": data},
                      default=str, separators=(",", ":"))


def sign(delivery: Delivery, secret: str, now: datetime) -> dict[str, str]:
    """The headers of one attempt: webhook-id (the same on every attempt), webhook-timestamp and
    webhook-signature (made now, so a receiver's replay window holds for a retry)."""
    timestamp = now.astimezone(UTC)
    signature = Webhook(secret).sign(delivery.id, timestamp, delivery.payload)
    return {"webhook-id": delivery.id, "webhook-timestamp": str(math.floor(timestamp.timestamp())),
            "webhook-signature": signature, "content-type": "application/json"}


def backoff(attempts: int, *, base: float, cap: float = BACKOFF_MAX) -> float:
    """Seconds to wait after ``attempts`` failed attempts: base, 2·base, 4·base … at most cap."""
    return float(min(cap, base * 2 ** max(0, attempts - 1)))


def next_status(outcome: Outcome, *, attempts: int, now: datetime, until: datetime, base: float,
                cap: float = BACKOFF_MAX) -> tuple[str, float | None]:
    """After attempt number ``attempts`` ended in ``outcome``: the delivery's status and the
    delay before the next attempt (None: no more)."""
    if outcome == "delivered":
        return "delivered", None
    delay = backoff(attempts, base=base, cap=cap)
    if now + timedelta(seconds=delay) > until:
        return "failed", None
    return "pending", delay


def progress_due(pct: int, at: datetime, *, last_pct: int | None, last_at: datetime | None,
                 step: int, every: float) -> bool:
    """Whether a job.progress goes out: the percent reached the next multiple of ``step`` past
    the last one sent, or it moved and ``every`` seconds passed since the last one."""
    if last_pct is None:
        return pct >= step or (pct > 0 and last_at is not None
                               and (at - last_at).total_seconds() >= every)
    if pct >= (last_pct // step + 1) * step:
        return True
    return pct > last_pct and last_at is not None and (at - last_at).total_seconds() >= every


def job_data(record: JobRecord | None, event: Event, status: str,
             progress: RelayState) -> dict[str, Any]:
    """What every job message says, and what its event adds."""
    data: dict[str, Any] = {
        "job_id": event.job_id, "batch_id": event.batch_id, "status": status,
        "input": record.input if record else None, "output": record.output if record else None,
        "progress": progress.percent, "frames": progress.frames,
        "frames_done": progress.done if progress.frames else None,
        "error": event.data.get("error")}
    if "attempt" in event.data:
        data["attempt"] = event.data["attempt"]
    if event.type == "job.awaiting_approval":
        data.update({k: event.data.get(k) for k in ("chunks", "queue", "warnings")})
    if event.type in {"job.succeeded", "job.kept"}:
        data.update({k: event.data[k] for k in _SUMMARY if k in event.data})
        data["output"] = event.data.get("output") or data["output"]
        data["frames"] = data["frames"] or event.data.get("frames_in")
        data["progress"] = 100
    return data


def map_job_events(sub: Subscription, events: Iterable[Event], record: JobRecord | None, *,
                   step: int, every: float, state: RelayState | None = None
                   ) -> tuple[list[Delivery], int | None, datetime | None]:
    """The messages a job's subscription sends for the events after its cursor, and the percent
    and time of the last job.progress sent. ``state`` (fed in place) is what the events before
    ``events`` left; without it ``events`` start at the job's first one. Events up to the cursor
    only build up the progress."""
    progress = RelayState() if state is None else state
    last_pct, last_at = sub.progress_pct, sub.progress_at
    out: list[Delivery] = []
    for event in events:
        moved = progress.feed(event)
        if event.seq <= sub.cursor:
            continue
        if event.type == "job.queued":  # a new attempt starts its progress afresh
            last_pct, last_at = None, event.at
        kind = _TYPES.get(event.type)
        if kind is not None:
            status = event.type.removeprefix("job.")
            out.append(_delivery(sub, event, kind, job_data(record, event, status, progress)))
            continue
        pct = progress.percent
        if moved and event.type != "job.planned" and pct is not None and progress_due(
                pct, event.at, last_pct=last_pct, last_at=last_at, step=step, every=every):
            last_pct, last_at = pct, event.at
            out.append(_delivery(sub, event, "job.progress",
                                 job_data(record, event, "encoding", progress)))
    return out, last_pct, last_at


def map_batch_events(sub: Subscription, events: Iterable[Event], jobs: Sequence[JobRecord], *,
                     state: RelayState | None = None) -> list[Delivery]:
    """batch.finished each time the last job of the batch ends (by the log: two jobs that end at
    once still make one message). ``state`` (fed in place) holds each job's state as the events
    before ``events`` left it; without it ``events`` start at the batch's first one. ``jobs`` may
    be empty when no event after the cursor ends a job."""
    states = (RelayState() if state is None else state).jobs
    members = {r.job_id: r for r in jobs}
    out = []
    for event in events:
        if not event.type.startswith("job.") or event.type in PROGRESS_EVENTS:
            continue
        before = _all_ended(members, states)
        states[event.job_id] = event.type.removeprefix("job.")
        if event.seq > sub.cursor and event.ends_job and not before and _all_ended(members, states):
            overall = batch_status(states[j] for j in members)
            data = {"batch_id": sub.key, "status": overall, "jobs": [
                {"job_id": j, "status": states[j], "input": r.input, "output": r.output,
                 "error": r.error if states[j] == r.status else None}
                for j, r in members.items()]}
            out.append(_delivery(sub, event, "batch.finished", data))
    return out


def _all_ended(members: dict[str, JobRecord], states: dict[str, str]) -> bool:
    return bool(members) and all(states.get(j) in TERMINAL for j in members)


def _delivery(sub: Subscription, event: Event, kind: str, data: dict[str, Any]) -> Delivery:
    return Delivery(id=message_id(sub.key, event.seq, kind), key=sub.key,
                    job_id=event.job_id if kind != "batch.finished" else None, type=kind,
                    url=sub.url, payload=payload(kind, event.at, data), created_at=event.at,
                    next_attempt_at=event.at)

