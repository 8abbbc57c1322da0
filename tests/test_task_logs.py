"""Each task's row keeps the last command it ran and its stderr tail: which command the runner
picks (pure), and real jobs on the test cluster, shown by `jobs show --logs` and counted by
`/metrics`."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import job_service, run_job, submit
from prometheus_client.parser import text_string_to_metric_families

from mediatasks import runner
from mediatasks.errors import JobFailed, MediatasksError
from mediatasks.history import History
from mediatasks.history.figures import WINDOW

MEDIATASKS = str(Path(sys.executable).with_name("mediatasks"))


def ran(*argv: str, code: int = 0, tail: tuple[str, ...] = ()) -> runner.Completed:
    return runner.Completed(argv=argv, returncode=code, stdout="", stderr_tail=tail, seconds=0.1)


def test_a_task_log_shows_the_command_that_failed() -> None:
    commands = [ran("ffmpeg", "-i", "a b"), ran("ffprobe", "x", code=1, tail=("bad",)),
                ran("ffmpeg", "-i", "c")]
    assert runner.task_log(commands) == ("ffprobe x", "bad")


def test_a_task_log_shows_the_encode_rather_than_the_frame_count_after_it() -> None:
    commands = [ran("/usr/bin/ffmpeg", "-i", "a b", tail=("warn",)), ran("/usr/bin/ffprobe", "x")]
    assert runner.task_log(commands) == ("/usr/bin/ffmpeg -i 'a b'", "warn")
    assert runner.task_log([ran("ffprobe", "y")]) == ("ffprobe y", "")
    assert runner.task_log([]) is None


def test_a_task_log_keeps_the_last_4_kb_of_stderr() -> None:
    lines = tuple(f"{i:04d} " + "x" * 195 for i in range(40))
    _, tail = runner.task_log([ran("ffmpeg", code=1, tail=lines)]) or ("", "")
    assert len(tail) == runner.LOG_TAIL_CHARS and tail.endswith(lines[-1])


def test_the_runner_records_real_commands_only_when_asked(tmp_path: Path) -> None:
    runner.run(["ffprobe", "-version"], keep_stdout=True)
    assert runner.recorded_commands() == []
    runner.record_commands()
    runner.run(["ffprobe", "-version"], keep_stdout=True)
    with pytest.raises(MediatasksError):  # the classified ffmpeg error, whatever its kind
        runner.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(tmp_path / "missing.mkv"),
                    "-f", "null", "-"])
    first, second = runner.recorded_commands()
    assert first.argv[:2] == ("ffprobe", "-version") and first.returncode == 0
    assert second.returncode != 0 and "missing.mkv" in "\n".join(second.stderr_tail)


def mt(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([MEDIATASKS, *args], capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL, env=dict(os.environ))


def families(body: bytes) -> dict[str, Any]:
    return {f.name: {s.name: s.value for s in f.samples if not s.labels}
            for f in text_string_to_metric_families(body.decode())}


@pytest.mark.cluster
def test_task_rows_hold_the_commands_of_a_real_job_and_the_error_of_a_failed_one(
        cluster: Any, clips: dict[str, Path], tmp_path: Path, redis_url: str) -> None:
    from mediatasks.api.metrics import render_metrics

    good = submit(clips["cfr"], tmp_path / "good.mkv")
    run_job(cluster, good)
    bad = submit(clips["cfr"], tmp_path / "bad.mkv", preset="nosuchpreset")
    with pytest.raises(JobFailed):
        run_job(cluster, bad)
    history = History(os.environ["MEDIATASKS_DATABASE_URL"])
    # The signals write a task's row after the task reported its end to the service.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        records = [job_service(cluster).get(j.job_id) for j in (good, bad)]
        if all(t.state in {"SUCCESS", "FAILURE"} and t.finished_at for r in records
               for t in r.tasks if t.name != "mediatasks.cleanup"):
            break
        time.sleep(0.2)
    ok, failed = records

    encodes = [t for t in ok.tasks if t.name == "mediatasks.encode_chunk"]
    assert encodes and all(t.state == "SUCCESS" for t in encodes)
    for t in encodes:
        argv = shlex.split(t.argv or "")
        assert argv[0] == "ffmpeg" and "-vcodec" in argv and "libx264" in argv, t.argv
        assert t.log_tail is not None
    probe = next(t for t in ok.tasks if t.name == "mediatasks.probe")
    assert shlex.split(probe.argv or "")[0] == "ffprobe"

    failing = [t for t in failed.tasks if t.name == "mediatasks.encode_chunk"
               and t.state == "FAILURE"]
    assert failing, failed.tasks
    assert "nosuchpreset" in (failing[0].argv or "")
    assert "nosuchpreset" in (failing[0].log_tail or ""), failing[0].log_tail  # ffmpeg's words

    shown = mt("jobs", "show", bad.job_id, "--logs")
    assert shown.returncode == 0, shown.stderr
    assert f"$ {failing[0].argv}" in shown.stdout
    assert any(line.strip().startswith("|") and "nosuchpreset" in line
               for line in shown.stdout.splitlines()), shown.stdout

    # /metrics over the same history agrees with the records read one by one.
    body, _ = render_metrics(history, redis_url)
    metrics = families(body)
    everything = [job_service(cluster).get(j.job_id)
                  for j in history.list_jobs(limit=100_000)]
    assert metrics["mediatasks_frames_encoded"]["mediatasks_frames_encoded_total"] == sum(
        j.frames_out or 0 for j in everything)
    since = datetime.now(UTC) - WINDOW
    recent = [t for j in everything for t in j.tasks if t.name == "mediatasks.encode_chunk"
              and t.state == "SUCCESS" and t.finished_at
              and t.finished_at.replace(tzinfo=t.finished_at.tzinfo or UTC) >= since]
    chunk = metrics["mediatasks_chunk_encode_seconds"]
    assert chunk["mediatasks_chunk_encode_seconds_count"] == len(recent) >= len(encodes)
    assert chunk["mediatasks_chunk_encode_seconds_sum"] == pytest.approx(sum(
        (t.finished_at - t.started_at).total_seconds() for t in recent if t.started_at),
        abs=0.01)
    assert metrics["mediatasks_broker_up"]["mediatasks_broker_up"] == 1
