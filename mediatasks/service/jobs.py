"""The job service: every operation on jobs and batches, and every change of their state.

The CLI, the Celery tasks and (later) the HTTP API call these methods; none of them changes a
job's state on its own. Each change is checked against the lifecycle table, written with its event
in one transaction, then announced on the event bus so followers wake up.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from mediatasks.errors import BrokerUnavailable, InvalidOptions, MediatasksError
from mediatasks.fingerprint import KnownSource
from mediatasks.library import UndoReport
from mediatasks.models import JobResult, JobSpec
from mediatasks.service import trust
from mediatasks.service.lifecycle import (
    LABELS,
    STEP_STATUS,
    TERMINAL,
    allowed,
    check_transition,
)
from mediatasks.service.ports import Dispatcher
from mediatasks.service.reads import JobReader
from mediatasks.service.records import Event, JobRecord
from mediatasks.service.summary import summarize

log = logging.getLogger(__name__)

PROGRESS_INTERVAL = 2.0  # seconds between two progress events of one chunk


class JobService(JobReader):
    """Owns the lifecycle of every job; given its storage, live state, dispatch and bus."""

    # -- operations ---------------------------------------------------------------------------

    def submit(self, spec: JobSpec, *, known: KnownSource | None = None) -> JobRecord:
        """Record the job as queued and send it to be probed and planned (``known``: the source
        as the submitter just probed it; the analyse step uses it while the file matches).

        Raises:
            BrokerUnavailable: the job could not be sent (it is recorded as failed).
        """
        if self.roots:
            trust.check_spec(spec, self.roots)
        self._check_output_free(spec)
        event = self.store.create_job(spec, status="queued", event="job.queued", data={
            "input": spec.input, "output": spec.output, "hold": spec.hold,
            "attempt": spec.attempt})
        self._announce(event)
        self._dispatch(spec.job_id, lambda d: d.analyse(spec, known=known))
        return self.get(spec.job_id)

    def _check_output_free(self, spec: JobSpec) -> None:
        """Refuse a second job that would write the output of a job that has not ended (a
        library job's path is the library's to share out: its on_exists decides)."""
        if spec.placement is not None:
            return
        other = self.store.active_job_writing(spec.output, other_than=spec.job_id)
        if other is not None:
            raise InvalidOptions(
                f"job {other.job_id} ({LABELS.get(other.status, other.status)}) already "
                "writes this output", path=spec.output,
                hint=f"wait for it to end, or 'mediatasks cancel {other.job_id}'")

    def planned(self, spec: JobSpec, *, chunks: int, frames: int, queue: str,
                warnings: tuple[str, ...] | list[str] = (), duration: float | None = None) -> str:
        """The plan step is done: hold the job for approval, or send its encodes. Returns the
        job's state."""
        data = {"chunks": chunks, "frames": frames, "queue": queue, "warnings": list(warnings),
                "duration": duration, "attempt": spec.attempt}
        self._announce(self.store.append_event(spec.job_id, "job.planned", data,
                                               fields={"chunks": chunks, "frames_in": frames}))
        record = self.get(spec.job_id)
        if record.status in TERMINAL:  # cancelled while it was planned
            return record.status
        if spec.hold:
            self._move(spec.job_id, "awaiting_approval", data=data)
            return "awaiting_approval"
        self._dispatch(spec.job_id, lambda d: d.encode(spec, chunks=chunks, queue=queue))
        return record.status

    def approve(self, job_id: str) -> JobRecord:
        """Let a held job go on (same job id): its encodes are sent now, or by the `run` that
        holds its private cluster."""
        record = self.get(job_id)
        check_transition(job_id, record.status, "approved",
                         hint="only a job awaiting approval can be approved")
        spec = JobSpec.model_validate(record.settings).model_copy(update={"hold": False})
        self._move(job_id, "approved", strict=True,
                   fields={"settings": spec.model_dump_json()})
        if not spec.local:
            self.start_encode(job_id)
        return self.get(job_id)

    def start_encode(self, job_id: str) -> None:
        """Send the encodes of an approved job, as its last plan said."""
        record = self.get(job_id)
        spec = JobSpec.model_validate(record.settings)
        plan = self._last_plan(job_id)
        self._dispatch(job_id, lambda d: d.encode(spec, chunks=int(plan["chunks"]),
                                                  queue=str(plan["queue"])))

    def _last_plan(self, job_id: str) -> dict[str, Any]:
        plans = [e for e in self.store.events(job_id) if e.type == "job.planned"]
        if not plans:
            raise InvalidOptions(f"job {job_id} has no plan yet", hint="wait until it is planned")
        return plans[-1].data

    def reject(self, job_id: str) -> JobRecord:
        """End a held job without touching any file."""
        record = self.get(job_id)
        check_transition(job_id, record.status, "rejected",
                         hint="only a job awaiting approval can be rejected")
        self._move(job_id, "rejected", strict=True, data={"error": "rejected by the user"},
                   fields={"error": "rejected by the user"})
        spec = JobSpec.model_validate(record.settings)
        if not spec.local and self.dispatcher is not None:
            try:
                self.dispatcher.discard(spec)
            except MediatasksError as exc:
                log.warning("the work directory of %s stays: %s", job_id, exc)
        return self.get(job_id)

    def cancel(self, some_id: str) -> list[str]:
        """Stop a job, or every job of a batch that has not ended; returns the ids cancelled.

        Raises:
            JobNotFound: no such job or batch.
            InvalidOptions: nothing left to cancel.
        """
        if self.is_batch(some_id):
            targets = [r for r in self.batch(some_id) if r.status not in TERMINAL]
            if not targets:
                raise InvalidOptions(f"batch {some_id} has no queued or running job",
                                     hint=f"see 'mediatasks status {some_id}'")
        else:
            record = self.get(some_id)
            if record.status in TERMINAL:
                raise InvalidOptions(f"job {some_id} is already {LABELS[record.status]}",
                                     hint="only a job that has not ended can be cancelled")
            targets = [record]
        done = []
        for record in targets:
            self.cancel_job(record.job_id, reason="cancelled by the user")
            done.append(record.job_id)
        return done

    def cancel_job(self, job_id: str, *, reason: str) -> None:
        """Raise the job's cancel flag (its tasks stop) and mark it cancelled."""
        state = self.live(job_id)
        if state is not None:
            try:
                state.request_cancel()
            except Exception as exc:  # kombu and redis-py raise their own errors
                raise BrokerUnavailable(f"cannot reach the broker to cancel {job_id}: {exc}",
                                        hint="check MEDIATASKS_BROKER_URL") from exc
        self._move(job_id, "cancelled", data={"error": reason}, fields={"error": reason})

    def retry(self, job_id: str, *, check: Callable[[JobSpec], None] | None = None,
              reason: str | None = None) -> JobSpec:
        """Run a failed or cancelled job again as a new attempt; verified chunks are reused.

        Args:
            check: raises when the job cannot run now (its source is gone, its output exists).
        """
        record = self.get(job_id)
        check_transition(job_id, record.status, "queued",
                         hint="only a failed, cancelled or stalled job can be retried")
        spec = JobSpec.model_validate(record.settings)
        if check is not None:
            check(spec)
        state = self.live(job_id)
        current = state.attempt() if state is not None else 0
        # A new attempt number: tasks of the earlier attempt still queued (a retry right after a
        # cancel) end as they start instead of running beside this one.
        spec = spec.model_copy(update={"attempt": max(spec.attempt, current) + 1})
        if state is not None:
            state.reset()
            state.record_attempt(spec.attempt)
        data: dict[str, Any] = {"attempt": spec.attempt}
        if reason:
            data["reason"] = reason
        self._move(job_id, "queued", strict=True, data=data,
                   fields={"settings": spec.model_dump_json(), "error": None, "started_at": None,
                           "finished_at": None, "frames_out": None, "size_out": None,
                           "chunks_reused": None, "note": None})
        self._dispatch(job_id, lambda d: d.analyse(spec))
        return spec

    def undo(self, some_id: str) -> UndoReport:
        """Put originals back and remove what a policy job (or every job of a batch) published;
        jobs whose changes were all undone become ``undone``.

        Raises:
            NothingToUndo, UndoRefused: from the library (nothing was changed).
        """
        from mediatasks import library

        if self.library_log is None:
            raise InvalidOptions("this service has no library log to undo from")
        report = library.undo(some_id, self.library_log)
        if report.complete:
            self.undone([r.job_id for r in self.batch(some_id)] or [some_id])
        return report

    def undone(self, job_ids: list[str]) -> None:
        """Jobs whose library changes were all undone."""
        for job_id in job_ids:
            record = self.store.get(job_id)
            if record is not None and allowed(record.status, "undone"):
                self._move(job_id, "undone")

    # -- what the workers report --------------------------------------------------------------

    def step_started(self, job_id: str, step: str) -> None:
        """A pipeline step began; the job moves to the state it stands for (late or repeated
        deliveries, which would move it back, change nothing)."""
        status = STEP_STATUS.get(step)
        if status is not None:
            self._move(job_id, status, fields={"started_at": _now()} if step == "probe" else {})

    def chunk_progress(self, job_id: str, index: int, *, frames: int, total: int,
                       fps: float) -> bool:
        """A running encode's progress; throttled. Returns whether an event was written."""
        now = time.monotonic()
        key = (job_id, index)
        if now - self._last_progress.get(key, 0.0) < PROGRESS_INTERVAL:
            return False
        self._last_progress[key] = now
        if self._job_over(job_id):
            return False
        self._announce(self.store.append_event(job_id, "chunk.progress", {
            "index": index, "frames": frames, "total": total, "fps": round(fps, 2)}))
        return True

    def chunk_finished(self, job_id: str, index: int, *, frames: int, reused: bool,
                       seconds: float) -> None:
        self._last_progress.pop((job_id, index), None)
        if self._job_over(job_id):
            return
        self._announce(self.store.append_event(job_id, "chunk.finished", {
            "index": index, "frames": frames, "reused": reused, "seconds": round(seconds, 2)}))

    def finished(self, result: JobResult) -> JobResult:
        """The job published its output (or the guard kept the source): its end, with the
        summary. Returns the result with the summary's figures."""
        record = self.get(result.job_id)
        plans = [e for e in self.store.events(result.job_id) if e.type == "job.planned"]
        duration = plans[-1].data.get("duration") if plans else None
        size_out = _size(result.output) if result.outcome != "kept-source" else None
        started = record.started_at or record.created_at
        seconds = round(max(0.0, _now().timestamp() - started.timestamp()), 2)
        summary = summarize(frames_in=result.frames_in, frames_out=result.frames_out,
                            duration=duration, size_in=record.size_in, size_out=size_out,
                            seconds=seconds, chunks=result.chunks,
                            chunks_reused=result.chunks_reused, warnings=result.warnings)
        kept = result.outcome == "kept-source"
        data = {**summary, "output": result.output, "outcome": result.outcome,
                "source_now": result.source_now, "note": result.note}
        self._move(result.job_id, "kept" if kept else "succeeded", data=data, fields={
            "frames_in": result.frames_in, "frames_out": result.frames_out, "chunks": result.chunks,
            "chunks_reused": result.chunks_reused, "size_out": size_out, "note": result.note,
            "output": result.output or record.output})
        return result.model_copy(update={k: summary[k] for k in (
            "duration", "size_in", "size_out", "bitrate", "saved_percent", "encode_fps")})

    def mark_stalled(self, job_id: str, current: str, message: str) -> Event | None:
        """The job's work was lost (see ``upkeep.find_stalled``); None if it moved meanwhile."""
        event = self.store.transition(job_id, current=current, new="stalled",
                                      event="job.stalled", data={"error": message},
                                      fields={"error": message})
        self._announce(event)
        return event

    def failed(self, job_id: str, message: str, *, attempt: int | None = None) -> None:
        """A step failed for good; the first failure of an attempt is the job's error."""
        state = self.live(job_id)
        try:
            if attempt is not None and state is not None and attempt < state.attempt():
                return  # a task of an attempt that has been retried since
        except Exception as exc:
            log.debug("attempt unknown: %s", exc)
        self._move(job_id, "failed", data={"error": message}, fields={"error": message})

    # -- internals ----------------------------------------------------------------------------

    def _job_over(self, job_id: str) -> bool:
        """Whether the job has ended: a chunk's report then comes from a late copy of its task
        (a worker that was cut off while others finished the job) and is dropped."""
        record = self.store.get(job_id)
        if record is not None and record.status in TERMINAL:
            log.debug("job %s has ended: a late chunk report is dropped", job_id)
            return True
        return False

    def _dispatch(self, job_id: str, send: Callable[[Dispatcher], None]) -> None:
        if self.dispatcher is None:
            return
        try:
            send(self.dispatcher)
        except MediatasksError as exc:
            self._move(job_id, "failed", data={"error": f"could not send the job: {exc}"},
                       fields={"error": f"could not send the job: {exc}"})
            raise

    def _move(self, job_id: str, new: str, *, strict: bool = False,
              data: dict[str, Any] | None = None, fields: dict[str, Any] | None = None
              ) -> Event | None:
        """Move the job to ``new`` if the table allows it from where it is now.

        With ``strict`` a move the table does not allow raises; otherwise it is dropped (a late
        or repeated report from a worker), and so is a move to the state it is in.
        """
        fields = dict(fields or {})
        if new in TERMINAL:
            fields.setdefault("finished_at", _now())
        for _ in range(20):
            record = self.get(job_id)
            if record.status == new and not strict:
                return None
            if not allowed(record.status, new):
                if strict:
                    check_transition(job_id, record.status, new)
                log.debug("job %s: %s -> %s dropped", job_id, record.status, new)
                return None
            event = self.store.transition(job_id, current=record.status, new=new,
                                          event=f"job.{new}", data=dict(data or {}), fields=fields)
            if event is not None:
                self._announce(event)
                return event
        raise MediatasksError(f"job {job_id} keeps changing; could not make it {new}")

    def _announce(self, event: Event | None) -> None:
        if event is None:
            return
        if self.bus is not None:
            try:
                self.bus.publish(event)
            except Exception as exc:  # followers still read the log
                log.debug("event %s not announced: %s", event.seq, exc)
        if self.notifier is not None:
            try:
                self.notifier.notify(event)
            except Exception as exc:  # the upkeep relays what was missed
                log.warning("event %s not relayed: %s", event.seq, exc)


def _now() -> datetime:
    return datetime.now(UTC)


def _size(path: str | None) -> int | None:
    if not path:
        return None
    try:
        return os.path.getsize(path)
    except OSError:
        return None
