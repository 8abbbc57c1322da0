"""concat: the verified chunks, in index order, into one video stream on the source's timeline.

Each chunk but the last gets an explicit ``duration`` in the ffconcat list: the exact span from
its first frame to the next chunk's first frame. The concat demuxer places every chunk at the sum
of the durations before it, so each frame lands on its source timestamp (rounding to microseconds
is done on the running total, so it never accumulates).
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

from mediatasks import runner
from mediatasks.errors import REPORT_HINT, FrameCountMismatch, JobFailed
from mediatasks.models import ChunkResult, JobPlan, StepResult
from mediatasks.steps.probe import count_packets


def _quote(path: str) -> str:
    return "'" + path.replace("'", "'\\''") + "'"


def _us(seconds: Fraction) -> int:
    return round(seconds * 1_000_000)


def concat_list(plan: JobPlan, results: Sequence[ChunkResult]) -> str:
    """The ffconcat script for ``results`` (one per planned chunk, any order)."""
    by_index = {r.index: r for r in results}
    expected = [c.index for c in plan.chunks]
    if sorted(by_index) != expected or len(results) != len(expected):
        raise JobFailed(f"concat got chunks {sorted(r.index for r in results)}, "
                        f"planned {expected}", path=plan.spec.input)
    v = plan.source.video
    origin = v.start_pts or 0
    lines = ["ffconcat version 1.0"]
    for chunk in plan.chunks:
        lines.append(f"file {_quote(by_index[chunk.index].path)}")
        if chunk.start_pts is not None and chunk.end_pts is not None:
            start = _us((chunk.start_pts - origin) * v.tb)
            end = _us((chunk.end_pts - origin) * v.tb)
            d = end - start
            lines.append(f"duration {d // 1_000_000}.{d % 1_000_000:06d}")
    return "\n".join(lines) + "\n"


def concat_args(list_path: Path, out: Path, *, ffmpeg: str = "ffmpeg") -> list[str]:
    return [ffmpeg, "-nostdin", "-hide_banner", "-v", "error", "-y", "-progress", "pipe:1",
            "-nostats", "-f", "concat", "-safe", "0", "-i", str(list_path), "-map", "0:v:0",
            "-c", "copy", "-f", "nut", str(out)]


def concat(plan: JobPlan, results: Sequence[ChunkResult], job_dir: Path, *,
           ffmpeg: str = "ffmpeg", ffprobe: str = "ffprobe") -> StepResult:
    """Join the chunks into ``job_dir/video.nut``; idempotent (a second run rewrites it).

    Raises:
        FrameCountMismatch: the joined stream lost or gained frames.
    """
    list_path = job_dir / "concat.txt"
    list_path.write_text(concat_list(plan, results), encoding="utf-8")
    out = job_dir / "video.nut"
    tmp = job_dir / "video.nut.tmp"
    done = runner.run(concat_args(list_path, tmp, ffmpeg=ffmpeg), subject=plan.spec.input,
                      on_progress=lambda _: None)
    # The packets ffmpeg copied, as it reports them at the end; counted in the file only when
    # it did not say. verify counts and times every frame of the output independently.
    written = done.frames_written()
    frames = written if written is not None else count_packets(tmp, ffprobe=ffprobe)
    want = sum(r.frames for r in results)
    if frames != want:
        tmp.unlink(missing_ok=True)
        raise FrameCountMismatch(f"concat produced {frames} frames from chunks holding {want}",
                                 path=plan.spec.input, hint=REPORT_HINT)
    tmp.replace(out)
    return StepResult(path=str(out), frames=frames, seconds=done.seconds)


def join(plan: JobPlan, results: Sequence[ChunkResult], job_dir: Path, *, ffmpeg: str = "ffmpeg",
         ffprobe: str = "ffprobe") -> StepResult:
    """The video for mux: the chunks joined, or for a remux the source itself (mux copies its
    video packets)."""
    if plan.spec.options.remux:
        return StepResult(path=plan.spec.input, frames=plan.frame_count)
    return concat(plan, results, job_dir, ffmpeg=ffmpeg, ffprobe=ffprobe)
