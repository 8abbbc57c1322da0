"""Celery signals that keep each task's row in the history (name, queue, worker, state, times,
retries, and the last command it ran with its stderr tail); task bodies stay free of SQL. A job's
own state is the job service's, not theirs.

Every handler swallows its own errors: a history that cannot be written must never fail a job.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from celery.signals import (
    task_failure,
    task_postrun,
    task_prerun,
    task_retry,
)

from mediatasks import runner
from mediatasks.history.store import History

log = logging.getLogger(__name__)


def _history() -> History:
    from mediatasks.cluster.services import open_history
    from mediatasks.settings import get_settings

    return open_history(get_settings().database_url)


def _safe(write: Callable[[History], None]) -> None:
    try:
        write(_history())
    except Exception:
        log.exception("could not write the job history")


def _job_id(kwargs: Any) -> str | None:
    """The job a task message is for; None for a message the task will reject (nothing of an
    untrusted message reaches the history)."""
    from pydantic import ValidationError

    from mediatasks.errors import UntrustedMessage
    from mediatasks.models import JobSpec
    from mediatasks.service import trust
    from mediatasks.settings import get_settings

    kwargs = kwargs or {}
    try:
        spec = kwargs.get("spec")
        if isinstance(spec, dict):
            checked = JobSpec.model_validate(spec)
            trust.check_spec(checked, get_settings().root_paths)
            return checked.job_id
        return trust.check_job_id(kwargs.get("job_id")) if kwargs.get("job_id") else None
    except (UntrustedMessage, ValidationError):
        return None


def _log() -> tuple[str, str] | None:
    """The command this task's row shows, from what the runner recorded since the task began."""
    try:
        return runner.task_log(runner.recorded_commands())
    except Exception:
        log.exception("could not read the task's commands")
        return None


@task_prerun.connect
def _started(task_id: str | None = None, task: Any = None, kwargs: Any = None, **_: Any) -> None:
    # The body runs in this thread and context right after: the runner keeps its commands.
    runner.record_commands()
    job_id = _job_id(kwargs)
    if not job_id or task is None or task_id is None:
        return
    req = task.request
    queue = (req.delivery_info or {}).get("routing_key")
    _safe(lambda h: h.task_started(task_id, job_id, name=task.name, queue=queue,
                                   worker=req.hostname))


@task_postrun.connect
def _finished(task_id: str | None = None, task: Any = None, kwargs: Any = None,
              state: str | None = None, **_: Any) -> None:
    try:
        job_id = _job_id(kwargs)
        if not job_id or task is None or task_id is None or state not in {"SUCCESS", "IGNORED"}:
            return
        ran = _log()
        _safe(lambda h: h.task_finished(task_id, name=task.name, state="SUCCESS", log=ran))
    finally:  # the failure and retry handlers ran before: the next task starts afresh
        runner.stop_recording()


@task_failure.connect
def _failed(task_id: str | None = None, exception: BaseException | None = None,
            kwargs: Any = None, sender: Any = None, **_: Any) -> None:
    from mediatasks.cluster.failures import describe

    job_id = _job_id(kwargs)
    if not job_id or task_id is None or exception is None:
        return
    name = str(getattr(sender, "name", "task"))
    message = describe(exception, name)
    ran = _log()
    _safe(lambda h: h.task_finished(task_id, name=name, state="FAILURE", error=message, log=ran))


@task_retry.connect
def _retried(request: Any = None, reason: Any = None, **_: Any) -> None:
    if request is None or not _job_id(getattr(request, "kwargs", None)):
        return
    name = str(getattr(request, "task", "") or "")
    ran = _log()
    _safe(lambda h: h.task_retried(request.id, name=name, error=" ".join(str(reason).split()),
                                   log=ran))
