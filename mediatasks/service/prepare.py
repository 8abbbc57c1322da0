"""Everything that can fail before a job starts, done at once, each as one line naming the fix;
and the plan preview (`mediatasks plan`)."""

from __future__ import annotations

import contextvars
import os
import tempfile
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mediatasks import encoder_options
from mediatasks.errors import InvalidOptions
from mediatasks.models import AudioResult, EncodeOptions, JobPlan, JobSpec, ProbeResult
from mediatasks.profiles import is_hardware
from mediatasks.settings import Settings

if TYPE_CHECKING:
    from mediatasks.fingerprint import Fingerprint


def make_options(video_codec: str, crf: float | None, preset: str | None,
                 video_opt: list[str] | None, audio_codec: str,
                 chunk_seconds: float | None) -> EncodeOptions:
    """Encode options from what a person typed.

    Raises:
        InvalidOptions: an option that cannot be right.
    """
    pairs = []
    for item in video_opt or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InvalidOptions(f"--video-opt '{item}' is not KEY=VALUE",
                                 hint="e.g. --video-opt tune=film")
        pairs.append((key.strip().lstrip("-"), value))
    if not video_codec.strip():
        raise InvalidOptions("--video-codec is empty", hint="e.g. --video-codec libx264")
    if video_codec.strip() == "copy":
        raise InvalidOptions("--video-codec copy: mediatasks encodes the video in chunks",
                             hint="name an encoder such as libx264; to remux, use a policy "
                                  "with video.skip_if_codec (docs/policies.md)")
    if not audio_codec.strip():
        raise InvalidOptions("--audio-codec is empty", hint="'copy' or an encoder such as aac")
    return EncodeOptions(video_codec=video_codec, crf=crf, preset=preset, video_opts=tuple(pairs),
                         audio_codec=audio_codec, chunk_seconds=chunk_seconds)


def check_paths(source: Path, output: Path, *, overwrite: bool, check_output: bool = True
                ) -> Path:
    """The checks that need no ffmpeg: a missing file never starts a cluster. Returns the source.

    Raises:
        SourceNotFound, InvalidOptions, OutputExists.
    """
    from mediatasks.steps import mux, probe, publish

    src = probe.check_source(source)
    if output.is_dir():
        raise InvalidOptions("is a directory", path=output,
                             hint=f"give a file name, e.g. -o {output / (src.stem + '.mkv')}")
    mux.output_format(output)
    if check_output:
        publish.check_output(output, overwrite=overwrite, source=src)
        _check_writable(output)
    return src


def _check_writable(output: Path) -> None:
    """Write (and remove) a file beside the output: a directory that only looks writable (/proc,
    a read-only mount, a full disk) is found now, not after the encode."""
    try:
        fd, name = tempfile.mkstemp(prefix=".mediatasks-check-", dir=output.parent)
    except OSError as exc:
        raise InvalidOptions(f"cannot write in {output.parent}: {exc.strerror or exc}",
                             path=output, hint="choose an output directory you can write to"
                             ) from None
    os.close(fd)
    os.unlink(name)


ENCODER_CHECKS = ".encoder-checks"


@dataclass(frozen=True)
class Probed:
    """What ``prepare_job`` read of the source: the probe, every frame's pts (presentation
    order, from the same pass) and the file's fingerprint taken before it was read."""

    result: ProbeResult
    frame_pts: Sequence[int]
    fingerprint: Fingerprint


def prepare_job(source: Path, output: Path, opts: EncodeOptions, *, overwrite: bool,
                settings: Settings, check_output: bool = True, exact_preview: bool = True,
                hold: bool = False, local: bool = False, job_id: str | None = None,
                strict: bool = False,
                chunk_length: Callable[[ProbeResult, EncodeOptions], float | None] | None = None,
                on_probe: Callable[[Probed], None] | None = None,
                on_container: Callable[[dict[str, Any]], None] | None = None) -> JobPlan:
    """Probe, plan and test-encode: a job that passes this starts. The test encode runs beside
    the packet pass (and not at all when the same check passed before: see
    ``encode.check_encoder_at``).

    Args:
        chunk_length: called with the probe result; the chunk length it returns (unless None)
            is the job's when the options name none (the local schedule).
        exact_preview: cut the plan shown between keyframes as the plan step does (``run`` and
            ``submit`` skip it: their plan is made again on the workers).
        on_probe: called with what was read of the source (`mediatasks run` hands it on).
        on_container: called with the container's description as soon as it is read (before
            the packet pass), `mediatasks run` starts its encode worker then.
    """
    from mediatasks import fingerprint
    from mediatasks.steps import audio, encode, mux, plan, probe

    src = check_paths(source, output, overwrite=overwrite, check_output=check_output)
    fmt = mux.output_format(output)
    encoder_options.check_options(opts.video_codec, opts.video_opts, ffmpeg=settings.ffmpeg)
    if opts.audio_codec != "copy":
        audio.check_audio_encoder(opts.audio_codec, None, ffmpeg=settings.ffmpeg,
                                  subject="--audio-codec")
    taken = fingerprint.take(src) if on_probe is not None else None
    info = probe.container_info(src, ffprobe=settings.ffprobe)
    vraw = probe.video_stream(info, src)
    if on_container is not None:
        on_container(info)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mediatasks-check") as pool:
        checked = None
        if not is_hardware(opts.video_codec):
            checked = pool.submit(contextvars.copy_context().run, encode.check_encoder_at, opts,
                                  (int(vraw["width"]), int(vraw["height"])), vraw.get("pix_fmt"),
                                  fmt, ffmpeg=settings.ffmpeg, subject=str(src),
                                  proven=settings.work_dir / ENCODER_CHECKS)
        result, frame_pts = probe.probe_source(src, ffprobe=settings.ffprobe, info=info)
        if checked is not None:
            checked.result()
    if on_probe is not None and taken is not None:
        on_probe(Probed(result=result, frame_pts=frame_pts, fingerprint=taken))
    if chunk_length is not None:
        seconds = chunk_length(result, opts)
        if seconds is not None and opts.chunk_seconds is None:
            opts = opts.model_copy(update={"chunk_seconds": seconds})
    spec = JobSpec(job_id=job_id or new_job_id(), input=str(src.resolve()),
                   output=str(output.resolve()), options=opts, overwrite=overwrite, hold=hold,
                   local=local, strict=strict)
    exact = exact_preview and not result.video.split_blocker
    jp = plan.plan_job(result, spec, chunk_seconds=settings.chunk_seconds,
                       min_chunk_frames=settings.min_chunk_frames,
                       frame_pts=frame_pts if exact else None)
    return plan.with_integrity(jp, strict=strict)


def check_job(source: Path, output: Path, opts: EncodeOptions, *, overwrite: bool,
              settings: Settings, job_id: str, hold: bool = False, strict: bool = False) -> JobSpec:
    """The checks that need no probe (paths, output, the --video-opt allowlist): what the HTTP
    API does before it records a job. The probe, the plan and the test encode are the analyse
    step's, on the workers; a source they refuse fails the job with the same one-line error.

    Raises:
        SourceNotFound, InvalidMedia, InvalidOptions, OutputExists.
    """
    src = check_paths(source, output, overwrite=overwrite)
    encoder_options.check_options(opts.video_codec, opts.video_opts, ffmpeg=settings.ffmpeg)
    return JobSpec(job_id=job_id, input=str(src.resolve()), output=str(output.resolve()),
                   options=opts, overwrite=overwrite, hold=hold, strict=strict)


def new_job_id() -> str:
    return uuid.uuid4().hex


def plan_preview(jp: JobPlan, settings: Settings) -> dict[str, Any]:
    """The plan as `mediatasks plan --json` prints it: chunks, queues and every ffmpeg argv."""
    from mediatasks.steps import audio, concat, encode, mux

    job_dir = settings.work_dir / jp.job_id
    chunks = []
    for c in jp.chunks:
        chunks.append({**c.model_dump(mode="json"), "frames": c.frames, "queue": jp.queue,
                       "argv": encode.encode_args(jp, c, encode.chunk_path(job_dir, c.index),
                                                  seek_pts=c.seek_pts, ffmpeg=settings.ffmpeg)})
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
