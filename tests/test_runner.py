"""The one door to subprocesses: time limits, stalls, cancels, process groups, classification."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from mediatasks import runner
from mediatasks.errors import (
    DiskFull,
    FfmpegFailed,
    JobCancelled,
    ProcessKilled,
    TransientError,
    UndecodableMedia,
)

PY = sys.executable


def test_a_stalled_process_is_killed_and_retried_as_transient() -> None:
    script = "import time; print('frame=1'); print('progress=continue', flush=True); time.sleep(60)"
    seen: list[dict[str, str]] = []
    started = time.monotonic()
    with pytest.raises(ProcessKilled, match="stalled") as err:
        runner.run([PY, "-c", script], on_progress=seen.append, stall_timeout=1.5)
    assert isinstance(err.value, TransientError)
    assert seen == [{"frame": "1", "progress": "continue"}]
    assert time.monotonic() - started < 10


def test_a_time_limit_kills_the_whole_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    script = ("import subprocess, sys, time; "
              "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
              f"open({str(pidfile)!r}, 'w').write(str(p.pid)); time.sleep(60)")
    with pytest.raises(ProcessKilled, match="timed out"):
        runner.run([PY, "-c", script], timeout=1.5)
    child = int(pidfile.read_text())
    time.sleep(0.3)
    assert not _running(child)  # the grandchild went with its group


def _running(pid: int) -> bool:
    """Alive and not a zombie waiting to be reaped."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def test_should_stop_kills_the_process_and_raises_cancelled() -> None:
    started = time.monotonic()
    with pytest.raises(JobCancelled):
        runner.run([PY, "-c", "import time; time.sleep(60)"],
                   should_stop=lambda: time.monotonic() - started > 1)
    assert time.monotonic() - started < 5


def test_failures_are_classified_from_the_exit_and_stderr() -> None:
    with pytest.raises(ProcessKilled, match="SIGKILL"):
        runner.run([PY, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"])
    with pytest.raises(UndecodableMedia, match="invalid data"):
        runner.run([PY, "-c", "import sys; sys.stderr.write('x: Invalid data found when "
                              "processing input\\n'); sys.exit(1)"], subject="/in.mkv")
    with pytest.raises(FfmpegFailed, match=r"exit 3.*last words"):
        runner.run([PY, "-c", "import sys; sys.stderr.write('last words\\n'); sys.exit(3)"])
    with pytest.raises(DiskFull, match=r"no space left.*free space in /work/job7/chunks"):
        runner.run([PY, "-c", "import sys; sys.stderr.write('Error writing trailer: No space left "
                              "on device\\n'); sys.exit(1)", "/work/job7/chunks/00001.nut.tmp"])


def test_arguments_reach_the_program_as_they_are_never_through_a_shell(tmp_path: Path) -> None:
    hostile = f"$(touch {tmp_path}/pwned); `id` 'q' \"d\" -x"
    done = runner.run([PY, "-c", "import sys; print(sys.argv[1])", hostile], keep_stdout=True)
    assert done.stdout == hostile
    assert not (tmp_path / "pwned").exists()


def test_a_missing_program_says_how_to_install_it() -> None:
    from mediatasks.errors import ToolNotFound

    with pytest.raises(ToolNotFound, match="make demo"):
        runner.run(["/nonexistent/ffmpeg", "-version"])
