"""decide: what a policy does with one file (skip, remux or transcode), why, and where it lands.

Pure: a probe result and a policy in, a decision out. The batch runner turns each decision into a
job; ``mediatasks plan --policy`` prints them without running anything.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

from mediatasks import naming
from mediatasks.errors import SourceNotFound
from mediatasks.models import EncodeOptions, Frozen, JobSpec, Placement, ProbeResult
from mediatasks.policy import Policy, audio_plan, scaled_size, subtitle_plan

# What a walk of a directory picks up (a file named on the command line is always taken).
MEDIA_EXTENSIONS = frozenset({
    ".3g2", ".3gp", ".asf", ".avi", ".divx", ".dv", ".f4v", ".flv", ".m2t", ".m2ts", ".m2v",
    ".m4v", ".mkv", ".mov", ".mp4", ".mpeg", ".mpg", ".mts", ".mxf", ".nut", ".ogm", ".ogv",
    ".qt", ".rm", ".rmvb", ".ts", ".vob", ".webm", ".wmv", ".y4m",
})

Action = Literal["skip", "remux", "transcode"]

_AUDIO_ENCODER_CODEC = {"libfdk_aac": "aac", "aac_at": "aac", "libopus": "opus",
                        "libvorbis": "vorbis", "libmp3lame": "mp3", "ac3_fixed": "ac3"}


class Decision(Frozen):
    """One file's fate under a policy."""

    source: str
    action: Action
    reasons: tuple[str, ...]
    output: str | None = None
    spec: JobSpec | None = None  # None for skip


def find_media(inputs: Iterable[Path]) -> list[Path]:
    """The files to process: each file as given, each directory walked recursively for media
    files (hidden files and directories skipped, such as a library's .mediatasks-trash), in
    sorted order, each file once.

    Raises:
        SourceNotFound: an input does not exist.
    """
    found: list[Path] = []
    for item in inputs:
        if not os.path.lexists(item):
            raise SourceNotFound("no such file or directory", path=item, hint="check the path")
        if not item.is_dir():
            found.append(item)
            continue
        for dirpath, dirnames, filenames in os.walk(item, followlinks=False):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            found += [Path(dirpath) / f for f in sorted(filenames)
                      if not f.startswith(".") and Path(f).suffix.lower() in MEDIA_EXTENSIONS]
    unique: dict[str, Path] = {}
    for p in found:
        unique.setdefault(os.path.realpath(p), p)
    return list(unique.values())


def encoder_codec(encoder: str) -> str:
    """The codec name ffprobe will report for what an ffmpeg video encoder writes."""
    name = encoder.lower()
    for needle, codec in (("265", "hevc"), ("hevc", "hevc"), ("264", "h264"), ("av1", "av1"),
                          ("vp9", "vp9"), ("vp8", "vp8"), ("prores", "prores"),
                          ("mpeg4", "mpeg4"), ("xvid", "mpeg4")):
        if needle in name:
            return codec
    return name


def destination(source: Path, probe: ProbeResult, policy: Policy, *,
                output_dir: Path | None,
                overrides: dict[str, object] | None = None) -> tuple[Path, Path]:
    """(library root, output path) for a file: the library template, or OUTPUT_DIR/<stem>.<ext>.

    Raises:
        InvalidPolicy: the template renders a path outside the root, or too long.
        InvalidOptions: neither a library nor an output directory is given.
    """
    from mediatasks.errors import InvalidOptions

    ext = policy.video.container
    if policy.library is not None:
        found = {**naming.tokens(source, probe, ext=ext), **(overrides or {})}
        template = (policy.library.episode if naming.kind(found) == "episode"
                    else policy.library.movie)
        return policy.library.root, naming.render(template, found, root=policy.library.root)
    if output_dir is None:
        raise InvalidOptions("the policy has no library section and no --output-dir was given",
                             path=source, hint="add library: root: ... to the policy, or pass "
                                               "--output-dir DIR")
    stem = naming.render("{title}", {"title": source.stem}, root=output_dir).name
    return output_dir, output_dir / f"{stem}.{ext}"


def decide(probe: ProbeResult, policy: Policy, *, source: Path, job_id: str,
           batch_id: str | None, output_dir: Path | None = None,
           exists: bool | None = None, chunk_seconds: float | None = None) -> Decision:
    """Skip, remux or transcode ``source``, with the reasons and the job that does it.

    - transcode: the video codec is not in ``video.skip_if_codec``, or the picture is taller than
      ``video.max_height``;
    - remux: the video is kept as it is, but the file still changes (audio or subtitle tracks, the
      container, its place in the library);
    - skip: nothing would change, or the library already has the file and ``on_exists`` is skip.

    Args:
        exists: whether the destination exists (None: look).
        chunk_seconds: the target chunk length (None: MEDIATASKS_CHUNK_SECONDS).
    """
    v = probe.video
    reasons: list[str] = []
    scale = scaled_size(v.width, v.height, policy.video.max_height, v.sample_aspect_ratio)
    compliant = v.codec_name in policy.video.skip_if_codec
    # A packet copy keeps every stored packet: frames an edit list hides, or undecodable frames
    # before the first keyframe, would become frames of the output. Those files are encoded.
    hidden = v.discarded_packets + v.skipped_frames
    copyable = compliant and not hidden
    audio = tuple(audio_plan(probe.streams, policy.audio))
    # Tokens describe the file that will be published, not the source.
    overrides: dict[str, object] = {}
    if not copyable or scale is not None:
        overrides["vcodec"] = encoder_codec(policy.video.codec)
    if scale is not None:
        overrides["resolution"] = naming.resolution_label(*scale)
    kept = [a for a in audio if a.action != "drop"]
    if kept:
        first = kept[0]
        overrides["acodec"] = (first.codec if first.action == "copy"
                               else _AUDIO_ENCODER_CODEC.get(str(first.codec), first.codec))
    root, output = destination(source, probe, policy, output_dir=output_dir, overrides=overrides)
    subs = subtitle_plan(probe.streams, policy.subtitles)
    drops = tuple(s.index for s in subs if s.action == "drop")
    if not compliant:
        reasons.append(f"video is {v.codec_name}, not one of video.skip_if_codec "
                       f"({', '.join(policy.video.skip_if_codec) or 'none'})")
    elif hidden and scale is None:
        reasons.append(f"video {v.codec_name} could be kept, but {hidden} stored frame(s) are "
                       "never shown (an edit list, or frames before the first keyframe) and a "
                       "copy would show them: encoded instead")
    if scale is not None:
        reasons.append(f"{v.width}x{v.height} is taller than video.max_height "
                       f"{policy.video.max_height}: scaled to {scale[0]}x{scale[1]}")
    track_changes = [f"audio #{a.index} {a.action}" + (f" to {a.codec}" if a.action == "transcode"
                                                        else "") + f" ({a.reason})"
                     for a in audio if a.action != "copy"]
    track_changes += [f"subtitle #{s.index} dropped ({s.reason})" for s in subs
                      if s.action == "drop"]
    in_place = output.resolve() == source.resolve()
    if exists is None:
        exists = os.path.lexists(output)
    action: Action
    if not copyable or scale is not None:
        action = "transcode"
        reasons += track_changes
    elif track_changes or not in_place:
        action = "remux"
        reasons.append(f"video {v.codec_name} is kept as it is (video.skip_if_codec)")
        reasons += track_changes or [f"filed at {output}"]
    else:
        return Decision(source=str(source), action="skip", output=str(output),
                        reasons=("already compliant and in place",))
    on_exists = policy.library.on_exists if policy.library is not None else "skip"
    if exists and not in_place and on_exists == "skip":
        return Decision(source=str(source), action="skip", output=str(output),
                        reasons=(f"{output} already exists (library.on_exists: skip)",))
    opts = EncodeOptions(
        video_codec="copy" if action == "remux" else policy.video.codec,
        crf=policy.video.crf if action == "transcode" else None,
        preset=policy.video.preset if action == "transcode" else None,
        scale=scale, audio_tracks=audio, drop_subtitles=drops, chunk_seconds=chunk_seconds)
    placement = Placement(root=str(root), on_exists=on_exists,
                          source_after=policy.source.after,
                          backup_dir=str(policy.source.backup_dir)
                          if policy.source.backup_dir else None,
                          max_size_ratio=policy.guard.max_size_ratio)
    spec = JobSpec(job_id=job_id, input=str(source.resolve()), output=str(output),
                   options=opts, batch_id=batch_id, placement=placement)
    return Decision(source=str(source), action=action, reasons=tuple(reasons),
                    output=str(output), spec=spec)


def summary(decisions: Sequence[Decision]) -> str:
    """'3 files: 1 transcode, 1 remux, 1 skip'."""
    counts = {a: sum(1 for d in decisions if d.action == a) for a in ("transcode", "remux", "skip")}
    return f"{len(decisions)} file(s): " + ", ".join(f"{n} {a}" for a, n in counts.items())
