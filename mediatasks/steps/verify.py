"""verify: the muxed output holds every source frame at its source time, and every stream kept.

Failing verification fails the job; nothing is published.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

from mediatasks import runner
from mediatasks.errors import REPORT_HINT, VerificationFailed
from mediatasks.isobmff import IDENTITY, parse_ffprobe_matrix
from mediatasks.models import JobPlan, parse_rational
from mediatasks.steps.audio import kept_tracks
from mediatasks.steps.probe import frame_timestamps
from mediatasks.steps.probe_parse import PacketIndex, PacketScanner

# Every frame keeps its presentation time within 1 ms (plus half a tick of a ms-based container).
PTS_TOLERANCE = Fraction(3, 2000)
AV_OFFSET_TOLERANCE = 0.05


def listing_args(ffprobe: str, path: Path) -> list[str]:
    """One pass over the output: every stream's description and the first stream's packets
    (``compact`` lines, read as they come)."""
    return [ffprobe, "-v", "error", "-hide_banner", "-show_entries",
            "stream=index,codec_type,width,height,time_base,start_time,sample_rate"
            ":stream_side_data=side_data_type,displaymatrix"
            ":packet=stream_index,pts,duration,flags", "-of", "compact", runner.media_url(path)]


def _fields(line: str) -> list[str]:
    """A ``compact`` line split on its unescaped '|', each field unescaped."""
    out, field, escaped = [], [], False
    for ch in line:
        if escaped:
            field.append({"n": "\n", "r": "\r", "b": "\b", "f": "\f"}.get(ch, ch))
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == "|":
            out.append("".join(field))
            field = []
        else:
            field.append(ch)
    out.append("".join(field))
    return out


class OutputListing:
    """What ``listing_args`` prints, taken in line by line: the streams, and the packets of the
    first stream (the video, which mux always maps first) as a ``PacketIndex``."""

    PREFIX = "packet|stream_index=0|"

    def __init__(self) -> None:
        self.streams: list[dict[str, Any]] = []
        self.scanner = PacketScanner()
        self.packets = 0

    def line(self, text: str) -> None:
        if text.startswith(self.PREFIX):
            values = dict(f.partition("=")[::2] for f in text[len(self.PREFIX):].split("|"))
            self.packets += 1
            self.scanner.packet(_int(values.get("pts")), values.get("flags", ""),
                                _int(values.get("duration")))
        elif text.startswith("stream|"):
            stream: dict[str, Any] = {}
            target = stream
            for field in _fields(text)[1:]:
                if field == "side_data":
                    target = {}
                    stream.setdefault("side_data_list", []).append(target)
                    continue
                key, _, value = field.partition("=")
                target[key] = value
            self.streams.append(stream)

    def video_index(self) -> PacketIndex:
        return self.scanner.index()


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def read_output(path: Path, ffprobe: str) -> OutputListing:
    listing = OutputListing()
    runner.run(listing_args(ffprobe, path), subject=path, timeout=3600, on_stdout=listing.line)
    return listing


def expected_streams(plan: JobPlan) -> Counter[str]:
    want: Counter[str] = Counter(video=1)
    want["audio"] = len(kept_tracks(plan))
    want["subtitle"] = sum(1 for a in plan.subtitles if a.action != "drop")
    if plan.keep_attachments:
        want["attachment"] = len(plan.source.of_type("attachment"))
    return +want


def worst_offset(source_pts: Sequence[int], source_tb: Fraction, out_pts: Sequence[int],
                 out_tb: Fraction) -> tuple[Fraction, int]:
    """The largest difference between a source frame's time and its output frame's, both counted
    from the first frame, and that frame's index (exact integer arithmetic, one pass)."""
    if not source_pts or not out_pts:
        return Fraction(0), 0
    a, b = source_tb.numerator, source_tb.denominator
    c, d = out_tb.numerator, out_tb.denominator
    s0, o0 = source_pts[0], out_pts[0]
    worst, at = 0, 0
    for i, (s, o) in enumerate(zip(source_pts, out_pts, strict=True)):
        diff = abs((s - s0) * a * d - (o - o0) * c * b)
        if diff > worst:
            worst, at = diff, i
    return Fraction(worst, b * d), at


def verify(plan: JobPlan, output: Path, *, frames_encoded: int,
           source_pts: Sequence[int] | None = None, ffprobe: str = "ffprobe") -> int:
    """Check ``output`` against the plan and the source; return its frame count. The output is
    read once, by one ffprobe.

    Args:
        source_pts: every source frame's pts, if already read (else read here).

    Raises:
        VerificationFailed: a frame, a stream or a timestamp is missing or wrong.
    """
    subject = plan.spec.input
    exact = not plan.source.video.split_blocker
    listing = read_output(output, ffprobe)
    streams = listing.streams
    videos = [s for s in streams if s.get("codec_type") == "video"]
    if not videos:
        raise VerificationFailed("the output has no video stream", path=subject)
    if str(videos[0].get("index")) != "0":
        raise VerificationFailed("the output's first stream is not its video", path=subject,
                                 hint=REPORT_HINT)
    out_pts = listing.video_index().pts if exact else None
    frames = len(out_pts) if out_pts is not None else listing.packets
    want_frames = plan.frame_count if exact else frames_encoded
    if frames != want_frames:
        raise VerificationFailed(f"the output has {frames} video frames, the source {want_frames}",
                                 path=subject, hint=REPORT_HINT)
    have = Counter(str(s.get("codec_type")) for s in streams)
    for kind, n in expected_streams(plan).items():
        if have[kind] < n:
            raise VerificationFailed(f"the output has {have[kind]} {kind} stream(s), expected {n}",
                                     path=subject)
    video = videos[0]
    src_size = plan.spec.options.scale or (plan.source.video.width, plan.source.video.height)
    if any(f.startswith("transpose") for f in plan.display_filters):
        src_size = (src_size[1], src_size[0])  # turned a quarter in the pixels, after any scale
    out_size = (int(video.get("width") or 0), int(video.get("height") or 0))
    if out_size != src_size:
        raise VerificationFailed(f"the output is {out_size[0]}x{out_size[1]}, the source "
                                 f"{src_size[0]}x{src_size[1]}", path=subject,
                                 hint="this encoder cannot keep the size; use ffv1 or another")
    _check_rotation(plan, video, subject)
    if out_pts is not None:
        src = plan.source.video
        if source_pts is None:
            source_pts = frame_timestamps(plan.source.path, src.index, ffprobe=ffprobe)
        if len(source_pts) != len(out_pts):
            raise VerificationFailed(f"the output has {len(out_pts)} timestamps, the source "
                                     f"{len(source_pts)}", path=subject)
        out_tb = parse_rational(video.get("time_base")) or Fraction(1, 1000)
        worst, i = worst_offset(source_pts, src.tb, out_pts, out_tb)
        if worst > PTS_TOLERANCE:
            src_t = (source_pts[i] - source_pts[0]) * src.tb
            out_t = (out_pts[i] - out_pts[0]) * out_tb
            raise VerificationFailed(
                f"frame {i} is shown at {float(out_t):.4f}s instead of {float(src_t):.4f}s",
                path=subject, hint=REPORT_HINT)
    _check_av_offset(plan, streams, subject)
    return frames


def _check_rotation(plan: JobPlan, video: dict[str, Any], subject: str) -> None:
    """An MP4/MOV output shows the picture turned as the source was."""
    want = plan.source.video.display_matrix
    if not want or want == IDENTITY or plan.output_format not in {"mp4", "mov"}:
        return
    have = next((parse_ffprobe_matrix(str(sd["displaymatrix"]))
                 for sd in video.get("side_data_list") or [] if "displaymatrix" in sd), None)
    if have != want:
        raise VerificationFailed("the output lost the source's rotation", path=subject)


def _check_av_offset(plan: JobPlan, streams: list[dict[str, Any]], subject: str) -> None:
    """Audio starts where it started relative to the video (a desync check, not a timestamp one)."""
    src_audio = plan.source.of_type("audio")
    out_audio = [s for s in streams if s.get("codec_type") == "audio"]
    video = next(s for s in streams if s.get("codec_type") == "video")
    if not src_audio or not out_audio or plan.source.video.start_pts is None:
        return
    src_starts = plan.source.stream_starts
    a_idx = src_audio[0].index
    if a_idx not in src_starts or plan.source.video.index not in src_starts:
        return
    try:
        out_off = float(out_audio[0]["start_time"]) - float(video["start_time"])
    except (KeyError, TypeError, ValueError):
        return
    v = plan.source.video
    # The first frame kept, not ffprobe's stream start (which counts undecodable leading frames).
    v_start = (float(v.start_pts * v.tb) if v.start_pts is not None and not v.split_blocker
               else src_starts[v.index])
    src_off = src_starts[a_idx] - v_start
    # A transcoded track starts earlier by its encoder's priming samples (AAC: 1024), which the
    # container marks and players skip: 0.128 s at 8 kHz. Up to 2048 samples earlier is in sync.
    priming = 0.0
    first = kept_tracks(plan)[:1]
    if first and first[0].action == "transcode":
        rate = float(out_audio[0].get("sample_rate") or 48000) or 48000.0
        priming = 2048 / rate
    if not (src_off - priming - AV_OFFSET_TOLERANCE <= out_off <= src_off + AV_OFFSET_TOLERANCE):
        raise VerificationFailed(f"audio starts {out_off:+.3f}s from the video, the source "
                                 f"{src_off:+.3f}s", path=subject)

