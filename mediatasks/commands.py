"""What a finished command left (``Completed``), and the commands a task ran: the runner
records them, in this context, once ``record_commands`` asked it to; the task's row keeps one
(``task_log``)."""

from __future__ import annotations

import collections
import contextvars
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# What a task keeps of the commands it ran (see ``record_commands``): the last few, 4 KB of stderr.
_KEPT_COMMANDS = 16
LOG_TAIL_CHARS = 4096


@dataclass(frozen=True)
class Completed:
    """A finished process: its argv, exit status and the tails of its output."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr_tail: tuple[str, ...]
    seconds: float
    progress: dict[str, str] | None = None  # the last ``-progress`` block, when it was followed

    def frames_written(self) -> int | None:
        """The frames ffmpeg wrote, from its final ``-progress`` block (``progress=end``); None
        when it never said (then the file has to be counted)."""
        if not self.progress or self.progress.get("progress") != "end":
            return None
        try:
            return int(self.progress.get("frame", ""))
        except ValueError:
            return None


# The commands run in this context since ``record_commands`` (a Celery task: the signals set it
# before the task body and read it after); None where nobody asked, so nothing is kept.
_recorded: contextvars.ContextVar[collections.deque[Completed] | None] = contextvars.ContextVar(
    "mediatasks_recorded_commands", default=None)


def record_commands() -> None:
    """Keep the commands run from here on in this context (thread), for ``task_log``."""
    _recorded.set(collections.deque(maxlen=_KEPT_COMMANDS))


def stop_recording() -> None:
    """Keep no more commands in this context (a task has ended)."""
    _recorded.set(None)


def recorded_commands() -> list[Completed]:
    """The commands run since ``record_commands``, oldest first."""
    return list(_recorded.get() or ())


def remember(done: Completed) -> None:
    kept = _recorded.get()
    if kept is not None:
        kept.append(done)


def task_log(commands: Sequence[Completed]) -> tuple[str, str] | None:
    """The command a task's log shows, as (shlex-joined argv, the last ~4 KB of its stderr): the
    last one that failed, else the last that was not a probe (the encode, not the frame count
    after it), else the last one; None when it ran none."""
    if not commands:
        return None
    failed = [c for c in commands if c.returncode != 0]
    work = [c for c in commands if "ffprobe" not in Path(c.argv[0]).name]
    chosen = (failed or work or list(commands))[-1]
    return shlex.join(chosen.argv), "\n".join(chosen.stderr_tail)[-LOG_TAIL_CHARS:]
