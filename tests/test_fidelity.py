"""ffmpeg tier: files from phones and editors go through the steps (probe, plan, each chunk's
encode, concat, mux, verify, in this process) and come out with the frames ffmpeg shows for them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from conftest import ffmpeg

from mediatasks.models import EncodeOptions, JobPlan, JobSpec
from mediatasks.steps import concat, encode, mux, plan, probe, verify
from mediatasks.steps.audio import encode_audio

LAVFI = ["-f", "lavfi", "-i", "testsrc2=size=96x64:rate=25"]
X264 = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]


def shown(path: Path, *, autorotate: bool = False) -> list[str]:
    """MD5 of every frame ffmpeg presents for ``path`` (edit list applied), in order; with
    ``autorotate``, as displayed (ffmpeg's default rotation by the display matrix)."""
    argv = ["ffmpeg", "-nostdin", "-v", "error", *([] if autorotate else ["-noautorotate"]),
            "-i", str(path), "-map", "0:v:0", "-fps_mode", "passthrough"]
    done = subprocess.run([*argv, "-f", "framemd5", "-"], check=True, capture_output=True,
                          text=True)
    return [line.rsplit(",", 1)[1].strip() for line in done.stdout.splitlines()
            if line and not line.startswith("#")]


def shown_times(path: Path) -> list[float]:
    """Every presented frame's time in seconds, relative to the first."""
    done = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                           "frame=best_effort_timestamp_time", "-of", "csv=p=0", str(path)],
                          check=True, capture_output=True, text=True)
    times = [float(x.strip(",")) for x in done.stdout.split() if x.strip(",") not in {"", "N/A"}]
    return [t - times[0] for t in times]


def round_trip(src: Path, out: Path, *, chunk_seconds: float = 1.0, video_codec: str = "ffv1",
               **options: Any) -> JobPlan:
    """The pipeline's steps in order, in this process, as the Celery tasks call them."""
    job_dir = out.parent / f"job-{uuid.uuid4().hex[:8]}"
    spec = JobSpec(job_id=uuid.uuid4().hex, input=str(src), output=str(out),
                   options=EncodeOptions(video_codec=video_codec, chunk_seconds=chunk_seconds,
                                         **options))
    source = probe.probe(src)
    frame_pts = probe.frame_timestamps(src, source.video.index)
    jp = plan.plan_job(source, spec, chunk_seconds=chunk_seconds, min_chunk_frames=5,
                       frame_pts=frame_pts)
    plan.save_plan(jp, job_dir)
    chunks = [encode.encode_chunk(jp, c, job_dir) for c in jp.chunks]
    video = concat.concat(jp, chunks, job_dir)
    mux.mux(jp, Path(video.path), encode_audio(jp, job_dir), out)
    verify.verify(jp, out, frames_encoded=video.frames, source_pts=frame_pts)
    shutil.rmtree(job_dir)
    return jp


@pytest.fixture(scope="module")
def edited(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """MP4/MOV files with edit lists, made the ways ffmpeg writes them."""
    d = tmp_path_factory.mktemp("edited")
    gop50 = [*X264, "-g", "50", "-bf", "3"]
    ffmpeg(*LAVFI, "-t", "4", *gop50, str(d / "bframes.mp4"))
    ffmpeg(*LAVFI, "-t", "4", "-c:v", "libx265", "-preset", "ultrafast", "-g", "50",
           "-x265-params", "log-level=error:bframes=3", "-pix_fmt", "yuv420p",
           str(d / "hevc.mov"))
    out = {
        "bframes": d / "bframes.mp4",  # a composition shift only
        "cut": d / "cut.mp4",  # the keyframe before the cut and 32 frames hidden
        "cut-hevc": d / "cut-hevc.mov",
        "late": d / "late.mp4",  # an empty edit: the video starts 0.5 s in
        "negative": d / "negative.mp4",  # a negative start: the first 0.4 s hidden
    }
    ffmpeg("-ss", "1.3", "-i", str(d / "bframes.mp4"), "-c", "copy", str(out["cut"]))
    ffmpeg("-ss", "1.3", "-i", str(d / "hevc.mov"), "-c", "copy", str(out["cut-hevc"]))
    ffmpeg("-i", str(d / "bframes.mp4"), "-c", "copy", "-output_ts_offset", "0.5",
           str(out["late"]))
    ffmpeg("-itsoffset", "-0.4", "-i", str(d / "bframes.mp4"), "-c", "copy",
           str(out["negative"]))
    return out


@pytest.mark.parametrize("chunk_seconds", [0.3, 1.0])
@pytest.mark.parametrize("name", ["bframes", "cut", "cut-hevc", "late", "negative"])
def test_a_file_with_an_edit_list_keeps_exactly_the_frames_ffmpeg_shows(
        edited: dict[str, Path], tmp_path: Path, name: str, chunk_seconds: float) -> None:
    src = edited[name]
    out = tmp_path / "out.mkv"
    jp = round_trip(src, out, chunk_seconds=chunk_seconds)
    want = shown(src)
    assert jp.frame_count == len(want) and not jp.warnings
    assert shown(out) == want
    assert shown_times(out) == pytest.approx(shown_times(src), abs=0.0015)


def test_chunks_that_start_among_frames_whose_keyframe_is_hidden_decode_from_it(
        edited: dict[str, Path], tmp_path: Path) -> None:
    jp = round_trip(edited["cut"], tmp_path / "out.mkv", chunk_seconds=0.3)
    v = jp.source.video
    assert v.discarded_packets == 33 and v.skipped_frames == 0 and v.frame_count == 67
    first_key = v.keyframes[0].index
    assert first_key == 17
    inside = [c for c in jp.chunks if 0 < c.start_frame < first_key]
    assert inside and all(c.seek_pts is None for c in inside)
    assert shown(tmp_path / "out.mkv") == shown(edited["cut"])


def test_a_cut_file_keeps_its_frames_through_mp4_with_b_frames(
        edited: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    round_trip(edited["cut"], out, chunk_seconds=0.5, video_codec="libx264", crf=0,
               video_opts=(("bf", "3"),))
    assert shown(out) == shown(edited["cut"])
    assert shown_times(out) == pytest.approx(shown_times(edited["cut"]), abs=0.0015)


def _libavutil_names() -> dict[str, set[str]]:
    """Every name this ffmpeg's ffprobe can print for each color property (libavutil's tables)."""
    import ctypes
    import ctypes.util

    found = ctypes.util.find_library("avutil")
    if found is None:
        pytest.skip("libavutil not found")
    lib = ctypes.CDLL(found)
    names: dict[str, set[str]] = {}
    for option, fn in (("color_primaries", "av_color_primaries_name"),
                       ("color_trc", "av_color_transfer_name"),
                       ("colorspace", "av_color_space_name"),
                       ("color_range", "av_color_range_name")):
        f = getattr(lib, fn)
        f.restype, f.argtypes = ctypes.c_char_p, [ctypes.c_int]
        names[option] = {v.decode() for i in range(256) if (v := f(i))}
    return names


def test_every_color_value_ffprobe_can_print_is_accepted_by_the_encoder_and_read_back(
        tmp_path: Path) -> None:
    from mediatasks.profiles import COLOR_NAMES

    probed = {"color_primaries": "color_primaries", "color_trc": "color_transfer",
              "colorspace": "color_space", "color_range": "color_range"}
    cases = [(option, name) for option, names in _libavutil_names().items()
             for name in sorted(names - {"unknown", "reserved"})]
    assert [c for c in cases if c[1] not in COLOR_NAMES[c[0]]] == []
    outputs: list[str] = []  # one ffmpeg, one output per value
    for option, name in cases:
        outputs += ["-map", "0", "-frames:v", "1", "-c:v", "ffv1", f"-{option}",
                    COLOR_NAMES[option][name],
                    str(tmp_path / f"{option}-{name}.mkv")]
    ffmpeg("-f", "lavfi", "-i", "color=s=16x16:d=0.04", *outputs)
    for option, name in cases:
        done = subprocess.run(["ffprobe", "-v", "error", "-show_entries",
                               f"stream={probed[option]}", "-of", "csv=p=0",
                               str(tmp_path / f"{option}-{name}.mkv")],
                              check=True, capture_output=True, text=True)
        assert done.stdout.strip() == name, (option, name)


def test_an_mpeg2_source_with_a_bt470bg_transfer_is_encoded_with_its_tags(tmp_path: Path) -> None:
    src = tmp_path / "pal.mpg"
    ffmpeg(*LAVFI, "-t", "2", "-c:v", "mpeg2video", "-g", "12", "-color_primaries", "bt470bg",
           "-color_trc", "gamma28", "-colorspace", "bt470bg", "-color_range", "tv", str(src))
    assert probe.probe(src).video.color_transfer == "bt470bg"
    out = tmp_path / "out.mkv"
    jp = round_trip(src, out, chunk_seconds=0.5, video_codec="libx264", crf=20)
    assert not jp.warnings
    v = probe.probe(out).video
    assert (v.color_primaries, v.color_transfer, v.color_space, v.color_range) == (
        "bt470bg", "bt470bg", "bt470bg", "tv")


@pytest.fixture(scope="module")
def full_range(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Full-range sources: an Android-style yuvj420p H.264, and yuv420p tagged pc."""
    d = tmp_path_factory.mktemp("full")
    out = {"yuvj420p": d / "camera.mp4", "pc": d / "pc.mkv"}
    ffmpeg(*LAVFI, "-t", "2", "-c:v", "libx264", "-preset", "ultrafast", "-g", "25",
           "-pix_fmt", "yuvj420p", str(out["yuvj420p"]))
    ffmpeg(*LAVFI, "-t", "2", "-c:v", "ffv1", "-g", "25", "-pix_fmt", "yuv420p",
           "-color_range", "pc", str(out["pc"]))
    return out


LOSSLESS: dict[str, dict[str, Any]] = {
    "ffv1": {},
    "libx264": {"crf": 0},
    "libx265": {"video_opts": (("x265-params", "lossless=1:log-level=error"),)},
    "libvpx-vp9": {"video_opts": (("lossless", "1"), ("deadline", "realtime"),
                                  ("cpu-used", "8"))},
}


@pytest.mark.parametrize("codec", sorted(LOSSLESS))
@pytest.mark.parametrize("kind", ["yuvj420p", "pc"])
def test_a_full_range_source_keeps_its_values_and_its_range_tag(
        full_range: dict[str, Path], tmp_path: Path, kind: str, codec: str) -> None:
    src = full_range[kind]
    out = tmp_path / ("out.webm" if codec == "libvpx-vp9" else "out.mkv")
    round_trip(src, out, chunk_seconds=0.5, video_codec=codec, **LOSSLESS[codec])
    assert probe.probe(out).video.color_range == "pc"
    assert shown(out) == shown(src)  # the decoded planes, bit for bit


def _luma_range(path: Path) -> tuple[float, float]:
    done = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-vf",
                           "signalstats,metadata=print:file=-", "-frames:v", "1", "-f", "null",
                           "-"], check=True, capture_output=True, text=True)
    stats = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    return float(stats["lavfi.signalstats.YMIN"]), float(stats["lavfi.signalstats.YMAX"])


def test_a_lossy_encode_of_a_full_range_source_spans_the_same_values(
        full_range: dict[str, Path], tmp_path: Path) -> None:
    src = full_range["yuvj420p"]
    out = tmp_path / "out.mkv"
    round_trip(src, out, chunk_seconds=0.5, video_codec="libx264", crf=18)
    (lo, hi), (src_lo, src_hi) = _luma_range(out), _luma_range(src)
    assert abs(lo - src_lo) <= 4 and abs(hi - src_hi) <= 4


ONE = 65536
MATRICES = {"90": (0, ONE, 0, -ONE, 0, 0, 0, 0, 1 << 30),
            "-90": (0, -ONE, 0, ONE, 0, 0, 0, 0, 1 << 30),
            "180": (-ONE, 0, 0, 0, -ONE, 0, 0, 0, 1 << 30)}
OUTPUTS = {"mkv": ("ffv1", {}), "webm": ("libvpx-vp9", LOSSLESS["libvpx-vp9"]),
           "mp4": ("libx264", {"crf": 0})}


@pytest.fixture(scope="module")
def turned(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Sources whose display matrix turns the picture (as a phone held upright writes it)."""
    from mediatasks.isobmff import set_display_matrix

    d = tmp_path_factory.mktemp("turned")
    out = {}
    for name, matrix in MATRICES.items():
        out[name] = d / f"turned{name}.mp4"
        ffmpeg(*LAVFI, "-t", "2", *X264, "-g", "25", str(out[name]))
        set_display_matrix(out[name], matrix)
    return out


@pytest.mark.parametrize("ext", sorted(OUTPUTS))
@pytest.mark.parametrize("angle", sorted(MATRICES))
def test_a_turned_source_is_displayed_the_same_in_every_container(
        turned: dict[str, Path], tmp_path: Path, angle: str, ext: str) -> None:
    src = turned[angle]
    codec, options = OUTPUTS[ext]
    out = tmp_path / f"out.{ext}"
    jp = round_trip(src, out, chunk_seconds=0.5, video_codec=codec, **options)
    assert bool(jp.display_filters) == (ext != "mp4")
    assert shown(out, autorotate=True) == shown(src, autorotate=True)


def test_a_phone_recording_with_rotation_and_an_edit_list_keeps_its_displayed_frames(
        tmp_path: Path) -> None:
    """10-bit HEVC HLG with B-frames, turned 90 degrees, cut with -c copy (an edit list)."""
    whole = tmp_path / "whole.mov"
    ffmpeg(*LAVFI, "-t", "3", "-c:v", "libx265", "-preset", "ultrafast", "-g", "30",
           "-x265-params", "log-level=error:bframes=3", "-pix_fmt", "yuv420p10le",
           "-color_primaries", "bt2020", "-color_trc", "arib-std-b67", "-colorspace", "bt2020nc",
           "-metadata:s:v", "rotate=90", str(whole))
    src = tmp_path / "phone.mov"
    ffmpeg("-ss", "0.7", "-i", str(whole), "-c", "copy", "-metadata:s:v", "rotate=90", str(src))
    v = probe.probe(src).video
    assert v.rotation and v.discarded_packets > 0
    for ext, codec, options in (("mkv", "ffv1", {}), ("mov", "libx265", LOSSLESS["libx265"])):
        out = tmp_path / f"out.{ext}"
        jp = round_trip(src, out, chunk_seconds=0.3, video_codec=codec, **options)
        assert jp.frame_count == len(shown(src))
        assert shown(out, autorotate=True) == shown(src, autorotate=True)
        o = probe.probe(out).video
        assert (o.color_transfer, o.color_primaries) == ("arib-std-b67", "bt2020")


@pytest.mark.parametrize("name", ["cut", "negative"])
def test_mediatasks_run_keeps_every_frame_of_a_file_cut_with_an_edit_list(
        edited: dict[str, Path], tmp_path: Path, name: str) -> None:
    """End to end, as a user runs it: the private broker, a real worker, the whole canvas."""
    out = tmp_path / "out.mkv"
    tmp = tmp_path / "t"
    tmp.mkdir()
    done = subprocess.run([str(Path(sys.executable).with_name("mediatasks")), "run",
                           str(edited[name]), "-o", str(out), "--video-codec", "ffv1",
                           "--chunk-seconds", "0.5", "--json"], capture_output=True, text=True,
                          timeout=240, stdin=subprocess.DEVNULL, env=dict(os.environ, TMPDIR=str(tmp)))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    want = shown(edited[name])
    assert result["frames_in"] == result["frames_out"] == len(want)
    assert result["warnings"] == []
    assert shown(out) == want


def test_a_full_range_source_keeps_its_range_through_a_chroma_conversion_the_encoder_needs(
        tmp_path: Path) -> None:
    src = tmp_path / "pc422.mkv"  # libvpx (VP8) takes 4:2:0 only
    ffmpeg(*LAVFI, "-t", "1", "-c:v", "ffv1", "-pix_fmt", "yuv422p", "-color_range", "pc",
           str(src))
    out = tmp_path / "out.webm"
    round_trip(src, out, chunk_seconds=0.5, video_codec="libvpx", crf=4,
               video_opts=(("b:v", "2M"),))
    assert probe.probe(out).video.color_range == "pc"
    (lo, hi), (src_lo, src_hi) = _luma_range(out), _luma_range(src)
    assert abs(lo - src_lo) <= 4 and abs(hi - src_hi) <= 4


def test_a_turned_full_range_phone_video_into_matroska_is_bit_exact_as_displayed(
        full_range: dict[str, Path], tmp_path: Path) -> None:
    from mediatasks.isobmff import set_display_matrix

    src = tmp_path / "portrait.mp4"
    shutil.copy(full_range["yuvj420p"], src)
    set_display_matrix(src, MATRICES["90"])
    out = tmp_path / "out.mkv"
    jp = round_trip(src, out, chunk_seconds=0.5)
    assert jp.display_filters == ("transpose=clock",)
    assert probe.probe(out).video.color_range == "pc"
    assert shown(out, autorotate=True) == shown(src, autorotate=True)
