"""encode: one chunk of video, exactly its planned frames, to a NUT file in the job directory.

Frames are selected by presentation timestamp (``-copyts`` + ``trim``), never by a seek time, so a
chunk holds exactly frames [start, end) whatever the seek lands on; the seek only saves decoding.
NUT keeps the source time base, so VFR timestamps survive unchanged. The chunk is written under a
temp name, its frame count (ffmpeg's final progress report) checked, then renamed; a chunk
already on disk with the right count is reused, which makes the task idempotent.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path

import ffmpeg as ffmpeg_python

from mediatasks import diagnose, profiles, runner
from mediatasks.errors import REPORT_HINT, FrameCountMismatch, InvalidOptions, MediatasksError
from mediatasks.models import Chunk, ChunkResult, EncodeOptions, JobPlan, VideoInfo
from mediatasks.steps.probe import count_packets, video_size

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, float], None]

_EXTENSIONS = {"matroska": "mkv", "mp4": "mp4", "mov": "mov", "webm": "webm"}


def chunk_path(job_dir: Path, index: int) -> Path:
    return job_dir / "chunks" / f"{index:05d}.nut"


def fingerprint(plan: JobPlan, chunk: Chunk) -> str:
    """What a chunk file was made from: the source as it was, the options, the frames. A chunk
    on disk is reused only when this matches (a retry of the same job on the same source)."""
    src = Path(plan.source.path)
    st = src.stat()
    data = {"source": str(src), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "options": plan.spec.options.model_dump(mode="json"),
            "chunk": chunk.model_dump(mode="json")}
    if plan.display_filters:  # turned pixels are other pixels
        data["display_filters"] = list(plan.display_filters)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def _sidecar(path: Path) -> Path:
    return path.with_suffix(".json")


def verified_chunks(job_dir: Path) -> list[tuple[Path, Path]]:
    """(chunk, fingerprint sidecar) of every chunk in the job directory that was verified."""
    return [(c, _sidecar(c)) for c in sorted((job_dir / "chunks").glob("*.nut"))
            if _sidecar(c).exists()]


def remove_all_but_verified_chunks(job_dir: Path) -> None:
    """After a failure: keep chunk files that were verified (they have a sidecar), with the plan
    and a local run's lock file that say whose they are; drop the rest."""
    if not job_dir.is_dir():
        return
    chunks = [p for pair in verified_chunks(job_dir) for p in pair]
    if not chunks:
        shutil.rmtree(job_dir, ignore_errors=True)  # nothing worth keeping
        return
    keep = {*chunks, job_dir / "plan.json", job_dir / ".run.lock"}
    for p in sorted(job_dir.rglob("*"), reverse=True):
        if p.is_file() and p not in keep:
            p.unlink(missing_ok=True)
        elif p.is_dir() and not any(p.iterdir()):
            p.rmdir()


def seek_seconds(plan: JobPlan, seek_pts: int | None) -> str | None:
    """``-ss`` for a keyframe's pts, relative to the file's start as ffmpeg counts it."""
    if seek_pts is None:
        return None
    tb = plan.source.video.tb
    t = Decimal(seek_pts) * tb.numerator / tb.denominator - Decimal(str(plan.source.start_time))
    return f"{max(t, Decimal(0)):.6f}"


def _global_args() -> list[str]:
    return ["-nostdin", "-hide_banner", "-v", "error", "-y", "-copyts", "-progress", "pipe:1",
            "-nostats"]


SEEK_PREROLL_SECONDS = 10


def seek_attempts(plan: JobPlan, chunk: Chunk) -> list[int | None]:
    """Where to start decoding, in order: the chunk's keyframe; a keyframe at least
    SEEK_PREROLL_SECONDS earlier (a mislabelled keyframe, an open GOP the decoder will not start
    at); the start of the file. Each later try decodes more, none changes the frames selected."""
    if chunk.seek_pts is None:
        return [None]
    v = plan.source.video
    earlier_than = chunk.seek_pts - int(SEEK_PREROLL_SECONDS / v.tb)
    earlier = [k.pts for k in v.keyframes if k.pts <= earlier_than]
    return [chunk.seek_pts, *(earlier[-1:] if earlier and earlier[-1] > 0 else []), None]


def encode_args(plan: JobPlan, chunk: Chunk, out: Path, *, seek_pts: int | None,
                ffmpeg: str = "ffmpeg", threads: int | None = None) -> list[str]:
    """The ffmpeg argv that encodes ``chunk`` into ``out``.

    Args:
        seek_pts: the keyframe to seek to (``chunk.seek_pts`` first, see ``seek_attempts``);
            None decodes from the start of the file.
        threads: the encoder's threads (``-threads``), unless the options set them; None leaves
            the encoder's default.
    """
    v = plan.source.video
    opts = plan.spec.options
    # The file protocol only (see runner.FILE_ONLY); no autorotation: the plan turns the pixels.
    in_kwargs: dict[str, object] = {"noautorotate": None, "protocol_whitelist": "file"}
    ss = seek_seconds(plan, seek_pts)
    if ss is not None:
        in_kwargs.update(ss=ss, noaccurate_seek=None)
    stream = ffmpeg_python.input(runner.media_url(plan.source.path), **in_kwargs)[str(v.index)]
    trim: dict[str, int] = {}
    if chunk.start_pts is not None and plan.split:
        trim["start_pts"] = chunk.start_pts
    if chunk.end_pts is not None:
        trim["end_pts"] = chunk.end_pts
    if trim:
        stream = stream.filter("trim", **trim)
    for name, args, kwargs in profiles.picture_filters(v, opts.scale, plan.display_filters):
        stream = stream.filter(name, *args, **kwargs)
    for name, args in profiles.upload_filters(opts.video_codec):
        stream = stream.filter(name, *args)
    out_kwargs: dict[str, object] = {"vcodec": opts.video_codec, "fps_mode": "passthrough",
                                     "enc_time_base": "-1", "f": "nut"}
    if plan.split:
        out_kwargs["frames:v"] = chunk.frames
    compiled: list[str] = ffmpeg_python.output(stream, str(out), **out_kwargs).get_args()
    extra = (profiles.quality_args(opts) + profiles.stream_args(opts, v)
             + profiles.thread_args(opts, threads) + profiles.user_args(opts))
    return [ffmpeg, *_global_args(), *profiles.device_args(opts.video_codec), *compiled[:-1],
            *extra, compiled[-1]]


def _run_encode(argv: list[str], *, subject: str, stall_timeout: float,
                on_progress: ProgressFn | None,
                should_stop: Callable[[], bool] | None = None
                ) -> tuple[float, tuple[str, ...], int | None]:
    def progress(block: dict[str, str]) -> None:
        if on_progress is None:
            return
        try:
            frames = int(block.get("frame", "0") or 0)
            fps = float(block.get("fps", "0") or 0)
        except ValueError:
            return
        on_progress(frames, fps)

    done = runner.run(argv, subject=subject, stall_timeout=stall_timeout, on_progress=progress,
                      should_stop=should_stop)
    return done.seconds, done.stderr_tail, done.frames_written()


def mismatch(plan: JobPlan, chunk: Chunk, frames: int, stderr_tail: Sequence[str]
             ) -> FrameCountMismatch:
    """The error for a chunk that holds other than its planned frames. The file is called
    damaged only when ffmpeg reported decode errors while decoding it; otherwise the fault is
    ours, and the message says what to report."""
    v = plan.source.video
    at = ""
    if chunk.start_pts is not None:
        at = f" near {float((chunk.start_pts - (v.start_pts or 0)) * v.tb):.2f}s"
    head = (f"chunk {chunk.index} (frames {chunk.start_frame}-{chunk.end_frame - 1}) holds "
            f"{frames} frames instead of {chunk.frames}")
    errors = diagnose.decode_errors(stderr_tail, v.codec_name)
    if errors:
        return FrameCountMismatch(f"{head}: ffmpeg reports decode errors{at}: {errors[0]}",
                                  path=plan.spec.input,
                                  hint="the file is damaged; remux or repair it")
    return FrameCountMismatch(f"{head}{at}, and ffmpeg reported no decode error",
                              path=plan.spec.input, hint=REPORT_HINT)


def encode_chunk(plan: JobPlan, chunk: Chunk, job_dir: Path, *, ffmpeg: str = "ffmpeg",
                 ffprobe: str = "ffprobe", stall_timeout: float = 300.0,
                 on_progress: ProgressFn | None = None,
                 should_stop: Callable[[], bool] | None = None,
                 threads: int | None = None) -> ChunkResult:
    """Encode ``chunk`` unless a verified copy exists (``threads``: see ``encode_args``).

    Raises:
        FrameCountMismatch: the chunk holds other than its planned frames, also after a second
            try that decodes from the start of the file instead of seeking.
        TransientError, PermanentError: from ffmpeg.
    """
    final = chunk_path(job_dir, chunk.index)
    exact = plan.split or not plan.source.video.split_blocker
    mark = fingerprint(plan, chunk)
    if final.exists() and _sidecar(final).exists() and _sidecar(final).read_text() == mark:
        frames = count_packets(final, ffprobe=ffprobe)
        if not exact or frames == chunk.frames:
            log.info("chunk %d already encoded and verified (%d frames): reused", chunk.index, frames)
            return ChunkResult(index=chunk.index, path=str(final), frames=frames,
                               bytes=final.stat().st_size, seconds=0.0, reused=True)
    final.unlink(missing_ok=True)
    _sidecar(final).unlink(missing_ok=True)
    tmp = final.with_name(f"{final.name}.{os.getpid()}.tmp")
    seconds = 0.0
    frames = -1
    stderr: tuple[str, ...] = ()
    try:
        for seek in seek_attempts(plan, chunk):
            argv = encode_args(plan, chunk, tmp, seek_pts=seek, ffmpeg=ffmpeg, threads=threads)
            took, stderr, written = _run_encode(argv, subject=plan.spec.input,
                                                stall_timeout=stall_timeout,
                                                on_progress=on_progress, should_stop=should_stop)
            seconds += took
            # ffmpeg's own count of the frames it wrote (the chunk is a single video stream);
            # the file is counted only when ffmpeg did not say. verify counts the output anyway.
            frames = written if written is not None else count_packets(tmp, ffprobe=ffprobe)
            if not exact or frames == chunk.frames:
                break
            log.warning("chunk %d: %d frames instead of %d after seeking to pts %s; "
                        "starting earlier", chunk.index, frames, chunk.frames, seek)
        if exact and frames != chunk.frames:
            raise mismatch(plan, chunk, frames, stderr)
        tmp.replace(final)
        _sidecar(final).write_text(mark)
    finally:
        tmp.unlink(missing_ok=True)
    return ChunkResult(index=chunk.index, path=str(final), frames=frames,
                       bytes=final.stat().st_size, seconds=seconds)


def check_encoder(opts: EncodeOptions, video: VideoInfo, fmt: str, *, ffmpeg: str = "ffmpeg",
                  subject: str | None = None, proven: Path | None = None) -> None:
    """A two-frame test encode at the source's size and pixel format, into the output container.

    Catches unknown encoders, bad --preset/--crf/--video-opt values, sizes an encoder refuses and
    codecs the container cannot hold, in a fraction of a second, before any job runs.

    Args:
        proven: a file of the checks that passed (see ``check_encoder_at``).

    Raises:
        UnknownEncoder, InvalidOptions: with the option and the fix named.
    """
    check_encoder_at(opts, (video.width, video.height), video.pix_fmt, fmt, ffmpeg=ffmpeg,
                     subject=subject, proven=proven)


def _check_key(opts: EncodeOptions, want: tuple[int, int], pix_fmt: str | None, fmt: str,
               ffmpeg: str) -> str | None:
    """What a test encode proved: this ffmpeg binary (path, size, mtime), the encoder and its
    options, the picture and the container; None when the binary cannot be found."""
    found = shutil.which(ffmpeg)
    if found is None:
        return None
    st = os.stat(found)
    data = [os.path.realpath(found), st.st_size, st.st_mtime_ns, opts.video_codec,
            profiles.quality_args(opts), profiles.user_args(opts), want, pix_fmt, fmt]
    return hashlib.sha256(json.dumps(data).encode()).hexdigest()


def _proven(path: Path | None, key: str | None) -> bool:
    if path is None or key is None:
        return False
    try:
        return key in path.read_text(encoding="utf-8").split()
    except (OSError, UnicodeDecodeError):
        return False


def _remember(path: Path | None, key: str | None) -> None:
    if path is None or key is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            f.write(key + "\n")
    except OSError as exc:  # a cache that cannot be written only costs the next run a check
        log.debug("cannot remember the encoder check: %s", exc)


def check_encoder_at(opts: EncodeOptions, want_size: tuple[int, int], pix_fmt: str | None,
                     fmt: str, *, ffmpeg: str = "ffmpeg", subject: str | None = None,
                     proven: Path | None = None) -> None:
    """``check_encoder`` for a picture of ``want_size`` (before any scale) in ``pix_fmt``.

    Args:
        proven: a file listing the checks that passed before (one key a line: the binary, the
            encoder, its options, the picture, the container). A check found there is not run
            again; one that fails is never written, so a wrong option always fails here.

    Raises:
        UnknownEncoder, InvalidOptions: with the option and the fix named.
    """
    # testsrc is RGB: unlike testsrc2 or color it keeps odd sizes, as a real source would.
    vf = f"format={pix_fmt}" if pix_fmt else "null"
    want = opts.scale or want_size
    key = _check_key(opts, want, pix_fmt, fmt, ffmpeg) if proven is not None else None
    if _proven(proven, key):
        return
    with tempfile.TemporaryDirectory(prefix="mediatasks-check-") as tmp:
        out = Path(tmp) / f"check.{_EXTENSIONS[fmt]}"
        argv = [ffmpeg, "-nostdin", "-hide_banner", "-v", "warning", "-y", "-f", "lavfi", "-i",
                f"testsrc=size={want[0]}x{want[1]}:rate=25", "-frames:v", "2", "-vf", vf,
                "-c:v", opts.video_codec, *profiles.quality_args(opts),
                *profiles.user_args(opts), "-f", fmt, str(out)]
        try:
            done = runner.run(argv, subject=subject, timeout=120)
        except InvalidOptions:
            raise
        except MediatasksError as exc:
            raise InvalidOptions(f"the encoder {opts.video_codec} cannot run with these options: "
                                 f"{exc.message}", path=subject) from exc
        size = video_size(out)
        if size != want:
            raise InvalidOptions(
                f"encoder {opts.video_codec} cannot keep the picture size "
                f"{want[0]}x{want[1]} (it would give {size[0]}x{size[1]})",
                path=subject, hint="use a lossless codec such as ffv1, or another encoder")
        for line in done.stderr_tail:
            if "has not been used for any stream" in line:
                option = line.split("AVOption", 1)[-1].split("(", 1)[0].strip()
                raise InvalidOptions(f"encoder {opts.video_codec} has no option '{option}'",
                                     path=subject,
                                     hint=f"see 'ffmpeg -h encoder={opts.video_codec}'")
    _remember(proven, key)
