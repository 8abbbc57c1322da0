"""probe_parse: ffprobe's output turned into the models, as pure functions (no ffmpeg runs).

``parse_probe`` takes the three ffprobe outputs ``probe`` collects (the container JSON, the
demux-only packet CSV of the video stream, the decoded window's JSON) and returns the
``ProbeResult``; ``PacketIndex`` and ``window_blocker`` decide which packets are frames and whether
the stream can be cut by pts.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

from mediatasks.errors import NoVideoStream, UndecodableMedia
from mediatasks.isobmff import parse_ffprobe_matrix
from mediatasks.models import (
    Chapter,
    MasteringDisplay,
    ProbeResult,
    StreamInfo,
    VideoInfo,
    parse_rational,
)
from mediatasks.steps.packets import PacketIndex as PacketIndex
from mediatasks.steps.packets import PacketScanner as PacketScanner
from mediatasks.steps.packets import shown_packets as shown_packets
from mediatasks.steps.packets import to_int as _int


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _tags(raw: dict[str, Any]) -> dict[str, str]:
    return {str(k): str(v) for k, v in (raw.get("tags") or {}).items()}


def _tag(tags: dict[str, str], key: str) -> str | None:
    for k, v in tags.items():
        if k.lower() == key:
            return v
    return None


def _rotation(raw: dict[str, Any]) -> int:
    for sd in raw.get("side_data_list") or []:
        if "rotation" in sd:
            return round(float(sd["rotation"])) % 360
    rotate = _tag(_tags(raw), "rotate")
    return int(rotate) % 360 if rotate and rotate.lstrip("-").isdigit() else 0


def _display_matrix(raw: dict[str, Any]) -> tuple[int, ...] | None:
    for sd in raw.get("side_data_list") or []:
        if "displaymatrix" in sd:
            return parse_ffprobe_matrix(str(sd["displaymatrix"]))
    return None


def _mastering(raw: dict[str, Any]) -> MasteringDisplay | None:
    found: dict[str, Any] = {}
    for sd in raw.get("side_data_list") or []:
        kind = str(sd.get("side_data_type", ""))
        if kind.startswith("Mastering display"):
            for color in ("red", "green", "blue"):
                if f"{color}_x" in sd:
                    found[color] = (str(sd[f"{color}_x"]), str(sd[f"{color}_y"]))
            if "white_point_x" in sd:
                found["white_point"] = (str(sd["white_point_x"]), str(sd["white_point_y"]))
            found["min_luminance"] = str(sd.get("min_luminance")) if "min_luminance" in sd else None
            found["max_luminance"] = str(sd.get("max_luminance")) if "max_luminance" in sd else None
        elif kind.startswith("Content light level"):
            found["max_content"] = _int(sd.get("max_content"))
            found["max_average"] = _int(sd.get("max_average"))
    return MasteringDisplay(**found) if found else None


def _stream_info(raw: dict[str, Any]) -> StreamInfo:
    tags = _tags(raw)
    return StreamInfo(
        index=int(raw["index"]),
        codec_type=str(raw.get("codec_type", "unknown")),
        codec_name=raw.get("codec_name"),
        language=_tag(tags, "language"),
        title=_tag(tags, "title"),
        disposition={str(k): int(v) for k, v in (raw.get("disposition") or {}).items()},
        filename=_tag(tags, "filename"),
        channels=_int(raw.get("channels")),
    )


def pick_video(streams: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The main video stream: the first one that is not cover art."""
    videos = [s for s in streams if s.get("codec_type") == "video"]
    real = [s for s in videos if not (s.get("disposition") or {}).get("attached_pic")]
    return real[0] if real else None


def window_blocker(window: dict[str, Any]) -> str | None:
    """Compare the first decoded frames with their packets: are packets frames?"""
    # With both sections asked for, ffprobe lists them together under "packets_and_frames".
    items = window.get("packets_and_frames") or [
        *({**p, "type": "packet"} for p in window.get("packets", [])),
        *({**f, "type": "frame"} for f in window.get("frames", []))]
    every = [p for p in items if p.get("type") == "packet"]
    kinds = shown_packets([(_int(p.get("pts")), str(p.get("flags", ""))) for p in every])
    packets = [p for p, kind in zip(every, kinds, strict=True) if kind == "shown"]
    frames = [f for f in items if f.get("type") == "frame"]
    if not packets:
        return None
    if abs(2 * len(frames) - len(packets)) <= 1 and len(packets) > 2:
        # Two packets a frame: each field is its own packet. A smaller shortfall is frames that
        # do not decode, which the exact frame counts must catch, so it is not a reason here.
        return (f"the first {len(packets)} packets decode to {len(frames)} frames "
                "(field-coded video)")
    if len(frames) != len(packets):
        return None
    packet_pts = sorted(_int(p.get("pts")) or 0 for p in packets)
    frame_pts = sorted(_int(f.get("best_effort_timestamp")) or 0 for f in frames)
    if packet_pts != frame_pts:
        return "decoded frame timestamps differ from the container's packet timestamps"
    return None


def video_stream(info: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """The container JSON's main video stream, or the error that says why there is none.

    Raises:
        UndecodableMedia: ffprobe found no format and no streams, or the video has no size.
        NoVideoStream: it has no video stream (audio-only, subtitles-only).
    """
    fmt = info.get("format") or {}
    raw_streams = info.get("streams") or []
    if not fmt and not raw_streams:
        raise UndecodableMedia("not a media file ffmpeg can read", path=path,
                               hint="check that the file is complete and really a video")
    vraw = pick_video(raw_streams)
    if vraw is None:
        kinds = sorted({str(s.get("codec_type")) for s in raw_streams}) or ["no streams"]
        raise NoVideoStream(f"has no video stream (found: {', '.join(kinds)})", path=path,
                            hint="mediatasks encodes video; give a file with a video stream")
    if not vraw.get("width") or not vraw.get("height"):
        raise UndecodableMedia("the video stream has no picture size (damaged or unsupported)",
                               path=path, hint="check the file plays in ffplay")
    return vraw


def parse_probe(info: dict[str, Any], packets: str | PacketIndex, window: dict[str, Any], *,
                path: str, size: int, subject: str | Path | None = None) -> ProbeResult:
    """The ``ProbeResult`` from the container JSON, the packet CSV and the decoded window.

    Args:
        path, size: the source's resolved path and size, as the result carries them.
        subject: the path as the user gave it, for error messages (default ``path``).

    Raises:
        UndecodableMedia, NoVideoStream: see ``video_stream``; also a video that decodes to no
            frames or has none.
    """
    src = subject if subject is not None else path
    vraw = video_stream(info, src)
    fmt = info.get("format") or {}
    raw_streams = info.get("streams") or []
    vindex = int(vraw["index"])
    index = PacketIndex.parse(packets) if isinstance(packets, str) else packets
    blocker = index.blocker()
    if not any(i.get("type") == "frame" or "best_effort_timestamp" in i
               for i in window.get("packets_and_frames") or window.get("frames") or []):
        raise UndecodableMedia(
            f"the {vraw.get('codec_name') or 'unknown'} video decodes to no frames "
            "(unsupported codec, encrypted or damaged)", path=src,
            hint="check that 'ffmpeg -i FILE -f null -' decodes it")
    if blocker is None:
        blocker = window_blocker(window)
    tb = parse_rational(vraw.get("time_base")) or Fraction(1, 1000)
    step = index.frame_step()
    end_pts = index.pts[-1] + (step or 1) if index.pts else None
    video = VideoInfo(
        index=vindex,
        codec_name=str(vraw.get("codec_name") or "unknown"),
        width=int(vraw["width"]),
        height=int(vraw["height"]),
        pix_fmt=vraw.get("pix_fmt"),
        sample_aspect_ratio=vraw.get("sample_aspect_ratio"),
        r_frame_rate=vraw.get("r_frame_rate"),
        avg_frame_rate=vraw.get("avg_frame_rate"),
        time_base=f"{tb.numerator}/{tb.denominator}",
        field_order=vraw.get("field_order"),
        rotation=_rotation(vraw),
        display_matrix=_display_matrix(vraw),
        color_range=vraw.get("color_range"),
        color_space=vraw.get("color_space"),
        color_transfer=vraw.get("color_transfer"),
        color_primaries=vraw.get("color_primaries"),
        mastering=_mastering(vraw),
        start_pts=index.pts[0] if index.pts else None,
        end_pts=end_pts,
        frame_count=len(index.pts) + index.missing_pts,
        skipped_frames=index.skipped,
        discarded_packets=index.discarded,
        keyframes=index.keyframes(),
        is_vfr=index.is_vfr(),
        split_blocker=blocker,
    )
    if video.frame_count == 0:
        raise UndecodableMedia("the video stream has no frames", path=src,
                               hint="the file is truncated or damaged")
    chapters = tuple(
        Chapter(start=float(c.get("start_time", 0)), end=float(c.get("end_time", 0)),
                title=_tag(_tags(c), "title"))
        for c in info.get("chapters") or []
    )
    return ProbeResult(
        path=path,
        size=size,
        format_name=str(fmt.get("format_name", "unknown")),
        duration=_float(fmt.get("duration")),
        start_time=_float(fmt.get("start_time")) or 0.0,
        bit_rate=_int(fmt.get("bit_rate")),
        video=video,
        streams=tuple(_stream_info(s) for s in raw_streams),
        chapters=chapters,
        tags=_tags(fmt),
        stream_starts={int(s["index"]): st for s in raw_streams
                       if (st := _float(s.get("start_time"))) is not None},
    )


def parse_count(stdout: str) -> int:
    """Packets counted by ``count_args`` (JSON, not CSV: side data adds fields to a CSV line)."""
    streams = json.loads(stdout or "{}").get("streams") or []
    return sum(_int(s.get("nb_read_packets")) or 0 for s in streams)


def parse_start(stdout: str) -> Decimal:
    """A stream's start in seconds from ``start_args``' output: first pts times time base."""
    streams = json.loads(stdout or "{}").get("streams") or [{}]
    pts = _int(streams[0].get("start_pts")) or 0
    tb = parse_rational(streams[0].get("time_base")) or Fraction(1, 1000)
    return Decimal(pts) * tb.numerator / tb.denominator


def parse_size(stdout: str) -> tuple[int, int]:
    """Width and height from ``size_args``' output."""
    stream = (json.loads(stdout or "{}").get("streams") or [{}])[0]
    return _int(stream.get("width")) or 0, _int(stream.get("height")) or 0
