"""Cluster mode with two real workers on one machine, one on cpu,io and one on gpu, and a private
redis-server: routing proven from the job history, a job submitted by one process and followed
by another, cancel and retry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from conftest import start_redis

from mediatasks import runner
from mediatasks.cluster.local import worker_args

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    d = tmp_path_factory.mktemp("routing")
    tag = uuid.uuid4().hex[:6]
    with runner.services() as running:
        svc, url = start_redis(d)
        running.append(svc)
        client = redis.Redis.from_url(url)
        env = dict(os.environ, MEDIATASKS_BROKER_URL=url, MEDIATASKS_RESULT_BACKEND=url,
                   MEDIATASKS_WORK_DIR=str(d / "work"),
                   MEDIATASKS_DATABASE_URL=f"sqlite:///{d / 'history.sqlite'}")
        running.append(runner.spawn("cpu", worker_args(1, f"cpu-{tag}", ("cpu", "io")),
                                    log_path=d / "cpu.log", env=env, cwd=d))
        running.append(runner.spawn("gpu", worker_args(1, f"gpu-{tag}", ("gpu",)),
                                    log_path=d / "gpu.log", env=env, cwd=d))
        # The gpu worker publishes its hardware survey once it has started.
        deadline = time.monotonic() + 90
        survey = None
        while survey is None and time.monotonic() < deadline:
            keys = client.keys("mediatasks-worker-gpu-*")
            survey = json.loads(client.get(keys[0]) or "null") if keys else None
            time.sleep(0.2)
        client.close()
        assert survey is not None, running[-1].log_tail()
        yield {"env": env, "tag": tag, "survey": survey, "gpu_log": d / "gpu.log"}


def mt(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(Path(sys.executable).with_name("mediatasks")), *args],
                          capture_output=True, text=True, env=env, timeout=240,
                          stdin=subprocess.DEVNULL)


def tasks_of(env: dict[str, str], job_id: str) -> list[dict[str, Any]]:
    tasks: list[dict[str, Any]] = json.loads(mt(env, "jobs", "show", job_id, "--json").stdout)["tasks"]
    return tasks


def test_the_gpu_worker_reports_which_hardware_encoders_it_can_open(
        two_workers: dict[str, Any]) -> None:
    survey = two_workers["survey"]
    assert "h264_nvenc" in survey  # Debian's ffmpeg is built with it
    log = Path(two_workers["gpu_log"]).read_text()
    assert "hardware encoders on gpu-" in log


def test_software_encodes_run_only_on_the_cpu_worker(two_workers: dict[str, Any],
                                                     clips: dict[str, Path],
                                                     tmp_path: Path) -> None:
    env, tag = two_workers["env"], two_workers["tag"]
    sub = mt(env, "submit", str(clips["long"]), "-o", str(tmp_path / "x264.mkv"),
             "--chunk-seconds", "2", "--json")
    assert sub.returncode == 0, sub.stderr
    job_id = json.loads(sub.stdout)["job_id"]
    assert mt(env, "status", job_id, "--follow").returncode == 0
    tasks = tasks_of(env, job_id)
    encodes = [t for t in tasks if t["name"] == "mediatasks.encode_chunk"]
    assert len(encodes) == 4
    assert {t["worker"].split("@")[0] for t in tasks} == {f"cpu-{tag}"}
    assert {t["queue"] for t in encodes} == {"cpu"}


def test_hardware_encodes_run_only_on_the_gpu_worker_and_fail_clearly_without_the_hardware(
        two_workers: dict[str, Any], clips: dict[str, Path], tmp_path: Path) -> None:
    env, tag = two_workers["env"], two_workers["tag"]
    out = tmp_path / "nvenc.mkv"
    started = time.monotonic()
    sub = mt(env, "submit", str(clips["long"]), "-o", str(out), "--video-codec", "h264_nvenc",
             "--chunk-seconds", "2", "--json")
    assert sub.returncode == 0, sub.stderr
    job_id = json.loads(sub.stdout)["job_id"]
    followed = mt(env, "status", job_id, "--follow", "--json")
    encodes = [t for t in tasks_of(env, job_id) if t["name"] == "mediatasks.encode_chunk"]
    assert encodes and {t["worker"].split("@")[0] for t in encodes} == {f"gpu-{tag}"}
    assert {t["queue"] for t in encodes} == {"gpu"}
    if two_workers["survey"].get("h264_nvenc") is None:  # a machine with a working NVENC
        assert followed.returncode == 0 and out.exists()
        return
    assert followed.returncode == 1
    error = json.loads(followed.stdout)["error"]
    assert "h264_nvenc cannot run on worker gpu-" in error
    assert all(t["retries"] == 0 and t["state"] == "FAILURE" for t in encodes)
    assert time.monotonic() - started < 60 and not out.exists()


def _ffmpeg_of(job_id: str) -> list[int]:
    pids = []
    for pid in os.listdir("/proc"):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if job_id.encode() in cmd and b"ffmpeg" in cmd:
            pids.append(int(pid))
    return pids


def test_cancel_kills_running_ffmpeg_drops_queued_chunks_and_removes_temp_files(
        two_workers: dict[str, Any], tmp_path: Path) -> None:
    env = two_workers["env"]
    work_dir = Path(env["MEDIATASKS_WORK_DIR"])
    src = tmp_path / "slow.mkv"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc2=size=640x360:rate=25", "-t", "12", "-c:v", "libx264", "-preset",
                    "ultrafast", "-g", "25", str(src)], check=True)
    out = tmp_path / "never.mkv"
    sub = mt(env, "submit", str(src), "-o", str(out), "--preset",
               "veryslow", "--chunk-seconds", "1", "--json")
    assert sub.returncode == 0, sub.stderr
    job_id = json.loads(sub.stdout)["job_id"]
    deadline = time.monotonic() + 60
    while not _ffmpeg_of(job_id) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _ffmpeg_of(job_id), "no encode started"
    started = time.monotonic()
    done = mt(env, "cancel", job_id)
    assert done.returncode == 0, done.stderr
    while _ffmpeg_of(job_id) and time.monotonic() - started < 15:
        time.sleep(0.1)
    assert _ffmpeg_of(job_id) == [] and time.monotonic() - started < 15
    status = json.loads(mt(env, "status", job_id, "--json").stdout)
    assert status["status"] == "cancelled"
    while (work_dir / job_id).exists() and time.monotonic() - started < 30:
        time.sleep(0.2)
    assert not (work_dir / job_id).exists() and not out.exists()
    again = mt(env, "cancel", job_id)
    assert again.returncode != 0 and "already cancelled" in again.stderr


def test_a_retry_right_after_a_cancel_is_not_disturbed_by_the_cancelled_attempt(
        two_workers: dict[str, Any], tmp_path: Path) -> None:
    env = two_workers["env"]
    src = tmp_path / "src.mkv"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc2=size=320x180:rate=25", "-t", "8", "-c:v", "libx264", "-preset",
                    "ultrafast", "-g", "25", str(src)], check=True)
    out = tmp_path / "out.mkv"
    sub = mt(env, "submit", str(src), "-o", str(out), "--preset", "slow", "--chunk-seconds", "1",
             "--json")
    assert sub.returncode == 0, sub.stderr
    job_id = json.loads(sub.stdout)["job_id"]
    deadline = time.monotonic() + 60
    while not _ffmpeg_of(job_id) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert mt(env, "cancel", job_id).returncode == 0
    retried = mt(env, "retry", job_id)  # at once: chunks of the cancelled attempt are still queued
    assert retried.returncode == 0 and "attempt 2" in retried.stdout, retried.stderr
    done = mt(env, "status", job_id, "--follow", "--json")
    assert done.returncode == 0, done.stdout
    assert json.loads(done.stdout)["status"] == "succeeded"
    assert _frames(out) == 200
    # A chunk of the cancelled attempt delivered now (it sat in a queue behind a long encode,
    # or came back after a visibility timeout) is dropped, not run beside the new attempt.
    record = json.loads(mt(env, "jobs", "show", job_id, "--json").stdout)
    stale = {**record["settings"], "attempt": 0}
    sent = subprocess.run([sys.executable, "-m", "celery", "-A", "mediatasks", "call",
                           "mediatasks.encode_chunk", "--queue", "cpu", "--kwargs",
                           json.dumps({"spec": stale, "index": 0})],
                          capture_output=True, text=True, env=env, timeout=60)
    assert sent.returncode == 0, sent.stderr
    log_path = Path(two_workers["gpu_log"]).parent / "cpu.log"
    deadline = time.monotonic() + 30
    line = f"a task of an earlier attempt of job {job_id}; dropped"
    while line not in log_path.read_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert line in log_path.read_text()


def test_retry_reuses_every_chunk_already_verified(two_workers: dict[str, Any],
                                                   clips: dict[str, Path],
                                                   tmp_path: Path) -> None:
    from mediatasks.history import History

    env = two_workers["env"]
    target = tmp_path / "library"
    target.mkdir()
    out = target / "movie.mkv"
    sub = mt(env, "submit", str(clips["long"]), "-o", str(out),
               "--chunk-seconds", "2", "--json")
    assert sub.returncode == 0, sub.stderr
    job_id = json.loads(sub.stdout)["job_id"]
    target.rmdir()  # the output's directory goes away before the job can publish
    failed = mt(env, "status", job_id, "--follow", "--json")
    assert failed.returncode == 1
    assert "does not exist" in json.loads(failed.stdout)["error"]
    target.mkdir()
    assert mt(env, "retry", job_id).returncode == 0
    done = mt(env, "status", job_id, "--follow", "--json")
    assert done.returncode == 0, done.stdout
    record = History(env["MEDIATASKS_DATABASE_URL"]).get(job_id)
    assert record is not None and record.chunks is not None and record.chunks >= 4
    assert record.chunks_reused == record.chunks
    succeeded = [e for e in History(env["MEDIATASKS_DATABASE_URL"]).events(job_id)
                 if e.type == "job.succeeded"]
    assert succeeded[-1].data["chunks_reused"] == record.chunks
    assert _frames(out) == 200
    said = mt(env, "status", job_id)
    assert f"({record.chunks} of {record.chunks} chunks reused" in said.stdout, said.stdout


def _frames(path: Path) -> int:
    done = subprocess.run(["ffprobe", "-v", "error", "-count_packets", "-select_streams", "v:0",
                           "-show_entries", "stream=nb_read_packets", "-of", "csv=p=0",
                           str(path)], capture_output=True, text=True, check=True)
    return int(done.stdout.strip())
