"""Celery tasks: thin views over the steps. Each validates its input, reports to the job service,
calls one step and returns a small JSON result (paths and counts, never media)."""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from celery import Task
from celery.exceptions import Reject
from pydantic import ValidationError

from mediatasks import fingerprint
from mediatasks.cluster.app import app
from mediatasks.cluster.jobtask import (
    JobTask,
    job_dir,
    job_state,
    load_plan,
    parse_spec,
    report,
    service,
)
from mediatasks.cluster.workers import check_encoder_here
from mediatasks.errors import (
    HardwareUnavailable,
    MediatasksError,
    UntrustedMessage,
)
from mediatasks.models import (
    AudioResult,
    ChunkResult,
    JobResult,
    JobSpec,
    ProbeResult,
    StepResult,
)
from mediatasks.profiles import is_hardware
from mediatasks.service import trust
from mediatasks.settings import get_settings
from mediatasks.steps import audio as audio_step
from mediatasks.steps import concat as concat_step
from mediatasks.steps import encode as encode_step
from mediatasks.steps import integrity
from mediatasks.steps import mux as mux_step
from mediatasks.steps import plan as plan_step
from mediatasks.steps import probe as probe_step
from mediatasks.steps import publish as publish_step
from mediatasks.steps import verify as verify_step

_settings = get_settings()
log = logging.getLogger(__name__)


@app.task(base=JobTask, bind=True, name="mediatasks.probe")
def probe(self: JobTask, *, spec: dict[str, Any], known: dict[str, Any] | None = None
          ) -> dict[str, Any]:
    """Probe the source, or take ``known`` (the probe `mediatasks run` just made) while the file
    is still the one it describes; the frame timestamps go to the job directory for the plan."""
    s = parse_spec(spec)
    folder = job_dir(s.job_id)
    # The file probed is the file every later step must find (checked before each chunk and
    # before publishing).
    now = fingerprint.take(s.input)
    fingerprint.save(now, folder)
    given = _known(known, s)
    if given is not None and given.fingerprint == now:
        return given.probe.model_dump(mode="json")
    result, frame_pts = probe_step.probe_source(s.input, ffprobe=_settings.ffprobe)
    if not result.video.split_blocker:
        plan_step.save_frames(frame_pts, folder)
    return result.model_dump(mode="json")


def _known(known: dict[str, Any] | None, spec: JobSpec) -> fingerprint.KnownSource | None:
    """A message's probe result, when it is one and describes the spec's input. At worst a
    wrong one makes a wrong plan, which the frame-exact verify refuses."""
    if known is None:
        return None
    try:
        given = fingerprint.KnownSource.model_validate(known)
    except ValidationError as exc:
        log.warning("job %s: the probe result sent with it is not one (%s); probing",
                    spec.job_id, " ".join(str(exc).split())[:200])
        return None
    return given if given.probe.path == spec.input else None


@app.task(base=JobTask, bind=True, name="mediatasks.plan")
def plan(self: JobTask, probe_result: dict[str, Any], *, spec: dict[str, Any]) -> dict[str, Any]:
    """Plan the chunks and hand the job back to the service (which holds it or encodes it)."""
    s = parse_spec(spec)
    jp = plan_step.plan_and_save(ProbeResult.model_validate(probe_result), s, job_dir(s.job_id),
                                 ffprobe=_settings.ffprobe, chunk_seconds=_settings.chunk_seconds,
                                 min_chunk_frames=_settings.min_chunk_frames)
    job_state(s.job_id).record_plan(len(jp.chunks), jp.frame_count, jp.queue, list(jp.warnings))
    try:
        status = service().planned(s, chunks=len(jp.chunks), frames=jp.frame_count,
                                   queue=jp.queue, warnings=jp.warnings,
                                   duration=integrity.frames_reach(jp.source)
                                   or jp.source.duration)
    except MediatasksError:
        raise
    except Exception:  # no history: the job goes on all the same
        log.exception("could not record the plan of %s", s.job_id)
        from mediatasks.cluster.dispatch import CeleryDispatcher

        if s.hold:
            raise
        CeleryDispatcher(app).encode(s, chunks=len(jp.chunks), queue=jp.queue)
        status = "encoding"
    return {"chunks": len(jp.chunks), "frames": jp.frame_count, "status": status}


@app.task(base=JobTask, bind=True, name="mediatasks.encode_chunk")
def encode_chunk(self: JobTask, *, spec: dict[str, Any], index: int) -> dict[str, Any]:
    s = parse_spec(spec)
    jp = load_plan(s)
    fingerprint.check(s.input, job_dir(s.job_id))
    chunk = jp.chunks[index]
    state = job_state(s.job_id)
    if is_hardware(s.options.video_codec):
        check_encoder_here(s.options.video_codec, self.request.hostname)
    # ffmpeg's progress arrives on a reader thread, where Celery's request context is empty:
    # the event carries this task's id and worker explicitly.
    task_id, hostname = self.request.id, self.request.hostname
    svc = service()
    started = time.monotonic()

    def progress(frames: int, fps: float) -> None:
        if state.report(index, frames, fps):
            with contextlib.suppress(Exception):
                svc.chunk_progress(s.job_id, index, frames=frames, total=chunk.frames, fps=fps)
            # Flower shows a task's standard fields only: progress goes into 'result'.
            with contextlib.suppress(Exception), \
                    app.events.default_dispatcher(hostname=hostname) as d:
                d.send("task-progress", uuid=task_id,
                       result=f"{frames} of {chunk.frames} frames, {fps:.1f} fps",
                       job_id=s.job_id, chunk=index, frames=frames, total=chunk.frames, fps=fps)

    try:
        result = encode_step.encode_chunk(
            jp, chunk, job_dir(s.job_id), ffmpeg=_settings.ffmpeg, ffprobe=_settings.ffprobe,
            stall_timeout=_settings.stall_timeout, threads=_settings.encoder_threads,
            on_progress=progress,
            should_stop=lambda: state.cancelled() or state.attempt() > s.attempt)
    except HardwareUnavailable as exc:
        raise HardwareUnavailable(
            f"{s.options.video_codec} cannot run on worker {self.request.hostname}: "
            f"{exc.detail}", hint="run gpu workers only where the encoder works") from exc
    state.report(index, result.frames, 0.0, done=True)
    report("the chunk", lambda sv: sv.chunk_finished(s.job_id, index, frames=result.frames,
                                                    reused=result.reused,
                                                    seconds=time.monotonic() - started))
    return {"chunk": result.model_dump(mode="json")}


@app.task(base=JobTask, bind=True, name="mediatasks.encode_audio")
def encode_audio(self: JobTask, *, spec: dict[str, Any]) -> dict[str, Any]:
    s = parse_spec(spec)
    jp = load_plan(s)
    fingerprint.check(s.input, job_dir(s.job_id))
    result = audio_step.encode_audio(jp, job_dir(s.job_id), ffmpeg=_settings.ffmpeg)
    return {"audio": result.model_dump(mode="json")}


@app.task(base=JobTask, bind=True, name="mediatasks.concat")
def concat(self: JobTask, parts: list[dict[str, Any]], *, spec: dict[str, Any]) -> dict[str, Any]:
    s = parse_spec(spec)
    chunks = [ChunkResult.model_validate(p["chunk"]) for p in parts if "chunk" in p]
    audio = [AudioResult.model_validate(p["audio"]) for p in parts if "audio" in p]
    jp = load_plan(s)
    video = concat_step.join(jp, chunks, job_dir(s.job_id), ffmpeg=_settings.ffmpeg,
                             ffprobe=_settings.ffprobe)
    return {"video": video.model_dump(mode="json"),
            "audio": (audio[0] if audio else AudioResult(path=None, streams=0)).model_dump(
                mode="json"),
            "reused": sum(1 for c in chunks if c.reused)}


@app.task(base=JobTask, bind=True, name="mediatasks.mux")
def mux(self: JobTask, prev: dict[str, Any], *, spec: dict[str, Any]) -> dict[str, Any]:
    s = parse_spec(spec)
    jp = load_plan(s)
    video = StepResult.model_validate(prev["video"])
    audio = AudioResult.model_validate(prev["audio"])
    out = job_dir(s.job_id) / f"output{Path(s.output).suffix.lower()}"
    muxed = mux_step.mux(jp, Path(video.path), audio, out, ffmpeg=_settings.ffmpeg,
                         ffprobe=_settings.ffprobe)
    return {"output": muxed.path, "frames_encoded": video.frames, "reused": prev.get("reused", 0)}


@app.task(base=JobTask, bind=True, name="mediatasks.verify")
def verify(self: JobTask, prev: dict[str, Any], *, spec: dict[str, Any]) -> dict[str, Any]:
    s = parse_spec(spec)
    jp = load_plan(s)
    frames = verify_step.verify(jp, Path(prev["output"]), frames_encoded=prev["frames_encoded"],
                                source_pts=plan_step.load_frames(job_dir(s.job_id)),
                                ffprobe=_settings.ffprobe)
    frames_in = jp.frame_count if not jp.source.video.split_blocker else prev["frames_encoded"]
    return {"output": prev["output"], "frames_in": frames_in, "frames_out": frames,
            "reused": prev.get("reused", 0)}


@app.task(base=JobTask, bind=True, name="mediatasks.publish")
def publish(self: JobTask, prev: dict[str, Any], *, spec: dict[str, Any]) -> dict[str, Any]:
    s = parse_spec(spec)
    state = job_state(s.job_id)
    done = state.published()
    if done is None:  # else a redelivery: the output is already in place
        jp = load_plan(s)
        fingerprint.check(s.input, job_dir(s.job_id))
        result = JobResult(job_id=s.job_id, status="succeeded", output=s.output, input=s.input,
                           source_now=s.input, frames_in=prev["frames_in"],
                           frames_out=prev["frames_out"], chunks=len(jp.chunks),
                           chunks_reused=prev.get("reused", 0), warnings=jp.warnings)
        library_log = None
        if s.placement is not None:
            from mediatasks.cluster.services import open_history

            library_log = open_history(_settings.database_url)
        result = publish_step.publish_result(s, Path(prev["output"]), result,
                                             library_log=library_log, ffprobe=_settings.ffprobe)
        done = result.model_dump(mode="json")
        state.record_published(done)
        # The job's end is in the history before this task's result is: whoever waits for the
        # result finds the job ended.
        final = report("the end of the job", lambda sv: sv.finished(result))
        if final is not None:
            done = final.model_dump(mode="json")
            state.record_published(done)
    shutil.rmtree(job_dir(s.job_id), ignore_errors=True)
    return done


@app.task(bind=True, name="mediatasks.cleanup")
def cleanup(self: Task, *args: Any, job_id: str, attempt: int = 0, remove: bool = False) -> None:
    """Errback of every job: a cancelled (or rejected: ``remove``) job's files all go; a failed
    job keeps only its verified chunks, for `mediatasks retry` to reuse. The cleanup of an
    attempt that has since been retried leaves the new attempt's files alone."""
    try:
        folder = trust.job_folder(get_settings().work_dir, job_id)
    except UntrustedMessage as exc:
        log.error("mediatasks.cleanup[%s]: message rejected: %s", self.request.id, exc)
        raise Reject(str(exc), requeue=False) from None
    state = job_state(job_id)
    if attempt < state.attempt():
        return
    if remove or state.cancelled():
        shutil.rmtree(folder, ignore_errors=True)
    else:
        encode_step.remove_all_but_verified_chunks(folder)


_DELIVERY_ID = re.compile(r"msg_[0-9a-f]{32}")


@app.task(bind=True, name="mediatasks.deliver_webhook")
def deliver_webhook(self: Task, *, delivery_id: str, attempt: int,
                    until: str | None = None) -> dict[str, Any]:
    """One attempt to deliver one webhook; the next one, when needed, is sent with a countdown."""
    from mediatasks.cluster.services import webhooks_for
    from mediatasks.cluster.webhooks import post

    try:
        if not isinstance(delivery_id, str) or not _DELIVERY_ID.fullmatch(delivery_id) \
                or not isinstance(attempt, int):
            raise ValueError("not a delivery id and attempt")
        deadline = datetime.fromisoformat(until) if until else None
    except (TypeError, ValueError) as exc:
        log.error("mediatasks.deliver_webhook[%s]: message rejected: %s", self.request.id, exc)
        raise Reject(str(exc), requeue=False) from None
    settings = get_settings()
    hooks = webhooks_for(self.app, settings.database_url)
    ready = hooks.prepare(delivery_id, attempt)
    if ready is None:
        return {"dropped": "delivered, failed, or tried since"}
    delivery, headers = ready
    outcome, code, latency, error = post(delivery.url, delivery.payload, headers,
                                         timeout=settings.webhook_timeout)
    delay = hooks.attempted(delivery, outcome=outcome, latency_ms=latency, status_code=code,
                            error=error, until=deadline)
    if outcome != "delivered":
        log.warning("webhook %s to %s: %s%s", delivery.id, delivery.url, error or outcome,
                    f"; next attempt in {delay:g}s" if delay is not None else "; given up")
    return {"delivery": delivery.id, "outcome": outcome, "status_code": code}
