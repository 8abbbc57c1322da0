"""probe_args: the ffprobe argv of every probe, as pure functions (``probe`` runs them)."""

from __future__ import annotations

from pathlib import Path

from mediatasks import runner

WINDOW_PACKETS = 60


def container_args(ffprobe: str, path: str | Path) -> list[str]:
    """Streams, chapters and format, as JSON."""
    return [ffprobe, "-v", "error", "-hide_banner", "-of", "json", "-show_format",
            "-show_streams", "-show_chapters", *runner.probe_input(path)]


def packet_args(ffprobe: str, path: str | Path, stream: int) -> list[str]:
    """A demux-only pass over one stream's packets: pts, duration, flags (CSV)."""
    return [ffprobe, "-v", "error", "-hide_banner", "-select_streams", str(stream),
            "-show_entries", "packet=pts,duration,flags", "-of", "csv=p=0", *runner.probe_input(path)]


def window_args(ffprobe: str, path: str | Path, stream: int,
                packets: int = WINDOW_PACKETS) -> list[str]:
    """A decode of the first ``packets`` packets: their pts and flags, and the frames' times."""
    return [ffprobe, "-v", "error", "-hide_banner", "-select_streams", str(stream),
            "-read_intervals", f"%+#{packets}",
            "-show_entries", "packet=pts,flags:frame=best_effort_timestamp",
            "-of", "json", *runner.probe_input(path)]


def count_args(ffprobe: str, path: str | Path, select: str = "v:0") -> list[str]:
    """A demux-only count of one stream's packets."""
    return [ffprobe, "-v", "error", "-hide_banner", "-count_packets", "-select_streams", select,
            "-show_entries", "stream=nb_read_packets", "-of", "json", *runner.probe_input(path)]


def start_args(ffprobe: str, path: str | Path, select: str = "v:0") -> list[str]:
    """One stream's first pts and time base."""
    return [ffprobe, "-v", "error", "-hide_banner", "-select_streams", select,
            "-show_entries", "stream=start_pts,time_base", "-of", "json", *runner.probe_input(path)]


def size_args(ffprobe: str, path: str | Path) -> list[str]:
    """The first video stream's picture size."""
    return [ffprobe, "-v", "error", "-hide_banner", "-select_streams", "v:0",
            "-show_entries", "stream=width,height", "-of", "json", *runner.probe_input(path)]
