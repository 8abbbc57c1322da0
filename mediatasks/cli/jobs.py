"""`plan`, `probe` and `submit`: a job looked at, or handed to the shared cluster."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from mediatasks.cli.common import (
    AudioOpt,
    ChunkOpt,
    CodecOpt,
    CrfOpt,
    HoldOpt,
    InputArg,
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
    one_source,
    out,
    shared_service,
    single,
)
from mediatasks.models import ProbeResult
from mediatasks.settings import get_settings


def plan(
    sources: SourcesArg,
    output: Annotated[Path | None, typer.Option(
        "-o", "--output", help="Output (default: SOURCE.out.mkv).")] = None,
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
    """Dry run: the chunks and queues; with --json also every ffmpeg argv. Encodes nothing. With
    --policy: for each media file of the SOURCES, skip / remux / transcode, why, and where it
    will land."""
    if policy is not None:
        from mediatasks.cli.batches import batch_command

        batch_command("plan", sources, policy, output_dir=output_dir, on_error=on_error,
                      workers=None, as_json=as_json, chunk_seconds=chunk_seconds)
        return
    from mediatasks.cli.local import ScheduleChooser, describe_schedule
    from mediatasks.service.prepare import make_options, plan_preview, prepare_job

    source = single(sources)
    settings = get_settings()
    opts = make_options(video_codec, crf, preset, video_opt, audio_codec, chunk_seconds)
    target = output or source.with_name(f"{source.stem}.out.mkv")
    # The chunks `mediatasks run` would cut on this machine, and how many it would encode at once.
    chooser = ScheduleChooser(settings, workers=None)
    jp = prepare_job(source, target, opts, overwrite=True, settings=settings, check_output=False,
                     chunk_length=chooser)
    data = plan_preview(jp, settings)
    if chooser.schedule is not None:
        data["schedule"] = chooser.schedule.as_dict()
    if as_json:
        print(json.dumps(data))
        return
    out.print(f"{data['input']} -> {data['output']} ({data['output_format']})")
    out.print(f"{data['frames']} frames, {len(data['chunks'])} chunk(s) on queue {data['queue']}"
              + (f"; one chunk because {data['split_blocker']}" if data["split_blocker"] else ""))
    if chooser.schedule is not None:
        out.print(describe_schedule(chooser.schedule), markup=False, highlight=False)
    for c in data["chunks"]:
        out.print(f"  chunk {c['index']:>4}: frames {c['start_frame']}-{c['end_frame'] - 1} "
                  f"({c['frames']})")
    for w in data["warnings"]:
        out.print(f"warning: {w}")


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
    hold: HoldOpt = False,
    strict: StrictOpt = False,
    policy: PolicyOpt = None,
    output_dir: OutputDirOpt = None,
    on_error: OnErrorOpt = "continue",
    webhook_url: Annotated[str | None, typer.Option(
        "--webhook-url", help="POST the job's events here, signed with "
                              "MEDIATASKS_WEBHOOK_SECRET (docs/api.md#webhooks).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Check SOURCE, then hand the job to the cluster's workers (MEDIATASKS_BROKER_URL). With
    --policy, one job per media file of the SOURCES, as one batch."""
    if webhook_url is not None:
        from mediatasks.service.webhook_messages import check_secret, check_url

        check_url(webhook_url)
        check_secret(get_settings().webhook_secret)
    if policy is not None:
        from mediatasks.cli.batches import batch_command

        batch_command("submit", sources, policy, output_dir=output_dir, on_error=on_error,
                      workers=None, as_json=as_json, chunk_seconds=chunk_seconds, hold=hold,
                      webhook_url=webhook_url)
        return
    from mediatasks.service.prepare import make_options, prepare_job

    source, output = one_source(sources, output)
    settings = get_settings()
    opts = make_options(video_codec, crf, preset, video_opt, audio_codec, chunk_seconds)
    jp = prepare_job(source, output, opts, overwrite=overwrite, settings=settings,
                     exact_preview=False, hold=hold, strict=strict)
    if webhook_url is not None:
        from mediatasks.cli.webhooks import subscribe

        subscribe([jp.spec.job_id], webhook_url)
    record = shared_service().submit(jp.spec)
    if as_json:
        print(json.dumps({"job_id": record.job_id, "status": record.status}))
    else:
        out.print(f"submitted {record.job_id}: {jp.spec.input} -> {jp.spec.output}")
        if hold:
            err.print(f"it waits for 'mediatasks approve {record.job_id}' once planned")
