"""The job service on a real cluster: the event log, hold/approve/reject, final states of many
local runs, and Flower following a job. Real redis-server, real `celery worker` processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port, sha256

from mediatasks import runner

MEDIATASKS = str(Path(sys.executable).with_name("mediatasks"))


def cli_env(redis_url: str, database_url: str, **extra: str) -> dict[str, str]:
    return dict(os.environ, MEDIATASKS_BROKER_URL=redis_url, MEDIATASKS_RESULT_BACKEND=redis_url,
                MEDIATASKS_DATABASE_URL=database_url, **extra)


def mt(env: dict[str, str], *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([MEDIATASKS, *args], capture_output=True, text=True, env=env,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def wait_for_status(env: dict[str, str], job_id: str, status: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = mt(env, "status", job_id, "--json")
        if done.returncode == 0 and json.loads(done.stdout)["status"] == status:
            return
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} never became {status}: {done.stdout} {done.stderr}")


def test_every_change_of_a_job_is_an_event_that_events_prints_and_follows(
        cluster: Any, clips: dict[str, Path], tmp_path: Path, redis_url: str,
        database_url: str) -> None:
    env = cli_env(redis_url, database_url)
    out = tmp_path / "events.mkv"
    sub = mt(env, "submit", str(clips["long"]), "-o", str(out), "--chunk-seconds", "2", "--json")
    assert sub.returncode == 0, sub.stderr
    job_id = json.loads(sub.stdout)["job_id"]
    followed = mt(env, "events", job_id, "--follow", "--json")
    assert followed.returncode == 0, followed.stderr
    events = [json.loads(line) for line in followed.stdout.splitlines()]
    assert {e["job_id"] for e in events} == {job_id}
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
    assert all({"seq", "job_id", "batch_id", "type", "at", "data"} <= set(e) for e in events)
    states = [e["type"] for e in events if e["type"].startswith("job.")]
    assert states == ["job.queued", "job.probing", "job.planned", "job.encoding",
                      "job.assembling", "job.verifying", "job.publishing", "job.succeeded"]
    planned = next(e for e in events if e["type"] == "job.planned")["data"]
    finished = [e for e in events if e["type"] == "chunk.finished"]
    assert sorted(e["data"]["index"] for e in finished) == list(range(planned["chunks"]))
    assert sum(e["data"]["frames"] for e in finished) == planned["frames"] == 200
    end = events[-1]["data"]
    assert end["frames_out"] == 200 and end["size_out"] == out.stat().st_size
    assert end["size_in"] == clips["long"].stat().st_size and end["bitrate"] > 0
    # The log as it is afterwards says the same; the job's history status is the last event's.
    again = mt(env, "events", job_id, "--json")
    assert [json.loads(line) for line in again.stdout.splitlines()] == events
    assert json.loads(mt(env, "status", job_id, "--json").stdout)["status"] == "succeeded"
    human = mt(env, "events", job_id)
    assert "job.succeeded" in human.stdout and "200 of 200 frames" in human.stdout


def test_a_held_job_waits_with_nothing_encoded_then_goes_on_with_the_same_id_when_approved(
        cluster: Any, clips: dict[str, Path], tmp_path: Path, redis_url: str,
        database_url: str) -> None:
    env = cli_env(redis_url, database_url)
    out = tmp_path / "held.mkv"
    sub = mt(env, "submit", str(clips["cfr"]), "-o", str(out), "--chunk-seconds", "1", "--hold",
             "--json")
    assert sub.returncode == 0, sub.stderr
    job_id = json.loads(sub.stdout)["job_id"]
    wait_for_status(env, job_id, "awaiting_approval")
    said = mt(env, "status", job_id)
    assert f"mediatasks approve {job_id}" in said.stdout, said.stdout
    time.sleep(1)  # nothing more happens while it waits
    show = json.loads(mt(env, "jobs", "show", job_id, "--json").stdout)
    assert show["status"] == "awaiting_approval" and not out.exists()
    assert {t["name"] for t in show["tasks"]} == {"mediatasks.probe", "mediatasks.plan"}
    assert mt(env, "reject", "nope").returncode == 2
    approved = mt(env, "approve", job_id, "--json")
    assert approved.returncode == 0 and json.loads(approved.stdout)["job_id"] == job_id
    done = mt(env, "status", job_id, "--follow", "--json")
    assert done.returncode == 0 and json.loads(done.stdout)["status"] == "succeeded"
    assert out.exists()
    types = [json.loads(line)["type"] for line in mt(env, "events", job_id, "--json").stdout
             .splitlines()]
    assert types.index("job.awaiting_approval") < types.index("job.approved") < types.index(
        "job.encoding")
    again = mt(env, "approve", job_id)
    assert again.returncode == 2 and "only a job awaiting approval" in again.stderr


def test_a_rejected_job_touches_no_file_and_ends_rejected(
        cluster: Any, clips: dict[str, Path], tmp_path: Path, redis_url: str,
        database_url: str, work_dir: Path) -> None:
    env = cli_env(redis_url, database_url)
    src = tmp_path / "keep.mkv"
    src.write_bytes(clips["cfr"].read_bytes())
    before = sha256(src)
    out = tmp_path / "never.mkv"
    job_id = json.loads(mt(env, "submit", str(src), "-o", str(out), "--hold", "--json").stdout)[
        "job_id"]
    wait_for_status(env, job_id, "awaiting_approval")
    rejected = mt(env, "reject", job_id)
    assert rejected.returncode == 0, rejected.stderr
    assert json.loads(mt(env, "status", job_id, "--json").stdout)["status"] == "rejected"
    assert not out.exists() and sha256(src) == before
    deadline = time.monotonic() + 20
    while (work_dir / job_id).exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not (work_dir / job_id).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.mkv"]


def test_run_hold_waits_for_an_approval_given_from_another_process(
        clips: dict[str, Path], tmp_path: Path) -> None:
    env = dict(os.environ, MEDIATASKS_DATABASE_URL=f"sqlite:///{tmp_path / 'h.sqlite'}",
               MEDIATASKS_WORK_DIR=str(tmp_path / "work"))
    out = tmp_path / "local.mkv"
    proc = subprocess.Popen([MEDIATASKS, "run", str(clips["cfr"]), "-o", str(out), "--hold",
                             "--chunk-seconds", "1", "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        held: list[dict[str, Any]] = []
        while not held and time.monotonic() < deadline:
            listed = mt(env, "jobs", "list", "--status", "awaiting_approval", "--json")
            held = json.loads(listed.stdout or "[]")
            time.sleep(0.3)
        assert held, "the run never waited for approval"
        assert not out.exists()
        approved = mt(env, "approve", held[0]["job_id"])
        assert approved.returncode == 0, approved.stderr
        stdout, stderr = proc.communicate(timeout=180)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    result = json.loads(stdout.strip().splitlines()[-1])
    assert result["status"] == "succeeded" and result["job_id"] == held[0]["job_id"]
    assert out.exists()


def test_twenty_local_runs_in_a_row_each_end_with_their_final_status_in_the_history(
        tmp_path: Path) -> None:
    src = tmp_path / "tiny.mkv"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i",
                    "testsrc2=size=64x48:rate=25", "-t", "0.4", "-c:v", "libx264", "-preset",
                    "ultrafast", str(src)], check=True)
    env = dict(os.environ, MEDIATASKS_DATABASE_URL=f"sqlite:///{tmp_path / 'h.sqlite'}",
               MEDIATASKS_WORK_DIR=str(tmp_path / "work"))
    expected = {}
    for i in range(20):
        args = ["run", str(src), "-o", str(tmp_path / f"o{i}.mkv"), "--workers", "1"]
        if i % 2:
            args.append("--json")
        done = mt(env, *args)
        assert done.returncode == 0, done.stderr
        if i % 2:
            result = json.loads(done.stdout)
            assert result["status"] == "succeeded"
            expected[result["job_id"]] = "succeeded"
    listed = json.loads(mt(env, "jobs", "list", "--limit", "100", "--json").stdout)
    assert len(listed) == 20 and {j["status"] for j in listed} == {"succeeded"}
    assert {j["job_id"]: j["status"] for j in listed if j["job_id"] in expected} == expected
    assert all(j["finished_at"] and j["frames_out"] == 10 for j in listed)


@pytest.fixture
def flower(redis_url: str, tmp_path: Path) -> Any:
    port = free_port()
    env = dict(os.environ, FLOWER_UNAUTHENTICATED_API="true", MEDIATASKS_BROKER_URL=redis_url,
               MEDIATASKS_RESULT_BACKEND=redis_url)
    svc = runner.spawn("flower", [sys.executable, "-m", "celery", "-A", "mediatasks", "flower",
                                  f"--port={port}", "--address=127.0.0.1"],
                       log_path=tmp_path / "flower.log", env=env, cwd=tmp_path)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{base}/healthcheck", timeout=1).read()
            break
        except OSError:
            time.sleep(0.2)
    else:
        svc.stop()
        pytest.fail(f"flower did not start: {svc.log_tail()}")
    try:
        yield base
    finally:
        svc.stop(grace=5)


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as answer:
        return json.loads(answer.read())


def test_flower_follows_a_job_its_encodes_progress_and_lists_only_real_workers(
        cluster: Any, flower: str, tmp_path: Path, redis_url: str, database_url: str) -> None:
    from conftest import run_job, submit

    src = tmp_path / "flower.mkv"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i",
                    "testsrc2=size=480x270:rate=25", "-t", "6", "-c:v", "libx264", "-preset",
                    "ultrafast", "-g", "25", str(src)], check=True)
    import threading

    seen: list[dict[str, Any]] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            try:
                tasks = _get(f"{flower}/api/tasks?taskname=mediatasks.encode_chunk")
            except OSError:
                continue
            seen.extend(t for t in tasks.values() if t.get("state") == "PROGRESS")
            time.sleep(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    spec = submit(src, tmp_path / "out.mkv", video_codec="libx264", preset="slower",
                  chunk_seconds=3)
    run_job(cluster, spec)
    stop.set()
    watcher.join(5)
    assert seen, "Flower never showed an encode in progress"
    assert all("fps" in str(t.get("result")) and t.get("worker") for t in seen)
    time.sleep(1.5)  # Flower takes in the last events
    tasks = _get(f"{flower}/api/tasks")
    mine = [t for t in tasks.values() if spec.job_id in json.dumps(t.get("kwargs"))]
    names = {t["name"] for t in mine}
    assert {"mediatasks.probe", "mediatasks.plan", "mediatasks.encode_chunk",
            "mediatasks.publish"} <= names, names
    assert {t["state"] for t in mine} == {"SUCCESS"}, [(t["name"], t["state"]) for t in mine]
    workers = _get(f"{flower}/workers?json=1")["data"]
    hostnames = {w["hostname"] for w in workers}
    assert hostnames and not any(h.startswith("gen") for h in hostnames), hostnames
