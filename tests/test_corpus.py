"""Real-world samples from ../shared/corpus: every file comes out frame-exact or is refused with a
clear error naming it. A file ffmpeg decodes cleanly must not be refused."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from conftest import CORPUS, run_job

from mediatasks import profiles
from mediatasks.errors import MediatasksError
from mediatasks.jobstate import JobState
from mediatasks.models import EncodeOptions, JobSpec
from mediatasks.steps import probe

pytestmark = [pytest.mark.corpus, pytest.mark.cluster]

# A selection covering each kind of trouble runs by default; MEDIATASKS_FULL_CORPUS=1 (or
# `make corpus`) runs every file.
SELECTION = [
    "Vanilagy__mediabunny/edts.mp4",  # edit list, odd SAR, B-frames
    "Vanilagy__mediabunny/hevc.ts",  # HEVC, one GOP, non-zero start
    "Vanilagy__mediabunny/no-aud.ts",  # decode errors: refused
    "androidx__media/mkv/sample_with_ass_subtitles.mkv",  # ASS subtitles
    "androidx__media/mkv/sample_with_chapters.mkv",  # chapters, 4:4:4
    "androidx__media/mkv/sample_with_opus_audio.mkv",  # audio only: refused
    "androidx__media/mp4/pixel7_videoOnly_cleaned.mp4",  # rotation, VFR
    "androidx__media/mp4/sample_malformed_free_box.mp4",  # unreadable: refused
    "androidx__media/mp4/sample_vvc.mp4",  # codec this ffmpeg cannot decode: refused
    "bbgdzxng1__interlace-detection-test-patterns/bt601-525_480_telecined_hard.ts",  # interlaced
    "legokichi__ts-ebml/firefox53.webm",  # VFR, no duration, unknown-size clusters
    "membraneframework-labs__kim_mpeg_ts/rollover.ts",  # 2^33 timestamp wrap
    "moi15moi__FontCollector/test video subs + 1 font.mkv",  # font attachment
    "sindresorhus__file-type/fixture-raw.mts",  # field-coded H.264: one chunk
    "sindresorhus__file-type/fixture2.mpg",  # packets without pts: one chunk
    "tsduck__tsduck-test/test-072.ts",  # container start is not the video's
]


def _files() -> list[Path]:
    if not CORPUS.is_dir():
        return []
    if os.environ.get("MEDIATASKS_FULL_CORPUS"):
        return sorted(p for p in CORPUS.rglob("*") if p.is_file() and p.name != "README.md")
    return [CORPUS / name for name in SELECTION if (CORPUS / name).is_file()]


FILES = _files()


def decodes_cleanly(path: Path) -> bool:
    done = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-f", "null",
                           "-"], capture_output=True, text=True, timeout=120)
    return done.returncode == 0 and not done.stderr.strip()


def video_frames(path: Path) -> int:
    """Video frames ffmpeg decodes from the file (0 when there is nothing to decode)."""
    done = subprocess.run(["ffprobe", "-v", "quiet", "-select_streams", "v", "-count_frames",
                           "-show_entries", "stream=nb_read_frames", "-of", "csv=p=0", str(path)],
                          capture_output=True, text=True, timeout=300)
    return sum(int(x) for x in done.stdout.replace(",", " ").split() if x.isdigit())


def hashes(path: Path, stream: int, pix_fmt: str | None) -> list[str]:
    """The displayed frames (ffmpeg's default autorotation applied on both sides: an output in
    Matroska holds the pixels turned, one in MP4 the matrix)."""
    argv = ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-map", f"0:{stream}",
            "-fps_mode", "passthrough"]
    if pix_fmt:
        argv += ["-pix_fmt", pix_fmt]
    done = subprocess.run([*argv, "-f", "framemd5", "-"], capture_output=True, text=True,
                          timeout=300)
    return [line.rsplit(",", 1)[1].strip() for line in done.stdout.splitlines()
            if line and not line.startswith("#")]


def out_pix_fmt(path: Path) -> str:
    # JSON, not CSV: a stream with side data (a rotation) adds fields to a CSV line.
    done = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                           "stream=pix_fmt", "-of", "json", str(path)], capture_output=True,
                          text=True, check=True)
    return str((json.loads(done.stdout).get("streams") or [{}])[0].get("pix_fmt", ""))


def source_pix_fmt(source: Any, out: Path) -> str | None:
    """The format to read the source in for the comparison: none when the output holds the
    source's planes as they are (a yuvj* source is encoded as its yuv* twin, full range)."""
    want = out_pix_fmt(out)
    same = {source.video.pix_fmt, profiles.FULL_RANGE_FORMATS.get(source.video.pix_fmt or "")}
    return None if want in same else want


# Files that are known not to come through yet, with the reason (strict: fixing one fails here).
KNOWN: dict[str, str] = {}


def _param(p: Path) -> object:
    rel = str(p.relative_to(CORPUS))
    marks = [pytest.mark.xfail(reason=KNOWN[rel], strict=True)] if rel in KNOWN else []
    return pytest.param(p, id=rel, marks=marks)


@pytest.mark.skipif(not FILES, reason=f"no corpus at {CORPUS} (set MEDIATASKS_CORPUS)")
@pytest.mark.parametrize("path", [_param(p) for p in FILES])
def test_corpus_file_is_frame_exact_or_refused_clearly(cluster: Any, path: Path,
                                                       tmp_path: Path) -> None:
    out = tmp_path / "out.mkv"
    try:
        source = probe.probe(path)
    except MediatasksError as exc:
        # Refused before any job: the message names the file and says why, on one line.
        assert str(path) in str(exc) and "\n" not in str(exc)
        # Refusing is right for a damaged file, or one with no video frame to decode.
        assert not decodes_cleanly(path) or video_frames(path) == 0, str(exc)
        return
    spec = JobSpec(job_id=uuid.uuid4().hex, input=str(path), output=str(out),
                   options=EncodeOptions(video_codec="ffv1", chunk_seconds=1.0))
    try:
        result = run_job(cluster, spec, timeout=280)
    except Exception:
        message = JobState(cluster.backend, spec.job_id).error() or ""
        assert str(path) in message and "\n" not in message and "internal error" not in message, \
            message
        assert not out.exists()
        assert not decodes_cleanly(path) or video_frames(path) == 0, \
            f"a cleanly decoding file was refused: {message}"
        return
    assert result["frames_in"] == result["frames_out"]
    want = hashes(path, source.video.index, source_pix_fmt(source, out))
    assert hashes(out, 0, None) == want


@pytest.mark.skipif(not FILES, reason=f"no corpus at {CORPUS} (set MEDIATASKS_CORPUS)")
def test_a_policy_batch_over_the_corpus_remuxes_or_encodes_every_readable_file(
        tmp_path: Path) -> None:
    """The policy paths on real media, one batch: a file that can be read is remuxed (a compliant
    codec without hidden frames: packets copied) or encoded, and always verified; the rest are
    refused up front in one line each."""
    import json
    import sys

    policy = tmp_path / "policy.yaml"
    policy.write_text("video:\n  codec: libx264\n  preset: ultrafast\n"
                      "  skip_if_codec: [h264, hevc, av1, vp9, vp8, mpeg2video]\n"
                      "audio:\n  keep: [aac, ac3, eac3, flac, opus, mp3, vorbis]\n"
                      "  transcode_to: {codec: aac, bitrate: 128k}\n")
    out = tmp_path / "out"
    out.mkdir()
    env = dict(os.environ, MEDIATASKS_DATABASE_URL=f"sqlite:///{tmp_path / 'history.sqlite'}")
    done = subprocess.run([str(Path(sys.executable).with_name("mediatasks")), "run",
                           *map(str, FILES), "--policy", str(policy), "--output-dir", str(out),
                           "--json"], capture_output=True, text=True, env=env, timeout=1200,
                          stdin=subprocess.DEVNULL)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    files = {Path(f["source"]).relative_to(CORPUS).as_posix(): f for f in result["files"]}
    assert len(files) == len(FILES)
    for rel, f in files.items():
        if f["action"] is None:  # refused before anything ran
            assert f["status"] == "failed" and Path(rel).name in f["error"], (rel, f)
            assert "\n" not in f["error"] and "Traceback" not in f["error"]
        else:
            assert f["status"] == "succeeded", (rel, f)
    actions = {f["action"] for f in files.values()}
    assert {"remux", "transcode"} <= actions, actions
