"""Faults a long job must survive, each with real processes: a redis-server with persistence,
celery workers that are killed and started again, ffmpeg that hangs, a file system that fills up,
a message delivered twice. Each job must end with every frame, or fail with one clear line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import sha256, small_tmpfs
from rig import MEDIATASKS, Rig, make_source

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 s at 640x360: six 2 s chunks that each take seconds at a slow preset."""
    return make_source(tmp_path_factory.mktemp("src") / "source.mkv", seconds=12)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    with Rig(tmp_path / "rig", visibility_timeout=30) as r:
        yield r


SLOW = ("--preset", "veryslow", "--chunk-seconds", "2")


def assert_every_frame(record: dict[str, object], frames: int = 300) -> None:
    assert record["status"] == "succeeded", record
    assert record["frames_in"] == record["frames_out"] == frames, record


def test_a_worker_killed_with_its_ffmpeg_is_redelivered_and_the_job_has_every_frame(
        rig: Rig, source: Path, tmp_path: Path) -> None:
    """kill -9 of a whole worker (main process, pool and ffmpeg): its unacked chunks come back
    after MEDIATASKS_VISIBILITY_TIMEOUT (30 s here) and another worker finishes the job."""
    before = sha256(source)
    rig.start_worker("doomed")
    out = tmp_path / "out.mkv"
    job_id = rig.submit(source, out, *SLOW)
    rig.wait_for_chunk_encodes(job_id, count=2)
    rig.kill_worker("doomed")
    killed_at = time.monotonic()
    # ffmpeg leads its own process group and dies with its parent (the parent-death signal),
    # a moment after the pool process it belonged to.
    deadline = time.monotonic() + 10
    while rig.running_chunk_encodes(job_id) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert rig.running_chunk_encodes(job_id) == [], "ffmpeg outlived its worker"
    rig.start_worker("survivor")
    record = rig.wait_job(job_id, timeout=240)
    recovery = time.monotonic() - killed_at
    assert_every_frame(record)
    assert out.exists() and sha256(source) == before
    assert recovery < 150, f"recovered in {recovery:.0f}s"
    assert "mediatasks.encode_chunk" in rig.log("survivor")
    assert not (rig.work_dir / job_id).exists(), "the job's work files were left behind"


def test_a_pool_process_that_dies_alone_has_its_chunk_sent_again(
        rig: Rig, source: Path, tmp_path: Path) -> None:
    rig.start_worker("w")
    out = tmp_path / "out.mkv"
    job_id = rig.submit(source, out, *SLOW)
    rig.wait_for_chunk_encodes(job_id)
    _, pool_pid, _ = rig.running_chunk_encodes(job_id)[0]
    os.kill(pool_pid, signal.SIGKILL)  # the OOM killer's way: one pool process, not the worker
    record = rig.wait_job(job_id, timeout=240)
    assert_every_frame(record)
    log = rig.log("w")
    assert "WorkerLostError" in log and "retry" in log.lower()


@pytest.mark.parametrize("outage", [0, 5])
def test_a_broker_restart_mid_job_is_survived_by_workers_and_followers(
        rig: Rig, source: Path, tmp_path: Path, outage: int) -> None:
    """An immediate restart (encodes store their results on the new connection) and one of a few
    seconds (results written meanwhile are retried until the broker is back)."""
    rig.start_worker("w")
    out = tmp_path / "out.mkv"
    job_id = rig.submit(source, out, *SLOW)
    follower = rig.follow(job_id)
    # Mid-encode: the plan and the audio have stored their results (an outage in the instant a
    # chord member stores its own is a known gap, docs/reliability.md).
    rig.wait_for_stored(job_id, ("plan", "encode_audio"))
    rig.wait_for_chunk_encodes(job_id)
    rig.stop_redis()  # redis-server writes its append-only file on the way down
    time.sleep(outage)
    rig.start_redis()
    stdout, stderr = follower.communicate(timeout=300)
    assert follower.returncode == 0, (stdout[-2000:], stderr[-2000:], rig.events(job_id))
    assert json.loads(stdout.strip().splitlines()[-1])["status"] == "succeeded"
    assert_every_frame(rig.job(job_id))


def test_a_broker_killed_mid_job_comes_back_from_its_append_only_file_and_the_job_has_every_frame(
        rig: Rig, source: Path, tmp_path: Path) -> None:
    """kill -9 of redis-server while two chunks encode: nothing is written on the way down, but
    with --appendfsync always every queued chunk and the chord's state are in its append-only
    file, and the redis-server started again on it carries the job to its end."""
    rig.start_worker("w")
    out = tmp_path / "out.mkv"
    job_id = rig.submit(source, out, *SLOW)
    rig.wait_for_chunk_encodes(job_id, count=2)
    rig.crash_redis()
    rig.start_redis()
    assert_every_frame(rig.wait_job(job_id, timeout=240))
    assert out.exists()


def test_a_stuck_ffmpeg_is_killed_after_the_stall_timeout_and_its_chunk_retried(
        rig: Rig, source: Path, tmp_path: Path) -> None:
    """The first chunk encode hangs without a byte of progress (a wedged decoder, a dead NFS
    mount); the stall timeout kills it and the retry finishes the chunk."""
    flag = tmp_path / "hung-once"
    hang = tmp_path / "ffmpeg-that-hangs-once"
    hang.write_text("#!/bin/sh\n"
                    'case "$*" in *chunks/*-progress*|*-progress*chunks/*)\n'
                    f'  if [ ! -e "{flag}" ]; then : > "{flag}"; exec sleep 600; fi;;\n'
                    "esac\n"
                    'exec ffmpeg "$@"\n')
    hang.chmod(0o755)
    rig.start_worker("w", MEDIATASKS_FFMPEG=str(hang), MEDIATASKS_STALL_TIMEOUT="3")
    out = tmp_path / "out.mkv"
    job_id = rig.submit(source, out, "--chunk-seconds", "4")
    record = rig.wait_job(job_id, timeout=180)
    assert flag.exists(), "the hanging ffmpeg never ran"
    assert_every_frame(record)
    assert "stalled: no progress for 3s" in rig.log("w")
    assert not [p for p in rig.running_chunk_encodes(job_id)], "the hung process survived"


def test_a_chunk_delivered_twice_counts_once_and_concat_runs_once(
        rig: Rig, source: Path, tmp_path: Path) -> None:
    """Every chunk message is pushed back onto its queue while it runs, as kombu's restore does
    after a visibility timeout: copies run beside the first or after it has finished."""
    rig.start_worker("w", concurrency=2)
    client = rig.client()
    out = tmp_path / "out.mkv"
    job_id = rig.submit(source, out, "--chunk-seconds", "2", "--preset", "slow")
    copied: set[str] = set()
    stop = threading.Event()

    def duplicate_every_chunk() -> None:
        while not stop.is_set():
            for raw in client.hvals("unacked"):
                message, _exchange, routing_key = json.loads(raw)
                headers = message.get("headers", {})
                if headers.get("task") != "mediatasks.encode_chunk" or headers["id"] in copied:
                    continue
                copied.add(headers["id"])
                headers["redelivered"] = True
                message["properties"]["delivery_info"]["redelivered"] = True
                client.rpush(routing_key, json.dumps(message))
            time.sleep(0.05)

    thread = threading.Thread(target=duplicate_every_chunk, daemon=True)
    thread.start()
    try:
        record = rig.wait_job(job_id, timeout=240)
    finally:
        stop.set()
        thread.join()
    assert_every_frame(record)
    assert len(copied) == 6, copied
    # The copies themselves must have been consumed before we judge the counts.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(client.llen(q) for q in ("cpu", "io")):
        time.sleep(0.2)
    time.sleep(2)
    log = rig.log("w")
    received = sum(log.count(f"mediatasks.encode_chunk[{t}] received") for t in copied)
    assert received >= 2 * len(copied) - sum(
        log.count(f"{t}]: Task already completed successfully") for t in copied), log[-3000:]
    client.close()
    for task in ("concat", "mux", "publish"):
        runs = [ln for ln in log.splitlines()
                if f"Task mediatasks.{task}[" in ln and "succeeded" in ln]
        assert len(runs) == 1, (task, runs)
    assert rig.job(job_id)["status"] == "succeeded"


def test_the_submitting_cli_can_die_without_touching_the_job(
        rig: Rig, source: Path, tmp_path: Path) -> None:
    rig.start_worker("w")
    out = tmp_path / "out.mkv"
    job_id = rig.submit(source, out, "--chunk-seconds", "4")
    follower = rig.follow(job_id)
    rig.wait_for_chunk_encodes(job_id)
    follower.send_signal(signal.SIGKILL)
    follower.communicate(timeout=10)
    assert_every_frame(rig.wait_job(job_id, timeout=180))


# -- disk full --------------------------------------------------------------------------------

@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A 3 MiB tmpfs: where a job's chunks or its output do not fit."""
    with small_tmpfs(tmp_path / "tiny", "3m") as d:
        yield d


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([MEDIATASKS, *args], capture_output=True, text=True, env=env,
                          timeout=300, stdin=subprocess.DEVNULL)


def the_error(stderr: str) -> str:
    """A job that failed while it ran may have printed its steps first (no TTY: a line per
    step); its error is the last line, and the only error line."""
    lines = stderr.strip().splitlines()
    assert [line for line in lines if line.startswith("mediatasks:")] == lines[-1:], lines
    return lines[-1]


def test_a_full_output_disk_fails_clearly_and_leaves_no_partial_file(
        tiny_fs: Path, tmp_path: Path) -> None:
    src = make_source(tmp_path / "src.mkv", seconds=4, size="320x180", noise=True)
    before = sha256(src)
    out = tiny_fs / "out.mkv"
    env = dict(os.environ, MEDIATASKS_MAX_RETRIES="1", MEDIATASKS_RETRY_BACKOFF="1")
    done = run_cli("run", str(src), "-o", str(out), "--video-codec", "ffv1", "--chunk-seconds",
                   "2", env=env)
    assert done.returncode != 0
    error = the_error(done.stderr)
    assert "no space left" in error and "out.mkv" in error, error
    assert list(tiny_fs.iterdir()) == []
    assert sha256(src) == before


def test_a_full_work_directory_fails_clearly_and_removes_partial_chunks(
        tiny_fs: Path, tmp_path: Path) -> None:
    src = make_source(tmp_path / "src.mkv", seconds=4, size="320x180", noise=True)
    before = sha256(src)
    out = tmp_path / "out.mkv"
    env = dict(os.environ, MEDIATASKS_WORK_DIR=str(tiny_fs), MEDIATASKS_MAX_RETRIES="1",
               MEDIATASKS_RETRY_BACKOFF="1")
    done = run_cli("run", str(src), "-o", str(out), "--video-codec", "ffv1", "--chunk-seconds",
                   "2", env=env)
    assert done.returncode != 0
    error = the_error(done.stderr)
    assert "no space left" in error and "src.mkv" in error, error
    assert not out.exists()
    # Only what a re-run reuses stays: verified chunks with their fingerprints, the plan, the lock
    # (and, beside the job directories, the encoder checks that passed).
    left = [p for p in tiny_fs.rglob("*") if p.is_file() and p.name != ".encoder-checks"]
    assert all(p.suffix in {".nut", ".json"} or p.name == ".run.lock" for p in left), left
    for chunk in (p for p in left if p.suffix == ".nut"):
        assert chunk.with_suffix(".json").exists(), chunk
    assert sha256(src) == before
