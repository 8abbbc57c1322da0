"""The one exception tree of mediatasks.

Retry is decided by type: Celery tasks autoretry ``TransientError`` only; everything else fails
the job at once with its message, which always names the file (or option) and the fix.

    MediatasksError
    ├── TransientError              retried with exponential backoff and jitter
    │   ├── ProcessKilled           ffmpeg died from a signal (OOM killer, a stopped worker)
    │   ├── DiskFull                ENOSPC in the work directory or at the output
    │   ├── BrokerUnavailable       the broker or result backend cannot be reached
    │   └── RateLimited             one API key made too many requests (`retry_after` seconds)
    └── PermanentError              never retried
        ├── InvalidMedia            the source cannot be used as it is
        │   ├── SourceNotFound
        │   ├── NoVideoStream
        │   ├── UndecodableMedia    ffprobe/ffmpeg cannot read it
        │   └── SourceChanged       the source was replaced, modified or deleted during the job
        ├── InvalidOptions          what the user asked for cannot be done
        │   ├── UnknownEncoder
        │   ├── OutputExists
        │   ├── InvalidPolicy       a policy file or library template cannot be used (file:line: key)
        │   ├── NothingToUndo       the job or batch has no change left to undo
        │   └── IdempotencyConflict an Idempotency-Key used again with another request body
        ├── ToolNotFound            ffmpeg/ffprobe/redis-server missing
        ├── HardwareUnavailable     a GPU encoder cannot be opened on this worker
        ├── FfmpegFailed            a deterministic ffmpeg failure (stderr tail attached)
        ├── FrameCountMismatch      a chunk or the output does not hold the planned frames
        ├── VerificationFailed      the muxed output does not match the source
        ├── JobFailed               the job as a whole failed (carries the first task's error)
        ├── UntrustedMessage        a task message names something it may not (a path outside
        │   │                       MEDIATASKS_ROOTS, an id that is no id): rejected, not retried
        │   └── PathRefused         a path a client gave breaks a path rule (named in `rule`)
        ├── NotAuthenticated        no API key, or one that is wrong or revoked
        ├── ScopeMissing            the API key lacks the scope the request needs
        └── UndoRefused             undo would lose a file changed since the job wrote or moved it
    JobCancelled                    the user stopped the job (never retried; exit 130)
"""

from __future__ import annotations

from pathlib import Path

# The hint of a failure that is ours, not the file's: what to send with the report.
REPORT_HINT = ("a mediatasks bug, not a damaged file: please report it with the output of "
               "'mediatasks probe FILE --json' and 'ffmpeg -version'")


class MediatasksError(Exception):
    """Root of every error mediatasks raises on purpose."""

    exit_code = 1
    field: str | None = None  # the request field at fault, where one is (the HTTP API says it)

    def __init__(self, message: str, *, path: str | Path | None = None, hint: str | None = None):
        text = message
        if path is not None and str(path) not in message:
            text = f"{path}: {message}"
        if hint and hint not in text:
            text = f"{text} ({hint})"
        # One line, always: stderr tails and paths with newlines must not break the CLI's output.
        text = " ".join(text.split())
        super().__init__(text)
        self.path = str(path) if path is not None else None
        self.hint = hint
        self.detail = " ".join(message.split())

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class TransientError(MediatasksError):
    """A failure that may clear by itself; the task is retried."""


class ProcessKilled(TransientError):
    """A subprocess was killed by a signal."""


class DiskFull(TransientError):
    """No space left in the work directory or at the output."""


class BrokerUnavailable(TransientError):
    """The broker or result backend cannot be reached."""


class PermanentError(MediatasksError):
    """A failure that retrying cannot fix."""


class InvalidMedia(PermanentError):
    """The source file cannot be used."""

    exit_code = 3


class SourceNotFound(InvalidMedia):
    """The source path does not exist or is not a regular file."""


class NoVideoStream(InvalidMedia):
    """The source has no video stream to encode."""


class UndecodableMedia(InvalidMedia):
    """ffprobe or ffmpeg cannot read the source."""


class SourceChanged(InvalidMedia):
    """The source is not the file the job probed: replaced, modified or deleted since."""


class InvalidOptions(PermanentError):
    """The options given cannot be used."""

    exit_code = 2


class UnknownEncoder(InvalidOptions):
    """The encoder is not in this ffmpeg build."""


class OutputExists(InvalidOptions):
    """The output exists and --overwrite was not given."""


class InvalidPolicy(InvalidOptions):
    """A policy file, or a library name rendered from it, cannot be used."""


class NothingToUndo(InvalidOptions):
    """Every change the job or batch made has been undone already, or it made none."""


class ToolNotFound(PermanentError):
    """A required program is not installed."""

    exit_code = 4


class HardwareUnavailable(PermanentError):
    """A hardware encoder cannot be opened on this machine (no device, no driver, no session)."""


class FfmpegFailed(PermanentError):
    """ffmpeg exited with an error that retrying will not fix."""


class FrameCountMismatch(PermanentError):
    """A chunk or the output does not hold the planned number of frames."""


class VerificationFailed(PermanentError):
    """The muxed output does not match the source."""


class JobFailed(PermanentError):
    """The job failed; the message is the first failing task's error."""


class UntrustedMessage(PermanentError):
    """A job or task message asks for something no caller may: rejected, never retried."""


class PathRefused(UntrustedMessage):
    """A path given to the HTTP API breaks a rule: outside the roots, '..', a URL, a playlist."""

    def __init__(self, message: str, *, field: str, rule: str, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.field = field
        self.rule = rule


class IdempotencyConflict(InvalidOptions):
    """An Idempotency-Key came back with another request body."""


class NotAuthenticated(PermanentError):
    """No API key was given, or it is wrong or revoked."""


class ScopeMissing(PermanentError):
    """The API key does not carry the scope the request needs."""


class RateLimited(TransientError):
    """Too many requests with one API key; ``retry_after`` says when to come back."""

    def __init__(self, message: str, *, retry_after: int, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.retry_after = retry_after


class UndoRefused(PermanentError):
    """Undo stopped before touching anything: a file changed since the job wrote or moved it."""


class JobCancelled(MediatasksError):
    """The job was stopped by the user."""

    exit_code = 130
