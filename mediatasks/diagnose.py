"""Turn a failed command's exit status and stderr tail into one clear, classified error."""

from __future__ import annotations

import re
import signal
from collections.abc import Sequence
from pathlib import Path

from mediatasks.errors import (
    DiskFull,
    FfmpegFailed,
    HardwareUnavailable,
    InvalidOptions,
    MediatasksError,
    ProcessKilled,
    UndecodableMedia,
    UnknownEncoder,
)

# (pattern in stderr, error class, message, hint). First match wins; order matters.
_RULES: list[tuple[re.Pattern[str], type[MediatasksError], str, str | None]] = [
    (re.compile(r"No space left on device", re.I), DiskFull,
     "no space left on device", "free space in the work directory or at the output"),
    (re.compile(r"Unknown encoder '([^']+)'"), UnknownEncoder,
     "unknown encoder '{0}'", "run 'ffmpeg -hide_banner -encoders' to list the encoders of this ffmpeg"),
    (re.compile(r"(width|height) not divisible by (\d+)"), InvalidOptions,
     "the encoder needs the {0} divisible by {1}", "use a lossless codec such as ffv1, or another encoder"),
    (re.compile(r"Error setting option (\S+) to value (\S+)"), InvalidOptions,
     "invalid value '{1}' for encoder option '{0}'", "check the option with 'ffmpeg -h encoder=NAME'"),
    (re.compile(r"Unrecognized option '([^']+)'"), InvalidOptions,
     "unknown option '{0}'", "check --video-opt names with 'ffmpeg -h encoder=NAME'"),
    (re.compile(r"Invalid (?:preset|tune|profile)[^\n]*", re.I), InvalidOptions,
     "{m}", "check --preset with 'ffmpeg -h encoder=NAME'"),
    (re.compile(r"Error parsing option[^\n]*|Unable to parse option[^\n]*", re.I), InvalidOptions,
     "{m}", "check --video-opt values with 'ffmpeg -h encoder=NAME'"),
    (re.compile(r"moov atom not found"), UndecodableMedia,
     "the MP4/MOV index (moov atom) is missing: the file is truncated or still being written",
     "re-download or re-record the file"),
    (re.compile(r"Cannot load libcuda[^\n]*|No NVENC capable devices found|OpenEncodeSessionEx failed"
                r"[^\n]*|Error initializing an internal MFX session[^\n]*|Failed to (?:initialise|create)"
                r" (?:VAAPI|a VAAPI)[^\n]*|No VA display found[^\n]*|Cannot open the DRM device[^\n]*|"
                r"Failed to inject frame into filter network: Function not implemented|"
                r"Device creation failed[^\n]*|CUDA_ERROR[^\n]*", re.I), HardwareUnavailable,
     "the hardware encoder cannot be opened here ({m})", None),
    (re.compile(r"Invalid data found when processing input"), UndecodableMedia,
     "not a media file ffmpeg can read (invalid data)", "check that the file is complete and really a video"),
    (re.compile(r"No such file or directory"), UndecodableMedia,
     "file not found", None),
    (re.compile(r"Permission denied"), InvalidOptions,
     "permission denied", "check the file and directory permissions"),
    (re.compile(r"Decoder \(codec (\w+)\) not found|Unsupported codec|codec not currently supported", re.I),
     UndecodableMedia, "this ffmpeg cannot decode the video ({m})", "install an ffmpeg build with that decoder"),
    (re.compile(r"Could not find tag for codec (\w+) in stream #(\d+)[^\n]*"), InvalidOptions,
     "the output container cannot hold codec {0} (stream #{1})", "choose another output extension, e.g. .mkv"),
    (re.compile(r"Error (?:initializing output stream|while opening encoder)[^\n]*"), InvalidOptions,
     "the encoder could not be opened with these options", "check --preset, --crf and --video-opt"),
]


def _interesting(lines: Sequence[str]) -> list[str]:
    """The stderr lines that matter: drop banners, progress and blank lines."""
    keep = []
    for line in lines:
        text = line.strip()
        if not text or text.startswith(("frame=", "size=", "Press [q]", "Conversion failed")):
            continue
        keep.append(text)
    return keep


def out_of_space(stderr_tail: Sequence[str]) -> bool:
    """Whether a command said it ran out of space (ffmpeg may still exit 0)."""
    return any("No space left on device" in line for line in stderr_tail)


def decode_errors(stderr_tail: Sequence[str], decoder: str) -> list[str]:
    """The lines of a finished ffmpeg's stderr (run with ``-v error``) in which the decoder
    reports damaged input: its own log lines (``[h264 @ 0x…] …``) and ffmpeg's
    "Error while decoding"."""
    found = []
    for line in stderr_tail:
        text = line.strip()
        if text.startswith(f"[{decoder} @") or "error while decoding" in text.lower():
            found.append(text)
    return found


def failure_for(
    argv: Sequence[str],
    returncode: int,
    stderr_tail: Sequence[str],
    *,
    subject: str | Path | None = None,
    reason: str | None = None,
) -> MediatasksError:
    """Classify a failed command: transient (retry) or permanent, with a message naming the fix."""
    tool = Path(argv[0]).name if argv else "command"
    text = "\n".join(stderr_tail)
    if reason is not None:
        # Killed by us for a stall or a time-out: worth another try.
        return ProcessKilled(f"{tool} {reason}", path=subject)
    for pattern, cls, template, hint in _RULES:
        m = pattern.search(text)
        if m:
            message = template.format(*m.groups(), m=m.group(0))
            if cls is DiskFull and len(argv) > 1 and not argv[-1].startswith("-"):
                # ffmpeg's last argument is the file it writes: say where space is missing.
                where = Path(argv[-1].removeprefix("file:")).parent
                hint = f"free space in {where}, or point MEDIATASKS_WORK_DIR elsewhere"
            return cls(f"{tool}: {message}", path=subject, hint=hint)
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = str(-returncode)
        return ProcessKilled(f"{tool} was killed by {name}", path=subject)
    lines = _interesting(stderr_tail)
    detail = "; ".join(lines[-3:]) if lines else "no error output"
    return FfmpegFailed(f"{tool} failed (exit {returncode}): {detail}", path=subject)
