"""The YAML policy: what to encode, copy or drop, where results go, and the pure plans it implies.

Every error names the file, the line and the key, and says what to write instead.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Annotated, Any, Literal

import babelfish  # type: ignore[import-untyped]
import yaml
from pydantic import BeforeValidator, Field, ValidationError, ValidationInfo, field_validator

from mediatasks import naming
from mediatasks.errors import InvalidPolicy, MediatasksError
from mediatasks.models import AudioTrackAction, Frozen, StreamInfo, SubtitleAction, parse_rational


def _listify(value: object) -> object:
    """YAML leniency for lists: 'hevc' -> ['hevc']; an empty key (None) -> []."""
    if value is None:
        return []
    return [value] if isinstance(value, str) else value


def _codec(value: object) -> object:
    if isinstance(value, str) and not re.fullmatch(r"[A-Za-z0-9_.-]+", value):
        raise ValueError(f"{value!r} is not a codec or encoder name (letters, digits, '_', '-', '.')")
    return value.lower() if isinstance(value, str) else value


def _language(value: object) -> object:
    if isinstance(value, str) and language_key(value) is None:
        raise ValueError(f"{value!r} is not an ISO 639 language code (e.g. eng, fra, deu, und)")
    return value.lower() if isinstance(value, str) else value


def _bitrate(value: object) -> object:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str) and not re.fullmatch(r"(?=.*[1-9])\d+(\.\d+)?[kKmM]?", value):
        raise ValueError(f"{value!r} is not a bitrate; write bits per second like 192k, 1.5M or 128000")
    return value


_Codec = Annotated[str, BeforeValidator(_codec)]
_Codecs = Annotated[tuple[Annotated[str, BeforeValidator(_codec)], ...], BeforeValidator(_listify)]
_Languages = Annotated[tuple[Annotated[str, BeforeValidator(_language)], ...], BeforeValidator(_listify)]
_Positive = Annotated[float, Field(gt=0, strict=True)]


class VideoPolicy(Frozen):
    """How the video stream is encoded."""

    codec: _Codec = "libx264"
    crf: Annotated[float, Field(ge=0, le=63, strict=True)] | None = None
    preset: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")] | None = None
    max_height: Annotated[int, Field(gt=0, strict=True)] | None = None
    skip_if_codec: _Codecs = ()
    container: Literal["mkv", "mp4", "mov", "webm"] = "mkv"  # the output's {ext}

    @field_validator("codec")
    @classmethod
    def _not_copy(cls, codec: str) -> str:
        if codec == "copy":
            raise ValueError("must be an encoder; to keep compliant video as it is, list its codec "
                             "in video.skip_if_codec")
        return codec


class TranscodeTo(Frozen):
    """The encoder (and bitrate) for audio tracks that are not kept as they are."""

    codec: _Codec
    bitrate: Annotated[str, BeforeValidator(_bitrate)] | None = None


class AudioPolicy(Frozen):
    """Which audio tracks are copied, transcoded or dropped."""

    keep: _Codecs = ()
    transcode_to: TranscodeTo | None = None
    languages: _Languages = ()


class SubtitlePolicy(Frozen):
    """Which subtitle tracks are kept."""

    languages: _Languages = ()


class LibraryPolicy(Frozen):
    """Where results are filed, named from the source's file name and probe."""

    root: Path
    movie: str = "Movies/{title} ({year})/{title} ({year}) - {edition}.{ext}"
    episode: str = "TV/{series}/Season {season:02d}/{series} - S{season:02d}{episodes} - {episode_title}.{ext}"
    on_exists: Literal["skip", "replace", "rename"] = "skip"

    @field_validator("root")
    @classmethod
    def _absolute(cls, root: Path) -> Path:
        root = root.expanduser()
        if not root.is_absolute():
            raise ValueError(f"must be an absolute path (got '{root}')")
        return root

    @field_validator("movie", "episode")
    @classmethod
    def _template(cls, template: str) -> str:
        try:
            naming.check_template(template)
        except MediatasksError as exc:
            raise ValueError(exc.detail + (f"; {exc.hint}" if exc.hint else "")) from None
        return template


class SourcePolicy(Frozen):
    """What happens to the source once the result is in place."""

    after: Literal["keep", "backup", "delete"] = "keep"
    backup_dir: Path | None = Field(default=None, validate_default=True)

    @field_validator("backup_dir")
    @classmethod
    def _backup_dir(cls, backup_dir: Path | None, info: ValidationInfo) -> Path | None:
        if backup_dir is None:
            if info.data.get("after") == "backup":
                raise ValueError("required when source.after is backup (e.g. backup_dir: /media/backup)")
            return None
        backup_dir = backup_dir.expanduser()
        if not backup_dir.is_absolute():
            raise ValueError(f"must be an absolute path (got '{backup_dir}')")
        return backup_dir


class GuardPolicy(Frozen):
    """Safety checks on the result."""

    max_size_ratio: _Positive | None = None


class Policy(Frozen):
    """A whole policy file."""

    video: VideoPolicy = VideoPolicy()
    audio: AudioPolicy = AudioPolicy()
    subtitles: SubtitlePolicy = SubtitlePolicy()
    library: LibraryPolicy | None = None
    source: SourcePolicy = SourcePolicy()
    guard: GuardPolicy = GuardPolicy()


def load_policy(path: Path) -> Policy:
    """Read and validate a policy file; an empty file (or only comments) is the default policy.

    Raises:
        InvalidPolicy: the file is missing or unreadable, not YAML, not a mapping, has a duplicate or
            unknown key or a bad value; the message is 'FILE:LINE: KEY: problem'.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidPolicy(f"{path}: policy file not found", path=path,
                            hint="check the path; docs/policies.md has an example") from None
    except UnicodeDecodeError:
        raise InvalidPolicy(f"{path}: not UTF-8 text", path=path, hint="save the policy as UTF-8") from None
    except OSError as exc:
        raise InvalidPolicy(f"{path}: cannot read the policy file: {exc.strerror}", path=path) from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else 1
        problem = exc.problem or exc.context or "syntax error"
        raise InvalidPolicy(f"{path}:{line}: not valid YAML: {problem}", path=path,
                            hint="check the indentation and quote values that contain ':' or '#'") from None
    except yaml.YAMLError as exc:
        raise InvalidPolicy(f"{path}: not valid YAML: {exc}", path=path) from None
    if root is None:
        return Policy()
    if not isinstance(root, yaml.MappingNode) or not isinstance(data, dict):
        raise InvalidPolicy(f"{path}:{root.start_mark.line + 1}: the top level must be a mapping of sections "
                            f"({', '.join(Policy.model_fields)}), got {type(data).__name__}", path=path)
    _refuse_duplicates(path, root)
    # 'video:' with everything under it commented out means the defaults, not an error.
    data = {key: {} if value is None else value for key, value in data.items()}
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        problems = sorted(exc.errors(include_url=False), key=lambda e: _line(root, e["loc"]))
        first, rest = problems[0], sorted({_line(root, e["loc"]) for e in problems[1:]})
        lines = f"line{'s' if len(rest) > 1 else ''} {', '.join(map(str, rest))}"
        more = f" (and {len(problems) - 1} more: {lines})" if rest else ""
        raise InvalidPolicy(f"{path}:{_line(root, first['loc'])}: {_describe(first)}{more}", path=path) from None


def language_key(code: str | None) -> str | None:
    """One ISO 639-3 code for 'en', 'eng', 'ger' or 'deu' alike; None for codes no standard knows."""
    if not code:
        return None
    code = code.strip().lower()
    for parse in (babelfish.Language, babelfish.Language.fromalpha3b, babelfish.Language.fromalpha2):
        try:
            return str(parse(code).alpha3)
        except (ValueError, KeyError, babelfish.Error):
            continue
    return None


def scaled_size(width: int, height: int, max_height: int | None,
                sample_aspect_ratio: str | None = None) -> tuple[int, int] | None:
    """The square-pixel (width, height) to scale to, both even; None when height <= max_height.

    ``sample_aspect_ratio`` is ffprobe's ('64:45'); anamorphic sources come out with the same display
    shape in square pixels, so the encode must also set the output's SAR to 1:1.
    """
    if max_height is None or height <= max_height:
        return None
    sar = parse_rational((sample_aspect_ratio or "").replace(":", "/")) or Fraction(1)
    new_height = max(2, max_height - max_height % 2)
    new_width = width * sar * new_height / height
    return max(2, 2 * round(new_width / 2)), new_height


def audio_plan(streams: Sequence[StreamInfo], policy: AudioPolicy) -> list[AudioTrackAction]:
    """One action per audio track (other stream types are ignored), in source order.

    Tracks in other languages than ``policy.languages`` are dropped, but never all of them: when none
    matches, the first audio track is kept. A track with no language tag counts as 'und'.
    """
    audio = [s for s in streams if s.codec_type == "audio"]
    wanted = {language_key(code) for code in policy.languages}
    matches = [s for s in audio if not wanted or (language_key(s.language) or "und") in wanted]
    kept = {s.index for s in matches or audio[:1]}
    plan: list[AudioTrackAction] = []
    for stream in audio:
        language = stream.language or "und"
        if stream.index not in kept:
            plan.append(AudioTrackAction(index=stream.index, action="drop", codec=stream.codec_name,
                                         reason=f"language {language} is not in audio.languages"))
        elif not matches:
            plan.append(_audio_codec_action(stream, policy, f"kept although language {language} is not in "
                                                            "audio.languages: the output needs an audio track"))
        else:
            plan.append(_audio_codec_action(stream, policy, None))
    return plan


def subtitle_plan(streams: Sequence[StreamInfo], policy: SubtitlePolicy) -> list[SubtitleAction]:
    """Copy or drop each subtitle track (other stream types are ignored); dropping all of them is fine."""
    wanted = {language_key(code) for code in policy.languages}
    plan: list[SubtitleAction] = []
    for stream in (s for s in streams if s.codec_type == "subtitle"):
        language = stream.language or "und"
        if not wanted or (language_key(stream.language) or "und") in wanted:
            reason = "subtitles.languages is empty" if not wanted else f"language {language} is wanted"
            plan.append(SubtitleAction(index=stream.index, codec_name=stream.codec_name, action="copy",
                                       reason=reason))
        else:
            plan.append(SubtitleAction(index=stream.index, codec_name=stream.codec_name, action="drop",
                                       reason=f"language {language} is not in subtitles.languages"))
    return plan


# The codec an audio encoder produces, where the names differ (ffmpeg encoder -> ffprobe codec_name).
_ENCODER_CODEC = {"libfdk_aac": "aac", "aac_at": "aac", "libopus": "opus", "libvorbis": "vorbis",
                  "libmp3lame": "mp3", "libshine": "mp3", "libtwolame": "mp2", "ac3_fixed": "ac3"}


def _audio_codec_action(stream: StreamInfo, policy: AudioPolicy, why: str | None) -> AudioTrackAction:
    codec = (stream.codec_name or "").lower()
    target = policy.transcode_to
    suffix = f"; {why}" if why else ""
    if codec and codec in policy.keep:
        reason = f"{codec} is in audio.keep"
    elif target is None:
        reason = "audio.transcode_to is not set"
    elif codec and _ENCODER_CODEC.get(target.codec, target.codec) == codec:
        reason = f"already {codec}"
    else:
        return AudioTrackAction(index=stream.index, action="transcode", codec=target.codec,
                                bitrate=target.bitrate,
                                reason=f"{codec or 'unknown codec'} is not in audio.keep{suffix}")
    return AudioTrackAction(index=stream.index, action="copy", codec=stream.codec_name, reason=reason + suffix)


def _refuse_duplicates(path: Path, node: yaml.Node) -> None:
    """PyYAML keeps the last of two equal keys silently; a policy should not."""
    if isinstance(node, yaml.MappingNode):
        seen: set[object] = set()
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                if key.value in seen:
                    raise InvalidPolicy(f"{path}:{key.start_mark.line + 1}: {key.value}: duplicate key",
                                        path=path, hint="keep one of them")
                seen.add(key.value)
            _refuse_duplicates(path, value)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _refuse_duplicates(path, item)


def _line(root: yaml.Node, loc: tuple[int | str, ...]) -> int:
    """The line of the deepest node ``loc`` reaches (a key's own line for mapping keys)."""
    node, line = root, root.start_mark.line + 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == part),
                         None)
            if match is None:
                break
            line, node = match[0].start_mark.line + 1, match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return int(line)


def _describe(error: Any) -> str:
    """'key.path: what is wrong and what to write' for one pydantic error."""
    loc: tuple[int | str, ...] = error["loc"]
    key = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".") or "(top level)"
    kind, given = error["type"], error.get("input")
    if kind == "extra_forbidden":
        known = _fields_at(loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        return f"{key}: unknown key; " + (f"did you mean '{close[0]}'?" if close
                                          else f"known keys: {', '.join(known)}")
    if kind == "missing":
        return f"{key}: required key is missing"
    if kind == "literal_error":
        choices = ", ".join(str(c) for c in typing.get_args(_annotation_at(loc)))
        return f"{key}: must be one of {choices} (got {given!r})"
    message = str(error["msg"]).removeprefix("Value error, ")
    message = re.sub(r"^Input should be ", "must be ", message)
    if kind in {"model_type", "dict_type"}:
        message = f"must be a mapping of keys ({', '.join(_fields_at(loc))})"
    if kind.startswith("value_error") or kind.startswith("assertion"):
        return f"{key}: {message}"
    return f"{key}: {message} (got {given!r})"


def _model_at(loc: tuple[int | str, ...]) -> type[Frozen] | None:
    model: type[Frozen] | None = Policy
    for part in loc:
        if model is None or not isinstance(part, str) or part not in model.model_fields:
            return None
        model = _model_of(model.model_fields[part].annotation)
    return model


def _model_of(annotation: Any) -> type[Frozen] | None:
    if isinstance(annotation, type) and issubclass(annotation, Frozen):
        return annotation
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return next((m for m in map(_model_of, typing.get_args(annotation)) if m is not None), None)
    return None


def _fields_at(loc: tuple[int | str, ...]) -> list[str]:
    model = _model_at(loc)
    return list(model.model_fields) if model is not None else []


def _annotation_at(loc: tuple[int | str, ...]) -> Any:
    model = _model_at(loc[:-1])
    field = model.model_fields.get(str(loc[-1])) if model is not None and loc else None
    return field.annotation if field is not None else None
