"""mux: the concatenated video + every audio, subtitle and attachment stream, chapters and metadata.

Also owns what each output container can hold: it decides, before anything is encoded, which
subtitle streams are copied or converted and refuses what cannot be stored without loss.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

from mediatasks import profiles, runner
from mediatasks.errors import InvalidOptions
from mediatasks.isobmff import IDENTITY, set_display_matrix
from mediatasks.models import AudioResult, JobPlan, ProbeResult, StepResult, SubtitleAction
from mediatasks.steps.audio import kept_tracks
from mediatasks.steps.probe import start_seconds

log = logging.getLogger(__name__)

FORMATS = {".mkv": "matroska", ".mka": "matroska", ".mp4": "mp4", ".m4v": "mp4", ".mov": "mov",
           ".webm": "webm"}
_TEXT = {"subrip", "srt", "ass", "ssa", "webvtt", "mov_text", "text", "subviewer", "microdvd",
         "sami", "realtext", "jacosub", "mpl2", "pjs", "vplayer", "stl"}
_NATIVE = {
    "matroska": {"subrip", "ass", "ssa", "webvtt", "dvd_subtitle", "hdmv_pgs_subtitle",
                 "dvb_subtitle", "arib_caption"},
    "mp4": {"mov_text", "dvd_subtitle"},
    "mov": {"mov_text"},
    "webm": {"webvtt"},
}
_TEXT_TARGET = {"matroska": "subrip", "mp4": "mov_text", "mov": "mov_text", "webm": "webvtt"}
_AUDIO_OK = {
    "mp4": {"aac", "mp3", "mp2", "mp1", "ac3", "eac3", "alac", "opus", "flac", "dts", "truehd"},
    "mov": {"aac", "mp3", "mp2", "ac3", "eac3", "alac", "opus", "flac", "pcm_s16le", "pcm_s16be",
            "pcm_s24le", "pcm_s24be", "pcm_s32le", "pcm_f32le", "pcm_u8", "pcm_mulaw",
            "pcm_alaw", "adpcm_ima_qt"},
    "webm": {"opus", "vorbis"},
}
_VIDEO_OK = {"webm": {"libvpx", "libvpx-vp9", "libaom-av1", "libsvtav1", "librav1e",
                      "av1_nvenc", "av1_qsv", "av1_vaapi", "vp9_vaapi", "vp9_qsv", "vp8_vaapi"}}


def output_format(output: str | Path) -> str:
    """The muxer for an output path, from its extension."""
    ext = Path(output).suffix.lower()
    if ext not in FORMATS:
        raise InvalidOptions(f"unsupported output extension '{ext or '(none)'}'", path=output,
                             hint="use .mkv, .mp4, .mov or .webm")
    return FORMATS[ext]


def subtitle_actions(source: ProbeResult, fmt: str, *, subject: str) -> tuple[SubtitleAction, ...]:
    """Copy what the container holds, convert text it cannot, refuse bitmaps it cannot."""
    actions = []
    for s in source.of_type("subtitle"):
        codec = s.codec_name or "unknown"
        if codec in _NATIVE[fmt]:
            actions.append(SubtitleAction(index=s.index, codec_name=codec, action="copy"))
        elif codec in _TEXT:
            target = _TEXT_TARGET[fmt]
            actions.append(SubtitleAction(
                index=s.index, codec_name=codec, action="convert", to_codec=target,
                reason=f"{fmt} cannot hold {codec} subtitles; converted to {target}"))
        elif codec in {"eia_608", "unknown"}:
            actions.append(SubtitleAction(
                index=s.index, codec_name=codec, action="drop",
                reason=f"subtitle stream #{s.index} ({codec}) cannot be stored as a stream"))
        else:
            raise InvalidOptions(
                f"subtitle stream #{s.index} ({codec}) cannot be stored in {fmt} "
                "and cannot be converted to text", path=subject,
                hint="use a .mkv output")
    return tuple(actions)


def check_audio(source: ProbeResult, fmt: str, audio_codec: str, *, subject: str) -> None:
    """Refuse an audio copy the container cannot hold, before anything is encoded."""
    allowed = _AUDIO_OK.get(fmt)
    if allowed is None or audio_codec != "copy":
        return
    for s in source.of_type("audio"):
        if s.codec_name not in allowed:
            raise InvalidOptions(
                f"audio stream #{s.index} ({s.codec_name}) cannot be copied into {fmt}",
                path=subject,
                hint=("pass --audio-codec libopus" if fmt == "webm" else
                      "pass --audio-codec aac") + ", or use a .mkv output")


def container_warnings(source: ProbeResult, fmt: str, encoder: str) -> Iterator[str]:
    """What will not reach the output, said up front."""
    if fmt in _VIDEO_OK and encoder not in _VIDEO_OK[fmt]:
        raise InvalidOptions(f"{fmt} cannot hold video from {encoder}", path=source.path,
                             hint="use --video-codec libvpx-vp9 or libaom-av1, or another extension")
    attachments = source.of_type("attachment")
    if attachments and fmt != "matroska":
        yield f"{len(attachments)} attachment(s) dropped: {fmt} cannot hold attachments"
    data = source.of_type("data")
    if data:
        yield f"{len(data)} data stream(s) dropped"
    extra_video = [s for s in source.of_type("video") if s.index != source.video.index
                   and not s.disposition.get("attached_pic")]
    if extra_video:
        yield f"{len(extra_video)} further video stream(s) dropped (only the main one is encoded)"
    if (source.video.rotation and fmt in MATRIX_LESS
            and (encoder == "copy" or not display_filters(source.video.display_matrix))):
        yield (f"rotation ({source.video.rotation} degrees) is not stored by this ffmpeg's "
               "Matroska muxer; use .mp4 or .mov to keep it")
    if source.video.mastering and encoder != "libx265":
        yield f"HDR mastering metadata is carried only when encoding with libx265 (not {encoder})"


MATRIX_LESS = {"matroska", "webm"}  # this ffmpeg's Matroska muxer stores no display matrix


def _rotation_degrees(matrix: tuple[int, ...]) -> float | None:
    """The clockwise rotation ffmpeg reads from a display matrix (its get_rotation), 0-360."""
    a, b, c, d = (x / 65536 for x in (matrix[0], matrix[1], matrix[3], matrix[4]))
    if math.hypot(a, c) == 0 or math.hypot(b, d) == 0:
        return None
    theta = float(round(math.degrees(math.atan2(b / math.hypot(b, d), a / math.hypot(a, c)))))
    return theta - 360 * math.floor(theta / 360 + 0.9 / 360)


def display_filters(matrix: tuple[int, ...] | None) -> tuple[str, ...]:
    """The filters that turn the pixels as the display matrix turns the picture: the ones
    ffmpeg's default autorotation inserts (fftools, 5.1), for right angles and flips only."""
    if not matrix or matrix == IDENTITY:
        return ()
    theta = _rotation_degrees(matrix)
    if theta is None:
        return ()
    if abs(theta - 90) < 1:
        return ("transpose=cclock_flip" if matrix[3] > 0 else "transpose=clock",)
    if abs(theta - 180) < 1:
        return (*(("hflip",) if matrix[0] < 0 else ()), *(("vflip",) if matrix[4] < 0 else ()))
    if abs(theta - 270) < 1:
        return ("transpose=clock_flip" if matrix[3] < 0 else "transpose=cclock",)
    if abs(theta) < 1 or abs(theta - 360) < 1:
        return ("vflip",) if matrix[4] < 0 else ()
    return ()  # another angle would need the rotate filter, which resamples: not done


def pixel_turn(source: ProbeResult, fmt: str, encoder: str) -> tuple[str, ...]:
    """The display filters the chunk encodes apply: only for a container that cannot store the
    source's display matrix, and only when the video is encoded (not copied)."""
    if fmt not in MATRIX_LESS or encoder == "copy":
        return ()
    return display_filters(source.video.display_matrix)


def _seconds(value: Decimal) -> str:
    return f"{value:.6f}"


def mux_args(plan: JobPlan, video: Path, audio: AudioResult, out: Path, *,
             video_start: Decimal = Decimal(0), ffmpeg: str = "ffmpeg") -> list[str]:
    """The ffmpeg argv for the mux, with every input placed on the source's timeline.

    Args:
        video_start: the first pts of ``video`` in seconds (muxers shift timestamps to keep the
            dts of B-frame streams non-negative, so it is read from the file, not assumed 0).
    """
    src = plan.source
    v = src.video
    if v.start_pts is not None and not v.split_blocker:
        v0 = Decimal(v.start_pts) * v.tb.numerator / v.tb.denominator
    else:
        v0 = Decimal(str(src.stream_starts.get(v.index, src.start_time)))
    # The earliest start of any stream: a container's start_time is not always the minimum
    # (MPEG-TS).
    t0 = min([Decimal(str(src.start_time)), v0,
              *(Decimal(str(x)) for x in src.stream_starts.values())])
    # The source (and an audio file made with -copyts) keep their own timestamps; the video is
    # moved onto the source's timeline; one output offset then shifts every stream alike. An
    # -itsoffset that cancels a multi-stream input's start makes ffmpeg 5.1 start each of its
    # streams at zero, losing the offsets between them, so the source never gets one.
    args = [ffmpeg, "-nostdin", "-hide_banner", "-v", "error", "-y", "-copyts"]
    remux = plan.spec.options.remux
    if not remux:  # a remux takes the video packets straight from the source
        args += ["-itsoffset", _seconds(v0 - video_start), "-f", "nut", "-i", str(video)]
    audio_input = None
    if audio.path:
        args += ["-i", str(audio.path)]
        audio_input = 0 if remux else 1
    s_in = (0 if remux else 1) + (1 if audio.path else 0)
    args += runner.source_input(src.path)
    # (input, stream index in that input) for every output stream, in output order.
    streams: list[tuple[int, int]] = [(s_in, v.index) if remux else (0, 0)]
    if audio_input is not None:
        streams += [(audio_input, i) for i in range(audio.streams)]
    else:
        streams += [(s_in, t.index) for t in kept_tracks(plan)]
    codec_args: list[str] = ["-c", "copy"]
    out_sub = 0
    for action in plan.subtitles:
        if action.action == "drop":
            continue
        streams.append((s_in, action.index))
        if action.action == "convert":
            codec_args += [f"-c:s:{out_sub}", str(action.to_codec)]
        out_sub += 1
    if plan.keep_attachments:
        streams += [(s_in, t.index) for t in src.of_type("attachment")]
    for inp, idx in streams:
        args += ["-map", f"{inp}:{idx}"]
    args += codec_args
    args += ["-map_metadata", str(s_in), "-map_chapters", str(s_in)]
    # Any per-stream -map_metadata turns off ffmpeg's automatic copy for all streams, so every
    # stream's tags (language, title) are mapped explicitly; the video's come from the source.
    for out_idx, (inp, idx) in enumerate(streams):
        origin = f"{s_in}:s:{v.index}" if out_idx == 0 else f"{inp}:s:{idx}"
        args += [f"-map_metadata:s:{out_idx}", origin]
    flags = [k for k, on in _video_disposition(src).items() if on]
    args += ["-disposition:v:0", "+".join(flags) if flags else "0"]
    args += profiles.color_args(v)
    if v.interlaced and v.field_order:
        args += ["-field_order:v:0", v.field_order]
    if (v.sample_aspect_ratio and v.sample_aspect_ratio not in {"0:1", "1:1", "N/A"}
            and plan.spec.options.scale is None):  # a scaled picture has square pixels
        num, _, den = v.sample_aspect_ratio.partition(":")
        dar = (int(num) * v.width, int(den) * v.height)
        args += ["-aspect:v:0", f"{dar[0]}:{dar[1]}"]
    if plan.output_format in {"mp4", "mov"}:
        args += ["-movflags", "+faststart"]
    args += ["-output_ts_offset", _seconds(-t0), "-max_interleave_delta", "0",
             "-max_muxing_queue_size", "9999", "-f", plan.output_format, str(out)]
    return args


def _video_disposition(src: ProbeResult) -> dict[str, int]:
    for s in src.streams:
        if s.index == src.video.index:
            return {k: v for k, v in s.disposition.items() if k in {"default", "forced", "original",
                                                                    "comment", "visual_impaired"}}
    return {}


def mux(plan: JobPlan, video: Path, audio: AudioResult, out: Path, *, ffmpeg: str = "ffmpeg",
        ffprobe: str = "ffprobe") -> StepResult:
    """Run the mux into ``out`` (a temp name in the job directory)."""
    for w in plan.warnings:
        log.warning("%s: %s", plan.spec.input, w)
    tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")
    start = Decimal(0) if plan.spec.options.remux else start_seconds(video, ffprobe=ffprobe)
    argv = mux_args(plan, video, audio, tmp, video_start=start, ffmpeg=ffmpeg)
    done = runner.run(argv, subject=plan.spec.input, timeout=None)
    matrix = plan.source.video.display_matrix
    if matrix and matrix != IDENTITY and plan.output_format in {"mp4", "mov"}:
        set_display_matrix(tmp, matrix)
    tmp.replace(out)
    return StepResult(path=str(out), frames=plan.frame_count, seconds=done.seconds)
