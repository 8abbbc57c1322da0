"""Nothing hangs, nothing grows forever: stalled jobs, one job per output, expiry. The service
with in-memory parts; one test on a real cluster whose broker loses every message."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from conftest import start_redis

from mediatasks import runner
from mediatasks.errors import InvalidOptions
from mediatasks.models import EncodeOptions, JobSpec
from mediatasks.service import JobService
from mediatasks.service.memory import MemoryDispatcher, MemoryKeyValue, MemoryStore
from mediatasks.service.upkeep import collect_garbage, find_stalled


def spec(job_id: str = "a" * 32, output: str = "/out.mkv", **kw: Any) -> JobSpec:
    return JobSpec(job_id=job_id, input="/in.mkv", output=output,
                   options=EncodeOptions(video_codec="libx264"), **kw)


@pytest.fixture
def service() -> JobService:
    return JobService(MemoryStore(), kv=MemoryKeyValue(), dispatcher=MemoryDispatcher())


def encoding(service: JobService, job_id: str = "a" * 32) -> None:
    service.submit(spec(job_id))
    service.step_started(job_id, "probe")
    service.planned(spec(job_id), chunks=2, frames=50, queue="cpu")
    service.step_started(job_id, "encode_chunk")


def test_a_quiet_job_with_no_live_task_stalls_and_is_sent_again_once(service: JobService) -> None:
    encoding(service)
    assert find_stalled(service, quiet_for=3600, retries=1) == []  # not quiet long enough
    assert find_stalled(service, quiet_for=0, retries=1) == ["a" * 32]
    record = service.get("a" * 32)
    assert record.status == "queued" and record.settings["attempt"] == 1  # sent again
    assert service.dispatcher.sent[-1] == ("analyse", "a" * 32, {"attempt": 1})  # type: ignore[union-attr]
    types = [e.type for e in service.store.events("a" * 32)]
    assert types[-2:] == ["job.stalled", "job.queued"]
    service.step_started("a" * 32, "probe")
    assert find_stalled(service, quiet_for=0, retries=1) == ["a" * 32]
    stalled = service.get("a" * 32)
    assert stalled.status == "stalled" and "no task of this job is alive" in (stalled.error or "")
    assert service.retry("a" * 32).attempt == 2  # by hand, as often as wanted


def test_a_job_whose_tasks_are_alive_or_unknown_never_stalls(service: JobService) -> None:
    encoding(service)
    service.dispatcher.live = {"a" * 32}  # type: ignore[union-attr]
    assert find_stalled(service, quiet_for=0, retries=1) == []
    service.dispatcher.live = None  # type: ignore[union-attr]  # no worker answered
    assert find_stalled(service, quiet_for=0, retries=1) == []
    assert service.get("a" * 32).status == "encoding"


def test_a_follower_stops_at_a_stalled_job(service: JobService) -> None:
    encoding(service)
    find_stalled(service, quiet_for=0, retries=0)
    assert [e.type for e in service.follow("a" * 32, idle=0.01) if e][-1] == "job.stalled"


@pytest.fixture(params=["memory", "sqlite"])
def either(request: pytest.FixtureRequest, tmp_path: Path) -> JobService:
    """The service on the in-memory store, then on the SQL history."""
    if request.param == "memory":
        return JobService(MemoryStore(), kv=MemoryKeyValue(), dispatcher=MemoryDispatcher())
    from mediatasks.history import History

    return JobService(History(f"sqlite:///{tmp_path / 'h.sqlite'}"), kv=MemoryKeyValue(),
                      dispatcher=MemoryDispatcher())


def test_a_second_job_for_an_output_in_use_is_refused_naming_the_first(
        either: JobService) -> None:
    service = either
    service.submit(spec("a" * 32))
    with pytest.raises(InvalidOptions, match=f"job {'a' * 32} .queued. already writes"):
        service.submit(spec("b" * 32))
    service.submit(spec("c" * 32, output="/other.mkv"))
    service.cancel("a" * 32)
    service.submit(spec("b" * 32))  # the first has ended


def test_the_job_writing_an_output_is_found_among_active_ones_only(either: JobService) -> None:
    store = either.store
    either.submit(spec("a" * 32, output="/a.mkv"))
    either.submit(spec("b" * 32, output="/b.mkv"))
    found = store.active_job_writing("/a.mkv")
    assert found is not None and found.job_id == "a" * 32
    assert store.active_job_writing("/a.mkv", other_than="a" * 32) is None
    assert store.active_job_writing("/none.mkv") is None
    either.step_started("b" * 32, "probe")
    assert store.active_job_writing("/b.mkv").job_id == "b" * 32  # type: ignore[union-attr]
    either.failed("b" * 32, "broken")
    assert store.active_job_writing("/b.mkv") is None


def test_the_output_lookup_goes_through_the_index_not_the_whole_table(tmp_path: Path) -> None:
    from sqlalchemy import text

    from mediatasks.history import History

    history = History(f"sqlite:///{tmp_path / 'h.sqlite'}")
    with history.engine.connect() as conn:
        plan = conn.execute(text(
            "EXPLAIN QUERY PLAN SELECT * FROM jobs WHERE output = :o AND status IN "
            "('queued', 'encoding')"), {"o": "/a.mkv"}).all()
    assert any("USING INDEX ix_jobs_output" in str(row) for row in plan), plan


def test_expired_work_folders_trash_and_progress_go_and_the_rest_stays(
        service: JobService, tmp_path: Path) -> None:
    work, root = tmp_path / "work", tmp_path / "library"
    ended, running, unknown, fresh = "e" * 32, "r" * 32, "u" * 32, "f" * 32
    placement = {"root": str(root)}
    for job_id in (ended, running, fresh):
        service.submit(spec(job_id, output=f"/{job_id}.mkv").model_copy(
            update={"placement": None}))
    service.store.jobs[ended]["settings"] = json.dumps(  # type: ignore[attr-defined]
        {**spec(ended).model_dump(mode="json"), "placement": placement})
    service.chunk_progress(ended, 0, frames=1, total=2, fps=1.0)
    service.failed(ended, "broken")
    service.failed(fresh, "broken")
    for job_id in (ended, running, unknown, fresh):
        (work / job_id / "chunks").mkdir(parents=True)
        (work / job_id / "chunks" / "00000.nut").write_bytes(b"x")
    (root / ".mediatasks-trash" / ended).mkdir(parents=True)
    old = time.time() - 10 * 86400
    for p in [*work.rglob("*"), *[work / j for j in (ended, running, unknown)],
              *(root / ".mediatasks-trash").rglob("*")]:
        if fresh not in str(p):
            os.utime(p, (old, old))
    dry = collect_garbage(service, work_dir=work, older_than=7 * 86400, dry_run=True)
    assert {p.name for p in dry.work_dirs} == {ended, unknown} and dry.events == 0
    assert (work / ended).exists()
    swept = collect_garbage(service, work_dir=work, older_than=0)
    assert {p.name for p in swept.work_dirs} == {ended, unknown, fresh}
    assert [p.name for p in swept.trash_dirs] == [ended]
    assert not (root / ".mediatasks-trash" / ended).exists() and (work / running).exists()
    assert swept.events == 1
    assert "chunk.progress" not in [e.type for e in service.store.events(ended)]


def test_gc_removes_and_prints_old_webhook_rows_and_idempotency_keys(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from mediatasks.history import History
    from mediatasks.history.figures import read_figures
    from mediatasks.history.keys import SqlKeyStore
    from mediatasks.history.webhooks import SqlWebhookStore
    from mediatasks.service.keys import Keys
    from mediatasks.service.memory import MemorySender
    from mediatasks.service.webhooks import Webhooks

    url = f"sqlite:///{tmp_path / 'h.sqlite'}"
    history = History(url)
    hooks = Webhooks(SqlWebhookStore(history.engine), history, sender=MemorySender())
    service = JobService(history, kv=MemoryKeyValue(), dispatcher=MemoryDispatcher(),
                         notifier=hooks)
    hooks.subscribe("a" * 32, "http://127.0.0.1:9/hook", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    service.submit(spec("a" * 32))
    service.cancel("a" * 32)
    for d in hooks.deliveries("a" * 32):
        hooks.attempted(d, outcome="delivered", latency_ms=1)
    now = datetime.now(UTC)
    store = SqlKeyStore(history.engine)
    for name, age in (("old", timedelta(hours=25)), ("new", timedelta(hours=1))):
        store.claim_idempotency("k1", name, body_hash="x", job_id="a" * 32, at=now - age,
                                since=now - timedelta(days=9))
    env = dict(os.environ, MEDIATASKS_DATABASE_URL=url, MEDIATASKS_WORK_DIR=str(tmp_path / "w"),
               MEDIATASKS_BROKER_URL="redis://127.0.0.1:9/0",
               MEDIATASKS_RESULT_BACKEND="redis://127.0.0.1:9/0")
    cli = str(Path(sys.executable).with_name("mediatasks"))
    counted = read_figures(history.engine).webhook_attempts
    assert counted == {"delivered": 2}
    done = subprocess.run([cli, "gc", "--older-than-days", "0"], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert ("removed 0 work folder(s), 0 trash folder(s), 0 progress event(s), 2 webhook "
            "delivery(ies) (2 attempt(s)), 1 webhook subscription(s), 1 Idempotency-Key(s)"
            ) in " ".join(done.stdout.split())
    again = subprocess.run([cli, "gc", "--older-than-days", "0", "--json"], capture_output=True,
                           text=True, env=env, timeout=120)
    counts = json.loads(again.stdout)
    assert [counts[k] for k in ("webhook_deliveries", "webhook_attempts",
                                "webhook_subscriptions", "idempotency_keys")] == [0, 0, 0, 0]
    assert read_figures(history.engine).webhook_attempts == counted  # a counter never drops
    # Within the window the key still returns its job; the expired one names a new request.
    keys = Keys(store)
    assert store.claim_idempotency("k1", "new", body_hash="x", job_id="z" * 32, at=now,
                                   since=now - timedelta(hours=24)) == ("x", "a" * 32)
    assert keys.expire(hours=24) == 0
    assert store.claim_idempotency("k1", "old", body_hash="y", job_id="z" * 32, at=now,
                                   since=now - timedelta(hours=24)) is None


def test_a_job_whose_broker_lost_every_message_is_found_stalled_and_ends_frame_exact(
        tmp_path: Path) -> None:
    """A redis-server without persistence flushed mid-encode: the chord's bookkeeping and the
    queued chunks are gone. The job stalls, is sent again, reuses what was verified and ends."""
    import redis

    from mediatasks.cluster.app import app
    from mediatasks.cluster.local import worker_args

    svc, url = start_redis(tmp_path)
    src = tmp_path / "src.mkv"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i",
                    "testsrc2=size=320x180:rate=25", "-t", "8", "-c:v", "libx264", "-preset",
                    "ultrafast", "-g", "25", str(src)], check=True)
    env = dict(os.environ, MEDIATASKS_BROKER_URL=url, MEDIATASKS_RESULT_BACKEND=url,
               MEDIATASKS_WORK_DIR=str(tmp_path / "work"), MEDIATASKS_RETRY_BACKOFF="1",
               MEDIATASKS_DATABASE_URL=f"sqlite:///{tmp_path / 'h.sqlite'}",
               MEDIATASKS_HARDWARE_SURVEY="false", MEDIATASKS_STALL_AFTER="4",
               MEDIATASKS_UPKEEP_INTERVAL="1")
    worker = runner.spawn("worker", worker_args(1, f"stall-{uuid.uuid4().hex[:6]}"),
                          log_path=tmp_path / "worker.log", env=env, cwd=tmp_path)
    cli = str(Path(sys.executable).with_name("mediatasks"))
    try:
        app.conf.update(broker_url=url, result_backend=url)
        deadline = time.monotonic() + 60
        while not app.control.ping(timeout=0.5) and time.monotonic() < deadline:
            assert worker.alive(), worker.log_tail()
        out = tmp_path / "out.mkv"
        sub = subprocess.run([cli, "submit", str(src), "-o", str(out), "--chunk-seconds", "1",
                              "--preset", "slow", "--json"], capture_output=True, text=True,
                             env=env, timeout=120)
        assert sub.returncode == 0, sub.stderr
        job_id = json.loads(sub.stdout)["job_id"]
        chunks = tmp_path / "work" / job_id / "chunks"
        deadline = time.monotonic() + 120
        while not list(chunks.glob("*.json")) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert list(chunks.glob("*.json")), "no chunk was verified"
        with redis.Redis.from_url(url) as client:
            client.flushall()  # every queued chunk, the chord's counter, the live state: gone
        followed = subprocess.run([cli, "status", job_id, "--follow", "--json"],
                                  capture_output=True, text=True, env=env, timeout=300)
        events = subprocess.run([cli, "events", job_id, "--json"], capture_output=True,
                                text=True, env=env, timeout=60).stdout
        types = [json.loads(line)["type"] for line in events.splitlines()]
        assert "job.stalled" in types, types
        assert followed.returncode == 0 and json.loads(followed.stdout)["status"] == "succeeded", (
            followed.stdout, followed.stderr, types)
        frames = subprocess.run(["ffprobe", "-v", "error", "-count_packets", "-select_streams",
                                 "v:0", "-show_entries", "stream=nb_read_packets", "-of",
                                 "csv=p=0", str(out)], capture_output=True, text=True)
        assert frames.stdout.strip() == "200"
        assert json.loads(followed.stdout)["chunks_reused"] >= 1
    finally:
        worker.stop(grace=5)
        svc.stop()
