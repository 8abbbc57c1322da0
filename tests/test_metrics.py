"""`/metrics`: a real history (SQLite and PostgreSQL) written through the History API and a real
redis-server with queued task messages, rendered and parsed back with prometheus-client's parser."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import free_port
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from sqlalchemy.engine import Connection

from mediatasks.api.metrics import render_metrics
from mediatasks.history import History
from mediatasks.history.figures import CHUNK_BUCKETS, JOB_BUCKETS
from mediatasks.history.schema import tasks, webhook_attempts, webhook_deliveries
from mediatasks.models import EncodeOptions, JobSpec
from mediatasks.service.lifecycle import STATUSES, TERMINAL

NOW = datetime.now(UTC)


def scrape(history: History, broker_url: str | None) -> dict[str, list[Sample]]:
    body, content_type = render_metrics(history, broker_url)
    assert content_type.startswith("text/plain")
    return {f.name: f.samples for f in text_string_to_metric_families(body.decode())}


def value(samples: list[Sample], name: str, **labels: str) -> float:
    found = [s.value for s in samples if s.name == name and s.labels == labels]
    assert len(found) == 1, (name, labels, samples)
    return found[0]


def buckets(samples: list[Sample], name: str, **labels: str) -> dict[float, float]:
    return {float(s.labels["le"]): s.value for s in samples if s.name == f"{name}_bucket"
            and {k: v for k, v in s.labels.items() if k != "le"} == labels}


def expected_buckets(observed: list[float], limits: tuple[float, ...]) -> dict[float, float]:
    counts = {float(limit): float(sum(1 for x in observed if x <= limit)) for limit in limits}
    return {**counts, float("inf"): float(len(observed))}


@dataclass(frozen=True)
class Job:
    status: str
    seconds: float | None = None  # from started_at to finished_at
    ended_ago: float = 60.0  # how long before NOW it finished
    frames_out: int | None = None
    size_in: int = 0
    size_out: int | None = None


JOBS = {
    "a": Job("succeeded", seconds=90, frames_out=240, size_in=1000, size_out=400),
    "b": Job("succeeded", seconds=4000, ended_ago=7200, frames_out=100, size_in=3000,
             size_out=2500),
    "c": Job("failed", seconds=30, size_in=500),
    "d": Job("kept", seconds=20, frames_out=50, size_in=700),
    "e": Job("queued", size_in=10),
    "f": Job("encoding", size_in=10),
}
# encode_chunk tasks: (seconds, how long before NOW they finished, state)
CHUNKS = [(3.0, 30, "SUCCESS"), (40.0, 60, "SUCCESS"), (700.0, 120, "SUCCESS"),
          (12.0, 7200, "SUCCESS"), (5.0, 30, "FAILURE")]
RETRIES = {"t0": 2, "t4": 1}
ATTEMPTS = ["delivered", "delivered", "timeout", "connection_error"]
DELIVERIES = ["delivered", "delivered", "pending"]


def fill(history: History, tmp_path: Path) -> None:
    """Jobs, tasks and webhook rows as the service, the signals and the webhooks would write them;
    the times are then set to the ones above (the API stamps the time of the call)."""
    for job_id, job in JOBS.items():
        source = tmp_path / f"{job_id}.mkv"
        source.write_bytes(b"\0" * job.size_in)
        spec = JobSpec(job_id=job_id, input=str(source), output=str(tmp_path / f"{job_id}.out.mkv"),
                       options=EncodeOptions())
        history.create_job(spec, status="queued", event="job.queued", data={})
        if job.status == "queued":
            continue
        fields: dict[str, object] = {"started_at": NOW - timedelta(seconds=job.ended_ago
                                                                   + (job.seconds or 0))}
        if job.status in TERMINAL:
            fields.update(finished_at=NOW - timedelta(seconds=job.ended_ago),
                          frames_out=job.frames_out, size_out=job.size_out)
        assert history.transition(job_id, current="queued", new=job.status,
                                  event=f"job.{job.status}", data={}, fields=fields)
    history.task_started("p0", "a", name="mediatasks.probe", queue="io", worker="w")
    history.task_finished("p0", name="mediatasks.probe", state="SUCCESS")
    for i, (_, _, state) in enumerate(CHUNKS):
        history.task_started(f"t{i}", "a", name="mediatasks.encode_chunk", queue="cpu",
                             worker="w")
        for _ in range(RETRIES.get(f"t{i}", 0)):
            history.task_retried(f"t{i}", name="mediatasks.encode_chunk", error="transient")
        history.task_finished(f"t{i}", name="mediatasks.encode_chunk", state=state)
    with history.engine.begin() as conn:
        for i, (seconds, ago, _) in enumerate(CHUNKS):
            end = NOW - timedelta(seconds=ago)
            conn.execute(tasks.update().where(tasks.c.id == f"t{i}")
                         .values(started_at=end - timedelta(seconds=seconds), finished_at=end))
        webhook_rows(conn, ATTEMPTS, DELIVERIES)


def webhook_rows(conn: Connection, attempts: list[str], deliveries: list[str]) -> None:
    """Rows in the webhooks' tables, with these outcomes and statuses."""
    for n, outcome in enumerate(attempts):
        conn.execute(webhook_attempts.insert().values(
            delivery_id=f"msg_{n}", n=1, at=NOW, latency_ms=12.5, outcome=outcome,
            status_code=200 if outcome == "delivered" else None))
    for n, status in enumerate(deliveries):
        conn.execute(webhook_deliveries.insert().values(
            id=f"msg_{n}", key="a", type="job.succeeded", url="http://127.0.0.1:9/hook",
            payload="{}", status=status, attempts=1, created_at=NOW))


@pytest.fixture
def broker(redis_url: str) -> Iterator[str]:
    """A database of the private redis-server no test worker consumes from, emptied afterwards."""
    import redis

    url = redis_url.rsplit("/", 1)[0] + "/7"
    yield url
    with redis.Redis.from_url(url) as client:
        client.flushdb()


def test_the_history_figures_are_what_was_written(history: History, tmp_path: Path) -> None:
    fill(history, tmp_path)
    metrics = scrape(history, None)

    states = metrics["mediatasks_jobs"]
    assert {s.labels["state"] for s in states} == set(STATUSES)
    for state in STATUSES:
        want = sum(1 for j in JOBS.values() if j.status == state)
        assert value(states, "mediatasks_jobs", state=state) == want, state

    durations = metrics["mediatasks_job_duration_seconds"]
    for outcome in TERMINAL:
        seen = [j.seconds for j in JOBS.values()
                if j.status == outcome and j.seconds and j.ended_ago < 3600]
        assert buckets(durations, "mediatasks_job_duration_seconds", outcome=outcome) == \
            expected_buckets(seen, JOB_BUCKETS), outcome
        assert value(durations, "mediatasks_job_duration_seconds_sum",
                     outcome=outcome) == pytest.approx(sum(seen), abs=0.01)

    published = [j for j in JOBS.values() if j.status == "succeeded"]
    assert value(metrics["mediatasks_frames_encoded"], "mediatasks_frames_encoded_total") == \
        sum(j.frames_out or 0 for j in JOBS.values())
    bytes_in = sum(j.size_in for j in published)
    bytes_out = sum(j.size_out or 0 for j in published)
    assert value(metrics["mediatasks_bytes_in"], "mediatasks_bytes_in_total") == bytes_in
    assert value(metrics["mediatasks_bytes_out"], "mediatasks_bytes_out_total") == bytes_out
    assert value(metrics["mediatasks_bytes_saved"], "mediatasks_bytes_saved") == \
        bytes_in - bytes_out
    assert value(metrics["mediatasks_task_retries"], "mediatasks_task_retries_total") == \
        sum(RETRIES.values())

    recent = [s for s, ago, state in CHUNKS if state == "SUCCESS" and ago < 3600]
    chunk = metrics["mediatasks_chunk_encode_seconds"]
    assert buckets(chunk, "mediatasks_chunk_encode_seconds") == \
        expected_buckets(recent, CHUNK_BUCKETS)
    assert value(chunk, "mediatasks_chunk_encode_seconds_sum") == pytest.approx(sum(recent),
                                                                                 abs=0.01)

    finished = [j for j in JOBS.values() if j.frames_out and j.ended_ago < 3600]
    assert value(metrics["mediatasks_encode_fps"], "mediatasks_encode_fps") == pytest.approx(
        sum(j.frames_out or 0 for j in finished) / sum(j.seconds or 0 for j in finished), rel=1e-3)

    attempts = metrics["mediatasks_webhook_attempts"]
    for outcome in ("delivered", "http_error", "timeout", "connection_error"):
        assert value(attempts, "mediatasks_webhook_attempts_total", outcome=outcome) == \
            ATTEMPTS.count(outcome)
    for status in ("pending", "delivered", "failed"):
        assert value(metrics["mediatasks_webhook_deliveries"], "mediatasks_webhook_deliveries",
                     status=status) == DELIVERIES.count(status)
    assert value(metrics["mediatasks_history_up"], "mediatasks_history_up") == 1


def test_without_any_job_or_webhook_the_figures_are_zero(tmp_path: Path) -> None:
    history = History(f"sqlite:///{tmp_path / 'history.sqlite'}")
    metrics = scrape(history, None)
    assert {s.value for s in metrics["mediatasks_webhook_attempts"]} == {0}
    assert {s.value for s in metrics["mediatasks_webhook_deliveries"]} == {0}
    assert "mediatasks_encode_fps" not in metrics  # nothing finished: no speed to tell
    assert {s.value for s in metrics["mediatasks_jobs"]} == {0}
    assert value(metrics["mediatasks_frames_encoded"], "mediatasks_frames_encoded_total") == 0
    assert value(metrics["mediatasks_chunk_encode_seconds"],
                 "mediatasks_chunk_encode_seconds_count") == 0


def test_queue_depth_counts_every_queued_message_priority_sub_queues_included(
        broker: str, tmp_path: Path) -> None:
    import redis
    from celery import Celery

    sender = Celery("sender", broker=broker)
    sent: dict[str, list[int | None]] = {"cpu": [None, 9, 9], "io": [None], "gpu": []}
    for queue, priorities in sent.items():
        for priority in priorities:
            sender.send_task("mediatasks.probe", kwargs={"spec": {"job_id": uuid.uuid4().hex}},
                             queue=queue, priority=priority)
    with redis.Redis.from_url(broker) as client:
        assert client.llen("cpu") == 1  # the others wait in kombu's sub-queue for priority 9
    metrics = scrape(History(f"sqlite:///{tmp_path / 'history.sqlite'}"), broker)
    assert value(metrics["mediatasks_broker_up"], "mediatasks_broker_up") == 1
    for queue, priorities in sent.items():
        assert value(metrics["mediatasks_queue_depth"], "mediatasks_queue_depth",
                     queue=queue) == len(priorities), queue


def test_an_unreachable_broker_or_history_is_a_zero_not_a_failed_scrape(tmp_path: Path) -> None:
    history = History(f"sqlite:///{tmp_path / 'history.sqlite'}")
    metrics = scrape(history, f"redis://127.0.0.1:{free_port()}/0")
    assert value(metrics["mediatasks_broker_up"], "mediatasks_broker_up") == 0
    assert "mediatasks_queue_depth" not in metrics
    assert value(metrics["mediatasks_history_up"], "mediatasks_history_up") == 1
    assert "mediatasks_jobs" in metrics

    with history.engine.begin() as conn:
        tasks.drop(conn)
    metrics = scrape(history, None)
    assert value(metrics["mediatasks_history_up"], "mediatasks_history_up") == 0
    assert "mediatasks_jobs" not in metrics
