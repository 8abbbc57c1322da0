"""`mediatasks run`: a job (or a policy batch) on a private broker with local workers."""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import shutil
import signal
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mediatasks.cli.common import (
    AudioOpt,
    ChunkOpt,
    CodecOpt,
    CrfOpt,
    HoldOpt,
    JsonOpt,
    OnErrorOpt,
    OutputDirOpt,
    OutputOpt,
    OverwriteOpt,
    PolicyOpt,
    PresetOpt,
    SourcesArg,
    StrictOpt,
    VideoOpt,
    err,
    local_service,
    on_sigterm,
    one_source,
    out,
)
from mediatasks.cli.follow import Follower, StepTimes
from mediatasks.errors import JobCancelled, JobFailed
from mediatasks.models import EncodeOptions, JobResult, ProbeResult
from mediatasks.service import summary
from mediatasks.service.records import Event
from mediatasks.settings import Settings, get_settings

if TYPE_CHECKING:
    from mediatasks.fingerprint import KnownSource
    from mediatasks.scheduling import Schedule
    from mediatasks.service.prepare import Probed

WorkersOpt = Annotated[int | None, typer.Option(
    "--workers", min=1, help="Chunks encoded at once (default: chosen for the encoder and the "
                             "machine's cores).")]


def run(
    sources: SourcesArg,
    output: OutputOpt = None,
    video_codec: CodecOpt = "libx264",
    crf: CrfOpt = None,
    preset: PresetOpt = None,
    video_opt: VideoOpt = None,
    audio_codec: AudioOpt = "copy",
    chunk_seconds: ChunkOpt = None,
    workers: WorkersOpt = None,
    overwrite: OverwriteOpt = False,
    hold: HoldOpt = False,
    strict: StrictOpt = False,
    policy: PolicyOpt = None,
    output_dir: OutputDirOpt = None,
    on_error: OnErrorOpt = "continue",
    as_json: JsonOpt = False,
) -> None:
    """Encode SOURCE into --output on a private broker with local workers. With --policy, every
    media file of the SOURCES runs as one batch and is filed into the policy's library."""
    if policy is not None:
        from mediatasks.cli.batches import batch_command

        batch_command("run", sources, policy, output_dir=output_dir, on_error=on_error,
                      workers=workers, as_json=as_json, chunk_seconds=chunk_seconds, hold=hold)
        return
    from mediatasks.cluster.local import (
        LocalCluster,
        abandoned_runs,
        adopt_abandoned_chunks,
        default_workers,
        run_lock,
    )
    from mediatasks.profiles import is_hardware
    from mediatasks.service.prepare import check_paths, make_options, new_job_id, prepare_job
    from mediatasks.service.runs import run_job
    from mediatasks.steps import encode as encode_step
    from mediatasks.steps.plan import save_frames
    from mediatasks.steps.publish import temp_path

    started = time.monotonic()
    source, output = one_source(sources, output)
    settings = get_settings()
    opts = make_options(video_codec, crf, preset, video_opt, audio_codec, chunk_seconds)
    src = check_paths(source, output, overwrite=overwrite)
    job_id = new_job_id()
    chooser = ScheduleChooser(settings, workers=workers)
    steps = StepTimes()
    # The job directory is kept in the work directory (not the private temp one), so that a run
    # killed with its machine leaves its verified chunks for the next run of the same job.
    cluster = LocalCluster(settings, workers=workers or default_workers(),
                           work_dir=settings.work_dir, hardware=is_hardware(opts.video_codec),
                           roots=(src.resolve().parent, output.resolve().parent),
                           encoders_later=True)
    previous = signal.signal(signal.SIGTERM, on_sigterm)
    jp = None
    service = None
    show = not as_json
    probed: list[Probed] = []

    def start_encoders(info: dict[str, Any]) -> None:
        # The encode worker boots while the packet pass runs: its schedule needs only the
        # container's size and duration.
        sched = chooser.early(info, opts)
        cluster.start_encoders(sched.workers, sched.threads)

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mediatasks-service")
    try:
        with Follower(err, enabled=show) as follower:
            follower.note("starting workers")
            # The broker and the io worker start first; the encode worker as soon as the
            # container is read; the source is probed and the encoder checked meanwhile.
            mark = time.monotonic()
            with cluster:
                steps.add("start broker", time.monotonic() - mark)
                # Celery and the job history load on a thread meanwhile (ffprobe and the test
                # encode wait on subprocesses). Everything the checks use is imported here
                # first, so the two threads never import at the same time.
                preload_checks()
                loading = pool.submit(local_service, cluster.broker_url)
                follower.note("probing")
                mark = time.monotonic()
                jp = prepare_job(source, output, opts, overwrite=overwrite, settings=settings,
                                 exact_preview=False, hold=hold, local=True, job_id=job_id,
                                 strict=strict, chunk_length=chooser, on_probe=probed.append,
                                 on_container=start_encoders)
                steps.add("checks", time.monotonic() - mark)
                sched = chooser.schedule
                cluster.start_encoders()  # a source whose container said too little
                if show:
                    # Nothing but a refusal is printed before the job exists: then its id.
                    err.print(f"job {job_id}: {jp.spec.input} -> {jp.spec.output}", markup=False,
                              highlight=False)
                    if sched is not None:
                        err.print(describe_schedule(sched), markup=False, highlight=False)
                    for w in jp.warnings:
                        err.print(f"[yellow]warning:[/] {w}")
                try:
                    service = loading.result()
                except Exception:  # whatever failed there fails here again, in the open
                    service = local_service(cluster.broker_url)
                job_dir = cluster.work_dir / jp.job_id
                failed = True

                def on_event(event: Event) -> None:
                    steps.event(event)
                    follower.event(event)

                try:
                    with run_lock(job_dir):
                        for old in abandoned_runs(cluster.work_dir):
                            record = service.find(old)
                            if record is not None and not record.ended:
                                service.failed(old, "the mediatasks run that ran it stopped "
                                                    f"before it ended (run again as {job_id})")
                        adopted = adopt_abandoned_chunks(cluster.work_dir, jp.spec)
                        if adopted and show:
                            err.print(f"resuming: {adopted} verified chunk(s) from an earlier run "
                                      "that did not finish")
                        known = hand_on(probed, job_dir, save_frames)
                        result = run_job(service, jp.spec, watch=cluster.check_alive,
                                         on_event=on_event, known=known)
                        steps.tasks(service.get(jp.job_id).tasks)
                        failed = result.status == "failed"
                except JobCancelled:
                    raise
                except Exception as exc:
                    from mediatasks.cluster.failures import describe

                    if service.find(jp.job_id) is not None:
                        service.failed(jp.job_id, describe(exc, "mediatasks run"))
                    raise
                finally:
                    if failed:  # the verified chunks stay for the next run of the same job
                        encode_step.remove_all_but_verified_chunks(job_dir)
                    else:
                        shutil.rmtree(job_dir, ignore_errors=True)
                    temp_path(Path(jp.spec.output), jp.job_id).unlink(missing_ok=True)
                    mark = time.monotonic()
            steps.add("stop workers", time.monotonic() - mark)
    except KeyboardInterrupt:
        if jp is not None and service is not None:
            with contextlib.suppress(Exception):
                service.cancel_job(jp.job_id, reason="interrupted")
        if as_json and jp is not None:
            print(JobResult(job_id=jp.job_id, status="cancelled", output=None,
                            error="interrupted").model_dump_json())
        raise JobCancelled("interrupted: workers stopped, temp files removed",
                           path=source) from None
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        signal.signal(signal.SIGTERM, previous)
    result = result.model_copy(update={"seconds": round(time.monotonic() - started, 2)})
    extra: dict[str, Any] = {"steps": steps.as_dict()}
    if chooser.schedule is not None:
        extra["schedule"] = chooser.schedule.as_dict()
    finish(result, as_json=as_json, extra=extra,
           steps=steps.line() if show and result.status == "succeeded" else None)


# What the checks import (prepare_job and every step it calls, the fingerprint, the schedule),
# in this order, before the service loads on its thread: the main thread then imports nothing
# while the other one does (tests/test_cli.py checks that the checks import nothing more).
CHECK_MODULES = (
    "mediatasks.fingerprint", "mediatasks.encoder_options", "mediatasks.scheduling",
    "mediatasks.service.prepare", "mediatasks.steps.probe", "mediatasks.steps.plan",
    "mediatasks.steps.integrity", "mediatasks.steps.audio", "mediatasks.steps.mux",
    "mediatasks.steps.encode", "mediatasks.steps.publish", "concurrent.futures.thread",
)


def preload_checks() -> None:
    """Import ``CHECK_MODULES`` (in this thread, in a fixed order)."""
    for name in CHECK_MODULES:
        importlib.import_module(name)


# A probe result rides in the analyse message only while it is small (the keyframe list of an
# all-intra source is not): above this the workers probe again.
KNOWN_KEYFRAMES_MAX = 20_000


def hand_on(probed: list[Probed], job_dir: Path,
            save_frames: Callable[[Sequence[int], Path], None]) -> KnownSource | None:
    """What the command read of the source, for the analyse step: the probe result (returned,
    to ride in the message) and the frame timestamps (saved in the job directory)."""
    from mediatasks.fingerprint import KnownSource

    if not probed:
        return None
    seen = probed[-1]
    if len(seen.result.video.keyframes) > KNOWN_KEYFRAMES_MAX:
        return None
    if not seen.result.video.split_blocker:
        save_frames(seen.frame_pts, job_dir)
    return KnownSource(probe=seen.result, fingerprint=seen.fingerprint)


class ScheduleChooser:
    """prepare_job's ``chunk_length`` hook for a local run: the schedule for the probed source
    (workers, threads, chunk length), unless --chunk-seconds or MEDIATASKS_CHUNK_SECONDS set the
    length (then only the workers and threads are chosen)."""

    def __init__(self, settings: Settings, *, workers: int | None,
                 cores: int | None = None) -> None:
        self.settings = settings
        self.workers = workers
        self.cores = cores or len(os.sched_getaffinity(0)) or 1
        self.schedule: Schedule | None = None
        self.started: Schedule | None = None  # what the encode worker was started with

    def _given(self, opts: EncodeOptions) -> float | None:
        given = opts.chunk_seconds
        if given is None and "chunk_seconds" in self.settings.model_fields_set:
            given = self.settings.chunk_seconds
        return given

    def early(self, info: dict[str, Any], opts: EncodeOptions) -> Schedule:
        """The schedule from the container alone (the video's size, the file's duration): the
        workers and threads the encode worker starts with, before the packet pass ends."""
        from mediatasks.scheduling import plan_schedule
        from mediatasks.steps.probe import pick_video

        video = pick_video(info.get("streams") or []) or {}
        width, height = opts.scale or (int(video.get("width") or 0),
                                       int(video.get("height") or 0))
        try:
            duration = float((info.get("format") or {}).get("duration") or 0)
        except ValueError:
            duration = 0.0
        self.started = plan_schedule(opts.video_codec, cores=self.cores, width=width,
                                     height=height, duration=duration, preset=opts.preset,
                                     options=dict(opts.video_opts), workers=self.workers,
                                     chunk_seconds=self._given(opts))
        return self.started

    def __call__(self, source: ProbeResult, opts: EncodeOptions) -> float | None:
        from mediatasks.scheduling import for_source

        given = self._given(opts)
        self.schedule = for_source(source, opts, cores=self.cores, workers=self.workers,
                                   chunk_seconds=given)
        if self.started is not None and (self.started.workers, self.started.threads) != (
                self.schedule.workers, self.schedule.threads):
            # The encode worker already runs with the container's figures: say what runs.
            self.schedule = replace(self.schedule, workers=self.started.workers,
                                    threads=self.started.threads)
        if given is not None or opts.remux:
            return None
        return round(self.schedule.chunk_seconds, 3)


def describe_schedule(s: Schedule) -> str:
    threads = f"{s.threads} thread(s) each" if s.threads else "encoder's own threads"
    return (f"schedule: {s.chunks} chunk(s) of {s.chunk_seconds:.1f}s, {s.workers} at once, "
            f"{threads}, {s.cores} core(s) ({s.reason})")


def finish(result: JobResult, *, as_json: bool, extra: dict[str, Any] | None = None,
           steps: str | None = None) -> None:
    """Print how the job ended (``extra``: more keys for --json; ``steps``: the step times'
    line); exit 1 unless it succeeded."""
    if as_json:
        print(json.dumps({**json.loads(result.model_dump_json()), **(extra or {})})
              if extra else result.model_dump_json())
    elif result.status == "succeeded" and result.outcome == "kept-source":
        out.print(f"kept: {result.input}: {result.note or 'the source was kept'}")
    elif result.status == "succeeded":
        data = json.loads(result.model_dump_json())
        data["encode_fps"] = (round((result.frames_out or 0) / result.seconds, 1)
                              if result.seconds else None)
        out.print(f"done: {result.output}: {summary.describe(data)}")
        for w in result.warnings:
            err.print(f"[yellow]warning:[/] {w}")
        if steps:
            err.print(steps, markup=False, highlight=False)
    if result.status == "rejected":
        if not as_json:
            out.print(f"{result.job_id}: rejected; nothing was encoded")
        raise typer.Exit(1)
    if result.status != "succeeded":
        if as_json:
            raise typer.Exit(1)
        raise JobFailed(result.error or "the job failed")
