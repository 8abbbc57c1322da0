"""Which hardware encoders a machine can really open: a one-frame test encode each.

A GPU worker runs this at start-up and reports the result (log and result backend), so an
encoder that cannot work there is known before a job is routed to it.
"""

from __future__ import annotations

import logging

from mediatasks import runner
from mediatasks.errors import MediatasksError
from mediatasks.profiles import device_args, is_hardware, upload_filters

log = logging.getLogger(__name__)


def encoders_args(ffmpeg: str = "ffmpeg") -> list[str]:
    return [ffmpeg, "-hide_banner", "-nostdin", "-encoders"]


def hardware_encoders(ffmpeg: str = "ffmpeg") -> list[str]:
    """The hardware video encoders this ffmpeg build has (not that the machine can use them)."""
    done = runner.run(encoders_args(ffmpeg), keep_stdout=True, timeout=60)
    names = []
    for line in done.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].startswith("V") and is_hardware(parts[1]):
            names.append(parts[1])
    return names


def test_args(encoder: str, ffmpeg: str = "ffmpeg") -> list[str]:
    """A one-frame encode with ``encoder`` (VAAPI needs its device and an upload filter)."""
    argv = [ffmpeg, "-hide_banner", "-nostdin", "-v", "error", *device_args(encoder)]
    steps = upload_filters(encoder) or [("format", ("yuv420p",))]
    vf = ",".join(name + (f"={':'.join(args)}" if args else "") for name, args in steps)
    return [*argv, "-f", "lavfi", "-i", "testsrc2=size=256x144:rate=25", "-frames:v", "1",
            "-vf", vf, "-c:v", encoder, "-f", "null", "-"]


def usable(encoder: str, ffmpeg: str = "ffmpeg") -> str | None:
    """None if ``encoder`` works here, else the reason it does not."""
    try:
        runner.run(test_args(encoder, ffmpeg), timeout=30)
    except MediatasksError as exc:
        return exc.detail
    return None


def survey(ffmpeg: str = "ffmpeg") -> dict[str, str | None]:
    """Every hardware encoder of this build -> None (works) or why it does not."""
    return {name: usable(name, ffmpeg) for name in hardware_encoders(ffmpeg)}
