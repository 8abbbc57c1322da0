"""audio: every audio stream of the source, once, for the whole file (never per chunk: that puts
a gap at every seam). With ``copy`` (the default) nothing is written: mux copies the streams
straight from the source, which is exact and costs no second copy."""

from __future__ import annotations

import os
from pathlib import Path

from mediatasks import runner
from mediatasks.models import AudioResult, AudioTrackAction, JobPlan


def audio_actions(plan: JobPlan) -> list[AudioTrackAction]:
    """What happens to each source audio track: a policy's plan, track by track, or
    ``--audio-codec`` for all of them."""
    opts = plan.spec.options
    if opts.audio_tracks is not None:
        return list(opts.audio_tracks)
    copy = opts.audio_codec == "copy"
    return [AudioTrackAction(index=s.index, action="copy" if copy else "transcode",
                             codec=s.codec_name if copy else opts.audio_codec,
                             reason="--audio-codec") for s in plan.source.of_type("audio")]


def kept_tracks(plan: JobPlan) -> list[AudioTrackAction]:
    """The source audio tracks that reach the output, in order."""
    return [t for t in audio_actions(plan) if t.action != "drop"]


def audio_args(plan: JobPlan, out: Path, *, ffmpeg: str = "ffmpeg") -> list[str] | None:
    """The argv that writes the output's audio to ``out``, or None when mux copies it from the
    source (every kept track copied as it is)."""
    kept = kept_tracks(plan)
    if all(t.action == "copy" for t in kept):
        return None
    args = [ffmpeg, "-nostdin", "-hide_banner", "-v", "error", "-y", "-copyts",
            *runner.source_input(plan.source.path)]
    for t in kept:
        args += ["-map", f"0:{t.index}"]
    for i, t in enumerate(kept):
        if t.action == "copy":
            args += [f"-c:a:{i}", "copy"]
        else:
            args += [f"-c:a:{i}", str(t.codec)]
            if t.bitrate:
                args += [f"-b:a:{i}", t.bitrate]
    return [*args, "-f", "matroska", str(out)]


def encode_audio(plan: JobPlan, job_dir: Path, *, ffmpeg: str = "ffmpeg") -> AudioResult:
    """Transcode the audio once into ``job_dir/audio.mka`` (or plan a copy at mux)."""
    streams = len(kept_tracks(plan))
    out = job_dir / "audio.mka"
    tmp = job_dir / f"audio.mka.{os.getpid()}.tmp"
    argv = audio_args(plan, tmp, ffmpeg=ffmpeg)
    if argv is None:
        return AudioResult(path=None, streams=streams)
    done = runner.run(argv, subject=plan.spec.input)
    tmp.replace(out)
    return AudioResult(path=str(out), streams=streams, seconds=done.seconds)


def check_audio_encoder(codec: str, bitrate: str | None, *, ffmpeg: str = "ffmpeg",
                        subject: str | None = None) -> None:
    """A tenth of a second of tone through the encoder, before any job runs.

    Raises:
        UnknownEncoder, InvalidOptions: the encoder or its bitrate cannot be used.
    """
    from mediatasks.errors import InvalidOptions, MediatasksError

    argv = [ffmpeg, "-nostdin", "-hide_banner", "-v", "error", "-f", "lavfi", "-i",
            "sine=sample_rate=48000:duration=0.1", "-c:a", codec,
            *(["-b:a", bitrate] if bitrate else []), "-f", "null", "-"]
    try:
        runner.run(argv, subject=subject, timeout=60)
    except InvalidOptions:
        raise
    except MediatasksError as exc:
        raise InvalidOptions(f"the audio encoder {codec} cannot run: {exc.message}",
                             path=subject, hint="check audio.transcode_to in the policy") from exc
