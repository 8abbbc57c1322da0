"""Which ``--video-opt`` an encoder may be given: its own (private) options, as ``ffmpeg -h
encoder=NAME`` lists them, and a few general ones; never one that reads or writes a file."""

from __future__ import annotations

import re
from functools import lru_cache

from mediatasks import runner
from mediatasks.errors import InvalidOptions

# General encoder options that only shape the stream.
GENERAL = frozenset({"b", "maxrate", "minrate", "bufsize", "g", "keyint_min", "bf", "refs",
                     "qmin", "qmax", "qdiff", "sc_threshold", "flags", "threads", "profile",
                     "level", "trellis", "me_range", "coder", "aq_strength", "rc_init_occupancy"})
# An option (or a key inside x264-params and the like) that names a file or a path.
_FILE = re.compile(r"file|stats|passlog|dump|csv|analysis|recon|qpfile|script|path",
                   re.IGNORECASE)
_OPTION_LINE = re.compile(r"^  -([A-Za-z0-9_\-]+)\s+<")


def help_args(encoder: str, *, ffmpeg: str = "ffmpeg") -> list[str]:
    return [ffmpeg, "-hide_banner", "-h", f"encoder={encoder}"]


def parse_private_options(help_text: str) -> frozenset[str]:
    """The option names in ``ffmpeg -h encoder=NAME``'s AVOptions sections."""
    return frozenset(m.group(1) for line in help_text.splitlines()
                     if (m := _OPTION_LINE.match(line)))


@lru_cache(maxsize=64)
def private_options(encoder: str, *, ffmpeg: str = "ffmpeg") -> frozenset[str]:
    done = runner.run(help_args(encoder, ffmpeg=ffmpeg), keep_stdout=True, check=False,
                      timeout=30)
    return parse_private_options(done.stdout)


def check_video_opts(encoder: str, pairs: tuple[tuple[str, str], ...],
                     private: frozenset[str]) -> None:
    """Raises InvalidOptions for the first option that is not the encoder's own or general, or
    that names a file."""
    for key, value in pairs:
        name = key.lstrip("-")
        if name not in private and name not in GENERAL:
            raise InvalidOptions(f"--video-opt {name}: not an option of encoder {encoder}",
                                 hint=f"only the encoder's own options ('ffmpeg -h "
                                      f"encoder={encoder}') and {', '.join(sorted(GENERAL))}")
        if _FILE.search(name):
            raise InvalidOptions(f"--video-opt {name}: options that read or write files are not "
                                 "allowed", hint="leave it out")
        if name.endswith(("-params", "opts")):
            for item in re.split(r"[:,]", value):
                inner, _, inner_value = item.partition("=")
                if _FILE.search(inner) or "/" in inner_value or "\\" in inner_value:
                    raise InvalidOptions(f"--video-opt {name}: '{inner}' reads or writes a file",
                                         hint=f"leave '{inner}' out of {name}")


def check_options(encoder: str, pairs: tuple[tuple[str, str], ...], *,
                  ffmpeg: str = "ffmpeg") -> None:
    """``check_video_opts`` against what this ffmpeg's encoder takes."""
    if pairs:
        check_video_opts(encoder, pairs, private_options(encoder, ffmpeg=ffmpeg))
