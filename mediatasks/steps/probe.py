"""probe: what we know about a source, from ffprobe, as a typed ``ProbeResult``.

Three ffprobe runs: the container (streams, chapters, format), then at once a demux-only pass
over the video packets (presentation timestamps and keyframes, no decoding; read line by line, so
memory stays flat however long the file) and a decode of the first packets to check that one
packet is one frame with the container's timestamp. Chunking by pts is only safe when all three
agree; otherwise ``split_blocker`` says why and the plan uses one chunk. The packet pass is the
only read of the whole file: the plan and verify take every frame's timestamp from it.

This module runs ffprobe; the argv are built in ``probe_args`` and the output is read in
``probe_parse`` (both pure), whose public names it re-exports.
"""

from __future__ import annotations

import contextvars
import json
import os
from array import array
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

from mediatasks import runner
from mediatasks.errors import (
    FfmpegFailed,
    InvalidMedia,
    MediatasksError,
    SourceNotFound,
    UndecodableMedia,
)
from mediatasks.models import ProbeResult
from mediatasks.steps.probe_args import (
    WINDOW_PACKETS,
    container_args,
    count_args,
    packet_args,
    size_args,
    start_args,
    window_args,
)
from mediatasks.steps.probe_parse import (
    PacketIndex,
    PacketScanner,
    parse_count,
    parse_probe,
    parse_size,
    parse_start,
    pick_video,
    shown_packets,
    video_stream,
    window_blocker,
)

__all__ = [
    "PacketIndex",
    "check_source",
    "container_args",
    "container_info",
    "count_args",
    "count_packets",
    "frame_timestamps",
    "packet_args",
    "pick_video",
    "probe",
    "probe_source",
    "scan_packets",
    "shown_packets",
    "start_seconds",
    "video_size",
    "video_stream",
    "window_args",
    "window_blocker",
]


def count_packets(path: str | Path, *, ffprobe: str = "ffprobe", select: str = "v:0") -> int:
    """Packets (= frames, for what we encode) of one stream, by a demux-only pass."""
    done = runner.run(count_args(ffprobe, path, select), subject=path, keep_stdout=True,
                      timeout=3600)
    return parse_count(done.stdout)


def start_seconds(path: str | Path, *, ffprobe: str = "ffprobe", select: str = "v:0") -> Decimal:
    """The exact start of one stream (its first pts times its time base), in seconds."""
    done = runner.run(start_args(ffprobe, path, select), subject=path, keep_stdout=True,
                      timeout=600)
    return parse_start(done.stdout)


def video_size(path: str | Path, *, ffprobe: str = "ffprobe") -> tuple[int, int]:
    """Width and height of the first video stream."""
    done = runner.run(size_args(ffprobe, path), subject=path, keep_stdout=True, timeout=600)
    return parse_size(done.stdout)


def scan_packets(path: str | Path, stream: int, *, ffprobe: str = "ffprobe") -> PacketIndex:
    """One demux-only pass over a stream's packets, read as ffprobe prints them."""
    scanner = PacketScanner()
    runner.run(packet_args(ffprobe, path, stream), subject=path, check=False, timeout=3600,
               on_stdout=scanner.line)
    return scanner.index()


def frame_timestamps(path: str | Path, stream: int, *, ffprobe: str = "ffprobe") -> array[int]:
    """Every frame's pts in presentation order (a demux-only pass)."""
    return scan_packets(path, stream, ffprobe=ffprobe).pts


def check_source(path: str | Path) -> Path:
    """A readable, non-empty regular file, or a clear error naming the fix."""
    p = Path(path)
    if not p.exists():
        raise SourceNotFound("no such file", path=p, hint="check the path")
    if p.is_dir():
        raise SourceNotFound("is a directory, not a video file", path=p,
                             hint="give one video file")
    if not p.is_file():
        raise SourceNotFound("is not a regular file", path=p, hint="give one video file")
    if not os.access(p, os.R_OK):
        raise InvalidMedia("cannot be read (permission denied)", path=p,
                           hint="check the file's permissions")
    if p.stat().st_size == 0:
        raise InvalidMedia("is empty (0 bytes)", path=p,
                           hint="the file is incomplete: copy or download it again")
    return p


# Formats whose file names other files or URLs for ffmpeg to read: a job reads one file only.
INDIRECT = {"hls": "an HLS playlist", "applehttp": "an HLS playlist", "dash": "a DASH manifest",
            "concat": "a concat list", "ffconcat": "a concat list", "tee": "a tee list",
            "webm_dash_manifest": "a DASH manifest", "sdp": "an SDP session description",
            "rtp": "an RTP session", "rtsp": "an RTSP session", "image2": "an image sequence",
            "subfile": "a subfile reference", "data": "raw data"}


def refuse_indirection(format_name: str, path: Path) -> None:
    """Raise UndecodableMedia when the source is a playlist or list of other files, whatever
    its extension.

    Raises:
        UndecodableMedia: naming what the file is.
    """
    for name in format_name.split(","):
        if name in INDIRECT:
            raise UndecodableMedia(f"is {INDIRECT[name]} ({name}), which points at other files; "
                                   "mediatasks reads a single video file", path=path,
                                   hint="give the video file itself")


def _ffprobe_json(argv: list[str], path: Path) -> dict[str, Any]:
    try:
        done = runner.run(argv, subject=path, keep_stdout=True, timeout=600)
    except MediatasksError as exc:
        if not isinstance(exc, UndecodableMedia | FfmpegFailed):
            raise
        detail = exc.detail.removeprefix("ffprobe: ")
        raise UndecodableMedia(f"cannot be read: {detail}", path=path,
                               hint=exc.hint or "it is damaged or not a video") from exc
    try:
        data: dict[str, Any] = json.loads(done.stdout or "{}")
    except json.JSONDecodeError as exc:
        raise UndecodableMedia("ffprobe printed no readable description", path=path) from exc
    return data


def container_info(path: str | Path, *, ffprobe: str = "ffprobe") -> dict[str, Any]:
    """The container's streams, chapters and format (ffprobe's JSON), a playlist refused.

    Raises:
        SourceNotFound, InvalidMedia, UndecodableMedia: see ``probe``.
    """
    src = check_source(path)
    info = _ffprobe_json(container_args(ffprobe, src), src)
    refuse_indirection(str(info.get("format", {}).get("format_name", "")), src)
    return info


def probe_source(path: str | Path, *, ffprobe: str = "ffprobe",
                 info: dict[str, Any] | None = None) -> tuple[ProbeResult, array[int]]:
    """``probe``, with every frame's pts in presentation order from the same pass (what the
    plan cuts on and verify compares with). ``info``: ``container_info``'s, if already read.

    Raises:
        SourceNotFound, InvalidMedia: the path is not a readable, non-empty file.
        UndecodableMedia: ffprobe cannot read it.
        NoVideoStream: it has no video stream (audio-only, subtitles-only).
    """
    src = check_source(path)
    if info is None:
        info = container_info(src, ffprobe=ffprobe)
    vindex = int(video_stream(info, src)["index"])
    # The decoded window runs beside the packet pass (two processes, mostly waiting on I/O).
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mediatasks-probe") as pool:
        # In this context, so that a task's log keeps the command (runner.record_commands).
        first = pool.submit(contextvars.copy_context().run, _ffprobe_json,
                            window_args(ffprobe, src, vindex), src)
        index = scan_packets(src, vindex, ffprobe=ffprobe)
        window = first.result()
    if index.lead:
        # The window decodes past the packets an edit list hides or that cannot be decoded.
        window = _ffprobe_json(window_args(ffprobe, src, vindex, WINDOW_PACKETS + index.lead),
                               src)
    result = parse_probe(info, index, window, path=str(src.resolve()), size=src.stat().st_size,
                         subject=src)
    return result, index.pts


def probe(path: str | Path, *, ffprobe: str = "ffprobe") -> ProbeResult:
    """Describe ``path``.

    Raises:
        SourceNotFound, InvalidMedia: the path is not a readable, non-empty file.
        UndecodableMedia: ffprobe cannot read it.
        NoVideoStream: it has no video stream (audio-only, subtitles-only).
    """
    return probe_source(path, ffprobe=ffprobe)[0]
