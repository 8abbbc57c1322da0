"""Celery signals that write the job history from the workers; task bodies stay free of SQL.

Every handler swallows its own errors: a history that cannot be written must never fail a job.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from celery.signals import task_failure, task_postrun, task_prerun, task_retry

from mediatasks.history.store import History

log = logging.getLogger(__name__)
_histories: dict[int, History] = {}


def _history() -> History:
    """One History per process (prefork children must not share the parent's connections)."""
    from mediatasks.settings import get_settings

    pid = os.getpid()
    if pid not in _histories:
        _histories[pid] = History(get_settings().database_url)
    return _histories[pid]


def _safe(write: Callable[[History], None]) -> None:
    try:
        write(_history())
    except Exception:
        log.exception("could not write the job history")


def _job_id(kwargs: Any) -> str | None:
    kwargs = kwargs or {}
    spec = kwargs.get("spec")
    if isinstance(spec, dict) and spec.get("job_id"):
        return str(spec["job_id"])
    job_id = kwargs.get("job_id")
    return str(job_id) if job_id else None


@task_prerun.connect
def _started(task_id: str | None = None, task: Any = None, kwargs: Any = None, **_: Any) -> None:
    job_id = _job_id(kwargs)
    if not job_id or task is None or task_id is None:
        return
    req = task.request
    queue = (req.delivery_info or {}).get("routing_key")
    _safe(lambda h: h.task_started(task_id, job_id, name=task.name, queue=queue,
                                   worker=req.hostname))


@task_postrun.connect
def _finished(task_id: str | None = None, task: Any = None, kwargs: Any = None,
              retval: Any = None, state: str | None = None, **_: Any) -> None:
    job_id = _job_id(kwargs)
    if not job_id or task is None or task_id is None or state not in {"SUCCESS", "IGNORED"}:
        return
    # plan replaces itself with the chord (Celery reports IGNORED): its own work succeeded.
    _safe(lambda h: h.task_finished(task_id, name=task.name, state="SUCCESS"))
    if task.name == "mediatasks.plan":
        from mediatasks.steps.plan import load_plan
        from mediatasks.tasks import job_dir

        try:
            jp = load_plan(job_dir(job_id))
        except (OSError, ValueError):
            return
        _safe(lambda h: h.job_planned(job_id, chunks=len(jp.chunks), frames=jp.frame_count))
    if task.name == "mediatasks.publish" and isinstance(retval, dict):
        output = retval.get("output")
        size = os.path.getsize(output) if output and os.path.exists(output) else None
        _safe(lambda h: h.job_finished(job_id, "succeeded", chunks=retval.get("chunks"),
                                       frames_in=retval.get("frames_in"),
                                       frames_out=retval.get("frames_out"), size_out=size,
                                       chunks_reused=retval.get("chunks_reused")))


@task_failure.connect
def _failed(task_id: str | None = None, exception: BaseException | None = None,
            kwargs: Any = None, sender: Any = None, **_: Any) -> None:
    from mediatasks.tasks import describe

    job_id = _job_id(kwargs)
    if not job_id or task_id is None or exception is None:
        return
    name = str(getattr(sender, "name", "task"))
    message = describe(exception, name)
    _safe(lambda h: h.task_finished(task_id, name=name, state="FAILURE", error=message))
    _safe(lambda h: h.job_finished(job_id, "failed", error=message))


@task_retry.connect
def _retried(request: Any = None, reason: Any = None, **_: Any) -> None:
    if request is None or not _job_id(getattr(request, "kwargs", None)):
        return
    name = str(getattr(request, "task", "") or "")
    _safe(lambda h: h.task_retried(request.id, name=name, error=" ".join(str(reason).split())))
