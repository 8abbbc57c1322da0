"""audio: every audio stream of the source, once, for the whole file (never per chunk: that puts
a gap at every seam). With ``copy`` (the default) nothing is written: mux copies the streams
straight from the source, which is exact and costs no second copy."""

from __future__ import annotations

from pathlib import Path

import ffmpeg as ffmpeg_python

from mediatasks import runner
from mediatasks.models import AudioResult, JobPlan


def audio_args(plan: JobPlan, out: Path, *, ffmpeg: str = "ffmpeg") -> list[str] | None:
    """The argv that transcodes all audio to ``out``, or None when audio is copied at mux."""
    streams = plan.source.of_type("audio")
    if plan.spec.options.audio_codec == "copy" or not streams:
        return None
    inp = ffmpeg_python.input(runner.media_url(plan.source.path))
    compiled: list[str] = ffmpeg_python.output(
        *[inp[str(s.index)] for s in streams], str(out),
        acodec=plan.spec.options.audio_codec, f="matroska").get_args()
    return [ffmpeg, "-nostdin", "-hide_banner", "-v", "error", "-y", "-copyts", *compiled]


def encode_audio(plan: JobPlan, job_dir: Path, *, ffmpeg: str = "ffmpeg") -> AudioResult:
    """Transcode the audio once into ``job_dir/audio.mka`` (or plan a copy at mux)."""
    streams = len(plan.source.of_type("audio"))
    out = job_dir / "audio.mka"
    tmp = job_dir / "audio.mka.tmp"
    argv = audio_args(plan, tmp, ffmpeg=ffmpeg)
    if argv is None:
        return AudioResult(path=None, streams=streams)
    done = runner.run(argv, subject=plan.spec.input)
    tmp.replace(out)
    return AudioResult(path=str(out), streams=streams, seconds=done.seconds)
