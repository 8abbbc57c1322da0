"""Encoder profiles: the one place that knows which queue an encoder runs on and how to ask it for
quality, speed, closed GOPs and interlacing."""

from __future__ import annotations

import os
from fractions import Fraction

from mediatasks.errors import InvalidOptions
from mediatasks.models import EncodeOptions, VideoInfo

HARDWARE_SUFFIXES = ("_nvenc", "_qsv", "_vaapi", "_videotoolbox", "_amf", "_v4l2m2m", "_mf",
                     "_rkmpp", "_omx")
LOSSLESS = {"ffv1", "huffyuv", "ffvhuff", "utvideo", "magicyuv", "rawvideo", "png", "qtrle",
            "libx264rgb"}
_CRF = {"libx264", "libx264rgb", "libx265", "libvpx", "libvpx-vp9", "libaom-av1", "libsvtav1",
        "libxavs2", "libvvenc"}

QUEUES = ("cpu", "gpu", "io")


# The deprecated full-range formats: the same planes as their yuv* twins, with the range in the
# name. Most encoders (ffv1, libaom, SVT-AV1, libvpx) take only the yuv* ones, and the automatic
# conversion would squeeze the values into limited range.
FULL_RANGE_FORMATS = {"yuvj420p": "yuv420p", "yuvj422p": "yuv422p", "yuvj444p": "yuv444p",
                      "yuvj440p": "yuv440p", "yuvj411p": "yuv411p"}


def is_full_range(video: VideoInfo) -> bool:
    return video.pix_fmt in FULL_RANGE_FORMATS or video.color_range == "pc"


Filter = tuple[str, tuple[object, ...], dict[str, object]]  # name, args, kwargs


def picture_filters(video: VideoInfo, scale: tuple[int, int] | None = None,
                    turn: tuple[str, ...] = ()) -> list[Filter]:
    """The filters between the trim and the encoder: a policy's scale, then the display filters
    (``turn``: 'transpose=clock', 'hflip', ...) of an output that cannot store the rotation.

    A full-range source stays full range: a yuvj* format becomes its yuv* twin with the values
    untouched, every scale keeps the range, and a last range-keeping scale makes any conversion
    to a format the encoder takes (the automatic one would squeeze the values into limited range).
    """
    full = is_full_range(video)
    keep: dict[str, object] = {"in_range": "full", "out_range": "full"} if full else {}
    out: list[Filter] = []
    if full:
        out.append(("scale", (), keep))
        if video.pix_fmt in FULL_RANGE_FORMATS:
            out.append(("format", (FULL_RANGE_FORMATS[video.pix_fmt],), {}))
    if scale is not None:
        out += [("scale", scale, keep), ("setsar", (1,), {})]
    for spec in turn:
        name, _, arg = spec.partition("=")
        out.append((name, (arg,) if arg else (), {}))
    if full and (scale is not None or turn):
        out.append(("scale", (), keep))
    return out


def is_hardware(encoder: str) -> bool:
    return encoder.endswith(HARDWARE_SUFFIXES)


def queue_for(encoder: str) -> str:
    """The queue an encode with ``encoder`` is routed to: hardware encoders go to ``gpu``."""
    return "gpu" if is_hardware(encoder) else "cpu"


def vaapi_device() -> str:
    return os.environ.get("MEDIATASKS_VAAPI_DEVICE", "/dev/dri/renderD128")


def upload_filters(encoder: str) -> list[tuple[str, tuple[str, ...]]]:
    """Filters (name, args) that hand frames to the encoder's device: VAAPI takes only device
    frames; NVENC and QSV accept frames in system memory."""
    return [("format", ("nv12",)), ("hwupload", ())] if encoder.endswith("_vaapi") else []


def device_args(encoder: str) -> list[str]:
    """Global options an encoder needs before its input (the VAAPI device)."""
    return ["-vaapi_device", vaapi_device()] if encoder.endswith("_vaapi") else []


def quality_args(opts: EncodeOptions) -> list[str]:
    """-crf/-preset translated to what the encoder understands."""
    enc = opts.video_codec
    args: list[str] = []
    if opts.crf is not None:
        q = f"{opts.crf:g}"
        if enc in LOSSLESS:
            raise InvalidOptions(f"--crf does not apply to {enc}, which is lossless",
                                 hint="leave out --crf")
        if enc in _CRF:
            args += ["-crf", q]
            if enc in {"libvpx", "libvpx-vp9", "libaom-av1"}:
                args += ["-b:v", "0"]
        elif enc.endswith("_nvenc"):
            args += ["-rc", "vbr", "-cq", q, "-b:v", "0"]
        elif enc.endswith("_qsv"):
            args += ["-global_quality", q]
        elif enc.endswith("_vaapi"):
            args += ["-rc_mode", "CQP", "-qp", q]
        elif enc.endswith("_amf"):
            args += ["-rc", "cqp", "-qp_i", q, "-qp_p", q]
        else:
            args += ["-q:v", q]
    if opts.preset:
        args += ["-preset", opts.preset]
    return args


def _x265_hdr(video: VideoInfo) -> str | None:
    """x265's master-display/max-cll strings from ffprobe's HDR side data."""
    m = video.mastering
    if m is None or not (m.red and m.green and m.blue and m.white_point):
        return None

    def chroma(pair: tuple[str, str]) -> str:
        return ",".join(str(round(Fraction(v) * 50000)) for v in pair)

    parts = ["hdr10=1", "repeat-headers=1"]
    if m.max_luminance and m.min_luminance:
        lum = f"L({round(Fraction(m.max_luminance) * 10000)},{round(Fraction(m.min_luminance) * 10000)})"
        parts.append(f"master-display=G({chroma(m.green)})B({chroma(m.blue)})R({chroma(m.red)})"
                     f"WP({chroma(m.white_point)}){lum}")
    if m.max_content is not None:
        parts.append(f"max-cll={m.max_content},{m.max_average or 0}")
    return ":".join(parts)


def stream_args(opts: EncodeOptions, video: VideoInfo) -> list[str]:
    """Closed GOPs, interlacing, color and HDR metadata carried into the encoded stream."""
    enc = opts.video_codec
    user = dict(opts.video_opts)
    args: list[str] = []
    flags = ["+cgop"]
    if video.interlaced and enc in {"libx264", "mpeg2video", "mpeg4", "h264_nvenc", "h264_qsv"}:
        flags += ["+ildct", "+ilme"]
    if "flags" not in user:
        args += ["-flags:v", "".join(flags)]
    if video.interlaced and video.field_order:
        args += ["-field_order:v", video.field_order]
    args += color_args(video)
    if enc == "libx265":
        params = ["open-gop=0"]
        hdr = _x265_hdr(video)
        if hdr:
            params.append(hdr)
        if "x265-params" in user:
            params.append(user["x265-params"])
        args += ["-x265-params", ":".join(params)]
    return args


# ffprobe prints libavutil's names (av_color_*_name); the encoder options take their own
# constants, which differ for a few values (a BT.470 BG transfer is 'gamma28' to -color_trc).
_SAME = ("bt709", "bt470m", "bt470bg", "smpte170m", "smpte240m")
COLOR_NAMES: dict[str, dict[str, str]] = {
    "color_primaries": {n: n for n in (*_SAME, "film", "bt2020", "smpte428", "smpte431",
                                       "smpte432", "ebu3213", "jedec-p22")},
    "color_trc": {**{n: n for n in ("bt709", "smpte170m", "smpte240m", "linear", "log100",
                                    "log316", "iec61966-2-4", "bt1361e", "iec61966-2-1",
                                    "bt2020-10", "bt2020-12", "smpte2084", "smpte428",
                                    "arib-std-b67")},
                  "bt470m": "gamma22", "bt470bg": "gamma28"},
    "colorspace": {**{n: n for n in ("bt709", "fcc", "bt470bg", "smpte170m", "smpte240m",
                                     "ycgco", "bt2020nc", "bt2020c", "smpte2085",
                                     "chroma-derived-nc", "chroma-derived-c", "ictcp")},
                   "gbr": "rgb"},
    "color_range": {"tv": "tv", "pc": "pc"},
}
_UNSET = {"unknown", "reserved", "unspecified", "N/A"}


def _color_values(video: VideoInfo) -> list[tuple[str, str | None]]:
    return [("color_primaries", video.color_primaries), ("color_trc", video.color_transfer),
            ("colorspace", video.color_space),
            ("color_range", "pc" if is_full_range(video) else video.color_range)]


def color_args(video: VideoInfo) -> list[str]:
    """Color description flags: written by the encoder, and restored on stream copy.

    Each value ffprobe names is spelled as the encoder option spells it; one with no such
    spelling is left out (``color_warnings`` says which).
    """
    args: list[str] = []
    for option, value in _color_values(video):
        if value and value not in _UNSET and value in COLOR_NAMES[option]:
            args += [f"-{option}:v", COLOR_NAMES[option][value]]
    return args


def color_warnings(video: VideoInfo) -> list[str]:
    """The source's color values that no encoder option can carry: left out, never refused."""
    return [f"{option} '{value}' of the source is not known to this ffmpeg's encoders: "
            "left out of the output" for option, value in _color_values(video)
            if value and value not in _UNSET and value not in COLOR_NAMES[option]]


def user_args(opts: EncodeOptions) -> list[str]:
    """--video-opt KEY=VALUE pairs, as '-KEY:v VALUE' (x265-params is merged in stream_args)."""
    args: list[str] = []
    for key, value in opts.video_opts:
        if opts.video_codec == "libx265" and key == "x265-params":
            continue
        flag = key if ":" in key else f"{key}:v"
        args += [f"-{flag}", value]
    return args


# Encoders that take ``-threads`` as their own thread count (libx265 sizes its pools itself).
THREADED_ENCODERS = frozenset({"libx264", "libaom-av1", "libvpx-vp9", "libvpx", "libsvtav1"})


def thread_args(opts: EncodeOptions, threads: int | None) -> list[str]:
    """``-threads N`` for an encoder that takes it, unless --video-opt sets threads itself."""
    if threads is None or opts.video_codec not in THREADED_ENCODERS:
        return []
    if any(key.split(":")[0] == "threads" for key, _ in opts.video_opts):
        return []
    return ["-threads:v", str(threads)]
