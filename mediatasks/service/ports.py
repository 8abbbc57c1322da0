"""What the service is given: storage, live state, dispatch and event delivery, as Protocols.

The real ones are the SQL history (``mediatasks.history``), the result backend's key-value store
and Celery (``mediatasks.cluster``); tests also give in-memory ones.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, Protocol

from mediatasks.fingerprint import KnownSource
from mediatasks.jobstate import KeyValue
from mediatasks.models import JobSpec
from mediatasks.service.records import ApiKey, Event, JobRecord


class JobStore(Protocol):
    """Durable jobs and their event log."""

    def create_job(self, spec: JobSpec, *, status: str, event: str,
                   data: dict[str, Any]) -> Event | None: ...

    def get(self, job_id: str) -> JobRecord | None: ...

    def list_jobs(self, *, statuses: Iterable[str] | None = None,
                  limit: int = 100) -> list[JobRecord]: ...

    def jobs_in_batch(self, batch_id: str) -> list[JobRecord]: ...

    def active_job_writing(self, output: str, *, other_than: str | None = None
                           ) -> JobRecord | None:
        """A job that has not ended and writes ``output`` (but ``other_than``), if one does:
        an indexed lookup, whatever the length of the queue."""
        ...

    def transition(self, job_id: str, *, current: str, new: str, event: str,
                   data: dict[str, Any], fields: dict[str, Any]) -> Event | None:
        """Move the job from ``current`` to ``new`` and append ``event``, in one transaction; None
        (and nothing written) when the job is no longer in ``current``."""
        ...

    def append_event(self, job_id: str, event: str, data: dict[str, Any],
                     fields: dict[str, Any] | None = None) -> Event:
        """Append an event that is no transition (and update ``fields`` of the job with it)."""
        ...

    def events(self, key: str, *, after: int = 0, limit: int = 10000) -> list[Event]:
        """Events of a job, or of every job of a batch, with ``seq`` above ``after``, in order."""
        ...

    def last_event_at(self, job_id: str) -> datetime | None: ...

    def prune_events(self, *, before: datetime, types: tuple[str, ...]) -> int:
        """Remove events of those types, of jobs that ended, written before ``before``."""
        ...


class Dispatcher(Protocol):
    """Sends a job's work to the workers, one phase at a time."""

    def analyse(self, spec: JobSpec, *, known: KnownSource | None = None) -> None:
        """Probe and plan the job; the plan step reports back with ``JobService.planned``.
        ``known``: the source as the submitter probed it (used while the file matches)."""
        ...

    def encode(self, spec: JobSpec, *, chunks: int, queue: str) -> None:
        """Encode the planned chunks and the audio, then join, mux, verify and publish."""
        ...

    def discard(self, spec: JobSpec) -> None:
        """Remove the job's work directory (a rejected job)."""
        ...

    def live_jobs(self) -> set[str] | None:
        """Jobs with a task running, reserved, waiting for a retry or queued; None when that
        cannot be known now (no worker answers, a broker whose queues cannot be read)."""
        ...


class Subscription(Protocol):
    def get(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for an event; True when one (or more) arrived."""
        ...

    def close(self) -> None: ...


class EventBus(Protocol):
    """Live delivery: followers wake up when an event is appended instead of polling."""

    def publish(self, event: Event) -> None: ...

    def subscribe(self, key: str) -> Subscription: ...


class Notifier(Protocol):
    """Told of every event after it is written (webhooks); must never raise nor block for long."""

    def notify(self, event: Event) -> None: ...


class KeyStore(Protocol):
    """The HTTP API's keys (only hashes of their secrets) and the Idempotency-Keys seen."""

    def add_key(self, key: ApiKey, *, secret_hash: str) -> None: ...

    def find_key(self, key_id: str) -> tuple[ApiKey, str] | None:
        """The key and the hash of its secret; None when there is no such key."""
        ...

    def list_keys(self) -> list[ApiKey]: ...

    def revoke_key(self, key_id: str, *, at: datetime) -> bool:
        """Mark the key revoked; False when there is no such key."""
        ...

    def touch_key(self, key_id: str, *, at: datetime) -> None:
        """Record that the key was used."""
        ...

    def claim_idempotency(self, key_id: str, idem_key: str, *, body_hash: str, job_id: str,
                          at: datetime, since: datetime) -> tuple[str, str] | None:
        """Record ``idem_key`` for ``job_id`` unless it is recorded since ``since`` already;
        then return that record's (body_hash, job_id). An older record is replaced."""
        ...

    def release_idempotency(self, key_id: str, idem_key: str, *, job_id: str) -> None:
        """Forget a claim whose job could not be created."""
        ...

    def keep_response(self, key_id: str, idem_key: str, *, job_id: str, response: str) -> None:
        """Keep the answer the claim of ``job_id`` (a batch id) gave, to give it again."""
        ...

    def kept_response(self, key_id: str, idem_key: str) -> str | None:
        """The answer kept for ``idem_key``; None when none is kept (yet)."""
        ...

    def prune_idempotency(self, *, before: datetime) -> int:
        """Remove the Idempotency-Keys recorded before ``before``; returns how many."""
        ...


__all__ = ["Dispatcher", "EventBus", "JobStore", "KeyStore", "KeyValue", "Notifier",
           "Subscription"]
