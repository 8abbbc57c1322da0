"""Cluster tier: the real canvas on a private redis-server with real celery worker processes."""

from __future__ import annotations

import itertools
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from celery.exceptions import ChordError
from conftest import ffmpeg, frame_hashes, frame_times, run_job, sha256, submit

from mediatasks.errors import MediatasksError

pytestmark = pytest.mark.cluster


def streams_of(path: Path) -> list[dict[str, Any]]:
    out = subprocess.run(["ffprobe", "-v", "error", "-of", "json", "-show_streams",
                          "-show_chapters", "-show_format", str(path)],
                         check=True, capture_output=True, text=True).stdout
    data: dict[str, Any] = json.loads(out)
    return [*data["streams"], {"chapters": data.get("chapters", []),
                               "format": data.get("format", {})}]


@pytest.mark.parametrize("clip", ["cfr", "vfr", "odd"])
def test_lossless_round_trip_hashes_every_frame_identically(
        cluster: Any, clips: dict[str, Path], tmp_path: Path, clip: str) -> None:
    src = clips[clip]
    before = sha256(src)
    out = tmp_path / "out.mkv"
    result = run_job(cluster, submit(src, out, video_codec="ffv1", chunk_seconds=0.7))
    assert result["status"] == "succeeded"
    assert result["chunks"] >= 3
    assert result["frames_in"] == result["frames_out"]
    assert frame_hashes(out) == frame_hashes(src)
    assert sha256(src) == before


def test_vfr_source_keeps_every_presentation_time_within_a_millisecond(
        cluster: Any, clips: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "vfr.mp4"
    result = run_job(cluster, submit(clips["vfr"], out, video_codec="libx264", crf=30,
                                     chunk_seconds=0.5))
    assert result["chunks"] >= 4
    src_t, out_t = frame_times(clips["vfr"]), frame_times(out)
    assert len(src_t) == len(out_t)
    assert max(abs(a - b) for a, b in zip(src_t, out_t, strict=True)) <= 0.001
    gaps = {round(b - a, 3) for a, b in itertools.pairwise(out_t)}
    assert len(gaps) >= 3  # 30, 24 and 60 fps sections are still there


def test_cfr_source_stays_cfr_at_its_exact_rate(cluster: Any, clips: dict[str, Path],
                                                tmp_path: Path) -> None:
    src = tmp_path / "cfr.mp4"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc2=size=192x108:rate=30000/1001", "-t", "4", "-c:v", "libx264",
                    "-preset", "ultrafast", "-bf", "2", "-g", "24", str(src)], check=True)
    assert streams_of(src)[0]["avg_frame_rate"] == "30000/1001"
    out = tmp_path / "out.mp4"
    run_job(cluster, submit(src, out, video_codec="libx264", crf=30, chunk_seconds=0.8))
    video = streams_of(out)[0]
    assert video["r_frame_rate"] == "30000/1001"
    assert video["avg_frame_rate"] == "30000/1001"


def test_a_chord_of_eight_or_more_chunks(cluster: Any, clips: dict[str, Path],
                                         tmp_path: Path) -> None:
    out = tmp_path / "long.mkv"
    result = run_job(cluster, submit(clips["long"], out, video_codec="libx264", crf=35,
                                     preset="ultrafast", chunk_seconds=0.5))
    assert result["chunks"] >= 8
    assert result["frames_out"] == result["frames_in"] == 200


def test_audio_subtitles_chapters_and_metadata_are_carried(
        cluster: Any, clips: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "rich.mp4"
    run_job(cluster, submit(clips["rich"], out, video_codec="libx264", crf=35, chunk_seconds=1))
    *streams, extra = streams_of(out)
    kinds = [s["codec_type"] for s in streams]
    assert kinds.count("audio") == 2
    subs = [s for s in streams if s["codec_type"] == "subtitle"]
    assert [s["codec_name"] for s in subs] == ["mov_text"]  # srt cannot go in mp4: converted
    langs = [s.get("tags", {}).get("language") for s in streams if s["codec_type"] == "audio"]
    assert langs == ["eng", "fra"]
    assert [c["tags"]["title"] for c in extra["chapters"]] == ["One", "Two"]
    assert extra["format"]["tags"]["title"] == "mediatasks demo"
    src_audio = frame_hashes(clips["rich"], "a:1")
    assert frame_hashes(out, "a:1") == src_audio  # audio copied bit for bit


def test_transcoded_audio_that_starts_late_stays_in_sync_despite_encoder_priming(
        cluster: Any, tmp_path: Path) -> None:
    """AAC puts 1024 priming samples before the audio (0.128 s at 8 kHz); players skip them, so
    an output audio stream that starts that much earlier is in sync and must not be refused."""
    src = tmp_path / "late audio.mkv"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25:duration=3", "-itsoffset", "0.5",
           "-f", "lavfi", "-i", "sine=sample_rate=8000:duration=3", "-c:v", "libx264",
           "-preset", "ultrafast", "-c:a", "pcm_s16le", str(src))
    out = tmp_path / "aac.mkv"
    result = run_job(cluster, submit(src, out, video_codec="libx264", audio_codec="aac",
                                     chunk_seconds=1))
    assert result["status"] == "succeeded" and result["frames_out"] == 75


def test_audio_can_be_transcoded_once_for_the_whole_file(
        cluster: Any, clips: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "opus.mkv"
    run_job(cluster, submit(clips["rich"], out, video_codec="libx264", crf=35,
                            audio_codec="libopus", chunk_seconds=1))
    streams, _ = streams_of(out)[:-1], None
    assert [s["codec_name"] for s in streams if s["codec_type"] == "audio"] == ["opus", "opus"]


def test_a_failing_job_publishes_nothing_and_removes_its_temp_files(
        cluster: Any, clips: dict[str, Path], tmp_path: Path, work_dir: Path) -> None:
    out = tmp_path / "never.mkv"
    spec = submit(clips["cfr"], out, video_codec="libx264", preset="no-such-preset",
                  chunk_seconds=1)
    with pytest.raises((ChordError, MediatasksError, Exception)):
        run_job(cluster, spec, timeout=120)
    assert not out.exists()
    assert not list(tmp_path.glob(".*part"))
    from mediatasks.jobstate import JobState

    assert "preset" in (JobState(cluster.backend, spec.job_id).error() or "")
    import time

    deadline = time.monotonic() + 20
    while (work_dir / spec.job_id).exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not (work_dir / spec.job_id).exists()


def test_an_existing_output_is_never_replaced_without_overwrite(
        cluster: Any, clips: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "exists.mkv"
    out.write_bytes(b"keep me")
    with pytest.raises(Exception, match="exists"):
        run_job(cluster, submit(clips["cfr"], out, video_codec="libx264", chunk_seconds=1))
    assert out.read_bytes() == b"keep me"
    result = run_job(cluster, submit(clips["cfr"], out, video_codec="libx264", chunk_seconds=1,
                                     overwrite=True))
    assert result["status"] == "succeeded" and out.read_bytes() != b"keep me"


def test_a_killed_ffmpeg_is_retried_and_the_job_still_has_every_frame(
        cluster: Any, clips: dict[str, Path], tmp_path: Path) -> None:
    import os
    import signal
    import threading
    import time

    from mediatasks.jobstate import JobState

    out = tmp_path / "retried.mkv"
    spec = submit(clips["long"], out, video_codec="libx264", preset="veryslow", chunk_seconds=2)
    killed: list[int] = []

    def kill_first_chunk_encode() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not killed:
            for pid in os.listdir("/proc"):
                try:
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
                except OSError:
                    continue
                if spec.job_id.encode() in cmd and b"chunks/" in cmd and b"ffmpeg" in cmd:
                    os.kill(int(pid), signal.SIGKILL)
                    killed.append(int(pid))
                    return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_first_chunk_encode)
    killer.start()
    result = run_job(cluster, spec)
    killer.join()
    assert killed, "no chunk encode was seen to kill"
    assert result["status"] == "succeeded" and result["frames_out"] == result["frames_in"] == 200
    assert JobState(cluster.backend, spec.job_id).error() is None


def test_rotation_aspect_ratio_color_and_field_order_carry_over(
        cluster: Any, tmp_path: Path) -> None:
    from mediatasks.isobmff import set_display_matrix

    src = tmp_path / "phone.mp4"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc2=size=320x240:rate=25", "-t", "3", "-vf", "setsar=4/3",
                    "-c:v", "libx264", "-preset", "ultrafast", "-g", "10",
                    "-flags", "+ildct+ilme", "-field_order", "tt",
                    "-color_primaries", "bt709", "-color_trc", "bt709", "-colorspace", "bt709",
                    str(src)], check=True)
    set_display_matrix(src, (0, 65536, 0, -65536, 0, 0, 0, 0, 1 << 30))  # turned 90 degrees
    source = streams_of(src)[0]
    assert source["side_data_list"][0]["rotation"] == -90
    out = tmp_path / "out.mp4"
    run_job(cluster, submit(src, out, video_codec="libx264", crf=30, chunk_seconds=0.5))
    video = streams_of(out)[0]
    assert video["side_data_list"][0]["rotation"] == -90
    for key in ("sample_aspect_ratio", "field_order", "color_primaries", "color_transfer",
                "color_space"):
        assert video.get(key) == source.get(key), key


def test_a_recording_that_starts_mid_gop_keeps_every_decodable_frame(
        cluster: Any, tmp_path: Path) -> None:
    whole = tmp_path / "whole.ts"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc2=size=160x120:rate=25", "-f", "lavfi", "-i", "sine", "-t", "8",
                    "-c:v", "libx264", "-preset", "ultrafast", "-g", "50", "-bf", "2",
                    "-c:a", "mp2", "-f", "mpegts", str(whole)], check=True)
    data = whole.read_bytes()
    src = tmp_path / "capture.ts"
    src.write_bytes(data[(len(data) // 188 // 5) * 188:])  # cut on a TS packet, mid-GOP
    out = tmp_path / "capture.mkv"
    result = run_job(cluster, submit(src, out, video_codec="ffv1", chunk_seconds=1.5))
    assert result["chunks"] >= 3
    assert any("mid-GOP" in w for w in result["warnings"])
    decodable = subprocess.run(["ffmpeg", "-nostdin", "-v", "quiet", "-i", str(src), "-map",
                                "0:v", "-fps_mode", "passthrough", "-f", "framemd5", "-"],
                               capture_output=True, text=True).stdout
    want = [line.rsplit(",", 1)[1].strip() for line in decodable.splitlines()
            if line and not line.startswith("#")]
    assert frame_hashes(out) == want and result["frames_out"] == len(want)


def test_a_job_submitted_by_one_process_is_followed_by_another_and_kept_in_the_history(
        cluster: Any, clips: dict[str, Path], tmp_path: Path, redis_url: str,
        database_url: str) -> None:
    import os
    import sys

    env = dict(os.environ, MEDIATASKS_BROKER_URL=redis_url, MEDIATASKS_RESULT_BACKEND=redis_url,
               MEDIATASKS_DATABASE_URL=database_url)
    cli = str(Path(sys.executable).with_name("mediatasks"))

    def mt(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([cli, *args], capture_output=True, text=True, env=env,
                              timeout=240, stdin=subprocess.DEVNULL)

    out = tmp_path / "submitted.mkv"
    sub = mt("submit", str(clips["long"]), "-o", str(out), "--chunk-seconds", "2", "--json")
    assert sub.returncode == 0, sub.stderr
    job_id = json.loads(sub.stdout)["job_id"]
    followed = mt("status", job_id, "--follow", "--json")
    assert followed.returncode == 0, followed.stderr
    assert json.loads(followed.stdout)["status"] == "succeeded"
    assert out.exists()
    show = json.loads(mt("jobs", "show", job_id, "--json").stdout)
    assert show["status"] == "succeeded" and show["frames_out"] == 200
    names = [t["name"].removeprefix("mediatasks.") for t in show["tasks"]]
    assert {"probe", "plan", "encode_audio", "concat", "mux", "verify", "publish"} <= set(names)
    encodes = [t for t in show["tasks"] if t["name"] == "mediatasks.encode_chunk"]
    assert len(encodes) == 4 and {t["queue"] for t in encodes} == {"cpu"}
    assert {t["queue"] for t in show["tasks"] if t not in encodes} == {"io"}
    assert all(t["state"] == "SUCCESS" and t["worker"] for t in show["tasks"])
    listed = json.loads(mt("jobs", "list", "--status", "succeeded", "--json").stdout)
    assert job_id in [j["job_id"] for j in listed]
    missing = mt("jobs", "show", "nope")
    assert missing.returncode != 0 and "no job nope" in missing.stderr


def test_encodes_send_progress_events_that_flower_shows(cluster: Any, tmp_path: Path) -> None:
    import contextlib
    import threading
    import time

    src = tmp_path / "events.mkv"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc2=size=480x270:rate=25", "-t", "6", "-c:v", "libx264", "-preset",
                    "ultrafast", "-g", "25", str(src)], check=True)
    events: list[dict[str, Any]] = []
    ready, stop = threading.Event(), threading.Event()

    def listen() -> None:
        with cluster.connection_for_read() as conn:
            receiver = cluster.events.Receiver(conn, handlers={"task-progress": events.append})
            ready.set()
            while not stop.is_set():
                with contextlib.suppress(TimeoutError, OSError):
                    receiver.capture(limit=None, timeout=0.5, wakeup=False)

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    assert ready.wait(10)
    time.sleep(0.5)
    spec = submit(src, tmp_path / "out.mkv", video_codec="libx264", preset="slower",
                  chunk_seconds=3)
    run_job(cluster, spec)
    stop.set()
    listener.join(5)
    mine = [e for e in events if e.get("job_id") == spec.job_id]
    assert mine, "no task-progress event seen"
    assert all(e["frames"] <= e["total"] and "uuid" in e and "chunk" in e for e in mine)
    # The task's own id and its worker's name, not the pool process's phantom "gen1234@host".
    assert all(e["uuid"] and not e["hostname"].startswith("gen") for e in mine), mine[:1]
