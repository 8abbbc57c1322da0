"""Library names: tokens parsed from a source's file name and probe, rendered through a path template.

Rendering never leaves the library root: token values cannot add folders, components are cleaned for
Windows and macOS, and each component fits in 255 bytes of UTF-8.
"""

from __future__ import annotations

import difflib
import os
import re
import string
import unicodedata
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from guessit import guessit

from mediatasks.errors import InvalidPolicy
from mediatasks.models import ProbeResult, VideoInfo

# Token name -> a sample value of its type, used to check format specs when a template is loaded.
TOKENS: dict[str, object] = {
    "title": "Title",
    "year": 2000,
    "series": "Series",
    "season": 1,
    "episode": 1,
    "episodes": "E01",
    "episode_title": "Episode",
    "edition": "Edition",
    "release_group": "GROUP",
    "type": "movie",
    "resolution": "1080p",
    "vcodec": "hevc",
    "acodec": "aac",
    "channels": "5.1",
    "hdr": "HDR10",
    "ext": "mkv",
}

MAX_COMPONENT_BYTES = 255
MAX_PATH_BYTES = 4095  # Linux PATH_MAX (4096) counts the terminating NUL

_GONE = "\x00"  # stands for a token that rendered empty, so that the separators around it can go too
_SEPS = " ._-"
_RESERVED = {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"} | {
    f"{prefix}{digit}" for prefix in ("COM", "LPT") for digit in "0123456789¹²³"}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SLASHES = re.compile(r"[/\\]+")
_EMPTY_BRACKETS = re.compile(r"\([\s\x00]*\)|\[[\s\x00]*\]|\{[\s\x00]*\}")
_AROUND_GONE = re.compile(r"([ ._-]*)\x00+([ ._-]*)")
_RESOLUTIONS = ((3840, 2160, "2160p"), (2560, 1440, "1440p"), (1920, 1080, "1080p"), (1280, 720, "720p"))
_CHANNELS = {1: "1.0", 2: "2.0", 3: "2.1", 6: "5.1", 7: "6.1", 8: "7.1"}

Field = tuple[str, str, str | None]  # literal text before it, token name ('' at the end), format spec
Component = list[Field]


def tokens(source: Path, probe: ProbeResult | None = None, *, ext: str | None = None) -> dict[str, object]:
    """Tokens for a library template: guessit reads the path, the probe gives the media facts.

    Missing tokens are None. ``ext`` is the output's extension (without a dot); the source's by default.
    """
    # The file name first: given the whole path, guessit also reads folder names, and takes any
    # folder's name (a download or work folder) for an episode title. The folders are read only
    # when the name alone lacks the title, or is an episode without a season
    # ('Show Name/Season 2/03 - Pilot.mkv').
    guess: dict[str, Any] = dict(guessit(source.name))
    episode_without_season = guess.get("type") == "episode" and guess.get("season") is None
    if not guess.get("title") or episode_without_season:
        guess = dict(guessit(str(source)))
    found: dict[str, object] = {name: None for name in TOKENS}
    is_episode = guess.get("type") == "episode"
    found["type"] = "episode" if is_episode else "movie"
    found["title"] = _text(guess.get("title"))
    found["series"] = found["title"] if is_episode else None
    found["year"] = _number(guess.get("year"))
    numbers = [n for n in _as_list(guess.get("episode")) if isinstance(n, int)]
    found["episode"] = numbers[0] if numbers else None
    # Absolute numbering (most anime) has no season; media servers file it as season 1.
    found["season"] = _number(guess.get("season")) or (1 if numbers and is_episode else None)
    found["episodes"] = _episodes(numbers)
    for name in ("episode_title", "edition", "release_group"):
        found[name] = _text(guess.get(name))
    suffix = ext if ext is not None else source.suffix
    found["ext"] = suffix.lstrip(".") or None
    if probe is not None:
        found["resolution"] = resolution_label(probe.video.width, probe.video.height)
        found["vcodec"] = probe.video.codec_name
        found["hdr"] = hdr_label(probe.video) or None
        audio = probe.of_type("audio")
        if audio:
            found["acodec"] = audio[0].codec_name
            found["channels"] = channel_label(audio[0].channels)
    return found


def kind(found: Mapping[str, object]) -> Literal["movie", "episode"]:
    """Which template a file takes: 'episode' when guessit said so or an episode number was found."""
    return "episode" if found.get("type") == "episode" or found.get("episode") is not None else "movie"


def resolution_label(width: int, height: int) -> str:
    """'2160p', '1440p', '1080p', '720p' by the long or short side (scope and 4:3 crops count), else '<h>p'."""
    long, short = max(width, height), min(width, height)
    for std_long, std_short, label in _RESOLUTIONS:
        if long >= std_long * 0.9 or short >= std_short * 0.9:
            return label
    return f"{short}p"


def hdr_label(video: VideoInfo) -> str:
    """'HDR10' for PQ (smpte2084), 'HLG' for arib-std-b67, '' for SDR or unknown."""
    return {"smpte2084": "HDR10", "arib-std-b67": "HLG"}.get(video.color_transfer or "", "")


def channel_label(channels: int | None) -> str | None:
    """6 -> '5.1', 2 -> '2.0', 8 -> '7.1'; None when unknown."""
    if not isinstance(channels, int) or channels <= 0:
        return None
    return _CHANNELS.get(channels, f"{channels}.0")


def check_template(template: str) -> None:
    """Refuse a template that could not render a safe relative path.

    Raises:
        InvalidPolicy: the template is empty, absolute, uses '\\' or '..', an unknown token, a bad
            format spec or unbalanced braces.
    """
    _parse(template)


def render(template: str, found: Mapping[str, object], *, root: Path) -> Path:
    """The path under ``root`` that ``template`` gives for these tokens, cleaned for every filesystem.

    Raises:
        InvalidPolicy: the template is unsafe (see check_template), the file name renders empty, the
            path is longer than MAX_PATH_BYTES, or the result is not inside ``root``.
    """
    components = _parse(template)
    parts: list[str] = []
    for position, fields in enumerate(components):
        last = position == len(components) - 1
        if last and len(fields) >= 2 and fields[-1] == ("", "ext", fields[-1][2]) and fields[-2][0].endswith("."):
            stem_fields = [*fields[:-2], (fields[-2][0][:-1], "", None)]
            stem = _clean(_assemble(stem_fields, found))
            ext = _clean(_assemble([("", "ext", fields[-1][2])], found)).replace(" ", "")
        else:
            stem, ext = _clean(_assemble(fields, found)), ""
        if not stem:
            if last:
                raise InvalidPolicy(f"library template {template!r} renders an empty file name",
                                    hint="put a token every file has, such as {title}, in the file name")
            continue  # a folder made only of missing tokens is left out
        parts.append(_fit(_unreserve(stem), ext))
    base = Path(os.path.abspath(root.expanduser()))
    path = base.joinpath(*parts)
    if len(os.fsencode(path)) > MAX_PATH_BYTES:
        raise InvalidPolicy(f"library path is {len(os.fsencode(path))} bytes, over the {MAX_PATH_BYTES} limit",
                            path=path, hint="use a shorter library root or template")
    if any(p in {"", ".", ".."} or "/" in p or "\\" in p for p in parts) or not _inside(path, base):
        raise InvalidPolicy(f"library template {template!r} renders a path outside the library root {base}",
                            path=path, hint="check for symbolic links under the root")
    return path


def unique_path(path: Path, exists: Callable[[Path], bool] = os.path.exists) -> Path:
    """``path`` if it is free, else 'Name (2).ext', 'Name (3).ext', ... (for on_exists: rename).

    Raises:
        InvalidPolicy: 10,000 names are taken.
    """
    if not exists(path):
        return path
    stem, ext = _split_ext(path.name)
    for n in range(2, 10_000):
        candidate = path.with_name(_fit(stem, ext, f" ({n})"))
        if not exists(candidate):
            return candidate
    raise InvalidPolicy("no free name found after 9,999 tries", path=path, hint="clean up the library folder")


def _parse(template: str) -> list[Component]:
    """Template -> components, each a list of (literal, token, spec); checks everything that can be."""
    if not isinstance(template, str) or not template.strip():
        raise InvalidPolicy("library template is empty", hint="e.g. 'Movies/{title} ({year})/{title}.{ext}'")
    if template.startswith(("/", "~")) or re.match(r"[A-Za-z]:", template):
        raise InvalidPolicy(f"library template {template!r} is absolute",
                            hint="templates are relative to library.root")
    if "\\" in template:
        raise InvalidPolicy(f"library template {template!r} contains '\\'", hint="separate folders with '/'")
    try:
        pieces = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise InvalidPolicy(f"library template {template!r}: {exc}",
                            hint="write a literal brace as '{{' or '}}'") from None
    components: list[Component] = [[]]
    for literal, name, spec, conversion in pieces:
        head, *rest = literal.split("/")
        components[-1].append((head, "", None))
        for text in rest:
            components.append([(text, "", None)])
        if name is None:
            continue
        _check_field(template, name, spec or "", conversion)
        components[-1].append(("", name, spec or None))
    for fields in components:
        skeleton = "".join(text + ("{}" if name else "") for text, name, _ in fields)
        if not skeleton.strip():
            raise InvalidPolicy(f"library template {template!r} has an empty folder name",
                                hint="remove the doubled or trailing '/'")
        if skeleton.strip() in {".", ".."}:
            raise InvalidPolicy(f"library template {template!r} contains {skeleton.strip()!r}",
                                hint="a template cannot climb out of library.root")
    # Drop the empty literals the split leaves, keeping (literal, token) pairs in order.
    return [[f for f in fields if f[0] or f[1]] for fields in components]


def _check_field(template: str, name: str, spec: str, conversion: str | None) -> None:
    if name not in TOKENS:
        close = difflib.get_close_matches(name, TOKENS, n=1)
        guess = f"did you mean {{{close[0]}}}? " if close else ""
        raise InvalidPolicy(f"library template {template!r}: unknown token {{{name}}}",
                            hint=f"{guess}known tokens: {', '.join(TOKENS)}")
    if conversion not in (None, "s"):
        raise InvalidPolicy(f"library template {template!r}: {{{name}!{conversion}}} is not supported",
                            hint="leave out the conversion")
    if "{" in spec or "}" in spec or _SLASHES.search(spec):
        raise InvalidPolicy(f"library template {template!r}: bad format spec {{{name}:{spec}}}",
                            hint="nested fields and slashes are not allowed in a format spec")
    try:
        format(TOKENS[name], spec)
    except (ValueError, TypeError) as exc:
        raise InvalidPolicy(f"library template {template!r}: bad format spec {{{name}:{spec}}}: {exc}",
                            hint="':02d' fits numbers (season, episode, year), not text") from None


def _assemble(fields: Component, found: Mapping[str, object]) -> str:
    out: list[str] = []
    for literal, name, spec in fields:
        out.append(literal)
        if not name:
            continue
        value = found.get(name)
        if isinstance(value, str):
            value = _sanitize(value)
        if value is None or value == "":
            out.append(_GONE)
            continue
        try:
            text = format(value, spec or "")
        except (ValueError, TypeError):
            text = str(value)  # a caller's token of another type than ours: its plain text
        out.append(_sanitize(text) or _GONE)
    return "".join(out)


def _sanitize(text: str) -> str:
    """Make a value safe inside one path component: no separators, no characters Windows refuses."""
    text = unicodedata.normalize("NFC", text)
    text = _CONTROL.sub(" ", text)
    text = _SLASHES.sub("-", text)
    text = text.replace(": ", " - ").replace(":", "-").replace('"', "'")
    text = re.sub(r"[<>|?*]", "", text)
    return " ".join(text.split())


def _clean(text: str) -> str:
    """Remove what missing tokens leave behind: empty brackets, dangling separators; then sanitize."""
    previous = None
    while text != previous:
        previous = text
        text = _EMPTY_BRACKETS.sub(_GONE, text)
        text = _AROUND_GONE.sub(lambda m: _join_around(m, len(m.string)), text)
    text = _sanitize(text.replace(_GONE, ""))
    previous = None
    while text != previous:
        previous = text
        text = _EMPTY_BRACKETS.sub("", text)
        text = " ".join(text.split()).strip(_SEPS)
    return text


def _join_around(match: re.Match[str], length: int) -> str:
    if match.start() == 0 or match.end() == length:
        return ""
    return match.group(1) or match.group(2)


def _unreserve(stem: str) -> str:
    """'CON' or 'con.part' -> 'CON_' / 'con_.part': Windows reserves these names before the first dot."""
    head, dot, tail = stem.partition(".")
    if head.rstrip(" ").upper() in _RESERVED:
        return f"{head.rstrip(' ')}_{dot}{tail}"
    return stem


def _fit(stem: str, ext: str, tail: str = "") -> str:
    """'stem<tail>.ext' in MAX_COMPONENT_BYTES of UTF-8: the stem is cut (at a word if one is near)."""
    suffix = tail + (f".{ext}" if ext else "")
    budget = MAX_COMPONENT_BYTES - len(suffix.encode())
    if budget < 16:
        raise InvalidPolicy(f"extension {ext!r} is too long for a file name", hint="use a short extension")
    if len(stem.encode()) <= budget:
        return stem + suffix
    cut = len(stem.encode()[:budget].decode(errors="ignore"))
    while cut > 0 and unicodedata.combining(stem[cut]):
        cut -= 1  # keep a base character with its accents
    space = stem.rfind(" ", 0, cut + 1)
    if space > cut * 2 // 3:
        cut = space
    return stem[:cut].rstrip(_SEPS) + suffix


def _split_ext(name: str) -> tuple[str, str]:
    stem, dot, ext = name.rpartition(".")
    if dot and stem and re.fullmatch(r"[A-Za-z0-9]{1,10}", ext):
        return stem, ext
    return name, ""


def _inside(path: Path, root: Path) -> bool:
    """Inside ``root`` both as written and after following symbolic links."""
    if path == root or not path.is_relative_to(root):
        return False
    resolved, real_root = path.resolve(), root.resolve()
    return resolved != real_root and resolved.is_relative_to(real_root)


def _text(value: object) -> str | None:
    values = _as_list(value)
    return str(values[0]) if values and values[0] not in (None, "") else None


def _number(value: object) -> int | None:
    values = [v for v in _as_list(value) if isinstance(v, int)]
    return values[0] if values else None


def _as_list(value: object) -> list[object]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def _episodes(numbers: list[int]) -> str | None:
    """[1] -> 'E01'; [1, 2, 3] -> 'E01-E03'; [1, 3] -> 'E01E03'."""
    if not numbers:
        return None
    if len(numbers) == 1:
        return f"E{numbers[0]:02d}"
    if numbers == list(range(numbers[0], numbers[0] + len(numbers))):
        return f"E{numbers[0]:02d}-E{numbers[-1]:02d}"
    return "".join(f"E{n:02d}" for n in numbers)
