"""batch: many files under one policy, one batch id, one job per file that needs one.

``prepare`` probes and decides every file before anything runs (the one-line errors come here);
``submit`` hands them to the job service; ``collect`` says how each file ended. Files run
as concurrent jobs: the workers bound the parallelism.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from mediatasks.decide import Decision, decide, find_media
from mediatasks.errors import InvalidOptions, MediatasksError
from mediatasks.models import Frozen, JobPlan, JobResult
from mediatasks.policy import Policy
from mediatasks.service import JobService
from mediatasks.service.lifecycle import BatchStatus, batch_status
from mediatasks.settings import Settings

log = logging.getLogger(__name__)

OnError = Literal["continue", "stop"]


class FileResult(Frozen):
    """One file of a batch, as `--json` prints it."""

    source: str
    action: Literal["skip", "remux", "transcode"] | None = None
    status: Literal["queued", "succeeded", "failed", "cancelled", "skipped", "not run"]
    job_id: str | None = None
    output: str | None = None
    outcome: str | None = None
    source_now: str | None = None
    reasons: tuple[str, ...] = ()
    error: str | None = None
    note: str | None = None


class BatchResult(Frozen):
    """The whole batch: ``job_id`` is the batch id (``mediatasks undo`` and ``status`` take it)."""

    job_id: str
    status: BatchStatus
    files: tuple[FileResult, ...]


class Prepared(Frozen):
    """A file decided and planned, or the one-line reason it cannot be."""

    source: str
    decision: Decision | None = None
    plan: JobPlan | None = None
    error: str | None = None


def new_batch_id() -> str:
    return f"b{uuid.uuid4().hex[:15]}"


def prepare(inputs: Sequence[Path], policy: Policy, *, batch_id: str,
            output_dir: Path | None, settings: Settings, on_error: OnError,
            chunk_seconds: float | None = None, hold: bool = False) -> list[Prepared]:
    """Probe, decide and plan every media file under ``inputs`` (``hold``: every job waits for
    approval once planned).

    A file that cannot be read is a failed entry; with ``on_error`` 'stop' the walk stops there.

    Raises:
        SourceNotFound: an input does not exist.
        InvalidOptions: no media file was found.
    """
    from mediatasks.profiles import is_hardware
    from mediatasks.steps import encode, mux, plan, probe

    if policy.library is None and output_dir is None:
        raise InvalidOptions("the policy has no library section and no --output-dir was given",
                             hint="add library: root: ... to the policy, or pass --output-dir DIR")
    if policy.audio.transcode_to is not None:
        from mediatasks.steps.audio import check_audio_encoder

        check_audio_encoder(policy.audio.transcode_to.codec, policy.audio.transcode_to.bitrate,
                            ffmpeg=settings.ffmpeg, subject="audio.transcode_to")
    files = find_media(inputs)
    if not files:
        raise InvalidOptions("no media files found in "
                             + ", ".join(str(p) for p in inputs),
                             hint="give video files or directories that hold some")
    out: list[Prepared] = []
    for path in files:
        try:
            src = probe.check_source(path)
            result = probe.probe(src, ffprobe=settings.ffprobe)
            d = decide(result, policy, source=src, job_id=uuid.uuid4().hex, batch_id=batch_id,
                       output_dir=output_dir, chunk_seconds=chunk_seconds)
            jp = None
            if d.spec is not None and hold:
                d = d.model_copy(update={"spec": d.spec.model_copy(update={"hold": True})})
            if d.spec is not None:
                jp = plan.plan_job(result, d.spec, chunk_seconds=settings.chunk_seconds,
                                   min_chunk_frames=settings.min_chunk_frames)
                if d.action == "transcode" and not is_hardware(d.spec.options.video_codec):
                    encode.check_encoder(d.spec.options, result.video,
                                         mux.output_format(d.spec.output),
                                         ffmpeg=settings.ffmpeg, subject=str(src))
            out.append(Prepared(source=str(path), decision=d, plan=jp))
        except MediatasksError as exc:
            out.append(Prepared(source=str(path), error=str(exc)))
            if on_error == "stop":
                break
    return _flag_shared_destinations(out)


def _flag_shared_destinations(prepared: list[Prepared]) -> list[Prepared]:
    """Two files of one batch that land on one path (a 720p and a 1080p release of one film):
    said up front; library.on_exists decides at publish time, in the order the jobs finish."""
    targets: dict[str, list[str]] = {}
    for p in prepared:
        if p.decision is not None and p.decision.spec is not None and p.decision.output:
            targets.setdefault(p.decision.output, []).append(p.source)
    out = []
    for p in prepared:
        d = p.decision
        shared = targets.get(d.output, []) if d is not None and d.spec and d.output else []
        if d is not None and len(shared) > 1:
            others = ", ".join(Path(s).name for s in shared if s != p.source)
            d = d.model_copy(update={"reasons": (*d.reasons, f"{others} of this batch lands here "
                                                             "too (library.on_exists decides)")})
            p = p.model_copy(update={"decision": d})
        out.append(p)
    return out


def initial_results(prepared: Sequence[Prepared], *, stopped: bool) -> list[FileResult]:
    """What each file is before any job runs: skipped, failed, queued (or not run: stopped)."""
    results = []
    for p in prepared:
        d = p.decision
        if p.error is not None:
            results.append(FileResult(source=p.source, status="failed", error=p.error))
        elif d is None or d.spec is None:
            results.append(FileResult(source=p.source, action=d.action if d else None,
                                      status="skipped", output=d.output if d else None,
                                      reasons=d.reasons if d else ()))
        else:
            results.append(FileResult(source=p.source, action=d.action,
                                      status="not run" if stopped else "queued",
                                      job_id=d.spec.job_id, output=d.output, reasons=d.reasons))
    return results


def overall(batch_id: str, results: Sequence[FileResult]) -> BatchResult:
    """The batch's state by the one rule (skipped files count as done; files not run as
    cancelled)."""
    statuses = [{"not run": "cancelled"}.get(r.status, r.status) for r in results
                if r.status != "skipped"]
    status = batch_status(statuses)
    return BatchResult(job_id=batch_id, status=status, files=tuple(results))


def submit(prepared: Sequence[Prepared], service: JobService) -> list[FileResult]:
    """Record and send every job of the batch to the cluster."""
    results = initial_results(prepared, stopped=False)
    for p in prepared:
        if p.plan is not None:
            service.submit(p.plan.spec)
    return results


def collect(prepared: Sequence[Prepared], ended: dict[str, JobResult]) -> list[FileResult]:
    """Each file's result once its job has ended."""
    out = []
    for before in initial_results(prepared, stopped=False):
        done = ended.get(before.job_id or "")
        if done is None:
            out.append(before)
        elif done.status == "succeeded":
            out.append(before.model_copy(update={
                "status": "succeeded", "output": done.output, "outcome": done.outcome,
                "source_now": done.source_now, "note": done.note}))
        else:
            out.append(before.model_copy(update={
                "status": "cancelled" if done.status in {"cancelled", "rejected"} else "failed",
                "error": done.error}))
    return out


def describe_file(r: FileResult) -> str:
    """One line per file for people."""
    name = r.source
    if r.status == "failed":
        return f"failed     {name}: {r.error}"
    if r.status == "skipped":
        return f"skip       {name}: {'; '.join(r.reasons)}"
    if r.status in {"cancelled", "not run"}:
        return f"{r.status:<10} {name}" + (f": {r.error}" if r.error else "")
    what = r.action or ""
    if r.outcome == "kept-source":
        return f"{what:<10} {name}: {r.note or 'the result was larger than the guard allows'}; " \
               "source kept"
    if r.outcome == "exists":
        return f"{what:<10} {name}: {r.output} already exists (on_exists: skip)"
    tail = f" -> {r.output}" if r.output else ""
    after = ""
    if (r.status == "succeeded" and r.source_now is not None
            and Path(r.source_now).resolve() != Path(r.source).resolve()):
        after = f" (original moved to {r.source_now})"
    elif r.status == "succeeded" and r.source_now is None and r.outcome == "published":
        after = " (original deleted)"
    return f"{what:<10} {name}{tail}{after}" + ("" if r.status == "succeeded"
                                                 else f" [{r.status}]")
