"""The base of every job task: it checks the message, reports each step and failure to the job
service, retries what is transient and drops what belongs to an earlier attempt; and the small
helpers the task bodies share (the job's folder, live state, plan)."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

from celery import Task
from celery.exceptions import Ignore, Reject, Retry
from pydantic import ValidationError

from mediatasks import encoder_options
from mediatasks.cluster.app import app
from mediatasks.cluster.failures import describe
from mediatasks.errors import (
    BrokerUnavailable,
    InvalidOptions,
    JobCancelled,
    JobFailed,
    MediatasksError,
    PermanentError,
    TransientError,
    UntrustedMessage,
)
from mediatasks.jobstate import JobState
from mediatasks.models import (
    JobPlan,
    JobSpec,
)
from mediatasks.service import JobService, trust
from mediatasks.settings import get_settings
from mediatasks.steps import plan as plan_step

_settings = get_settings()
log = logging.getLogger(__name__)


def job_dir(job_id: str) -> Path:
    return get_settings().work_dir / job_id


def job_state(job_id: str) -> JobState:
    return JobState(app.backend, job_id)


def service() -> JobService:
    from mediatasks.cluster.services import service_for

    return service_for(app, get_settings().database_url)


def report(what: str, call: Any) -> Any:
    """Tell the service; a history that cannot be written never fails a job."""
    try:
        return call(service())
    except MediatasksError:
        raise
    except Exception:
        log.exception("could not record %s", what)
        return None


class JobTask(Task):  # type: ignore[misc]
    """Base of every pipeline task: transient errors retry with backoff, the first error is kept."""

    autoretry_for = (TransientError,)
    dont_autoretry_for = (PermanentError,)
    retry_backoff = _settings.retry_backoff
    retry_backoff_max = _settings.retry_backoff_max
    retry_jitter = True
    max_retries = _settings.max_retries
    # Also the delay before a task whose pool process died is sent again (task_retry_on_worker_lost).
    default_retry_delay = _settings.retry_backoff

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        spec = kwargs.get("spec")
        spec = spec if isinstance(spec, dict) else {}
        check_message(self, spec)
        job_id = str(spec["job_id"]) if spec.get("job_id") else None
        state = job_state(job_id) if job_id else None
        step = self.name.removeprefix("mediatasks.")
        try:
            if state is not None and int(spec.get("attempt") or 0) < state.attempt():
                # Queued before a `mediatasks retry`: the new attempt does this work.
                log.warning("%s[%s]: a task of an earlier attempt of job %s; dropped", self.name,
                            self.request.id, spec["job_id"])
                return {"dropped": "earlier attempt"}
            if state is not None and state.cancelled():
                # A cancelled job's queued tasks end here, before doing anything.
                raise JobCancelled("the job was cancelled", path=spec.get("input"))
            if state is not None and self.name != "mediatasks.publish" and state.published():
                return self._duplicate()
            if job_id:
                report("the step", lambda s: s.step_started(job_id, step))
            return super().__call__(*args, **kwargs)
        except (Ignore, Retry):  # a retry still to come
            raise
        except BaseException as exc:
            if state is not None and self.name != "mediatasks.publish" and state.published():
                # A second delivery of a task (a visibility timeout shorter than the encode)
                # ran on while the job finished and removed its files: nothing is wrong.
                return self._duplicate()
            # Before Celery stores the FAILURE, so a follower that sees it also sees why.
            self._record(exc, kwargs)
            raise

    def _duplicate(self) -> dict[str, str]:
        log.warning("%s[%s]: the job is already published; this delivery is a duplicate and is "
                    "dropped", self.name, self.request.id)
        return {"dropped": "duplicate"}

    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any,
                   einfo: Any) -> None:
        self._record(exc, kwargs)
        spec = (kwargs or {}).get("spec") or {}
        if isinstance(spec, dict) and spec.get("job_id") and not isinstance(exc, JobCancelled) \
                and not lost_connection(exc):
            message = describe(exc, self.name)
            report("the failure", lambda s: s.failed(str(spec["job_id"]), message,
                                                     attempt=int(spec.get("attempt") or 0)))

    def _record(self, exc: BaseException, kwargs: Any) -> None:
        spec = (kwargs or {}).get("spec") or {}
        job_id = spec.get("job_id") if isinstance(spec, dict) else None
        if job_id:
            with contextlib.suppress(Exception):  # the backend may be the thing that failed
                job_state(job_id).record_error(describe(exc, self.name))


def check_message(task: Task, spec: dict[str, Any]) -> None:
    """Check the message before anything else: a job spec whose ids are ids and whose paths lie
    under MEDIATASKS_ROOTS. Anything else is rejected (not retried) and logged."""
    try:
        checked = JobSpec.model_validate(spec)
        trust.check_spec(checked, get_settings().root_paths)
        encoder_options.check_options(checked.options.video_codec, checked.options.video_opts,
                                      ffmpeg=get_settings().ffmpeg)
    except (UntrustedMessage, InvalidOptions, ValidationError) as exc:
        reason = " ".join(str(exc).split())[:500]
        log.error("%s[%s]: message rejected: %s", task.name, task.request.id, reason)
        raise Reject(reason, requeue=False) from None


def lost_connection(exc: BaseException) -> bool:
    """This worker lost the broker (cut off the network): its unacknowledged task goes to another
    worker, so the job has not failed. A job nobody finishes is found stalled instead."""
    from kombu.exceptions import OperationalError
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    return isinstance(exc, (BrokerUnavailable, OperationalError, RedisConnectionError,
                            RedisTimeoutError, ConnectionError))


def parse_spec(spec: dict[str, Any]) -> JobSpec:
    return JobSpec.model_validate(spec)


def load_plan(spec: JobSpec) -> JobPlan:
    try:
        return plan_step.load_plan(job_dir(spec.job_id))
    except FileNotFoundError:
        # The job failed elsewhere and its files are gone: this task has nothing left to do.
        raise JobFailed("the job has already failed or was cleaned up; this task is skipped",
                        path=spec.input) from None
