"""Trust nothing: what a job message may name, checked by the workers on every message and by
the service at submit. The attacks are sent straight to the broker, as anyone who reaches it
could."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from mediatasks.errors import UntrustedMessage
from mediatasks.models import EncodeOptions, JobSpec
from mediatasks.service import trust

ROOTS = (Path("/media/in"), Path("/media/out"))


def spec(**kw: Any) -> JobSpec:
    fields = {"job_id": "a" * 32, "input": "/media/in/show.mkv", "output": "/media/out/show.mkv",
              "options": EncodeOptions(), **kw}
    return JobSpec(**fields)


@pytest.mark.parametrize(("changes", "words"), [
    ({"input": "/etc/passwd"}, "input /etc/passwd is outside MEDIATASKS_ROOTS"),
    ({"output": "/media/out/../../etc/x.mkv"}, "output /media/out/../../etc/x.mkv is outside"),
    ({"input": "http://example.invalid/a.mkv"}, "is a URL"),
    ({"input": "concat:/media/in/a.mkv|/etc/passwd"}, "is a URL"),
    ({"input": "subfile:/media/in/a.mkv"}, "is a URL"),
    ({"job_id": "../../etc"}, "is not a job id"),
    ({"batch_id": "b/../../x"}, "is not a batch id"),
])
def test_a_job_that_names_what_it_may_not_is_refused_naming_the_field(
        changes: dict[str, Any], words: str) -> None:
    with pytest.raises(UntrustedMessage, match=words.replace(".", r"\.")):
        trust.check_spec(spec(**changes), ROOTS)


def test_a_symlink_out_of_the_roots_is_followed_and_refused(tmp_path: Path) -> None:
    inside = tmp_path / "in"
    inside.mkdir()
    (inside / "link.mkv").symlink_to("/etc/passwd")
    with pytest.raises(UntrustedMessage, match="outside"):
        trust.check_under_roots(inside / "link.mkv", (inside,), field="input")
    assert trust.check_under_roots(inside / "a.mkv", (inside,), field="input") == (
        inside / "a.mkv").resolve()


def test_cleanup_may_remove_job_folders_only(tmp_path: Path) -> None:
    assert trust.job_folder(tmp_path, "f" * 32) == tmp_path / ("f" * 32)
    for bad in ("/some/dir", "..", "a" * 31, None):
        with pytest.raises(UntrustedMessage):
            trust.job_folder(tmp_path, bad)


def test_a_worker_without_roots_refuses_to_start_with_one_line(tmp_path: Path,
                                                               redis_url: str) -> None:
    env = dict(os.environ, MEDIATASKS_ROOTS="", MEDIATASKS_BROKER_URL=redis_url,
               MEDIATASKS_RESULT_BACKEND=redis_url)
    done = subprocess.run([sys.executable, "-m", "celery", "-A", "mediatasks", "worker", "-Q",
                           "io", "-c", "1", "--without-mingle"], capture_output=True, text=True,
                          env=env, timeout=60, cwd=tmp_path)
    assert done.returncode != 0
    assert "MEDIATASKS_ROOTS is not set" in done.stderr and "Traceback" not in done.stderr


def test_attacks_through_the_broker_are_rejected_and_touch_nothing(
        cluster: Any, tmp_path: Path, database_url: str) -> None:
    from mediatasks.history import History

    victim = Path("/var/tmp") / f"mt-victim-{uuid.uuid4().hex[:8]}"  # outside every root
    victim.mkdir()
    (victim / "precious").write_text("keep")
    try:
        # 1. cleanup told to remove any folder
        cluster.send_task("mediatasks.cleanup", kwargs={"job_id": str(victim)}, queue="io")
        # 4. a job message naming a file outside the roots, and one writing outside them
        job_id = uuid.uuid4().hex
        bad_in = spec(job_id=job_id, input="/etc/passwd", output=str(tmp_path / "o.mkv"))
        cluster.send_task("mediatasks.probe", kwargs={"spec": bad_in.model_dump(mode="json")},
                          queue="io")
        bad_out = spec(job_id=job_id, input=str(tmp_path / "i.mkv"), output=str(victim / "o"))
        cluster.send_task("mediatasks.publish", args=[{"output": str(victim / "precious")}],
                          kwargs={"spec": bad_out.model_dump(mode="json")}, queue="io")
        # A harmless cleanup sent last: once it has run, so have the others.
        cluster.send_task("mediatasks.cleanup", kwargs={"job_id": uuid.uuid4().hex},
                          queue="io").get(timeout=60)
        time.sleep(1)
        assert (victim / "precious").read_text() == "keep"
        assert History(database_url).get(job_id) is None  # no step ever ran for it
    finally:
        (victim / "precious").unlink(missing_ok=True)
        victim.rmdir()


def test_an_encoder_takes_its_own_options_and_general_ones_but_none_that_name_a_file() -> None:
    from mediatasks.encoder_options import check_video_opts, private_options
    from mediatasks.errors import InvalidOptions

    x264 = private_options("libx264")
    assert {"preset", "tune", "x264-params", "passlogfile"} <= x264
    check_video_opts("libx264", (("tune", "film"), ("g", "50"), ("x264-params", "ref=3:bframes=2")),
                     x264)
    for pairs, words in (
        ((("vstats_file", "/any/path"),), "not an option of encoder libx264"),
        ((("passlogfile", "/tmp/x"),), "read or write files"),
        ((("stats", "/tmp/x"),), "read or write files"),
        ((("x264-params", "ref=3:stats=/tmp/s"),), "'stats' reads or writes a file"),
        ((("x264-params", "zones=0,10,q=1:dump-yuv=x"),), "'dump-yuv' reads or writes"),
    ):
        with pytest.raises(InvalidOptions, match=words):
            check_video_opts("libx264", pairs, x264)


def test_the_cli_refuses_a_file_writing_encoder_option_before_anything_runs(
        clips: dict[str, Path], tmp_path: Path) -> None:
    cli = str(Path(sys.executable).with_name("mediatasks"))
    stats = tmp_path / "stats.txt"
    done = subprocess.run([cli, "run", str(clips["cfr"]), "-o", str(tmp_path / "o.mkv"),
                           "--video-opt", f"vstats_file={stats}"], capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "vstats_file" in done.stderr and not stats.exists()


@pytest.mark.parametrize(("text", "what"), [
    ("#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:2.0,\nsecret.ts\n#EXT-X-ENDLIST\n",
     "an HLS playlist"),
    ("ffconcat version 1.0\nfile secret.ts\n", "a concat list"),
])
def test_a_playlist_of_other_files_is_refused_whatever_its_name(
        tmp_path: Path, text: str, what: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i",
                    "testsrc2=size=64x48:rate=25", "-t", "2", "-c:v", "libx264", "-preset",
                    "ultrafast", str(tmp_path / "secret.ts")], check=True)
    playlist = tmp_path / "holiday.mkv"
    playlist.write_text(text)
    cli = str(Path(sys.executable).with_name("mediatasks"))
    env = dict(os.environ, MEDIATASKS_DATABASE_URL=f"sqlite:///{tmp_path / 'h.sqlite'}")
    for args in (["probe", str(playlist)], ["run", str(playlist), "-o", str(tmp_path / "o.mkv")]):
        done = subprocess.run([cli, *args], capture_output=True, text=True, timeout=120, env=env,
                              stdin=subprocess.DEVNULL)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 3 and len(lines) == 1, done.stderr
        assert "holiday.mkv" in lines[0] and what in lines[0], lines[0]
    assert not (tmp_path / "o.mkv").exists()


def test_every_source_is_opened_with_the_file_protocol_only() -> None:
    from mediatasks.steps import probe_args

    for argv in (probe_args.container_args("ffprobe", "/media/in/a.mkv"),
                 probe_args.packet_args("ffprobe", "/media/in/a.mkv", 0)):
        at = argv.index("-protocol_whitelist")
        assert argv[at + 1] == "file" and argv[-1] == "file:/media/in/a.mkv"
