"""plan: a pure function from a probe result and a job spec to frame-exact chunk boundaries.

Boundaries are frame indices in presentation order, each carried with its pts. The video is split
into equal parts of about the target length (so parallel encodes finish together); a boundary
moves to a source keyframe within a tenth of a chunk (a chapter start nearby wins), where a
chunk's decode starts right at its first frame; otherwise it stays on its frame, with a seek to
the keyframe before it. No chunk is shorter than ``min_chunk_frames``; none is empty.
"""

from __future__ import annotations

import itertools
import json
import os
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

from mediatasks import profiles
from mediatasks.models import Chunk, JobPlan, JobSpec, Keyframe, ProbeResult, VideoInfo
from mediatasks.steps import mux


def _whole(video: VideoInfo) -> tuple[Chunk, ...]:
    return (Chunk(index=0, start_frame=0, end_frame=video.frame_count, start_pts=None,
                  end_pts=None, seek_pts=None),)


def plan_chunks(video: VideoInfo, *, chunk_seconds: float, min_chunk_frames: int,
                chapter_starts: tuple[float, ...] = (), frame_pts: Sequence[int] | None = None
                ) -> tuple[Chunk, ...]:
    """Split ``video`` into chunks of about ``chunk_seconds``.

    Args:
        frame_pts: every frame's pts in presentation order; needed only to cut between keyframes.
            Without it, boundaries go on keyframes only.
    """
    n = video.frame_count
    if (video.split_blocker or video.start_pts is None or video.end_pts is None
            or n < 2 * min_chunk_frames):
        return _whole(video)
    tb = video.tb
    span = video.end_pts - video.start_pts
    if span <= 0:
        return _whole(video)
    fps = Fraction(n) / (span * tb)
    target = max(min_chunk_frames, round(float(fps) * chunk_seconds))
    count = round(n / target)
    if count < 2:
        return _whole(video)
    keys = [k for k in video.keyframes if 0 < k.index < n]
    key_index = [k.index for k in keys]
    chapter_frames = sorted(
        round((Fraction(c).limit_denominator(10**6) / tb - video.start_pts) * n / span)
        for c in chapter_starts)
    near = max(1, target // 10)  # a keyframe this close is worth an uneven chunk
    loose = max(1, target // 2)  # without a frame list, cuts can only go on keyframes

    def nearest_key(centre: int, lo: int, hi: int, window: int) -> Keyframe | None:
        i = bisect_left(key_index, centre)
        found = [keys[j] for j in (i - 1, i) if 0 <= j < len(keys)
                 and lo <= keys[j].index <= hi and abs(keys[j].index - centre) <= window]
        return min(found, key=lambda k: abs(k.index - centre)) if found else None

    def pick(ideal: int, lo: int, hi: int) -> Keyframe | int | None:
        anchors = [c for c in chapter_frames if abs(c - ideal) <= target // 4 and lo <= c <= hi]
        centre = anchors[0] if anchors else ideal
        key = nearest_key(centre, lo, hi, near)
        if key is not None:
            return key
        if frame_pts is not None:
            return centre
        return nearest_key(centre, lo, hi, loose)

    # Equal parts, so parallel encodes finish together; each cut moves to a keyframe or a
    # chapter start only when one is close.
    cuts: list[tuple[int, int]] = []  # (frame index, pts)
    prev = 0
    for k in range(1, count):
        lo, hi = prev + min_chunk_frames, n - min_chunk_frames
        if lo > hi:
            break
        ideal = min(max(round(k * n / count), lo), hi)
        got = pick(ideal, lo, hi)
        if got is None:
            continue
        if isinstance(got, Keyframe):
            cuts.append((got.index, got.pts))
        else:
            assert frame_pts is not None
            cuts.append((got, frame_pts[got]))
        prev = cuts[-1][0]
    if not cuts:
        return _whole(video)
    key_pts = sorted(k.pts for k in video.keyframes)
    bounds = [(0, video.start_pts), *cuts, (n, None)]
    chunks = []
    for i, ((a, a_pts), (b, b_pts)) in enumerate(itertools.pairwise(bounds)):
        seek = None
        if i > 0:
            assert a_pts is not None  # every bound but the end carries its pts
            j = bisect_right(key_pts, a_pts) - 1
            seek = key_pts[j] if j >= 0 else None
        chunks.append(Chunk(index=i, start_frame=a, end_frame=b, start_pts=a_pts,
                            end_pts=b_pts, seek_pts=seek))
    return tuple(chunks)


def plan_job(source: ProbeResult, spec: JobSpec, *, chunk_seconds: float,
             min_chunk_frames: int, frame_pts: Sequence[int] | None = None) -> JobPlan:
    """The whole job decided up front: chunks, queue, output format, subtitle handling.

    Raises:
        InvalidOptions: the output container cannot hold what the source has.
    """
    seconds = spec.options.chunk_seconds or chunk_seconds
    if spec.options.remux:  # the video is copied whole: nothing to cut
        chunks: tuple[Chunk, ...] = (Chunk(index=0, start_frame=0,
                                           end_frame=source.video.frame_count, start_pts=None,
                                           end_pts=None, seek_pts=None),)
    else:
        chunks = plan_chunks(source.video, chunk_seconds=seconds,
                             min_chunk_frames=min_chunk_frames,
                             chapter_starts=tuple(c.start for c in source.chapters),
                             frame_pts=frame_pts)
    fmt = mux.output_format(spec.output)
    subtitles = tuple(
        a.model_copy(update={"action": "drop", "to_codec": None,
                             "reason": f"subtitle stream #{a.index} left out by the policy"})
        if a.index in spec.options.drop_subtitles else a
        for a in mux.subtitle_actions(source, fmt, subject=spec.input))
    mux.check_audio(source, fmt, spec.options.audio_codec, subject=spec.input)
    warnings = list(mux.container_warnings(source, fmt, spec.options.video_codec))
    warnings += profiles.color_warnings(source.video)
    warnings += [f"subtitle stream #{a.index}: {a.reason}" for a in subtitles
                 if a.reason and a.index not in spec.options.drop_subtitles]
    if source.video.skipped_frames:
        warnings.append(f"{source.video.skipped_frames} frame(s) before the first keyframe cannot "
                        "be decoded (the recording starts mid-GOP) and are left out")
    turn = mux.pixel_turn(source, fmt, spec.options.video_codec)
    if turn:
        warnings.append(f"the source's display matrix is applied to the pixels "
                        f"({', '.join(turn)}): {fmt} cannot store it")
    if source.video.split_blocker and len(chunks) == 1:
        warnings.append(f"encoded as one chunk: {source.video.split_blocker}")
    return JobPlan(
        job_id=spec.job_id,
        source=source,
        spec=spec,
        chunks=chunks,
        frame_count=source.video.frame_count,
        queue="io" if spec.options.remux else profiles.queue_for(spec.options.video_codec),
        output_format=fmt,
        subtitles=subtitles,
        keep_attachments=fmt == "matroska",
        warnings=tuple(warnings),
        display_filters=turn,
    )


def save_plan(plan: JobPlan, job_dir: Path) -> Path:
    """Write plan.json into the job directory (atomically)."""
    job_dir.mkdir(parents=True, exist_ok=True)
    (job_dir / "chunks").mkdir(exist_ok=True)
    path = job_dir / "plan.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(plan.model_dump_json(), encoding="utf-8")
    tmp.replace(path)
    return path


FRAMES_FILE = "frames.i64"


def save_frames(frame_pts: Sequence[int], job_dir: Path) -> None:
    """Every source frame's pts (8 bytes each, native order), read once by the probe, for the
    plan and verify: a long source's list is never turned into text."""
    job_dir.mkdir(parents=True, exist_ok=True)
    values = frame_pts if isinstance(frame_pts, array) else array("q", frame_pts)
    tmp = job_dir / f".{FRAMES_FILE}.{os.getpid()}"
    with open(tmp, "wb") as f:
        values.tofile(f)
    tmp.replace(job_dir / FRAMES_FILE)


def load_frames(job_dir: Path) -> array[int] | None:
    path = job_dir / FRAMES_FILE
    try:
        with open(path, "rb") as f:
            values = array("q")
            values.frombytes(f.read())
    except FileNotFoundError:
        return None
    return values


def drop_frames(job_dir: Path) -> None:
    (job_dir / FRAMES_FILE).unlink(missing_ok=True)


def load_plan(job_dir: Path) -> JobPlan:
    return JobPlan.model_validate(json.loads((job_dir / "plan.json").read_text(encoding="utf-8")))


def plan_and_save(source: ProbeResult, spec: JobSpec, job_dir: Path, *, ffprobe: str,
                  chunk_seconds: float, min_chunk_frames: int) -> JobPlan:
    """The plan step of a job: the plan, saved in the job directory for the later steps, cut on
    the frame timestamps the probe saved there (read again only when they are missing or do not
    fit the probe, and not at all when the file cannot be cut)."""
    from mediatasks.steps import probe

    frame_pts = None
    if not source.video.split_blocker:
        frame_pts = load_frames(job_dir)
        if frame_pts is None or len(frame_pts) != source.video.frame_count:
            frame_pts = probe.frame_timestamps(spec.input, source.video.index, ffprobe=ffprobe)
            save_frames(frame_pts, job_dir)
    jp = plan_job(source, spec, chunk_seconds=chunk_seconds, min_chunk_frames=min_chunk_frames,
                  frame_pts=frame_pts)
    jp = with_integrity(jp, strict=spec.strict)
    save_plan(jp, job_dir)
    return jp


def with_integrity(jp: JobPlan, *, strict: bool) -> JobPlan:
    """The plan with the source's integrity warnings (a file cut short) among its warnings.

    Raises:
        UndecodableMedia: ``strict`` and the source is not whole.
    """
    from mediatasks.steps import integrity

    found = [w for w in integrity.check(jp.source, strict=strict) if w not in jp.warnings]
    return jp.model_copy(update={"warnings": (*jp.warnings, *found)}) if found else jp
