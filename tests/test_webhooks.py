"""Signed webhooks: the relay over the event log (in memory and in SQLite), throttled progress,
payloads and signatures, the backoff schedule, replay and catching up; then on a real cluster
(redis-server, `celery worker` processes) with a real receiver that checks every signature."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port, job_service, submit
from standardwebhooks import Webhook, WebhookVerificationError

from mediatasks.errors import InvalidOptions
from mediatasks.models import EncodeOptions, JobResult, JobSpec
from mediatasks.service import JobService
from mediatasks.service.memory import (
    MemoryDispatcher,
    MemoryKeyValue,
    MemorySender,
    MemoryStore,
    MemoryWebhookStore,
)
from mediatasks.service.records import Event
from mediatasks.service.webhook_messages import (
    Delivery,
    Subscription,
    backoff,
    check_secret,
    check_url,
    map_job_events,
    next_status,
    progress_due,
    sign,
)
from mediatasks.service.webhooks import LOST_AFTER, Webhooks

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
MEDIATASKS = str(Path(sys.executable).with_name("mediatasks"))


class Parts:
    def __init__(self, kind: str, tmp: Path):
        self.sender = MemorySender()
        if kind == "memory":
            self.store: Any = MemoryStore()
            self.hooks_store: Any = MemoryWebhookStore(self.store)
        else:
            from mediatasks.history import History
            from mediatasks.history.webhooks import SqlWebhookStore

            self.store = History(f"sqlite:///{tmp / 'h.sqlite'}")
            self.hooks_store = SqlWebhookStore(self.store.engine)
        self.hooks = Webhooks(self.hooks_store, self.store, sender=self.sender, progress_step=10,
                              progress_every=30, backoff=10)
        self.service = JobService(self.store, kv=MemoryKeyValue(), dispatcher=MemoryDispatcher(),
                                  notifier=self.hooks)

    def types(self, key: str) -> list[str]:
        return [d.type for d in self.hooks.deliveries(key)]

    def data(self, key: str) -> list[dict[str, Any]]:
        return [json.loads(d.payload) for d in self.hooks.deliveries(key)]


@pytest.fixture(params=["memory", "sqlite"])
def parts(request: pytest.FixtureRequest, tmp_path: Path) -> Parts:
    return Parts(request.param, tmp_path)


def spec(job_id: str = "a" * 32, **kw: Any) -> JobSpec:
    return JobSpec(job_id=job_id, input="/in.mkv", output=f"/out-{job_id}.mkv",
                   options=EncodeOptions(video_codec="libx264"), **kw)


def run_to_end(p: Parts, s: JobSpec, progress: list[tuple[int, int]], *, frames: int = 100,
               kept: bool = False) -> None:
    """Submit, plan (two chunks), encode with these (chunk, frames) reports, publish."""
    p.service.submit(s)
    p.service.step_started(s.job_id, "probe")
    p.service.planned(s, chunks=2, frames=frames, queue="cpu")
    p.service.step_started(s.job_id, "encode_chunk")
    for index, done in progress:
        p.service._last_progress.clear()  # the service's own 2 s throttle is not under test
        p.service.chunk_progress(s.job_id, index, frames=done, total=frames // 2, fps=10)
    for index in (0, 1):
        p.service.chunk_finished(s.job_id, index, frames=frames // 2, reused=False, seconds=1)
    for step in ("concat", "verify", "publish"):
        p.service.step_started(s.job_id, step)
    p.service.finished(JobResult(job_id=s.job_id, status="succeeded", output=s.output,
                                 input=s.input, frames_in=frames, frames_out=frames, chunks=2,
                                 outcome="kept-source" if kept else "published"))


# -- mapping, progress, payloads --------------------------------------------------------------


def test_a_job_sends_queued_started_progress_at_each_tenth_and_succeeded_in_order(
        parts: Parts) -> None:
    s = spec()
    parts.hooks.subscribe(s.job_id, "https://example.com/hook", SECRET)
    # Chunk 0 reaches 3, 5, 12 and 25 frames of 100 in all: 12 % and 25 % cross 10 and 20.
    run_to_end(parts, s, [(0, 3), (0, 5), (0, 12), (0, 25)])
    assert parts.types(s.job_id) == ["job.queued", "job.started", "job.progress", "job.progress",
                                     "job.progress", "job.progress", "job.succeeded"]
    data = parts.data(s.job_id)
    assert [d["data"]["progress"] for d in data[2:6]] == [12, 25, 50, 100]
    assert {d["data"]["job_id"] for d in data} == {s.job_id}
    end = data[-1]
    assert end["type"] == "job.succeeded" and end["data"]["status"] == "succeeded"
    assert end["data"]["input"] == "/in.mkv" and end["data"]["output"] == s.output
    assert end["data"]["frames"] == 100 and end["data"]["frames_out"] == 100
    assert datetime.fromisoformat(end["timestamp"]).tzinfo is not None
    # Every delivery went to the sender once, as its first attempt.
    assert [(i, a) for i, a, _, _ in parts.sender.sent] == [
        (d.id, 0) for d in parts.hooks.deliveries(s.job_id)]


def test_progress_goes_out_after_the_interval_only_when_the_percent_moved() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    assert not progress_due(3, t0, last_pct=None, last_at=t0, step=10, every=30)
    assert progress_due(3, t0 + timedelta(seconds=30), last_pct=None, last_at=t0, step=10, every=30)
    assert not progress_due(13, t0 + timedelta(seconds=5), last_pct=12, last_at=t0, step=10,
                            every=30)
    assert progress_due(20, t0 + timedelta(seconds=5), last_pct=12, last_at=t0, step=10, every=30)
    assert not progress_due(12, t0 + timedelta(seconds=99), last_pct=12, last_at=t0, step=10,
                            every=30)
    assert progress_due(13, t0 + timedelta(seconds=31), last_pct=12, last_at=t0, step=10, every=30)


def test_the_time_throttle_is_counted_from_the_events_own_times() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    job = "b" * 32

    def ev(seq: int, kind: str, seconds: float, **data: Any) -> Event:
        return Event(seq=seq, job_id=job, type=kind, at=t0 + timedelta(seconds=seconds), data=data)

    log = [ev(1, "job.queued", 0), ev(2, "job.planned", 1, frames=1000),
           ev(3, "job.encoding", 2), ev(4, "chunk.progress", 3, index=0, frames=10),
           ev(5, "chunk.progress", 20, index=0, frames=20), ev(6, "chunk.progress", 40, index=0,
                                                             frames=30),
           ev(7, "chunk.progress", 50, index=0, frames=35)]
    sub = Subscription(key=job, url="http://r/", secret=SECRET, created_at=t0)
    made, pct, at = map_job_events(sub, log, None, step=10, every=30)
    assert [json.loads(d.payload)["data"]["progress"] for d in made if d.type == "job.progress"
            ] == [3]  # 40 s after queued, 3 %; at 50 s only 10 s had passed since
    assert (pct, at) == (3, t0 + timedelta(seconds=40))
    # Relayed from the cursor on, the same state carries over: nothing is sent twice.
    again, _, _ = map_job_events(sub.model_copy(update={"cursor": 6, "progress_pct": pct,
                                                        "progress_at": at}), log, None,
                                 step=10, every=30)
    assert again == []


def test_a_kept_source_is_a_success_and_a_rejected_job_a_cancellation_each_saying_which(
        parts: Parts) -> None:
    kept, held = spec("c" * 32), spec("d" * 32, hold=True)
    for s in (kept, held):
        parts.hooks.subscribe(s.job_id, "http://127.0.0.1:9/hook", SECRET)
    run_to_end(parts, kept, [], kept=True)
    assert parts.data(kept.job_id)[-1]["type"] == "job.succeeded"
    assert parts.data(kept.job_id)[-1]["data"]["status"] == "kept"
    parts.service.submit(held)
    parts.service.step_started(held.job_id, "probe")
    parts.service.planned(held, chunks=2, frames=100, queue="cpu")
    parts.service.reject(held.job_id)
    assert parts.types(held.job_id) == ["job.queued", "job.awaiting_approval", "job.cancelled"]
    end = parts.data(held.job_id)[-1]["data"]
    assert end["status"] == "rejected" and end["error"] == "rejected by the user"


def test_a_failed_job_says_why_and_a_retry_is_queued_again(parts: Parts) -> None:
    s = spec()
    parts.hooks.subscribe(s.job_id, "http://127.0.0.1:9/hook", SECRET)
    parts.service.submit(s)
    parts.service.step_started(s.job_id, "probe")
    parts.service.failed(s.job_id, "probe: no video stream")
    parts.service.retry(s.job_id)
    assert parts.types(s.job_id) == ["job.queued", "job.failed", "job.queued"]
    data = parts.data(s.job_id)
    assert data[1]["data"]["error"] == "probe: no video stream"
    assert data[2]["data"]["attempt"] == 1


def test_a_job_without_a_subscription_sends_nothing_and_a_late_subscription_only_what_follows(
        parts: Parts) -> None:
    s = spec()
    parts.service.submit(s)
    assert parts.hooks.deliveries(s.job_id) == [] and parts.sender.sent == []
    parts.hooks.subscribe(s.job_id, "http://127.0.0.1:9/hook", SECRET)
    parts.service.cancel(s.job_id)
    assert parts.types(s.job_id) == ["job.cancelled"]


def test_a_batch_finishes_once_when_its_last_job_ends_even_relayed_after_both_ended(
        parts: Parts) -> None:
    batch = "e" * 32
    one, two = spec("1" * 32, batch_id=batch), spec("2" * 32, batch_id=batch)
    parts.hooks.subscribe(batch, "http://127.0.0.1:9/hook", SECRET)
    hooks, parts.service.notifier = parts.service.notifier, None  # both end before any relay
    parts.service.submit(one)
    parts.service.submit(two)
    parts.service.cancel(one.job_id)
    parts.service.failed(two.job_id, "boom")
    parts.service.notifier = hooks
    assert parts.hooks.relay(batch)[0].type == "batch.finished"
    assert parts.hooks.relay(batch) == []
    assert parts.types(batch) == ["batch.finished"]
    finished = parts.data(batch)[0]["data"]
    assert finished["status"] == "failed"
    assert {j["job_id"]: j["status"] for j in finished["jobs"]} == {one.job_id: "cancelled",
                                                                   two.job_id: "failed"}
    # Relayed as each job ended: still once.
    other = "f" * 32
    three, four = spec("3" * 32, batch_id=other), spec("4" * 32, batch_id=other)
    parts.hooks.subscribe(other, "http://127.0.0.1:9/hook", SECRET)
    parts.service.submit(three)
    parts.service.submit(four)
    parts.service.cancel(three.job_id)
    assert parts.types(other) == []
    parts.service.cancel(four.job_id)
    assert parts.types(other) == ["batch.finished"]


def test_relays_racing_on_one_subscription_never_write_a_message_twice(parts: Parts) -> None:
    s = spec()
    parts.hooks.subscribe(s.job_id, "http://127.0.0.1:9/hook", SECRET)
    parts.service.notifier = None  # the events pile up, then eight relays start at once
    run_to_end(parts, s, [(0, 12), (0, 25), (1, 40)])
    start = threading.Barrier(8)
    made: list[Delivery] = []

    def relay() -> None:
        start.wait()
        made.extend(parts.hooks.relay(s.job_id))

    threads = [threading.Thread(target=relay) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stored = parts.hooks.deliveries(s.job_id)
    assert sorted(d.id for d in made) == sorted(d.id for d in stored)
    assert len({d.id for d in stored}) == len(stored)
    assert [d.type for d in stored][:2] == ["job.queued", "job.started"]
    assert [d.type for d in stored][-1] == "job.succeeded"


class CountingStore:
    """The job store as the relay sees it, counting the events each read hands out."""

    def __init__(self, store: Any):
        self.store = store
        self.reads: list[int] = []

    def events(self, key: str, *, after: int = 0, limit: int = 10000) -> list[Event]:
        found: list[Event] = self.store.events(key, after=after, limit=limit)
        self.reads.append(len(found))
        return found

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def test_a_relay_reads_only_the_events_after_its_cursor_and_sends_what_the_whole_log_says(
        parts: Parts) -> None:
    counting = CountingStore(parts.store)
    parts.hooks.jobs = counting
    s = spec()
    parts.hooks.subscribe(s.job_id, "http://127.0.0.1:9/hook", SECRET)
    run_to_end(parts, s, [(i % 2, i // 2) for i in range(2, 82)])
    log = parts.store.events(s.job_id, limit=10**7)
    assert len(log) >= 90
    # One relay per event, each reading that event alone: the log was read once in all.
    assert max(counting.reads) == 1 and sum(counting.reads) == len(log)
    # The messages are those a relay over the whole log makes.
    whole, _, _ = map_job_events(
        Subscription(key=s.job_id, url="http://127.0.0.1:9/hook", secret=SECRET,
                     created_at=log[0].at), log, parts.store.get(s.job_id), step=10, every=30)
    stored = parts.hooks.deliveries(s.job_id)
    assert [d.id for d in stored] == [d.id for d in whole]
    progress = [json.loads(d.payload)["data"] for d in stored if d.type == "job.progress"]
    assert [p["progress"] for p in progress] == [10, 20, 30, 40, 50, 60, 70, 80, 90, 100]
    assert progress[-1]["frames_done"] == 100


def test_a_subscription_without_relay_state_rebuilds_it_from_the_log_once(parts: Parts) -> None:
    s = spec()
    parts.hooks.subscribe(s.job_id, "http://127.0.0.1:9/hook", SECRET)
    parts.service.submit(s)
    parts.service.planned(s, chunks=2, frames=100, queue="cpu")
    parts.service.chunk_progress(s.job_id, 0, frames=35, total=50, fps=10)
    # As a subscription written before the state was kept (schema v7) reads back.
    if isinstance(parts.hooks_store, MemoryWebhookStore):
        sub = parts.hooks_store.subscriptions[s.job_id]
        parts.hooks_store.subscriptions[s.job_id] = sub.model_copy(update={"state": None})
    else:
        from mediatasks.history.schema import webhook_subscriptions

        with parts.store.engine.begin() as conn:
            conn.execute(webhook_subscriptions.update().values(state=None))
    parts.service._last_progress.clear()
    parts.service.chunk_progress(s.job_id, 1, frames=7, total=50, fps=10)
    last = parts.data(s.job_id)[-1]["data"]
    assert (last["progress"], last["frames_done"], last["frames"]) == (42, 42, 100)
    state = parts.hooks_store.subscription(s.job_id).state
    assert state is not None and state.chunks == {0: 35, 1: 7} and state.frames == 100


def test_a_broken_webhook_store_never_fails_a_job() -> None:
    store = MemoryStore()

    class Broken(MemoryWebhookStore):
        def subscription(self, key: str) -> Subscription | None:
            raise OSError("database is locked")

    hooks = Webhooks(Broken(store), store, sender=MemorySender())
    service = JobService(store, kv=MemoryKeyValue(), dispatcher=MemoryDispatcher(), notifier=hooks)
    s = spec()
    assert service.submit(s).status == "queued"
    service.cancel(s.job_id)
    assert service.get(s.job_id).status == "cancelled"


# -- signing, attempts, backoff, replay, catching up ------------------------------------------


def test_the_signature_verifies_with_standardwebhooks_and_not_with_another_secret(
        parts: Parts) -> None:
    s = spec()
    parts.hooks.subscribe(s.job_id, "http://127.0.0.1:9/hook", SECRET)
    parts.service.submit(s)
    delivery = parts.hooks.deliveries(s.job_id)[0]
    headers = sign(delivery, SECRET, datetime.now(UTC))
    assert headers["webhook-id"] == delivery.id
    body = Webhook(SECRET).verify(delivery.payload, headers)
    assert body["type"] == "job.queued" and body["data"]["job_id"] == s.job_id
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + "QUJD" * 8).verify(delivery.payload, headers)
    with pytest.raises(WebhookVerificationError):  # an old timestamp is refused by receivers
        Webhook(SECRET).verify(delivery.payload, sign(delivery, SECRET,
                                                      datetime.now(UTC) - timedelta(hours=1)))


def test_backoff_doubles_from_its_base_up_to_its_cap() -> None:
    assert [backoff(n, base=10) for n in range(1, 6)] == [10, 20, 40, 80, 160]
    assert backoff(30, base=10) == 3600
    assert backoff(3, base=0.25, cap=0.6) == 0.6


def test_a_failed_attempt_is_retried_until_the_window_closes_then_the_delivery_fails() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    until = now + timedelta(seconds=100)
    assert next_status("delivered", attempts=1, now=now, until=until, base=10) == ("delivered",
                                                                                   None)
    assert next_status("http_error", attempts=1, now=now, until=until, base=10) == ("pending", 10)
    assert next_status("timeout", attempts=3, now=now, until=until, base=10) == ("pending", 40)
    assert next_status("timeout", attempts=4, now=now, until=until, base=10) == ("pending", 80)
    assert next_status("connection_error", attempts=5, now=now, until=until, base=10) == (
        "failed", None)


def test_500_twice_then_200_is_three_attempts_recorded_with_the_same_id(parts: Parts) -> None:
    s = spec()
    parts.hooks.subscribe(s.job_id, "http://127.0.0.1:9/hook", SECRET)
    parts.service.submit(s)
    first = parts.hooks.deliveries(s.job_id)[0]
    parts.sender.sent.clear()
    seen = []
    for code in (500, 500, 200):
        ready = parts.hooks.prepare(first.id, parts.hooks.delivery(first.id).attempts)
        assert ready is not None
        delivery, headers = ready
        seen.append(headers["webhook-id"])
        parts.hooks.attempted(delivery, outcome="delivered" if code == 200 else "http_error",
                              latency_ms=3.0, status_code=code,
                              error=None if code == 200 else "HTTP 500: boom")
    done = parts.hooks.delivery(first.id)
    assert seen == [first.id] * 3
    assert done.status == "delivered" and done.attempts == 3
    assert [(a.n, a.status_code, a.outcome) for a in done.history] == [
        (1, 500, "http_error"), (2, 500, "http_error"), (3, 200, "delivered")]
    assert [(a, d) for _, a, d, _ in parts.sender.sent] == [(1, 10), (2, 20)]
    # A copy of an attempt already made (a redelivered message) is dropped.
    assert parts.hooks.prepare(first.id, 1) is None


def test_a_delivery_past_its_window_fails_and_replay_sends_it_again_with_the_same_id(
        parts: Parts) -> None:
    s = spec()
    parts.hooks.subscribe(s.job_id, "http://127.0.0.1:9/hook", SECRET)
    parts.service.submit(s)
    first = parts.hooks.deliveries(s.job_id)[0]
    parts.hooks.attempted(first, outcome="connection_error", latency_ms=1, error="refused",
                          until=datetime.now(UTC) + timedelta(seconds=5))
    failed = parts.hooks.delivery(first.id)
    assert failed.status == "failed" and failed.next_attempt_at is None
    parts.sender.sent.clear()
    replayed = parts.hooks.replay(first.id)
    assert replayed.id == first.id and replayed.status == "pending"
    (sent_id, attempt, delay, until), = parts.sender.sent
    assert (sent_id, attempt, delay) == (first.id, 1, 0.0) and until is not None
    ready = parts.hooks.prepare(first.id, attempt)
    assert ready is not None and ready[1]["webhook-id"] == first.id
    parts.hooks.attempted(ready[0], outcome="delivered", latency_ms=2, status_code=204)
    assert [a.outcome for a in parts.hooks.delivery(first.id).history] == [
        "connection_error", "delivered"]
    with pytest.raises(InvalidOptions, match="no webhook delivery msg_nope"):
        parts.hooks.replay("msg_nope")


def test_the_upkeep_relays_what_was_missed_and_sends_lost_deliveries_again(parts: Parts) -> None:
    s = spec()
    parts.hooks.subscribe(s.job_id, "http://127.0.0.1:9/hook", SECRET)
    hooks, parts.service.notifier = parts.service.notifier, None  # a process died before relaying
    parts.service.submit(s)
    parts.service.notifier = hooks
    assert parts.hooks.deliveries(s.job_id) == []
    sent = parts.hooks.catch_up()
    assert [d.type for d in sent] == ["job.queued"]
    assert parts.hooks.catch_up() == []  # relayed, and not lost yet
    later = datetime.now(UTC) + timedelta(seconds=LOST_AFTER + 60)
    parts.hooks.clock = lambda: later
    parts.sender.sent.clear()
    assert [d.type for d in parts.hooks.catch_up()] == ["job.queued"]
    assert [(i, a) for i, a, _, _ in parts.sender.sent] == [(sent[0].id, 0)]


def test_expiry_removes_old_finished_deliveries_and_ended_subscriptions_never_a_pending_one(
        parts: Parts) -> None:
    ended, live, batch = spec("1" * 32), spec("2" * 32), "b" * 32
    in_batch = [spec("3" * 32, batch_id=batch), spec("4" * 32, batch_id=batch)]
    for key in (ended.job_id, live.job_id, batch, "9" * 32):  # the last names no job
        parts.hooks.subscribe(key, "http://127.0.0.1:9/hook", SECRET)
    for s in (ended, live, *in_batch):
        parts.service.submit(s)
    parts.service.cancel(ended.job_id)
    for s in in_batch:
        parts.service.failed(s.job_id, "broken")
    past = datetime.now(UTC) - timedelta(seconds=1)
    for d in parts.hooks.deliveries(ended.job_id):  # delivered after a 500 first
        parts.hooks.attempted(d, outcome="http_error", status_code=500, latency_ms=1)
        parts.hooks.attempted(parts.hooks.delivery(d.id), outcome="delivered", latency_ms=1)
    [finished] = parts.hooks.deliveries(batch)
    parts.hooks.attempted(finished, outcome="timeout", latency_ms=1, until=past)  # failed
    assert parts.hooks.delivery(finished.id).status == "failed"
    assert parts.hooks.expire(86400) == (0, 0, 0)  # nothing is a day old yet
    parts.hooks.clock = lambda: datetime.now(UTC) + timedelta(days=2)
    assert parts.hooks.expire(86400) == (3, 5, 3)
    # The live job's delivery was never tried: pending, it stays, and so does its subscription.
    assert [d.status for d in parts.hooks.deliveries(live.job_id)] == ["pending"]
    assert parts.hooks_store.subscription(live.job_id) is not None
    for gone in (ended.job_id, batch, "9" * 32):
        assert parts.hooks_store.subscription(gone) is None
    assert parts.hooks.deliveries(ended.job_id) == [] and parts.hooks.deliveries(batch) == []
    assert parts.hooks.expire(86400) == (0, 0, 0)
    # Once it was delivered it goes too, and the subscription of the job (still queued) stays.
    [pending] = parts.hooks.deliveries(live.job_id)
    later = datetime.now(UTC) + timedelta(days=3)
    parts.hooks.clock = lambda: later
    parts.hooks.attempted(pending, outcome="delivered", latency_ms=1)
    assert parts.hooks.expire(86400) == (0, 0, 0)  # tried just now
    parts.hooks.clock = lambda: later + timedelta(days=1, seconds=1)
    assert parts.hooks.expire(86400) == (1, 1, 0)
    assert parts.hooks_store.subscription(live.job_id) is not None


def test_urls_and_secrets_are_checked_with_one_line_that_names_the_fix() -> None:
    assert check_url("https://example.com/x") == "https://example.com/x"
    for bad in ("ftp://example.com/x", "example.com/x", "http://", "file:///etc/passwd"):
        with pytest.raises(InvalidOptions, match="is not an http:// or https:// URL"):
            check_url(bad)
    with pytest.raises(InvalidOptions, match=r"MEDIATASKS_WEBHOOK_SECRET is not set.*openssl"):
        check_secret(None)
    with pytest.raises(InvalidOptions, match="MEDIATASKS_WEBHOOK_SECRET is not a webhook secret"):
        check_secret("whsec_")
    assert check_secret(SECRET) == SECRET


def test_submit_refuses_a_webhook_url_without_a_secret_or_that_is_no_url(
        clips: dict[str, Path], tmp_path: Path) -> None:
    env = dict(os.environ, MEDIATASKS_DATABASE_URL=f"sqlite:///{tmp_path / 'h.sqlite'}")
    env.pop("MEDIATASKS_WEBHOOK_SECRET", None)
    args = [MEDIATASKS, "submit", str(clips["odd"]), "-o", str(tmp_path / "o.mkv")]
    done = subprocess.run([*args, "--webhook-url", "http://127.0.0.1:9/"], capture_output=True,
                          text=True, env=env)
    assert done.returncode == 2 and "MEDIATASKS_WEBHOOK_SECRET is not set" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    done = subprocess.run([*args, "--webhook-url", "gopher://x/"], capture_output=True, text=True,
                          env=dict(env, MEDIATASKS_WEBHOOK_SECRET=SECRET))
    assert done.returncode == 2 and "'gopher://x/' is not an http:// or https:// URL" in done.stderr


# -- on a real cluster -------------------------------------------------------------------------


class Receiver:
    """A webhook receiver on a free port that verifies every signature; ``/flaky`` answers 500
    to the first two attempts of each message, then 200."""

    def __init__(self, secret: str = SECRET) -> None:
        self.seen: list[tuple[str, str, dict[str, Any]]] = []  # (path, webhook-id, body)
        self.bad: list[str] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                try:
                    message = Webhook(secret).verify(body, dict(self.headers.items()))
                except WebhookVerificationError as exc:
                    receiver.bad.append(f"{self.path}: {exc}")
                    self.send_response(400)
                    self.end_headers()
                    return
                msg_id = self.headers["webhook-id"]
                with receiver.lock:
                    tries = sum(1 for _, i, _ in receiver.seen if i == msg_id)
                    receiver.seen.append((self.path, msg_id, message))
                self.send_response(500 if self.path == "/flaky" and tries < 2 else 200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def messages(self, path: str) -> list[dict[str, Any]]:
        return [m for p, _, m in self.seen if p == path]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    try:
        yield r
    finally:
        r.server.shutdown()
        r.server.server_close()


def wait_until(check: Any, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout:.0f}s")
        time.sleep(0.2)


def mt(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([MEDIATASKS, *args], capture_output=True, text=True, env=env,
                          timeout=120, stdin=subprocess.DEVNULL)


@pytest.mark.cluster
def test_a_real_receiver_gets_every_event_signed_retries_are_recorded_and_a_dead_one_harms_nothing(
        cluster: Any, clips: dict[str, Path], tmp_path: Path, redis_url: str,
        database_url: str, receiver: Receiver) -> None:
    env = dict(os.environ, MEDIATASKS_BROKER_URL=redis_url, MEDIATASKS_RESULT_BACKEND=redis_url,
               MEDIATASKS_DATABASE_URL=database_url, MEDIATASKS_WEBHOOK_SECRET=SECRET)
    # A job submitted with the CLI, its webhooks to a receiver that answers 200.
    sub = mt(env, "submit", str(clips["odd"]), "-o", str(tmp_path / "good.mkv"),
             "--chunk-seconds", "1", "--webhook-url", f"{receiver.url}/good", "--json")
    assert sub.returncode == 0, sub.stderr
    good = json.loads(sub.stdout)["job_id"]
    # Two through the service: one to a receiver that fails twice per message, one to a port
    # that nobody listens on.
    service = job_service(cluster)
    hooks = service.notifier
    flaky = submit(clips["odd"], tmp_path / "flaky.mkv", chunk_seconds=1.0)
    dead = submit(clips["odd"], tmp_path / "dead.mkv", chunk_seconds=1.0)
    hooks.subscribe(flaky.job_id, f"{receiver.url}/flaky", SECRET)
    hooks.subscribe(dead.job_id, f"http://127.0.0.1:{free_port()}/gone", SECRET)
    for s in (flaky, dead):
        service.submit(s)
    for job in (good, flaky.job_id, dead.job_id):
        for _ in service.follow(job):
            pass
        assert service.get(job).status == "succeeded", service.get(job).error

    def all_delivered(job: str) -> bool:
        ds = hooks.deliveries(job)
        return bool(ds) and ds[-1].type == "job.succeeded" and all(
            d.status == "delivered" for d in ds)

    wait_until(lambda: all_delivered(good), "every delivery to /good")
    assert receiver.bad == []
    # Two workers send at once: messages may arrive in any order; their timestamps order them.
    got = sorted(receiver.messages("/good"), key=lambda m: m["timestamp"])
    assert sorted(i for p, i, _ in receiver.seen if p == "/good") == sorted(
        d.id for d in hooks.deliveries(good))
    seen = [m["type"] for m in got]
    assert seen[:2] == ["job.queued", "job.started"] and seen[-1] == "job.succeeded"
    assert set(seen[2:-1]) == {"job.progress"} and len(seen) >= 4
    progress = [m["data"]["progress"] for m in got[2:-1]]
    assert progress == sorted(progress) and progress[-1] == 100
    assert got[-1]["data"]["frames_out"] == 75 and got[-1]["data"]["job_id"] == good

    # /flaky: every message took three attempts with one id, all recorded.
    wait_until(lambda: all_delivered(flaky.job_id), "every delivery to /flaky")
    listed = [json.loads(line) for line in mt(env, "webhooks", "list", flaky.job_id,
                                              "--json").stdout.splitlines()]
    assert [d["type"] for d in listed][:2] == ["job.queued", "job.started"]
    for d in listed:
        assert d["attempts"] == 3 and d["status"] == "delivered"
        assert [a["status_code"] for a in d["history"]] == [500, 500, 200]
        assert [i for _, i, _ in receiver.seen if i == d["id"]] == [d["id"]] * 3
    human = mt(env, "webhooks", "list", flaky.job_id).stdout
    assert "job.succeeded" in human and "3 attempt(s)" in human

    # The dead receiver: the job succeeded above while its messages are retried.
    wait_until(lambda: any(d.attempts >= 2 for d in hooks.deliveries(dead.job_id)),
               "a second attempt to the dead receiver")
    first = hooks.deliveries(dead.job_id)[0]
    assert first.status == "pending"
    assert {a.outcome for a in first.history} == {"connection_error"}

    # Replay: the same message again, its attempt appended.
    end = next(d for d in hooks.deliveries(good) if d.type == "job.succeeded")
    replayed = mt(env, "webhooks", "replay", end.id)
    assert replayed.returncode == 0, replayed.stderr
    wait_until(lambda: [i for _, i, _ in receiver.seen].count(end.id) == 2, "the replay")
    wait_until(lambda: hooks.delivery(end.id).attempts == 2, "the replay's attempt recorded")
    assert receiver.bad == []
    gone = mt(env, "webhooks", "replay", "msg_" + "0" * 32)
    assert gone.returncode == 2 and "no webhook delivery" in gone.stderr
