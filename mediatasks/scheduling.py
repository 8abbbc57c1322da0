"""How a local run spreads one encode over the machine: a pure function of the encoder, its
options, the core count and the source, like Av1an's automatic worker count.

x264 and x265 thread well: one ffmpeg keeps many cores busy, so few chunks run at once and each
gets many threads (splitting only costs keyframes and a tail where some cores idle). libaom,
libvpx-vp9 and SVT-AV1 at their slower presets keep only a few cores busy per encode: many
chunks run at once, each with a few threads. The chunk length is chosen so that every wave of
chunks is full (the last wave is as long as the others) and chunks stay long enough that the
extra keyframes cost little. ``--workers`` and ``--chunk-seconds`` override what is chosen.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from mediatasks.models import EncodeOptions, ProbeResult

REFERENCE_PIXELS = 1920 * 1080

# Chunks longer than this are cut anyway, so that a run that dies loses little.
MAX_CHUNK_SECONDS = 600.0
# More waves even out chunks of uneven difficulty; each wave adds keyframes.
MAX_WAVES = 3


@dataclass(frozen=True)
class EncoderProfile:
    """How one encoder scales: ``threads`` it keeps busy at 1080p; ``min_chunk`` seconds under
    which a chunk's own keyframe makes the output noticeably larger."""

    family: str
    threads: float
    min_chunk: float


@dataclass(frozen=True)
class Schedule:
    """What a local run does: ``workers`` chunks encoded at once, ``threads`` per ffmpeg (None:
    the encoder's own default, as a plain ffmpeg), chunks of ``chunk_seconds``."""

    encoder: str
    family: str
    cores: int
    workers: int
    threads: int | None
    chunk_seconds: float
    chunks: int
    reason: str

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["chunk_seconds"] = round(self.chunk_seconds, 3)
        return data


def _preset_number(preset: str | None, options: Mapping[str, str], *keys: str) -> int | None:
    for value in (*(options.get(k) for k in keys), preset):
        if value is None:
            continue
        try:
            return int(value)
        except ValueError:
            continue
    return None


def profile(encoder: str, preset: str | None = None,
            options: Mapping[str, str] | None = None) -> EncoderProfile:
    """The scaling profile of ``encoder`` at ``preset`` with ``options`` (``-cpu-used``,
    ``-row-mt``, ...)."""
    opts = {k.lstrip("-"): v for k, v in (options or {}).items()}
    name = encoder.lower()
    if name == "libx264":
        return EncoderProfile("x264", threads=8, min_chunk=10)
    if name == "libx265":
        return EncoderProfile("x265", threads=6, min_chunk=10)
    if name == "libaom-av1":
        cpu_used = _preset_number(None, opts, "cpu-used") or 1
        row_mt = opts.get("row-mt", "1") not in {"0", "false"}
        return EncoderProfile("aom", threads=(3 if cpu_used >= 5 else 2) + (1 if row_mt else 0),
                              min_chunk=6)
    if name in {"libvpx-vp9", "libvpx"}:
        row_mt = opts.get("row-mt", "0") not in {"0", "false"}
        return EncoderProfile("vpx", threads=3 if row_mt else 2, min_chunk=6)
    if name == "libsvtav1":
        speed = _preset_number(preset, opts, "preset")
        speed = 10 if speed is None else speed
        return EncoderProfile("svt", threads=3 if speed <= 4 else 6 if speed <= 8 else 12,
                              min_chunk=6)
    if any(tag in name for tag in ("nvenc", "qsv", "vaapi", "videotoolbox", "amf", "v4l2m2m")):
        # A hardware encoder's speed is the device's: two sessions keep it fed.
        return EncoderProfile("hardware", threads=0, min_chunk=10)
    return EncoderProfile("other", threads=4, min_chunk=10)


def plan_schedule(encoder: str, *, cores: int, width: int, height: int, duration: float,
                  preset: str | None = None, options: Mapping[str, str] | None = None,
                  workers: int | None = None, chunk_seconds: float | None = None) -> Schedule:
    """Workers, threads and chunk length for encoding ``duration`` seconds of ``width``x
    ``height`` with ``encoder`` on ``cores`` cores; ``workers`` and ``chunk_seconds`` (what a
    person typed) win over what would be chosen."""
    cores = max(1, cores)
    prof = profile(encoder, preset, options)
    duration = max(duration, 0.0)
    if prof.family == "hardware":
        busy = float(cores)
        chosen = 2
        why = "hardware encoder: two sessions at once"
    else:
        # Fewer pixels keep fewer threads busy (rows and tiles), but never below two.
        scale = math.sqrt(max(width * height, 1) / REFERENCE_PIXELS)
        busy = max(2.0, min(float(cores), prof.threads * scale))
        chosen = max(1, math.floor(cores / busy + 0.25))
        why = (f"{prof.family} keeps about {busy:.0f} of {cores} core(s) busy per encode at "
               f"{width}x{height}")
    if workers is not None:
        chosen = workers
        why = "--workers"
    if chunk_seconds is not None:
        length = chunk_seconds
        chunks = max(1, round(duration / length)) if duration else 1
        if workers is None:
            chosen = max(1, min(chosen, chunks))
        why += "; --chunk-seconds"
    else:
        length, chunks, chosen = _chunking(duration, chosen, prof.min_chunk,
                                           fixed=workers is not None)
    threads = None
    if prof.family != "hardware" and chosen > 1:
        threads = max(1, cores // min(chosen, chunks))
    return Schedule(encoder=encoder, family=prof.family, cores=cores, workers=chosen,
                    threads=threads, chunk_seconds=length, chunks=chunks, reason=why)


def _chunking(duration: float, workers: int, min_chunk: float, *, fixed: bool
              ) -> tuple[float, int, int]:
    """(chunk seconds, chunks, workers): full waves of equal chunks, none under ``min_chunk``
    (fewer workers rather than short chunks, unless the worker count was given)."""
    if duration <= 0:
        return MAX_CHUNK_SECONDS, 1, workers
    if not fixed:
        workers = max(1, min(workers, math.floor(duration / min_chunk)))
    if workers == 1:
        chunks = math.ceil(duration / MAX_CHUNK_SECONDS)
        return duration / chunks, chunks, 1
    waves = max(1, min(MAX_WAVES, math.floor(duration / (workers * min_chunk))))
    chunks = workers * waves
    if duration / chunks > MAX_CHUNK_SECONDS:
        chunks = workers * math.ceil(duration / (workers * MAX_CHUNK_SECONDS))
    return duration / chunks, chunks, workers


def longest_first(frames: list[int]) -> list[int]:
    """Chunk indices in the order to send them: most frames first (the last wave is then made
    of the short ones), the earlier chunk first among equals."""
    return sorted(range(len(frames)), key=lambda i: (-frames[i], i))


def video_seconds(source: ProbeResult) -> float:
    """The video's length: its frames over the time they span, else the container's duration."""
    v = source.video
    if v.start_pts is not None and v.end_pts is not None and v.end_pts > v.start_pts:
        return float((v.end_pts - v.start_pts) * v.tb)
    return float(source.duration or 0.0)


def for_source(source: ProbeResult, opts: EncodeOptions, *, cores: int,
               workers: int | None = None, chunk_seconds: float | None = None) -> Schedule:
    """``plan_schedule`` for encoding ``source`` with ``opts`` (the output size when it is
    scaled). A source that cannot be cut is one chunk, one worker."""
    width, height = opts.scale or (source.video.width, source.video.height)
    sched = plan_schedule(opts.video_codec, cores=cores, width=width, height=height,
                          duration=video_seconds(source), preset=opts.preset,
                          options=dict(opts.video_opts), workers=workers,
                          chunk_seconds=chunk_seconds or opts.chunk_seconds)
    if source.video.split_blocker and workers is None:
        return replace(sched, workers=1, threads=None, chunks=1,
                       reason=f"one chunk: {source.video.split_blocker}")
    return sched
