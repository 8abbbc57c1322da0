"""The command line: run, plan, probe. Errors become one line and an exit code here, and only here."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import sys
import time
import uuid
from pathlib import Path
from types import FrameType
from typing import Annotated, Any, Literal

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from mediatasks.errors import InvalidOptions, JobCancelled, JobFailed, MediatasksError
from mediatasks.models import EncodeOptions, JobPlan, JobResult, JobSpec, ProbeResult
from mediatasks.settings import Settings, get_settings

cli = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Frame-exact chunked video transcoding on a Celery cluster.")
err = Console(stderr=True)
out = Console(highlight=False, soft_wrap=True)
log = logging.getLogger("mediatasks")

InputArg = Annotated[Path, typer.Argument(help="The source video.", show_default=False,
                                          readable=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]
CodecOpt = Annotated[str, typer.Option("--video-codec", help="Any ffmpeg video encoder.")]
CrfOpt = Annotated[float | None, typer.Option("--crf", help="Constant quality.")]
PresetOpt = Annotated[str | None, typer.Option("--preset", help="Encoder preset.")]
VideoOpt = Annotated[list[str] | None, typer.Option(
    "--video-opt", help="KEY=VALUE passed to the encoder (repeatable).")]
AudioOpt = Annotated[str, typer.Option("--audio-codec", help="'copy' or an ffmpeg audio encoder.")]
ChunkOpt = Annotated[float | None, typer.Option("--chunk-seconds", min=0.1,
                                                help="Target chunk length.")]
OutputOpt = Annotated[Path | None, typer.Option("-o", "--output", help="The output file.")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace an existing output.")]
SourcesArg = Annotated[list[Path], typer.Argument(
    help="The source video; with --policy, any number of files and directories (walked for media "
         "files).", show_default=False, readable=False)]
PolicyOpt = Annotated[Path | None, typer.Option(
    "--policy", help="A YAML policy (docs/policies.md): decide per file, file into the library.",
    readable=False)]
OutputDirOpt = Annotated[Path | None, typer.Option(
    "--output-dir", help="With a policy that has no library section: where outputs go.")]
OnErrorOpt = Annotated[str, typer.Option(
    "--on-error", help="continue: a broken file fails alone; stop: it stops the batch.")]


def _single(sources: list[Path]) -> Path:
    if len(sources) != 1:
        raise InvalidOptions(f"{len(sources)} sources given without --policy",
                             hint="give one SOURCE, or several with --policy")
    return sources[0]


def _one_source(sources: list[Path], output: Path | None) -> tuple[Path, Path]:
    _single(sources)
    if output is None:
        raise InvalidOptions("no output given", path=sources[0],
                             hint="pass -o OUTPUT, or --policy FILE to file it into a library")
    return sources[0], output


def _on_error(value: str) -> Literal["continue", "stop"]:
    if value not in {"continue", "stop"}:
        raise InvalidOptions(f"--on-error '{value}' is not continue or stop",
                             hint="pass --on-error continue or --on-error stop")
    return "stop" if value == "stop" else "continue"


def _batch(mode: str, sources: list[Path], policy_path: Path, *, output_dir: Path | None,
           on_error: str, workers: int | None, as_json: bool,
           chunk_seconds: float | None = None) -> None:
    """run, submit or plan several files under a policy: one batch id, one job per file."""
    from mediatasks import batch
    from mediatasks.policy import load_policy

    settings = get_settings()
    stop = _on_error(on_error)
    policy = load_policy(policy_path)
    batch_id = batch.new_batch_id()
    prepared = batch.prepare(sources, policy, batch_id=batch_id,
                             output_dir=output_dir.resolve() if output_dir else None,
                             settings=settings, on_error=stop, chunk_seconds=chunk_seconds)
    failed_early = any(p.error for p in prepared)
    if mode == "plan":
        results = batch.initial_results(prepared, stopped=False)
        if as_json:
            print(json.dumps({"job_id": batch_id, "files": [
                {**json.loads(r.model_dump_json()), "status": "planned" if r.status == "queued"
                 else r.status} for r in results]}))
        else:
            for r in results:
                out.print(batch.describe_file(r).replace(" [queued]", ""))
                for why in r.reasons if r.status != "skipped" else ():
                    out.print(f"           because {why}")
        if failed_early:
            raise typer.Exit(1)
        return
    if failed_early and stop == "stop":
        results = batch.initial_results(prepared, stopped=True)
    elif mode == "submit":
        results = batch.submit(prepared, _history())
    else:
        results = _run_batch(prepared, settings, stop=stop, workers=workers, as_json=as_json)
    summary = batch.overall(batch_id, results)
    if as_json:
        print(summary.model_dump_json())
    else:
        for r in results:
            out.print(batch.describe_file(r))
        out.print(f"batch {batch_id}: {summary.status} ({len(results)} file(s))")
    if summary.status in {"failed", "cancelled"}:
        raise typer.Exit(1)


def _run_batch(prepared: list[Any], settings: Settings, *, stop: Literal["continue", "stop"],
               workers: int | None, as_json: bool) -> list[Any]:
    from mediatasks import batch
    from mediatasks.local import LocalCluster, default_workers
    from mediatasks.profiles import is_hardware

    plans = [p.plan for p in prepared if p.plan is not None]
    if not plans:
        return batch.initial_results(prepared, stopped=False)
    work_dir = settings.work_dir if "MEDIATASKS_WORK_DIR" in os.environ else None
    hardware = any(is_hardware(jp.spec.options.video_codec) for jp in plans)
    cluster = LocalCluster(settings, workers=workers or default_workers(), work_dir=work_dir,
                           hardware=hardware)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        with cluster:
            for jp in plans:
                _record_submitted(jp)
            return batch.run_local(prepared, cluster, on_error=stop,
                                   console=err if err.is_terminal and not as_json else None)
    except KeyboardInterrupt:
        with contextlib.suppress(Exception):
            history = _history()
            for jp in plans:
                history.job_finished(jp.job_id, "cancelled", error="interrupted")
        raise JobCancelled("interrupted: workers stopped, temp files removed") from None
    finally:
        signal.signal(signal.SIGTERM, previous)


def _options(video_codec: str, crf: float | None, preset: str | None,
             video_opt: list[str] | None, audio_codec: str, chunk_seconds: float | None
             ) -> EncodeOptions:
    pairs = []
    for item in video_opt or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InvalidOptions(f"--video-opt '{item}' is not KEY=VALUE",
                                 hint="e.g. --video-opt tune=film")
        pairs.append((key.strip().lstrip("-"), value))
    if not video_codec.strip():
        raise InvalidOptions("--video-codec is empty", hint="e.g. --video-codec libx264")
    return EncodeOptions(video_codec=video_codec, crf=crf, preset=preset, video_opts=tuple(pairs),
                         audio_codec=audio_codec, chunk_seconds=chunk_seconds)


def _prepare(source: Path, output: Path, opts: EncodeOptions, *, overwrite: bool,
             settings: Settings, check_output: bool = True, exact_preview: bool = True) -> JobPlan:
    """Everything that can fail before a job starts, done here, in a second: the one-line errors.

    Args:
        exact_preview: read every frame's timestamp so the plan shown is the plan that runs
            (the plan task does this itself; ``run`` skips it).
    """
    from mediatasks.profiles import is_hardware
    from mediatasks.steps import encode, mux, plan, probe, publish

    src = probe.check_source(source)
    fmt = mux.output_format(output)
    if check_output:
        publish.check_output(output, overwrite=overwrite, source=src)
    result = probe.probe(src, ffprobe=settings.ffprobe)
    spec = JobSpec(job_id=uuid.uuid4().hex, input=str(src.resolve()),
                   output=str(output.resolve()), options=opts, overwrite=overwrite)
    frame_pts = None
    if exact_preview and not result.video.split_blocker:
        frame_pts = probe.frame_timestamps(src, result.video.index, ffprobe=settings.ffprobe)
    jp = plan.plan_job(result, spec, chunk_seconds=settings.chunk_seconds,
                       min_chunk_frames=settings.min_chunk_frames, frame_pts=frame_pts)
    if not is_hardware(opts.video_codec):
        encode.check_encoder(opts, result.video, fmt, ffmpeg=settings.ffmpeg, subject=str(src))
    return jp


class _Follower:
    """Draws the progress bar from the job's live state."""

    def __init__(self, enabled: bool):
        self.progress: Progress | None = None
        self.task: TaskID | None = None
        self.first: tuple[float, int] | None = None
        if enabled:
            self.progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("frames"), TextColumn("{task.fields[fps]:>6.1f} fps"),
                TextColumn("chunks {task.fields[chunks]}"), TextColumn("ETA {task.fields[eta]}"),
                TimeElapsedColumn(), console=err, transient=False)

    def __enter__(self) -> _Follower:
        if self.progress is not None:
            self.progress.start()
            self.task = self.progress.add_task("encoding", total=None, fps=0.0, chunks="-",
                                               eta="-")
        return self

    def poll(self, state: Any) -> None:
        """Draw the state's latest snapshot; a broker that is briefly away (restarting) only
        pauses the bar: the job goes on without us."""
        try:
            snap = state.snapshot()
        except Exception as exc:  # redis-py and kombu raise their own connection errors
            log.debug("no progress: %s", exc)
            if self.progress is not None and self.task is not None:
                self.progress.update(self.task, description="waiting for the broker")
            return
        if self.progress is not None and self.task is not None:
            self.progress.update(self.task, description="encoding")
        self.update(snap)

    def update(self, snap: Any) -> None:
        if self.progress is None or self.task is None or not snap.planned:
            return
        now = time.monotonic()
        if snap.frames_done and self.first is None:
            self.first = (now, snap.frames_done)
        # Live fps is the sum over running chunks; between chunks it is 0, so fall back to the
        # average since the first frame for the ETA.
        fps = snap.fps
        if fps <= 0 and self.first is not None and now > self.first[0]:
            fps = (snap.frames_done - self.first[1]) / (now - self.first[0])
        remaining = max(0, snap.frames_total - snap.frames_done)
        eta = time.strftime("%H:%M:%S", time.gmtime(remaining / fps)) if fps > 0 else "-"
        self.progress.update(self.task, total=snap.frames_total, completed=snap.frames_done,
                             fps=fps, chunks=f"{snap.chunks_done}/{snap.chunks}", eta=eta)

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run_local(jp: JobPlan, cluster: Any, *, show_progress: bool) -> JobResult:
    """Run one job on a started private cluster. Leaves no temp file of the job behind, but for
    the verified chunks of a job that failed (the next run of the same job reuses them)."""
    from mediatasks.celery_app import app
    from mediatasks.jobstate import JobState
    from mediatasks.steps import encode as encode_step
    from mediatasks.steps.publish import temp_path
    from mediatasks.tasks import describe
    from mediatasks.workflow import job_workflow

    started = time.monotonic()
    job_dir = cluster.work_dir / jp.job_id
    failed = False
    try:
        app.conf.update(broker_url=cluster.broker_url, result_backend=cluster.broker_url)
        state = JobState(app.backend, jp.job_id)
        result = job_workflow(jp.spec).apply_async()
        with _Follower(show_progress) as follower:
            while not result.ready():
                cluster.check_alive()
                follower.poll(state)
                time.sleep(0.1)
            follower.poll(state)
        if result.successful():
            done = JobResult.model_validate(result.get())
            return done.model_copy(update={"seconds": round(time.monotonic() - started, 2)})
        message = state.error() or describe(result.result, "the job")
        failed = True
        return JobResult(job_id=jp.job_id, status="failed", output=None, error=message,
                         chunks=len(jp.chunks), seconds=round(time.monotonic() - started, 2))
    finally:
        if failed:  # the verified chunks stay for the next run of the same job to reuse
            encode_step.remove_all_but_verified_chunks(job_dir)
        else:
            shutil.rmtree(job_dir, ignore_errors=True)
        temp_path(Path(jp.spec.output), jp.job_id).unlink(missing_ok=True)


@cli.command()
def run(
    sources: SourcesArg,
    output: OutputOpt = None,
    video_codec: CodecOpt = "libx264",
    crf: CrfOpt = None,
    preset: PresetOpt = None,
    video_opt: VideoOpt = None,
    audio_codec: AudioOpt = "copy",
    chunk_seconds: ChunkOpt = None,
    workers: Annotated[int | None, typer.Option("--workers", min=1,
                                                help="Local worker processes.")] = None,
    overwrite: OverwriteOpt = False,
    policy: PolicyOpt = None,
    output_dir: OutputDirOpt = None,
    on_error: OnErrorOpt = "continue",
    as_json: JsonOpt = False,
) -> None:
    """Encode SOURCE into --output on a private broker with local workers; with --policy, every
    media file of the SOURCES as one batch, filed into the policy's library."""
    from mediatasks.local import LocalCluster, adopt_abandoned_chunks, default_workers, run_lock
    from mediatasks.profiles import is_hardware
    from mediatasks.steps import mux, probe, publish

    if policy is not None:
        _batch("run", sources, policy, output_dir=output_dir, on_error=on_error, workers=workers,
               as_json=as_json, chunk_seconds=chunk_seconds)
        return
    source, output = _one_source(sources, output)
    settings = get_settings()
    opts = _options(video_codec, crf, preset, video_opt, audio_codec, chunk_seconds)
    # The checks that need no ffmpeg first: a missing file never starts a cluster.
    src = probe.check_source(source)
    mux.output_format(output)
    publish.check_output(output, overwrite=overwrite, source=src)
    # The job directory is kept in the work directory (not the private temp one), so that a run
    # killed with its machine leaves its verified chunks for the next run of the same job.
    cluster = LocalCluster(settings, workers=workers or default_workers(),
                           work_dir=settings.work_dir, hardware=is_hardware(opts.video_codec))
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    job_id = None
    try:
        # Workers boot (a second or two) while the source is probed and the encoder checked.
        with cluster:
            jp = _prepare(source, output, opts, overwrite=overwrite, settings=settings,
                          exact_preview=False)
            job_id = jp.job_id
            _record_submitted(jp)
            if not as_json:
                for w in jp.warnings:
                    err.print(f"[yellow]warning:[/] {w}")
                if err.is_terminal:
                    err.print(f"job {jp.job_id}: {jp.frame_count} frames on queue {jp.queue}")
            with run_lock(cluster.work_dir / jp.job_id):
                adopted = adopt_abandoned_chunks(cluster.work_dir, jp.spec)
                if adopted and not as_json:
                    err.print(f"resuming: {adopted} verified chunk(s) from an earlier run that "
                              "did not finish")
                result = run_local(jp, cluster, show_progress=not as_json and err.is_terminal)
    except KeyboardInterrupt:
        if job_id:
            with contextlib.suppress(Exception):
                _history().job_finished(job_id, "cancelled", error="interrupted")
        if as_json and job_id:
            print(JobResult(job_id=job_id, status="cancelled", output=None,
                            error="interrupted").model_dump_json())
        raise JobCancelled("interrupted: workers stopped, temp files removed",
                           path=source) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
    if as_json:
        print(result.model_dump_json())
    elif result.status == "succeeded":
        rate = (result.frames_out or 0) / result.seconds if result.seconds else 0.0
        reused = f" ({result.chunks_reused} reused)" if result.chunks_reused else ""
        out.print(f"done: {result.output}: {result.frames_out} of {result.frames_in} frames, "
                  f"{result.chunks} chunk(s){reused}, {result.seconds:.1f}s ({rate:.1f} fps)")
    if result.status != "succeeded":
        if as_json:
            raise typer.Exit(1)
        raise JobFailed(result.error or "the job failed")


def _plan_json(jp: JobPlan, settings: Settings) -> dict[str, Any]:
    from mediatasks.steps import audio, concat, encode, mux

    job_dir = settings.work_dir / jp.job_id
    chunks = []
    for c in jp.chunks:
        chunks.append({**c.model_dump(mode="json"), "frames": c.frames, "queue": jp.queue,
                       "argv": encode.encode_args(jp, c, encode.chunk_path(job_dir, c.index),
                                                  seek_pts=c.seek_pts, ffmpeg=settings.ffmpeg)})
    from mediatasks.models import AudioResult

    audio_path = job_dir / "audio.mka"
    audio_argv = audio.audio_args(jp, audio_path, ffmpeg=settings.ffmpeg)
    audio_result = AudioResult(path=str(audio_path) if audio_argv else None,
                               streams=len(jp.source.of_type("audio")))
    return {
        "job_id": jp.job_id,
        "input": jp.spec.input,
        "output": jp.spec.output,
        "output_format": jp.output_format,
        "frames": jp.frame_count,
        "split": jp.split,
        "split_blocker": jp.source.video.split_blocker,
        "queue": jp.queue,
        "chunks": chunks,
        "audio": {"queue": "io", "argv": audio_argv, "mode": "copy at mux" if audio_argv is None
                  else "transcode"},
        "concat": {"queue": "io", "argv": concat.concat_args(job_dir / "concat.txt",
                                                             job_dir / "video.nut",
                                                             ffmpeg=settings.ffmpeg)},
        "mux": {"queue": "io", "argv": mux.mux_args(
            jp, job_dir / "video.nut", audio_result,
            job_dir / f"output{Path(jp.spec.output).suffix.lower()}", ffmpeg=settings.ffmpeg)},
        "subtitles": [s.model_dump(mode="json") for s in jp.subtitles],
        "warnings": list(jp.warnings),
    }


@cli.command()
def plan(
    sources: SourcesArg,
    output: Annotated[Path | None, typer.Option("-o", "--output",
                                                help="Output (default: SOURCE.out.mkv).")] = None,
    video_codec: CodecOpt = "libx264",
    crf: CrfOpt = None,
    preset: PresetOpt = None,
    video_opt: VideoOpt = None,
    audio_codec: AudioOpt = "copy",
    chunk_seconds: ChunkOpt = None,
    policy: PolicyOpt = None,
    output_dir: OutputDirOpt = None,
    on_error: OnErrorOpt = "continue",
    as_json: JsonOpt = False,
) -> None:
    """Dry run: chunks, queues and every ffmpeg argv. Encodes nothing. With --policy: for each
    media file of the SOURCES, skip / remux / transcode, why, and where it will land."""
    if policy is not None:
        _batch("plan", sources, policy, output_dir=output_dir, on_error=on_error, workers=None,
               as_json=as_json, chunk_seconds=chunk_seconds)
        return
    source = _single(sources)
    settings = get_settings()
    opts = _options(video_codec, crf, preset, video_opt, audio_codec, chunk_seconds)
    target = output or source.with_name(f"{source.stem}.out.mkv")
    jp = _prepare(source, target, opts, overwrite=True, settings=settings, check_output=False)
    data = _plan_json(jp, settings)
    if as_json:
        print(json.dumps(data))
        return
    out.print(f"{data['input']} -> {data['output']} ({data['output_format']})")
    out.print(f"{data['frames']} frames, {len(data['chunks'])} chunk(s) on queue {data['queue']}"
              + (f"; one chunk because {data['split_blocker']}" if data["split_blocker"] else ""))
    for c in data["chunks"]:
        out.print(f"  chunk {c['index']:>4}: frames {c['start_frame']}-{c['end_frame'] - 1} "
                  f"({c['frames']})")
    for w in data["warnings"]:
        out.print(f"warning: {w}")


jobs_cli = typer.Typer(no_args_is_help=True, help="The job history.")
cli.add_typer(jobs_cli, name="jobs")


def _record_submitted(jp: JobPlan) -> None:
    """Put a local run in the history too; a history that cannot be written never stops it."""
    try:
        _history().job_submitted(jp.spec)
    except Exception as exc:
        log.warning("job history not written: %s", exc)


def _history() -> Any:
    from sqlalchemy.exc import SQLAlchemyError

    from mediatasks.history import History

    url = get_settings().database_url
    try:
        return History(url)
    except SQLAlchemyError as exc:
        first = " ".join(str(exc).split("\n")[0].split())
        raise MediatasksError(f"cannot open the job history at {url or 'the default SQLite'}: "
                              f"{first}", hint="check MEDIATASKS_DATABASE_URL") from exc


@cli.command()
def submit(
    sources: SourcesArg,
    output: OutputOpt = None,
    video_codec: CodecOpt = "libx264",
    crf: CrfOpt = None,
    preset: PresetOpt = None,
    video_opt: VideoOpt = None,
    audio_codec: AudioOpt = "copy",
    chunk_seconds: ChunkOpt = None,
    overwrite: OverwriteOpt = False,
    policy: PolicyOpt = None,
    output_dir: OutputDirOpt = None,
    on_error: OnErrorOpt = "continue",
    as_json: JsonOpt = False,
) -> None:
    """Check SOURCE, then hand the job to the cluster's workers (MEDIATASKS_BROKER_URL); with
    --policy, one job per media file of the SOURCES, as one batch."""
    from mediatasks.workflow import job_workflow

    if policy is not None:
        _batch("submit", sources, policy, output_dir=output_dir, on_error=on_error, workers=None,
               as_json=as_json, chunk_seconds=chunk_seconds)
        return
    source, output = _one_source(sources, output)
    settings = get_settings()
    opts = _options(video_codec, crf, preset, video_opt, audio_codec, chunk_seconds)
    jp = _prepare(source, output, opts, overwrite=overwrite, settings=settings,
                  exact_preview=False)
    history = _history()
    wf = job_workflow(jp.spec)
    result_id = wf.tasks[-1].freeze().id
    history.job_submitted(jp.spec, result_id=result_id)
    try:
        wf.apply_async()
    except Exception as exc:  # kombu raises its own errors for a broker that is down
        history.job_finished(jp.job_id, "failed", error=f"could not submit: {exc}")
        from mediatasks.errors import BrokerUnavailable

        raise BrokerUnavailable(f"cannot reach the broker at {settings.broker_url}: {exc}",
                                hint="start redis-server or set MEDIATASKS_BROKER_URL") from exc
    if as_json:
        print(json.dumps({"job_id": jp.job_id, "status": "queued"}))
    else:
        out.print(f"submitted {jp.job_id}: {jp.spec.input} -> {jp.spec.output}")


def _job_or_fail(history: Any, job_id: str) -> Any:
    record = history.get(job_id)
    if record is None:
        raise InvalidOptions(f"no job {job_id} in the history at {history.url}",
                             hint="see 'mediatasks jobs list'")
    return record


@cli.command()
def status(
    job_id: Annotated[str, typer.Argument(help="The job id.")],
    follow: Annotated[bool, typer.Option("--follow", help="Show progress until it ends.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """A job's status; with --follow, a live progress bar until it ends (exit 1 if it failed)."""
    from mediatasks.celery_app import app
    from mediatasks.history import TERMINAL
    from mediatasks.jobstate import JobState

    history = _history()
    if history.get(job_id) is None and history.jobs_in_batch(job_id):
        _batch_status(history, job_id, follow=follow, as_json=as_json)
        return
    record = _job_or_fail(history, job_id)
    if follow:
        state = JobState(app.backend, job_id)
        with _Follower(not as_json and err.is_terminal) as follower:
            while record.status not in TERMINAL:
                follower.poll(state)
                time.sleep(0.5)
                record = _job_or_fail(history, job_id)
            follower.poll(state)
    if as_json:
        print(record.model_dump_json(exclude={"tasks"}))
    else:
        reused = (f" ({record.chunks_reused} of {record.chunks} chunks reused from the earlier "
                  "attempt)" if record.chunks_reused else "")
        out.print(f"{record.job_id}: {record.status}"
                  + (f" ({record.error})" if record.error else "") + reused)
    if follow and record.status != "succeeded":
        raise typer.Exit(1)


def _batch_status(history: Any, batch_id: str, *, follow: bool, as_json: bool) -> None:
    """A batch's jobs; with --follow, until every one has ended (exit 1 if any did not succeed)."""
    from mediatasks.history import TERMINAL

    records = history.jobs_in_batch(batch_id)
    while follow and any(r.status not in TERMINAL for r in records):
        time.sleep(0.5)
        records = history.jobs_in_batch(batch_id)
    statuses = {r.status for r in records}
    if statuses - TERMINAL:
        overall = "running"
    elif statuses == {"succeeded"}:
        overall = "succeeded"
    else:
        overall = "failed" if "failed" in statuses else "cancelled"
    if as_json:
        print(json.dumps({"job_id": batch_id, "status": overall, "jobs": [
            json.loads(r.model_dump_json(exclude={"tasks"})) for r in records]}))
    else:
        for r in records:
            out.print(f"{r.job_id}  {r.status:<9}  {r.input}"
                      + (f" ({r.error})" if r.error else ""))
        out.print(f"batch {batch_id}: {overall} ({len(records)} job(s))")
    if follow and overall != "succeeded":
        raise typer.Exit(1)


@cli.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def worker(
    ctx: typer.Context,
    queues: Annotated[str, typer.Option("-Q", "--queues", help="cpu, gpu, io (comma-separated)")]
    = "cpu,gpu,io",
    concurrency: Annotated[int | None, typer.Option(
        "-c", "--concurrency", min=1,
        help="processes (default: 2 on a gpu-only worker, to fit consumer NVENC session limits; "
             "else the CPU count)")] = None,
    gpu: Annotated[int | None, typer.Option("--gpu", min=0, help="pin to this GPU index")] = None,
) -> None:
    """Start a celery worker with mediatasks' defaults; other options go to celery as they are."""
    names = [q.strip() for q in queues.split(",") if q.strip()]
    if concurrency is None:
        concurrency = 2 if names == ["gpu"] else (os.cpu_count() or 2)
    env = dict(os.environ)
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(gpu)  # NVENC/CUDA see only this card
        env.setdefault("MEDIATASKS_VAAPI_DEVICE", f"/dev/dri/renderD{128 + gpu}")
    argv = [sys.executable, "-m", "celery", "-A", "mediatasks", "worker", "-Q", ",".join(names),
            "-c", str(concurrency), "-E", *ctx.args]
    from mediatasks import runner

    runner.exec_replace(argv, env)


@cli.command()
def cancel(job_id: Annotated[str, typer.Argument(help="The job id, or a batch id.")],
           as_json: JsonOpt = False) -> None:
    """Stop a job (or every unfinished job of a batch): queued tasks are dropped, running ffmpeg
    killed, its temp files removed."""
    from mediatasks.celery_app import app
    from mediatasks.history import TERMINAL
    from mediatasks.jobstate import JobState

    history = _history()
    if history.get(job_id) is None and history.jobs_in_batch(job_id):
        running = [r for r in history.jobs_in_batch(job_id) if r.status not in TERMINAL]
        if not running:
            raise InvalidOptions(f"batch {job_id} has no queued or running job",
                                 hint=f"see 'mediatasks status {job_id}'")
        for r in running:
            JobState(app.backend, r.job_id).request_cancel()
            history.job_finished(r.job_id, "cancelled", error="cancelled by the user")
        if as_json:
            print(json.dumps({"job_id": job_id, "status": "cancelled",
                              "cancelled": [r.job_id for r in running]}))
        else:
            out.print(f"batch {job_id}: {len(running)} job(s) cancelled")
        return
    record = _job_or_fail(history, job_id)
    if record.status in TERMINAL:
        raise InvalidOptions(f"job {job_id} has already {record.status}",
                             hint="only a queued or running job can be cancelled")
    JobState(app.backend, job_id).request_cancel()
    history.job_finished(job_id, "cancelled", error="cancelled by the user")
    if as_json:
        print(json.dumps({"job_id": job_id, "status": "cancelled"}))
    else:
        out.print(f"{job_id}: cancelled (running encodes stop within a few seconds)")


@cli.command()
def retry(job_id: Annotated[str, typer.Argument(help="The job id.")],
          as_json: JsonOpt = False) -> None:
    """Run a failed or cancelled job again, reusing every chunk that was already verified."""
    from mediatasks.celery_app import app
    from mediatasks.jobstate import JobState
    from mediatasks.steps import probe, publish
    from mediatasks.workflow import job_workflow

    history = _history()
    record = _job_or_fail(history, job_id)
    if record.status not in {"failed", "cancelled"}:
        raise InvalidOptions(f"job {job_id} is {record.status}",
                             hint="only a failed or cancelled job can be retried")
    spec = JobSpec.model_validate(record.settings)
    src = probe.check_source(spec.input)
    if spec.placement is None:  # a library placement decides itself (on_exists)
        publish.check_output(Path(spec.output), overwrite=spec.overwrite, source=src)
    state = JobState(app.backend, job_id)
    # A new attempt number: tasks of the earlier attempt still queued (a retry right after a
    # cancel) end as they start instead of running beside this one.
    spec = spec.model_copy(update={"attempt": max(spec.attempt, state.attempt()) + 1})
    state.reset()
    state.record_attempt(spec.attempt)
    wf = job_workflow(spec)
    history.job_resubmitted(job_id, result_id=wf.tasks[-1].freeze().id, spec=spec)
    wf.apply_async()
    if as_json:
        print(json.dumps({"job_id": job_id, "status": "queued"}))
    else:
        out.print(f"{job_id}: queued again (attempt {spec.attempt + 1})")


@cli.command()
def undo(job_id: Annotated[str, typer.Argument(help="A batch id or a job id.")],
         as_json: JsonOpt = False) -> None:
    """Put originals back and remove what a policy job or batch published (exit 1 if an
    original was deleted and cannot come back)."""
    from mediatasks import library

    report = library.undo(job_id, _history())
    if as_json:
        print(json.dumps({"job_id": job_id, "status": "undone" if report.complete else "partial",
                          **json.loads(report.model_dump_json())}))
    else:
        for p in report.removed:
            out.print(f"removed   {p}")
        for p in report.restored:
            out.print(f"restored  {p}")
        for p in report.removed_dirs:
            out.print(f"removed   {p}/")
        for line in report.lost:
            err.print(f"mediatasks: {line}", markup=False, highlight=False, soft_wrap=True)
        out.print(f"{job_id}: {report.undone} change(s) undone")
    if not report.complete:
        raise typer.Exit(1)


@jobs_cli.command("list")
def jobs_list(
    status_filter: Annotated[str | None, typer.Option(
        "--status", help="queued, running, succeeded, failed or cancelled")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1)] = 50,
    as_json: JsonOpt = False,
) -> None:
    """The latest jobs, newest first."""
    records = _history().list(status=status_filter, limit=limit)
    if as_json:
        print(json.dumps([json.loads(r.model_dump_json(exclude={"tasks"})) for r in records]))
        return
    for r in records:
        out.print(f"{r.job_id}  {r.status:<9}  {r.created_at:%Y-%m-%d %H:%M}  {r.input}")


@jobs_cli.command("show")
def jobs_show(job_id: Annotated[str, typer.Argument(help="The job id.")],
              as_json: JsonOpt = False) -> None:
    """One job with every task: name, queue, worker, state, times, retries, error."""
    record = _job_or_fail(_history(), job_id)
    if as_json:
        print(record.model_dump_json())
        return
    out.print(f"{record.job_id}: {record.status}  {record.input} -> {record.output}")
    if record.error:
        out.print(f"  error: {record.error}")
    for t in record.tasks:
        took = (f"{(t.finished_at - t.started_at).total_seconds():.1f}s"
                if t.started_at and t.finished_at else "-")
        out.print(f"  {t.name.removeprefix('mediatasks.'):<13} {t.queue or '-':<4} "
                  f"{t.state:<8} {took:>7}  retries {t.retries}  {t.worker or '-'}"
                  + (f"  {t.error}" if t.error else ""))


@cli.command()
def probe(source: InputArg, as_json: JsonOpt = False) -> None:
    """What mediatasks knows about SOURCE."""
    from mediatasks.steps.probe import probe as probe_file

    result: ProbeResult = probe_file(source, ffprobe=get_settings().ffprobe)
    if as_json:
        print(result.model_dump_json())
        return
    v = result.video
    out.print(f"{result.path}: {result.format_name}, {result.duration or 0:.3f}s")
    out.print(f"  video #{v.index}: {v.codec_name} {v.width}x{v.height} {v.pix_fmt} "
              f"r={v.r_frame_rate} avg={v.avg_frame_rate} tb={v.time_base} "
              f"{'VFR' if v.is_vfr else 'CFR'}, {v.frame_count} frames, "
              f"{len(v.keyframes)} keyframes")
    for s in result.streams:
        if s.index != v.index:
            out.print(f"  {s.codec_type} #{s.index}: {s.codec_name} {s.language or ''}")
    if result.chapters:
        out.print(f"  {len(result.chapters)} chapters")


def main() -> None:
    """Entry point: turn every error into one line on stderr and an exit code."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        rc = cli(standalone_mode=False)
        if isinstance(rc, int) and rc:
            sys.exit(rc)
    except MediatasksError as exc:
        err.print(f"mediatasks: error: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err.print("mediatasks: interrupted", markup=False)
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, EOFError):
        sys.exit(130)
    except Exception as exc:  # usage errors and anything unexpected: still one line
        if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):  # click's (typer's)
            err.print(f"mediatasks: error: {' '.join(exc.format_message().split())}",
                      markup=False, highlight=False, soft_wrap=True)
            sys.exit(exc.exit_code)
        err.print(f"mediatasks: internal error: {type(exc).__name__}: {exc}", markup=False,
                  highlight=False, soft_wrap=True)
        sys.exit(70)
