"""Is the source whole? A file cut short keeps the duration its header declares while its frames
stop early; a damaged one loses frames ffmpeg cannot decode. Both are said, with counts, and
refused under ``--strict``: a source is never silently short."""

from __future__ import annotations

from mediatasks.errors import UndecodableMedia
from mediatasks.models import ProbeResult, parse_rational

# What a declared duration may exceed the frames by before the file counts as cut short: a
# frame or two of rounding, a container that pads its duration with the audio's tail.
_SLACK_SECONDS = 0.5
_SLACK_SHARE = 0.05
# Containers whose header states the duration the muxer wrote: a file cut short keeps it. Others
# (MPEG-TS, ASF, AVI) only estimate it from the bitrate, which says nothing about missing frames.
_DECLARING = ("matroska", "mov", "mp4")


def frames_reach(source: ProbeResult) -> float | None:
    """Seconds from the first frame to the end of the last, from the probe's timestamps."""
    v = source.video
    if v.start_pts is None or v.end_pts is None:
        return None
    return float((v.end_pts - v.start_pts) * v.tb)


def missing_frames(source: ProbeResult) -> tuple[str, ...]:
    """Warnings for frames the file promises but does not hold, with counts."""
    declared, reached = source.duration, frames_reach(source)
    if not declared or reached is None or not source.format_name.startswith(_DECLARING):
        return ()
    gap = declared - reached
    if gap <= max(_SLACK_SECONDS, declared * _SLACK_SHARE):
        return ()
    rate = _rate(source)
    count = f"about {round(gap * rate)} frame(s), " if rate else ""
    return (f"the file declares {declared:.2f}s but its frames reach {reached:.2f}s: "
            f"{count}{gap:.2f}s are missing (the file may be cut short)",)


def _rate(source: ProbeResult) -> float:
    v = source.video
    rate = parse_rational(v.avg_frame_rate) or parse_rational(v.r_frame_rate)
    return float(rate) if rate else 0.0


def check(source: ProbeResult, *, strict: bool) -> tuple[str, ...]:
    """The integrity warnings of a source; under ``strict`` the first one is an error.

    Raises:
        UndecodableMedia: ``strict`` and the source is not whole.
    """
    warnings = missing_frames(source)
    if strict and warnings:
        raise UndecodableMedia(warnings[0], path=source.path,
                               hint="--strict refuses a source that is not whole; repair it or "
                                    "run without --strict")
    return warnings
