"""Running jobs to their end and saying how they ended: what `mediatasks run` does with the
service on its private cluster, and what every follower reads at the end."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Literal

from mediatasks.fingerprint import KnownSource
from mediatasks.models import JobResult, JobSpec
from mediatasks.service.jobs import JobService
from mediatasks.service.records import Event

EventFn = Callable[[Event], None]


def result_of(service: JobService, job_id: str) -> JobResult:
    """A job's outcome as `--json` prints it (the published result for one that succeeded)."""
    record = service.get(job_id)
    state = service.live(job_id)
    published = None
    if record.status in {"succeeded", "kept", "undone"} and state is not None:
        try:
            published = state.published()
        except Exception:  # the broker is away: the history still says how it ended
            published = None
    if published is not None:
        return JobResult.model_validate(published)
    status: Literal["succeeded", "failed", "cancelled", "rejected"]
    if record.status in {"succeeded", "kept", "undone"}:
        status = "succeeded"
    elif record.status in {"cancelled", "rejected"}:
        status = "cancelled" if record.status == "cancelled" else "rejected"
    else:
        status = "failed"
    return JobResult(job_id=job_id, status=status,
                     output=record.output if status == "succeeded" else None,
                     outcome="kept-source" if record.status == "kept" else "published",
                     input=record.input, error=record.error, chunks=record.chunks,
                     frames_in=record.frames_in, frames_out=record.frames_out,
                     chunks_reused=record.chunks_reused, note=record.note,
                     size_in=record.size_in, size_out=record.size_out)


def drive(service: JobService, key: str, *, local_jobs: set[str], watch: Callable[[], None],
          on_event: EventFn, after: int = 0,
          on_failure: Callable[[Event], None] | None = None) -> None:
    """Follow a job or batch to its end, sending the encodes of local jobs once approved.

    ``watch`` is called whenever nothing happened for a second (it raises when the workers died).
    """
    for event in service.follow(key, after=after):
        if event is None:
            watch()
            continue
        on_event(event)
        if event.type == "job.approved" and event.job_id in local_jobs:
            service.start_encode(event.job_id)
        if event.type == "job.failed" and on_failure is not None:
            on_failure(event)


def settle(service: JobService, job_ids: Sequence[str], *, timeout: float = 3.0) -> None:
    """Wait (briefly) until the tasks of ended jobs have written their own rows: a job's end is
    announced from inside its last task, whose row the worker writes just after. A private
    cluster is stopped only then, so `jobs show` never lists a task as still running."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        records = [service.find(j) for j in job_ids]
        if all(r is None or all(t.state not in {"STARTED", "RETRY"} for t in r.tasks)
               for r in records):
            return
        time.sleep(0.05)


def run_job(service: JobService, spec: JobSpec, *, watch: Callable[[], None],
            on_event: EventFn, known: KnownSource | None = None) -> JobResult:
    """Submit one job (``known``: its source as just probed) and follow it to its end."""
    service.submit(spec, known=known)
    drive(service, spec.job_id, local_jobs={spec.job_id} if spec.local else set(), watch=watch,
          on_event=on_event)
    settle(service, [spec.job_id])
    return result_of(service, spec.job_id)


def run_batch(service: JobService, batch_id: str, specs: Sequence[JobSpec], *,
              watch: Callable[[], None], on_event: EventFn,
              stop_on_failure: bool) -> dict[str, JobResult]:
    """Submit every job of a batch at once and follow them all to their end; with
    ``stop_on_failure`` the first job that fails cancels the others."""
    stopping: list[bool] = []

    def stop_others(event: Event) -> None:
        if not stop_on_failure or stopping:
            return
        stopping.append(True)
        for record in service.batch(batch_id):
            if record.job_id != event.job_id and not record.ended:
                service.cancel_job(record.job_id, reason="cancelled: another file of the batch "
                                                         "failed (--on-error stop)")

    for spec in specs:
        service.submit(spec)
    if specs:
        drive(service, batch_id, local_jobs={s.job_id for s in specs if s.local}, watch=watch,
              on_event=on_event, on_failure=stop_others)
        settle(service, [s.job_id for s in specs])
    return {s.job_id: result_of(service, s.job_id) for s in specs}
