"""What users look for when a job ends: frames, duration, sizes, bitrate, what was saved, speed."""

from __future__ import annotations

from typing import Any


def summarize(*, frames_in: int | None, frames_out: int | None, duration: float | None,
              size_in: int | None, size_out: int | None, seconds: float | None,
              chunks: int | None, chunks_reused: int | None,
              warnings: tuple[str, ...] | list[str] = ()) -> dict[str, Any]:
    """A job's summary as plain numbers (the event's data and `--json`'s fields)."""
    bitrate = round(size_out * 8 / duration) if size_out and duration else None
    saved = (round(100.0 * (1 - size_out / size_in), 1) if size_in and size_out is not None
             else None)
    fps = round(frames_out / seconds, 1) if frames_out and seconds else None
    return {"frames_in": frames_in, "frames_out": frames_out, "duration": duration,
            "size_in": size_in, "size_out": size_out, "bitrate": bitrate,
            "saved_percent": saved, "seconds": seconds, "encode_fps": fps, "chunks": chunks,
            "chunks_reused": chunks_reused, "warnings": list(warnings)}


def human_size(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def human_duration(seconds: float | None) -> str:
    """One format for every length: 5s, 4m15s, 3h02m, 26h40m (never wraps after a day)."""
    if seconds is None or seconds < 0:
        return "-"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def describe(summary: dict[str, Any]) -> str:
    """The summary in one line for people."""
    parts = []
    if summary.get("frames_out") is not None:
        parts.append(f"{summary['frames_out']} of {summary.get('frames_in')} frames")
    if summary.get("duration"):
        parts.append(human_duration(summary["duration"]) + " of video")
    if summary.get("size_out") is not None:
        sizes = f"{human_size(summary.get('size_in'))} -> {human_size(summary['size_out'])}"
        if summary.get("saved_percent") is not None:
            sizes += f" ({summary['saved_percent']:.1f}% saved)"
        parts.append(sizes)
    if summary.get("bitrate"):
        parts.append(f"{summary['bitrate'] / 1000:.0f} kb/s")
    if summary.get("chunks") is not None:
        reused = f" ({summary['chunks_reused']} reused)" if summary.get("chunks_reused") else ""
        parts.append(f"{summary['chunks']} chunk(s){reused}")
    if summary.get("seconds") is not None:
        fps = f", {summary['encode_fps']:.1f} fps" if summary.get("encode_fps") else ""
        parts.append(f"{summary['seconds']:.1f}s{fps}")
    return ", ".join(parts)
