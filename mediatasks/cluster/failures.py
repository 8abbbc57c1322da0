"""A failed task's exception as the one line a user reads."""

from __future__ import annotations

from celery.exceptions import SoftTimeLimitExceeded

from mediatasks.errors import MediatasksError


def describe(exc: BaseException, task: str) -> str:
    """One line for the user: our errors speak for themselves; anything else is a bug."""
    if isinstance(exc, MediatasksError):
        return str(exc)
    if isinstance(exc, SoftTimeLimitExceeded):
        return f"{task} ran past its time limit (MEDIATASKS_TASK_SOFT_TIME_LIMIT)"
    if isinstance(exc, OSError) and exc.filename:
        return " ".join(f"{exc.filename}: {exc.strerror or exc} (in {task})".split())
    return " ".join(f"internal error in {task}: {type(exc).__name__}: {exc}".split())
