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

import logging
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Protocol

from mediatasks.errors import InvalidOptions
from mediatasks.service.ports import JobStore
from mediatasks.service.reads import JobNotFound
from mediatasks.service.records import Event
from mediatasks.service.webhook_messages import (
    BACKOFF_MAX,
    Attempt,
    Delivery,
    Outcome,
    RelayState,
    Subscription,
    check_secret,
    check_url,
    map_batch_events,
    map_job_events,
    next_status,
    sign,
)

log = logging.getLogger(__name__)

# A pending delivery whose next attempt is this far past was lost (a worker died with its
# message, a broker that forgot it): the upkeep sends it again.
LOST_AFTER = 300.0


class WebhookStore(Protocol):
    """Subscriptions, deliveries and attempts, durably."""

    def subscribe(self, subscription: Subscription) -> None:
        """Add the subscription, or give an existing one this URL and secret (its cursor stays)."""
        ...

    def subscription(self, key: str) -> Subscription | None: ...

    def advance(self, key: str, *, cursor_was: int, cursor: int, progress_pct: int | None,
                progress_at: datetime | None, state: RelayState,
                deliveries: Sequence[Delivery]) -> bool:
        """Move the cursor from ``cursor_was`` on, store the relay's state and add the
        deliveries, in one transaction; False (and nothing written) when another relay moved
        it first."""
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

    def prune_deliveries(self, *, before: datetime) -> tuple[int, int]:
        """Remove the deliveries delivered or failed that were made and last tried before
        ``before``, with their attempts (never a pending one); returns how many of each."""
        ...

    def prune_subscriptions(self, *, ended_before: datetime) -> int:
        """Remove the subscriptions that have no delivery left and whose job, or every job of
        whose batch, ended before ``ended_before`` (or, made before it, that name no job or
        batch at all); returns how many."""
        ...


class DeliverySender(Protocol):
    """Hands a delivery to whatever makes the HTTP request (a Celery task on the io queue)."""

    def send(self, delivery_id: str, *, attempt: int, delay: float = 0.0,
             until: datetime | None = None) -> None:
        """Try the delivery after ``delay`` seconds, as attempt number ``attempt + 1`` (it is
        dropped when the delivery has had other attempts since); retry until ``until``."""
        ...


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
        seen = self.jobs.events(key, limit=10**7)
        # Subscribed late: the first relay builds the state from the log (state None).
        self.store.subscribe(Subscription(key=key, url=url.strip(), secret=secret, key_id=key_id,
                                          cursor=seen[-1].seq if seen else 0,
                                          state=None if seen else RelayState(),
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
            # Only the events after the cursor are read: the state holds what the earlier
            # ones left. A subscription made before it was kept rebuilds it from the log once.
            state = sub.state.model_copy(deep=True) if sub.state is not None else RelayState()
            events = fresh
            if sub.state is None and sub.cursor > 0:
                events = [e for e in self.jobs.events(key, after=0, limit=10**7)
                          if e.seq <= fresh[-1].seq]
            record = self.jobs.get(key)
            if record is not None:
                made, pct, at = map_job_events(sub, events, record, step=self.progress_step,
                                               every=self.progress_every, state=state)
            else:
                members = (self.jobs.jobs_in_batch(key) if any(e.ends_job for e in fresh)
                           else [])
                made = map_batch_events(sub, events, members, state=state)
            if self.store.advance(key, cursor_was=sub.cursor, cursor=fresh[-1].seq,
                                  progress_pct=pct, progress_at=at, state=state,
                                  deliveries=made):
                return made
        log.warning("webhooks of %s: the relay kept losing the race; the upkeep goes on", key)
        return []

    def expire(self, older_than: float) -> tuple[int, int, int]:
        """The upkeep: remove deliveries delivered or failed ``older_than`` seconds ago with
        their attempts, then the subscriptions of jobs and batches that ended that long ago.
        Returns (deliveries, attempts, subscriptions) removed."""
        before = self.clock() - timedelta(seconds=older_than)
        deliveries, attempts = self.store.prune_deliveries(before=before)
        return deliveries, attempts, self.store.prune_subscriptions(ended_before=before)

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
