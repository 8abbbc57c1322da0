"""The one door to subprocesses.

Every ffmpeg, ffprobe, redis-server and worker process starts here. Each child gets its own
process group (so a whole pipeline can be killed at once; a Celery revoke kills only the pool
process, never its children) and, on Linux, a parent-death signal so that a killed worker does
not leave ffmpeg running. The argv is logged with ``shlex.join``; nothing ever runs through a shell.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import logging
import os
import select
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from mediatasks.commands import LOG_TAIL_CHARS as LOG_TAIL_CHARS
from mediatasks.commands import Completed as Completed
from mediatasks.commands import record_commands as record_commands
from mediatasks.commands import recorded_commands as recorded_commands
from mediatasks.commands import remember
from mediatasks.commands import stop_recording as stop_recording
from mediatasks.commands import task_log as task_log
from mediatasks.diagnose import failure_for, out_of_space
from mediatasks.errors import JobCancelled, MediatasksError, ToolNotFound

log = logging.getLogger(__name__)

ProgressFn = Callable[[dict[str, str]], None]

_TAIL_LINES = 40
@dataclass
class _Reader:
    stream: IO[str]
    keep_all: bool
    lines: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=_TAIL_LINES))
    everything: list[str] = field(default_factory=list)
    on_line: Callable[[str], None] | None = None

    def __call__(self) -> None:
        for raw in self.stream:
            line = raw.rstrip("\r\n")
            if self.keep_all:
                self.everything.append(line)
            else:
                self.lines.append(line)
            if self.on_line is not None:
                self.on_line(line)


def media_url(path: str | Path) -> str:
    """An absolute path ffmpeg reads as a plain file, whatever its name (':', leading '-')."""
    return "file:" + os.path.abspath(os.fspath(path))


# A source is opened as a local file and nothing else: a playlist inside it cannot make ffmpeg
# fetch a URL or run another protocol (http, concat:, subfile:, …).
FILE_ONLY = ("-protocol_whitelist", "file")


def source_input(path: str | Path) -> list[str]:
    """ffmpeg's input options for a source: the file protocol only, then ``-i file:PATH``."""
    return [*FILE_ONLY, "-i", media_url(path)]


def probe_input(path: str | Path) -> list[str]:
    """ffprobe's last arguments for a source: the file protocol only, then ``file:PATH``."""
    return [*FILE_ONLY, media_url(path)]


def _set_pdeathsig() -> None:
    """Runs in the child between fork and exec: die with the parent (Linux only)."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _popen(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None,
    cwd: str | Path | None,
    stdout: int | IO[bytes] | None,
    stderr: int | IO[bytes] | None,
    die_with_parent: bool,
) -> subprocess.Popen[str]:
    log.info("run: %s", shlex.join(argv))
    try:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            text=True,
            encoding="utf-8",
            errors="replace",
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=_set_pdeathsig if die_with_parent else None,
        )
    except FileNotFoundError as exc:
        raise ToolNotFound(
            f"{argv[0]} is not installed or not on PATH",
            hint="install it (Debian/Ubuntu: apt-get install ffmpeg redis-server) or run 'make demo'",
        ) from exc


def exec_replace(argv: Sequence[str], env: Mapping[str, str]) -> None:
    """Become ``argv`` (``mediatasks worker`` becomes ``celery worker``); never returns."""
    log.info("exec: %s", shlex.join(argv))
    os.execvpe(argv[0], list(argv), dict(env))


def kill_group(proc: subprocess.Popen[str], sig: int = signal.SIGKILL) -> None:
    """Signal the whole process group of ``proc`` (it leads its own session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _asked_to_stop(should_stop: Callable[[], bool]) -> bool:
    """A stop check that cannot kill the process it guards: if the flag cannot be read (the broker
    is restarting) the answer is no, and the next check asks again."""
    try:
        return should_stop()
    except Exception as exc:
        log.warning("cannot read the cancel flag (%s); going on", exc)
        return False


def run(
    argv: Sequence[str],
    *,
    check: bool = True,
    subject: str | Path | None = None,
    timeout: float | None = None,
    stall_timeout: float | None = None,
    on_progress: ProgressFn | None = None,
    keep_stdout: bool = False,
    cwd: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_stdout: Callable[[str], None] | None = None,
) -> Completed:
    """Run ``argv`` to completion.

    Args:
        check: raise the classified error (see ``diagnose.failure_for``) on a non-zero exit.
        subject: the file the command works on, named in errors.
        timeout: kill the process group after this many seconds.
        stall_timeout: with ``on_progress``, kill when no progress block arrives for this long.
        on_progress: called with each ``-progress`` block (ffmpeg writes them to stdout).
        keep_stdout: return all of stdout (for ffprobe); otherwise only progress is parsed.
        should_stop: polled about once a second; True kills the process group (a cancel).
        on_stdout: called with each line of stdout as it comes (a long ffprobe listing is
            read line by line, never held whole).

    Raises:
        JobCancelled: ``should_stop`` said so.
        ToolNotFound, TransientError, PermanentError: as classified from the exit and stderr.
    """
    started = time.monotonic()
    last_progress = [started]
    block: dict[str, str] = {}
    final: list[dict[str, str]] = []

    def progress_line(line: str) -> None:
        key, sep, value = line.partition("=")
        if not sep:
            return
        block[key.strip()] = value.strip()
        if key.strip() == "progress":
            last_progress[0] = time.monotonic()
            final[:] = [dict(block)]
            if on_progress is not None:
                try:
                    on_progress(dict(block))
                except Exception:  # progress reporting must never break an encode
                    log.exception("progress callback failed")
            block.clear()

    proc = _popen(argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                  die_with_parent=True)
    assert proc.stdout is not None and proc.stderr is not None
    out = _Reader(proc.stdout, keep_all=keep_stdout,
                  on_line=progress_line if on_progress is not None else on_stdout)
    err = _Reader(proc.stderr, keep_all=False)
    threads = [threading.Thread(target=r, daemon=True) for r in (out, err)]
    for t in threads:
        t.start()
    reason: str | None = None
    cancelled = False
    last_check = started
    exited = _exit_waiter(proc)
    try:
        while True:
            try:
                exited(0.5)
                proc.wait(timeout=0)
                break
            except subprocess.TimeoutExpired:
                now = time.monotonic()
                if should_stop is not None and now - last_check >= 1.0:
                    last_check = now
                    if _asked_to_stop(should_stop):
                        cancelled = True
                        kill_group(proc)
                        proc.wait()
                        break
                if timeout is not None and now - started > timeout:
                    reason = f"timed out after {timeout:.0f}s"
                elif (stall_timeout is not None and on_progress is not None
                      and now - last_progress[0] > stall_timeout):
                    reason = f"stalled: no progress for {stall_timeout:.0f}s"
                if reason:
                    log.warning("killing %s: %s", argv[0], reason)
                    kill_group(proc)
    except BaseException:
        # SoftTimeLimitExceeded, KeyboardInterrupt, a cancel: never leave ffmpeg behind.
        kill_group(proc)
        proc.wait()
        raise
    finally:
        exited.close()
        for t in threads:
            t.join(timeout=5)
        proc.stdout.close()
        proc.stderr.close()
        remember(Completed(argv=tuple(argv), returncode=proc.returncode
                            if proc.returncode is not None else -signal.SIGKILL,
                            stdout="", stderr_tail=tuple(err.lines),
                            seconds=time.monotonic() - started))
    if cancelled:
        raise JobCancelled(f"{Path(argv[0]).name} stopped: the job was cancelled", path=subject)
    done = Completed(
        argv=tuple(argv),
        returncode=proc.returncode,
        stdout="\n".join(out.everything) if keep_stdout else "",
        stderr_tail=tuple(err.lines),
        seconds=time.monotonic() - started,
        progress=final[0] if final else None,
    )
    if check and (proc.returncode != 0 or reason):
        raise failure_for(done.argv, done.returncode, done.stderr_tail, subject=subject,
                          reason=reason)
    if check and proc.returncode == 0 and out_of_space(done.stderr_tail):
        # ffmpeg 5.1 exits 0 after "Error writing trailer ... No space left on device": the
        # file it wrote is cut short. A full disk is transient: classified (and retried) as such.
        raise failure_for(done.argv, 1, done.stderr_tail, subject=subject)
    return done


class _PidfdWaiter:
    """Wakes the moment the child exits (a pidfd becomes readable): ``Popen.wait(timeout)``
    polls with sleeps of up to 50 ms, which a job of a dozen short ffprobes pays each time."""

    def __init__(self, fd: int):
        self.fd = fd
        self.poller = select.poll()
        self.poller.register(fd, select.POLLIN)

    def __call__(self, seconds: float) -> None:
        self.poller.poll(seconds * 1000)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


class _SleepWaiter:
    """Where there are no pidfds (not Linux, an old kernel): ``Popen.wait`` itself."""

    def __init__(self, proc: subprocess.Popen[str]):
        self.proc = proc

    def __call__(self, seconds: float) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=seconds)

    def close(self) -> None:
        pass


def _exit_waiter(proc: subprocess.Popen[str]) -> _PidfdWaiter | _SleepWaiter:
    try:
        return _PidfdWaiter(os.pidfd_open(proc.pid))
    except (AttributeError, OSError):
        return _SleepWaiter(proc)


@dataclass
class Service:
    """A long-running child (redis-server, a celery worker) with its log file."""

    name: str
    proc: subprocess.Popen[str]
    log_path: Path

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, grace: float = 5.0, sig: int = signal.SIGTERM) -> None:
        """Signal the process group, wait ``grace`` seconds, then kill it."""
        if self.proc.poll() is None:
            kill_group(self.proc, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=grace)
        # Children of the group (pool processes, ffmpeg) may outlive the leader.
        kill_group(self.proc, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=grace)


def spawn(name: str, argv: Sequence[str], *, log_path: Path,
          env: Mapping[str, str] | None = None, cwd: str | Path | None = None) -> Service:
    """Start a long-running service whose output goes to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as sink:
        proc = _popen(argv, env=env, cwd=cwd, stdout=sink, stderr=subprocess.STDOUT,
                      die_with_parent=True)
    return Service(name=name, proc=proc, log_path=log_path)


@contextlib.contextmanager
def services() -> Iterator[list[Service]]:
    """A list of services that are all stopped when the block ends, however it ends."""
    started: list[Service] = []
    try:
        yield started
    finally:
        for svc in reversed(started):
            try:
                svc.stop()
            except MediatasksError:
                log.exception("stopping %s failed", svc.name)
