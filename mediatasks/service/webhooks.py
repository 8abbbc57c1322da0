"""Signed webhooks for job events: a relay over the event log (an outbox).

Each subscription (a job id or a batch id) keeps ``cursor``, the last event seq it relayed.
``relay`` reads the log after the cursor, maps the events to webhook messages, and in one
transaction writes the deliveries and moves the cursor on by compare-and-set, so two processes
relaying at once never write a message twice. The deliveries are then sent by a task each
(``DeliverySender``); every attempt is recorded, and a failed one is tried again with exponential
backoff until ``retry_for`` seconds have passed. The job never waits for any of it.

    job.queued              job.queued (every attempt)
    job.encoding            job.started: the encodes began (after probe and plan, or approval)
    chunk.* / job.planned   job.progress: percent of the planned frames, each ``progress_step``
                            percent or after ``progress_every`` seconds
    job.awaiting_approval   job.awaiting_approval
    job.succeeded, kept     job.succeeded (``data.status`` says which)
    job.failed              job.failed
    job.cancelled, rejected job.cancelled (``data.status`` says which)
    a batch's jobs ended    batch.finished, once each time the last of them ends
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict
from standardwebhooks import Webhook

from mediatasks.errors import InvalidOptions
from mediatasks.service.lifecycle import TERMINAL, batch_status
from mediatasks.service.ports import JobStore
from mediatasks.service.reads import JobNotFound
from mediatasks.service.records import Event, JobRecord

log = logging.getLogger(__name__)

Outcome = Literal["delivered", "http_error", "timeout", "connection_error"]
# A pending delivery whose next attempt is this far past was lost (a worker died with its
# message, a broker that forgot it): the upkeep sends it again.
LOST_AFTER = 300.0
BACKOFF_MAX = 3600.0

_TYPES = {"job.queued": "job.queued", "job.encoding": "job.started",
          "job.awaiting_approval": "job.awaiting_approval", "job.succeeded": "job.succeeded",
          "job.kept": "job.succeeded", "job.failed": "job.failed",
          "job.cancelled": "job.cancelled", "job.rejected": "job.cancelled"}
_PROGRESS = {"job.planned", "chunk.progress", "chunk.finished"}
# The summary of a job's end that a receiver may want (job.succeeded's event data).
_SUMMARY = ("frames_in", "frames_out", "duration", "size_in", "size_out", "bitrate", "saved_percent",
            "encode_fps", "chunks", "chunks_reused", "warnings", "outcome", "note")


class Subscription(BaseModel):
    """Where the webhooks of a job or a batch go, and how far its relay has read the log."""

    model_config = ConfigDict(frozen=True)

    key: str
    url: str
    secret: str
    key_id: str | None = None
    cursor: int = 0
    progress_pct: int | None = None
    progress_at: datetime | None = None
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


class WebhookStore(Protocol):
    """Subscriptions, deliveries and attempts, durably."""

    def subscribe(self, subscription: Subscription) -> None:
        """Add the subscription, or give an existing one this URL and secret (its cursor stays)."""
        ...

    def subscription(self, key: str) -> Subscription | None: ...

    def advance(self, key: str, *, cursor_was: int, cursor: int, progress_pct: int | None,
                progress_at: datetime | None, deliveries: Sequence[Delivery]) -> bool:
        """Move the cursor from ``cursor_was`` on and add the deliveries, in one transaction;
        False (and nothing written) when another relay moved it first."""
        ...

    def lagging(self, limit: int = 1000) -> list[Subscription]:
        """Subscriptions with events after their cursor."""
        ...

    def delivery(self, delivery_id: str) -> Delivery | None:
        """The delivery with its attempts."""
        ...

    def deliveries(self, key: str) -> list[Delivery]:
        """The deliveries of a job or batch id, oldest first, with their attempts."""
        ...

    def record_attempt(self, delivery_id: str, attempt: Attempt, *, status: str,
                       next_attempt_at: datetime | None) -> None:
        """Append the attempt and set the delivery's status and next attempt, in one
        transaction."""
        ...

    def reopen(self, delivery_id: str, *, next_attempt_at: datetime) -> None:
        """Make the delivery pending again (a replay)."""
        ...

    def due(self, before: datetime, limit: int = 1000) -> list[Delivery]:
        """Pending deliveries whose next attempt is before ``before``."""
        ...


class DeliverySender(Protocol):
    """Hands a delivery to whatever makes the HTTP request (a Celery task on the io queue)."""

    def send(self, delivery_id: str, *, attempt: int, delay: float = 0.0,
             until: datetime | None = None) -> None:
        """Try the delivery after ``delay`` seconds, as attempt number ``attempt + 1`` (it is
        dropped when the delivery has had other attempts since); retry until ``until``."""
        ...


# -- pure parts ---------------------------------------------------------------------------------


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


@dataclass
class _Progress:
    """Frames done of a job's current attempt, from its events."""

    total: int | None = None
    chunks: dict[int, int] = field(default_factory=dict)

    def feed(self, event: Event) -> bool:
        """Take the event in; True when it may change the percent."""
        if event.type == "job.queued":
            self.total, self.chunks = None, {}
        elif event.type == "job.planned":
            self.total, self.chunks = int(event.data.get("frames") or 0), {}
        elif event.type in {"chunk.progress", "chunk.finished"}:
            index = int(event.data.get("index", -1))
            self.chunks[index] = max(self.chunks.get(index, 0), int(event.data.get("frames") or 0))
        else:
            return False
        return event.type != "job.queued"

    @property
    def done(self) -> int:
        return sum(self.chunks.values())

    @property
    def percent(self) -> int | None:
        if not self.total:
            return None
        return min(100, math.floor(100 * self.done / self.total))


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
             progress: _Progress) -> dict[str, Any]:
    """What every job message says, and what its event adds."""
    data: dict[str, Any] = {
        "job_id": event.job_id, "batch_id": event.batch_id, "status": status,
        "input": record.input if record else None, "output": record.output if record else None,
        "progress": progress.percent, "frames": progress.total,
        "frames_done": progress.done if progress.total else None,
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
                   step: int, every: float) -> tuple[list[Delivery], int | None, datetime | None]:
    """The messages a job's subscription sends for the events after its cursor (``events`` may
    start earlier: those only build up the progress), and its new progress state."""
    progress = _Progress()
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


def map_batch_events(sub: Subscription, events: Iterable[Event],
                     jobs: Sequence[JobRecord]) -> list[Delivery]:
    """batch.finished each time the last job of the batch ends (by the log: two jobs that end at
    once still make one message)."""
    states: dict[str, str] = {}
    members = {r.job_id: r for r in jobs}
    out = []
    for event in events:
        if not event.type.startswith("job.") or event.type in _PROGRESS:
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


def _now() -> datetime:
    return datetime.now(UTC)


# -- the service --------------------------------------------------------------------------------


class Webhooks:
    """Subscriptions, the relay from the event log, delivery bookkeeping and replay; also the job
    service's ``Notifier``."""

    def __init__(self, store: WebhookStore, jobs: JobStore, *, sender: DeliverySender | None = None,
                 progress_step: int = 10, progress_every: float = 30.0,
                 retry_for: float = 86400.0, backoff: float = 10.0, backoff_max: float = BACKOFF_MAX,
                 clock: Callable[[], datetime] = _now):
        self.store = store
        self.jobs = jobs
        self.sender = sender
        self.progress_step = progress_step
        self.progress_every = progress_every
        self.retry_for = retry_for
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.clock = clock

    # -- what adapters call ------------------------------------------------------------------

    def subscribe(self, key: str, url: str, secret: str, key_id: str | None = None) -> None:
        """Send the webhooks of the job or batch ``key`` (events from now on) to ``url``, signed
        with ``secret``. Call it before ``submit`` so that job.queued goes out too.

        Raises:
            InvalidOptions: the URL or the secret cannot be used.
        """
        check_url(url)
        check_secret(secret)
        seen = self.jobs.events(key)
        self.store.subscribe(Subscription(key=key, url=url.strip(), secret=secret, key_id=key_id,
                                          cursor=seen[-1].seq if seen else 0,
                                          created_at=self.clock()))

    def deliveries(self, key: str) -> list[Delivery]:
        """The deliveries of a job (or batch), oldest first, each with its attempts.

        Raises:
            JobNotFound: no such job or batch, and nothing was delivered for it.
        """
        found = self.store.deliveries(key)
        if not found and self.jobs.get(key) is None and not self.jobs.jobs_in_batch(key):
            raise JobNotFound(f"no job or batch {key}", hint="see 'mediatasks jobs list'")
        return found

    def delivery(self, delivery_id: str) -> Delivery:
        found = self.store.delivery(delivery_id)
        if found is None:
            raise JobNotFound(f"no webhook delivery {delivery_id}",
                              hint="see 'mediatasks webhooks list JOB'")
        return found

    def replay(self, delivery_id: str) -> Delivery:
        """Send the delivery again (same message id; its new attempts are appended), retried
        for ``retry_for`` seconds from now.

        Raises:
            InvalidOptions: no such delivery, or nothing to send it with.
        """
        found = self.delivery(delivery_id)
        if self.sender is None:
            raise InvalidOptions("webhooks cannot be sent from here",
                                 hint="replay through the shared cluster (MEDIATASKS_BROKER_URL)")
        now = self.clock()
        self.store.reopen(delivery_id, next_attempt_at=now)
        self.sender.send(delivery_id, attempt=found.attempts,
                         until=now + timedelta(seconds=self.retry_for))
        return self.delivery(delivery_id)

    def notify(self, event: Event) -> None:
        """The job service's notifier: relay the event's job (and, when a job ends, its batch)
        and send what that made. Never raises: webhooks never fail a job."""
        keys = [event.job_id] + ([event.batch_id] if event.batch_id and event.ends_job else [])
        for key in keys:
            try:
                self._send(self.relay(key))
            except Exception:
                log.exception("webhooks of %s not relayed (the upkeep tries again)", key)

    def catch_up(self) -> list[Delivery]:
        """The upkeep: relay subscriptions whose cursor lags (a process died between writing an
        event and relaying it) and send again deliveries whose message was lost. Returns what
        was sent."""
        sent: list[Delivery] = []
        for sub in self.store.lagging():
            try:
                fresh = self.relay(sub.key)
            except Exception:
                log.exception("webhooks of %s not relayed", sub.key)
                continue
            self._send(fresh)
            sent.extend(fresh)
        lost = self.store.due(self.clock() - timedelta(seconds=LOST_AFTER))
        self._send(lost)
        return sent + lost

    # -- the relay ---------------------------------------------------------------------------

    def relay(self, key: str) -> list[Delivery]:
        """Write the deliveries for the events of ``key`` after its cursor; returns them (empty
        without a subscription: one lookup)."""
        for _ in range(10):
            sub = self.store.subscription(key)
            if sub is None:
                return []
            fresh = self.jobs.events(key, after=sub.cursor)
            if not fresh:
                return []
            pct, at = sub.progress_pct, sub.progress_at
            if self.jobs.get(key) is not None:
                context = fresh
                if any(e.type in _PROGRESS for e in fresh):
                    context = self.jobs.events(key, after=0, limit=10**7)
                    context = [e for e in context if e.seq <= fresh[-1].seq]
                made, pct, at = map_job_events(sub, context, self.jobs.get(key),
                                               step=self.progress_step, every=self.progress_every)
            elif any(e.ends_job for e in fresh):
                every = [e for e in self.jobs.events(key, after=0, limit=10**7)
                         if e.seq <= fresh[-1].seq]
                made = map_batch_events(sub, every, self.jobs.jobs_in_batch(key))
            else:
                made = []
            if self.store.advance(key, cursor_was=sub.cursor, cursor=fresh[-1].seq,
                                  progress_pct=pct, progress_at=at, deliveries=made):
                return made
        log.warning("webhooks of %s: the relay kept losing the race; the upkeep goes on", key)
        return []

    def _send(self, deliveries: Iterable[Delivery]) -> None:
        if self.sender is None:
            return
        for d in deliveries:
            try:
                self.sender.send(d.id, attempt=d.attempts)
            except Exception as exc:  # stays pending: the upkeep sends it again
                log.warning("webhook %s not sent now (%s); the upkeep sends it later", d.id, exc)

    # -- attempts ----------------------------------------------------------------------------

    def prepare(self, delivery_id: str, attempt: int) -> tuple[Delivery, dict[str, str]] | None:
        """The delivery and the signed headers of attempt ``attempt + 1``; None when it has had
        another attempt since this one was sent, or is no longer pending."""
        found = self.store.delivery(delivery_id)
        if found is None or found.status != "pending" or found.attempts != attempt:
            return None
        sub = self.store.subscription(found.key)
        if sub is None:
            return None
        return found, sign(found, sub.secret, self.clock())

    def attempted(self, delivery: Delivery, *, outcome: Outcome, latency_ms: float,
                  status_code: int | None = None, error: str | None = None,
                  until: datetime | None = None) -> float | None:
        """Record an attempt; returns the delay before the next one (None: delivered, or failed
        for good once ``until`` — by default ``retry_for`` after the delivery was made — is
        reached), and sends it."""
        now = self.clock()
        n = delivery.attempts + 1
        deadline = until or delivery.created_at + timedelta(seconds=self.retry_for)
        status, delay = next_status(outcome, attempts=n, now=now, until=deadline,
                                    base=self.backoff, cap=self.backoff_max)
        self.store.record_attempt(
            delivery.id, Attempt(n=n, at=now, status_code=status_code,
                                 latency_ms=round(latency_ms, 1), error=error, outcome=outcome),
            status=status, next_attempt_at=now + timedelta(seconds=delay) if delay else None)
        if delay is not None and self.sender is not None:
            try:
                self.sender.send(delivery.id, attempt=n, delay=delay, until=deadline)
            except Exception as exc:  # stays pending: the upkeep sends it again
                log.warning("webhook %s: next attempt not sent (%s); the upkeep sends it later",
                            delivery.id, exc)
        return delay
