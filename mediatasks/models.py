"""Frozen pydantic models at every boundary: probe results, job specs, plans, task results."""

from __future__ import annotations

from fractions import Fraction
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Frozen(BaseModel):
    """Base for immutable models that cross process boundaries as JSON."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def parse_rational(text: str | None) -> Fraction | None:
    """'30000/1001' -> Fraction; None or '0/0' -> None."""
    if not text:
        return None
    num, _, den = text.partition("/")
    try:
        n, d = int(num), int(den or 1)
    except ValueError:
        return None
    if n == 0 or d == 0:
        return None
    return Fraction(n, d)


class Keyframe(Frozen):
    """A source keyframe: its index in presentation order and its pts in stream time base."""

    index: int
    pts: int


class Chapter(Frozen):
    """A chapter, times in seconds."""

    start: float
    end: float
    title: str | None = None


class MasteringDisplay(Frozen):
    """HDR static metadata (SMPTE ST 2086 + CTA-861.3), as ffprobe reports it."""

    red: tuple[str, str] | None = None
    green: tuple[str, str] | None = None
    blue: tuple[str, str] | None = None
    white_point: tuple[str, str] | None = None
    min_luminance: str | None = None
    max_luminance: str | None = None
    max_content: int | None = None
    max_average: int | None = None


class StreamInfo(Frozen):
    """One stream of the source, as the muxer needs to know it."""

    index: int
    codec_type: str
    codec_name: str | None = None
    language: str | None = None
    title: str | None = None
    disposition: dict[str, int] = Field(default_factory=dict)
    filename: str | None = None  # attachments
    channels: int | None = None  # audio


class VideoInfo(Frozen):
    """The video stream we encode, with what frame-exact chunking needs to know."""

    index: int
    codec_name: str
    width: int
    height: int
    pix_fmt: str | None = None
    sample_aspect_ratio: str | None = None
    r_frame_rate: str | None = None
    avg_frame_rate: str | None = None
    time_base: str
    field_order: str | None = None
    rotation: int = 0
    display_matrix: tuple[int, ...] | None = None
    color_range: str | None = None
    color_space: str | None = None
    color_transfer: str | None = None
    color_primaries: str | None = None
    mastering: MasteringDisplay | None = None
    start_pts: int | None = None
    end_pts: int | None = None
    frame_count: int = 0
    skipped_frames: int = 0  # before the first keyframe: not decodable, not part of the source
    discarded_packets: int = 0  # hidden by an edit list: stored, never shown
    keyframes: tuple[Keyframe, ...] = ()
    is_vfr: bool = False
    split_blocker: str | None = None  # why this stream must be encoded as one chunk

    @property
    def tb(self) -> Fraction:
        return parse_rational(self.time_base) or Fraction(1, 1000)

    @property
    def interlaced(self) -> bool:
        return self.field_order in {"tt", "bb", "tb", "bt"}


class ProbeResult(Frozen):
    """What we know about a source file."""

    path: str
    size: int
    format_name: str
    duration: float | None = None
    start_time: float = 0.0
    bit_rate: int | None = None
    video: VideoInfo
    streams: tuple[StreamInfo, ...] = ()
    chapters: tuple[Chapter, ...] = ()
    tags: dict[str, str] = Field(default_factory=dict)
    stream_starts: dict[int, float] = Field(default_factory=dict)

    def of_type(self, codec_type: str) -> list[StreamInfo]:
        return [s for s in self.streams if s.codec_type == codec_type]


class AudioTrackAction(Frozen):
    """What happens to one source audio track."""

    index: int
    action: Literal["copy", "transcode", "drop"]
    codec: str | None  # the output codec: the source's for copy and drop, the encoder for transcode
    bitrate: str | None = None
    reason: str


class EncodeOptions(Frozen):
    """What the user (or a policy) asked for the video and audio.

    ``video_codec`` 'copy' remuxes: the video packets go through untouched, nothing is encoded.
    """

    video_codec: str = "libx264"
    crf: float | None = None
    preset: str | None = None
    video_opts: tuple[tuple[str, str], ...] = ()
    audio_codec: str = "copy"
    chunk_seconds: float | None = None
    scale: tuple[int, int] | None = None  # (width, height) in square pixels
    audio_tracks: tuple[AudioTrackAction, ...] | None = None  # per track; None: all, audio_codec
    drop_subtitles: tuple[int, ...] = ()  # source stream indices left out

    @property
    def remux(self) -> bool:
        return self.video_codec == "copy"


class Placement(Frozen):
    """Where a policy job's output goes in the library, and what then happens to the source."""

    root: str
    on_exists: Literal["skip", "replace", "rename"] = "skip"
    source_after: Literal["keep", "backup", "delete"] = "keep"
    backup_dir: str | None = None
    max_size_ratio: float | None = None  # the guard: keep the source if the result is larger


class JobSpec(Frozen):
    """One job: a source, an output, and how to encode."""

    job_id: str
    input: str
    output: str
    options: EncodeOptions = EncodeOptions()
    overwrite: bool = False
    batch_id: str | None = None
    placement: Placement | None = None
    attempt: int = 0  # raised by every `mediatasks retry`; tasks of an earlier attempt are dropped
    hold: bool = False  # wait in awaiting_approval after the plan, until approved or rejected
    local: bool = False  # run by `mediatasks run` on a private cluster that its own process drives
    strict: bool = False  # refuse a source that is not whole (cut short, frames missing)


class Chunk(Frozen):
    """Frames [start_frame, end_frame) of the source, selected by pts [start_pts, end_pts)."""

    index: int
    start_frame: int
    end_frame: int
    start_pts: int | None
    end_pts: int | None  # None: to the end of the stream
    seek_pts: int | None  # keyframe to seek to before decoding; None: decode from the start

    @property
    def frames(self) -> int:
        return self.end_frame - self.start_frame


class SubtitleAction(Frozen):
    """How one subtitle stream reaches the output."""

    index: int
    codec_name: str | None
    action: Literal["copy", "convert", "drop"]
    to_codec: str | None = None
    reason: str | None = None


class JobPlan(Frozen):
    """Everything decided before any encode runs."""

    job_id: str
    source: ProbeResult
    spec: JobSpec
    chunks: tuple[Chunk, ...]
    frame_count: int
    queue: str
    output_format: str
    subtitles: tuple[SubtitleAction, ...] = ()
    keep_attachments: bool = True
    warnings: tuple[str, ...] = ()
    # Filters that apply the source's display matrix to the pixels, for an output container that
    # cannot store the matrix (Matroska, WebM): 'transpose=clock', 'hflip', ...
    display_filters: tuple[str, ...] = ()

    @property
    def split(self) -> bool:
        return len(self.chunks) > 1


class ChunkResult(Frozen):
    """A verified chunk on disk."""

    index: int
    path: str
    frames: int
    bytes: int
    seconds: float
    reused: bool = False


class AudioResult(Frozen):
    """The audio of the job: copied from the source at mux time, or encoded once to a file."""

    path: str | None
    streams: int
    seconds: float = 0.0


class StepResult(Frozen):
    """A file produced by concat or mux, with its frame count."""

    path: str
    frames: int
    seconds: float = 0.0


class JobResult(Frozen):
    """The outcome of one job, as `mediatasks run --json` prints it."""

    job_id: str
    status: Literal["succeeded", "failed", "cancelled", "rejected"]
    output: str | None
    # What became of a succeeded job's file: published, or (policy jobs) kept back by the guard,
    # or not placed because the library already has it (on_exists: skip).
    outcome: Literal["published", "kept-source", "exists"] = "published"
    input: str | None = None
    source_now: str | None = None  # where the original is after source.after (None: deleted)
    frames_in: int | None = None
    frames_out: int | None = None
    error: str | None = None
    chunks: int | None = None
    chunks_reused: int | None = None
    seconds: float | None = None
    warnings: tuple[str, ...] = ()
    note: str | None = None  # why nothing was published (the guard kept the source)
    duration: float | None = None  # seconds of video
    size_in: int | None = None
    size_out: int | None = None
    bitrate: int | None = None  # of the output, bits per second
    saved_percent: float | None = None
    encode_fps: float | None = None
