"""Policies end to end: folders of release-named files through `mediatasks plan/run/submit
--policy`, filed into a library, guarded, collisions handled, and undone. Real ffmpeg, real
private clusters, a job history of the test's own."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import frame_hashes, sha256
from rig import Rig

pytestmark = pytest.mark.cluster

MEDIATASKS = str(Path(sys.executable).with_name("mediatasks"))


def make_release(path: Path, *, vcodec: str = "libx264", size: str = "320x240",
                 audio: tuple[tuple[str, str], ...] = (("ac3", "eng"),),
                 subs: tuple[str, ...] = (), seconds: float = 2) -> Path:
    """A clip with the given audio tracks (codec, language) and SubRip subtitles (languages)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    args = ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i",
            f"testsrc2=size={size}:rate=25:duration={seconds}"]
    for n, _ in enumerate(audio):
        args += ["-f", "lavfi", "-i", f"sine=f={300 + 100 * n}:sample_rate=48000:duration={seconds}"]
    srt = path.parent / f".{path.stem}.srt"
    if subs:
        srt.write_text("1\n00:00:00,000 --> 00:00:01,000\nHello\n")
        for _ in subs:
            args += ["-i", str(srt)]
    args += ["-map", "0:v"]
    for n in range(len(audio)):
        args += ["-map", f"{n + 1}:a"]
    for n in range(len(subs)):
        args += ["-map", f"{len(audio) + 1 + n}:s"]
    args += ["-c:v", vcodec, "-g", "25"]
    if vcodec == "libx265":
        args += ["-x265-params", "log-level=error"]
    else:
        args += ["-preset", "ultrafast"]
    for n, (codec, lang) in enumerate(audio):
        args += [f"-c:a:{n}", codec, f"-metadata:s:a:{n}", f"language={lang}"]
    for n, lang in enumerate(subs):
        args += [f"-c:s:{n}", "srt", f"-metadata:s:s:{n}", f"language={lang}"]
    subprocess.run([*args, str(path)], check=True)
    srt.unlink(missing_ok=True)
    return path


def streams(path: Path) -> list[dict[str, Any]]:
    done = subprocess.run(["ffprobe", "-v", "error", "-of", "json", "-show_streams", str(path)],
                          check=True, capture_output=True, text=True)
    found: list[dict[str, Any]] = json.loads(done.stdout)["streams"]
    return found


def packet_hashes(path: Path) -> list[str]:
    """MD5 of every video packet as stored (a remux must not change one byte of them)."""
    done = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-map", "0:v:0",
                           "-c", "copy", "-f", "framemd5", "-"], check=True, capture_output=True,
                          text=True)
    return [ln.rsplit(",", 1)[1].strip() for ln in done.stdout.splitlines()
            if ln and not ln.startswith("#")]


class Library:
    """A folder of incoming files, a library, a backup folder and a history, all the test's."""

    def __init__(self, root: Path):
        self.root = root
        self.incoming = root / "incoming"
        self.lib = root / "library"
        self.backup = root / "backup"
        for d in (self.incoming, self.lib, self.backup):
            d.mkdir(parents=True)
        self.env = dict(os.environ, MEDIATASKS_DATABASE_URL=f"sqlite:///{root / 'history.sqlite'}",
                        MEDIATASKS_WORK_DIR=str(root / "work"))

    def policy(self, body: str = "", **library: str) -> Path:
        lib = {"root": str(self.lib), **library}
        text = textwrap.dedent(body) + "library:\n" + "".join(
            f"  {k}: {json.dumps(v)}\n" for k, v in lib.items())
        path = self.root / "policy.yaml"
        path.write_text(text)
        return path

    def mt(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([MEDIATASKS, *args], capture_output=True, text=True, env=self.env,
                              timeout=300, stdin=subprocess.DEVNULL)

    def run_json(self, *args: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
        done = self.mt("run", *args, "--json")
        lines = done.stdout.strip().splitlines()
        assert lines, done.stderr
        result: dict[str, Any] = json.loads(lines[-1])
        return done, result

    def files(self, where: Path) -> list[str]:
        return sorted(str(p.relative_to(where)) for p in where.rglob("*")
                      if p.is_file() and ".mediatasks-trash" not in p.parts)


@pytest.fixture
def lib(tmp_path: Path) -> Iterator[Library]:
    yield Library(tmp_path)


POLICY = """\
    video:
      codec: libx264
      crf: 30
      preset: veryfast
      max_height: 180
      skip_if_codec: [hevc]
    audio:
      keep: [flac]
      transcode_to: {codec: aac, bitrate: 96k}
      languages: [eng, und]
    subtitles:
      languages: [eng]
    """


def test_a_folder_of_releases_is_filed_into_the_library_with_its_tracks_chosen(
        lib: Library) -> None:
    movie = make_release(lib.incoming / "The.Movie.2019.1080p.BluRay.x264-GRP.mkv",
                         audio=(("flac", "eng"), ("ac3", "eng"), ("mp2", "ger")),
                         subs=("eng", "fre"))
    episode = make_release(lib.incoming / "Show" / "Show.Name.S01E02.Pilot.720p.WEB.h264-GRP.mkv",
                           size="240x180", audio=(("mp2", "fre"),))
    before = {p: sha256(p) for p in (movie, episode)}
    policy = lib.policy(POLICY, on_exists="skip")
    planned = lib.mt("plan", str(lib.incoming), "--policy", str(policy), "--json")
    assert planned.returncode == 0, planned.stderr
    plan = {Path(f["source"]).name: f for f in json.loads(planned.stdout)["files"]}
    assert plan[movie.name]["action"] == "transcode" and plan[episode.name]["action"] == "transcode"
    assert lib.files(lib.lib) == [], "a dry run wrote into the library"

    done, result = lib.run_json(str(lib.incoming), "--policy", str(policy))
    assert done.returncode == 0, done.stderr
    assert result["status"] == "succeeded" and result["job_id"].startswith("b")
    assert lib.files(lib.lib) == ["Movies/The Movie (2019)/The Movie (2019).mkv",
                                  "TV/Show Name/Season 01/Show Name - S01E02 - Pilot.mkv"]
    out = lib.lib / "Movies/The Movie (2019)/The Movie (2019).mkv"
    s = streams(out)
    video = [x for x in s if x["codec_type"] == "video"]
    assert (video[0]["codec_name"], video[0]["width"], video[0]["height"]) == ("h264", 240, 180)
    audio = [(x["codec_name"], x["tags"]["language"]) for x in s if x["codec_type"] == "audio"]
    assert audio == [("flac", "eng"), ("aac", "eng")]  # flac kept, ac3 transcoded, ger dropped
    subs = [x["tags"]["language"] for x in s if x["codec_type"] == "subtitle"]
    assert subs == ["eng"]
    assert len(frame_hashes(out)) == len(frame_hashes(movie)) == 50
    # The only French track of the episode is kept: a file is never left without audio.
    ep = streams(lib.lib / "TV/Show Name/Season 01/Show Name - S01E02 - Pilot.mkv")
    assert [(x["codec_name"], x["tags"]["language"]) for x in ep
            if x["codec_type"] == "audio"] == [("aac", "fre")]
    assert {p: sha256(p) for p in (movie, episode)} == before  # source.after: keep


def test_a_compliant_file_is_remuxed_with_every_video_packet_identical(lib: Library) -> None:
    src = make_release(lib.incoming / "Good.Film.2020.mkv", vcodec="libx265", size="240x180",
                       audio=(("ac3", "eng"), ("ac3", "ger")))
    policy = lib.policy(POLICY)
    planned = lib.mt("plan", str(src), "--policy", str(policy))
    assert planned.returncode == 0 and "remux" in planned.stdout, planned.stdout
    done, result = lib.run_json(str(src), "--policy", str(policy))
    assert done.returncode == 0, done.stderr
    (entry,) = result["files"]
    assert entry["action"] == "remux" and entry["status"] == "succeeded"
    out = Path(entry["output"])
    assert out == lib.lib / "Movies/Good Film (2020)/Good Film (2020).mkv"
    assert packet_hashes(out) == packet_hashes(src)
    assert [x["codec_name"] for x in streams(out)] == ["hevc", "aac"]


def test_the_guard_keeps_the_source_when_the_result_would_be_larger(lib: Library) -> None:
    src = make_release(lib.incoming / "Tiny.2001.mkv", size="160x120")
    before = sha256(src)
    policy = lib.policy("""\
        video: {codec: ffv1}
        guard: {max_size_ratio: 1.0}
        source: {after: delete}
        """)
    done, result = lib.run_json(str(src), "--policy", str(policy))
    assert done.returncode == 0, done.stderr
    (entry,) = result["files"]
    assert entry["outcome"] == "kept-source" and entry["output"] is None
    assert lib.files(lib.lib) == [] and sha256(src) == before  # not deleted either


@pytest.mark.parametrize("on_exists", ["skip", "rename", "replace"])
def test_name_collisions_follow_on_exists(lib: Library, on_exists: str) -> None:
    src = make_release(lib.incoming / "Clash.1999.mkv", size="160x120")
    existing = lib.lib / "Movies/Clash (1999)/Clash (1999).mkv"
    existing.parent.mkdir(parents=True)
    existing.write_bytes(b"the file already in the library")
    policy = lib.policy("video: {codec: libx264, preset: ultrafast}\n", on_exists=on_exists)
    done, result = lib.run_json(str(src), "--policy", str(policy))
    assert done.returncode == 0, done.stderr
    (entry,) = result["files"]
    names = lib.files(existing.parent)
    if on_exists == "skip":
        assert entry["status"] == "skipped" and "already exists" in " ".join(entry["reasons"])
        assert names == ["Clash (1999).mkv"]
        assert existing.read_bytes() == b"the file already in the library"
    elif on_exists == "rename":
        assert names == ["Clash (1999) (2).mkv", "Clash (1999).mkv"]
        assert existing.read_bytes() == b"the file already in the library"
    else:
        assert names == ["Clash (1999).mkv"] and len(frame_hashes(existing)) == 50
        undone = lib.mt("undo", result["job_id"])
        assert undone.returncode == 0, undone.stderr
        assert existing.read_bytes() == b"the file already in the library"


def test_a_template_that_escapes_the_root_or_a_typo_is_refused_with_its_line(
        lib: Library) -> None:
    src = make_release(lib.incoming / "Any.2000.mkv", size="160x120")
    escape = lib.policy("", movie="../../{title}.{ext}")
    done = lib.mt("run", str(src), "--policy", str(escape))
    lines = done.stderr.strip().splitlines()
    assert done.returncode != 0 and len(lines) == 1, done.stderr
    assert "policy.yaml:" in lines[0] and "library.movie" in lines[0] and ".." in lines[0]
    typo = lib.root / "typo.yaml"
    typo.write_text("video:\n  codec: libx264\n  max_heigth: 720\n")
    done = lib.mt("plan", str(src), "--policy", str(typo))
    lines = done.stderr.strip().splitlines()
    assert done.returncode != 0 and len(lines) == 1, done.stderr
    assert "typo.yaml:3" in lines[0] and "max_heigth" in lines[0] and "max_height" in lines[0]
    bad_audio = lib.policy("audio: {transcode_to: {codec: aacc}}\n")
    done = lib.mt("run", str(src), "--policy", str(bad_audio))
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and "unknown encoder 'aacc'" in lines[0], lines
    copy = lib.policy("video: {codec: copy}\n")
    done = lib.mt("plan", str(src), "--policy", str(copy))
    assert done.returncode == 2 and "video.skip_if_codec" in done.stderr, done.stderr
    assert lib.files(lib.lib) == []


@pytest.mark.parametrize("on_error", ["continue", "stop"])
def test_a_broken_file_fails_alone_or_stops_the_batch(lib: Library, on_error: str) -> None:
    good = make_release(lib.incoming / "A.Good.One.2010.mkv", size="160x120")
    broken = lib.incoming / "B.Broken.2011.mkv"
    broken.write_bytes(good.read_bytes()[:3000])
    later = make_release(lib.incoming / "C.Later.2012.mkv", size="160x120")
    hashes = {p: sha256(p) for p in (good, broken, later)}
    policy = lib.policy("video: {codec: libx264, preset: ultrafast}\n")
    done, result = lib.run_json(str(lib.incoming), "--policy", str(policy), "--on-error", on_error)
    assert done.returncode == 1
    by_name = {Path(f["source"]).name: f for f in result["files"]}
    assert result["status"] == "failed"
    assert by_name[broken.name]["status"] == "failed"
    assert broken.name in by_name[broken.name]["error"]
    if on_error == "continue":
        assert by_name[good.name]["status"] == by_name[later.name]["status"] == "succeeded"
        assert len(lib.files(lib.lib)) == 2
    else:
        assert by_name[good.name]["status"] == "not run" and later.name not in by_name
        assert lib.files(lib.lib) == []
    assert {p: sha256(p) for p in (good, broken, later)} == hashes


def test_undo_after_backup_restores_originals_byte_for_byte(lib: Library) -> None:
    a = make_release(lib.incoming / "First.2001.mkv", size="160x120")
    b = make_release(lib.incoming / "deep" / "Second.S02E03.mkv", size="160x120")
    before = {p: sha256(p) for p in (a, b)}
    policy = lib.policy(f"""\
        video: {{codec: libx264, preset: ultrafast}}
        source: {{after: backup, backup_dir: {json.dumps(str(lib.backup))}}}
        """)
    done, result = lib.run_json(str(lib.incoming), "--policy", str(policy))
    assert done.returncode == 0, done.stderr
    assert not a.exists() and not b.exists()
    assert lib.files(lib.backup) == ["First.2001.mkv", "Second.S02E03.mkv"]
    assert len(lib.files(lib.lib)) == 2
    undone = lib.mt("undo", result["job_id"])
    assert undone.returncode == 0, undone.stderr
    assert {p: sha256(p) for p in (a, b)} == before
    assert lib.files(lib.lib) == [] and lib.files(lib.backup) == []
    again = lib.mt("undo", result["job_id"])
    assert again.returncode != 0 and "nothing to undo" in again.stderr


def test_undo_after_delete_removes_what_was_published_and_says_the_originals_are_gone(
        lib: Library) -> None:
    src = make_release(lib.incoming / "Gone.1990.mkv", size="160x120")
    policy = lib.policy("""\
        video: {codec: libx264, preset: ultrafast}
        source: {after: delete}
        """)
    done, result = lib.run_json(str(src), "--policy", str(policy))
    assert done.returncode == 0, done.stderr
    assert not src.exists() and len(lib.files(lib.lib)) == 1
    undone = lib.mt("undo", result["job_id"])
    assert undone.returncode == 1
    assert lib.files(lib.lib) == []
    assert "Gone.1990.mkv" in undone.stderr and "cannot be restored" in undone.stderr


def test_submit_sends_a_batch_to_the_cluster_and_status_follows_it(
        lib: Library, tmp_path: Path) -> None:
    make_release(lib.incoming / "One.2001.mkv", size="160x120")
    make_release(lib.incoming / "Two.2002.mkv", size="160x120")
    policy = lib.policy("video: {codec: libx264, preset: ultrafast}\n")
    with Rig(tmp_path / "rig") as rig:
        rig.env.update(MEDIATASKS_DATABASE_URL=lib.env["MEDIATASKS_DATABASE_URL"])
        rig.start_worker("w")
        sub = rig.mt("submit", str(lib.incoming), "--policy", str(policy), "--json")
        assert sub.returncode == 0, sub.stderr
        batch = json.loads(sub.stdout.strip().splitlines()[-1])
        assert batch["status"] == "queued" and len(batch["files"]) == 2
        followed = rig.mt("status", batch["job_id"], "--follow", "--json")
        assert followed.returncode == 0, followed.stderr
        final = json.loads(followed.stdout)
        assert final["status"] == "succeeded" and len(final["jobs"]) == 2
    assert lib.files(lib.lib) == ["Movies/One (2001)/One (2001).mkv",
                                  "Movies/Two (2002)/Two (2002).mkv"]
    shutil.rmtree(tmp_path / "rig", ignore_errors=True)


def test_without_a_library_the_output_dir_is_used_and_required(lib: Library) -> None:
    src = make_release(lib.incoming / "plain name.mkv", size="160x120")
    policy = lib.root / "nolib.yaml"
    policy.write_text("video: {codec: libx264, preset: ultrafast}\n")
    refused = lib.mt("run", str(src), "--policy", str(policy))
    assert refused.returncode == 2 and "--output-dir" in refused.stderr
    out_dir = lib.root / "out"
    out_dir.mkdir()
    done, result = lib.run_json(str(src), "--policy", str(policy), "--output-dir", str(out_dir))
    assert done.returncode == 0, done.stderr
    assert lib.files(out_dir) == ["plain name.mkv"] and result["files"][0]["status"] == "succeeded"
    assert len(frame_hashes(out_dir / "plain name.mkv")) == 50


@pytest.mark.parametrize("on_error", ["continue", "stop"])
def test_a_job_that_fails_while_encoding_cancels_the_others_only_with_stop(
        lib: Library, on_error: str) -> None:
    """Mocked fault: an ffmpeg wrapper makes every chunk encode of one file fail as a damaged file
    would (a deterministic error, not retried); the other file is a slow encode still running."""
    broken = make_release(lib.incoming / "A.Fails.2001.mkv", size="160x120")
    slow = make_release(lib.incoming / "B.Slow.2002.mkv", size="640x360", seconds=12)
    wrapper = lib.root / "ffmpeg-failing-for-one-file"
    wrapper.write_text("#!/bin/sh\n"
                       'case "$*" in *A.Fails*-progress*|*-progress*A.Fails*)\n'
                       '  echo "Invalid data found when processing input" >&2; exit 1;;\n'
                       "esac\n"
                       'exec ffmpeg "$@"\n')
    wrapper.chmod(0o755)
    lib.env["MEDIATASKS_FFMPEG"] = str(wrapper)
    policy = lib.policy("video: {codec: libx264, preset: veryslow}\n")
    done, result = lib.run_json(str(lib.incoming), "--policy", str(policy), "--on-error", on_error,
                                "--chunk-seconds", "2")
    assert done.returncode == 1
    by_name = {Path(f["source"]).name: f for f in result["files"]}
    assert by_name[broken.name]["status"] == "failed"
    assert "invalid data" in by_name[broken.name]["error"].lower()
    if on_error == "stop":
        assert by_name[slow.name]["status"] == "cancelled", by_name[slow.name]
        assert lib.files(lib.lib) == []
    else:
        assert by_name[slow.name]["status"] == "succeeded", by_name[slow.name]
        assert lib.files(lib.lib) == ["Movies/B Slow (2002)/B Slow (2002).mkv"]
    assert sha256(slow) and slow.exists() and broken.exists()


def test_a_submitted_batch_can_be_cancelled_as_a_whole(lib: Library, tmp_path: Path) -> None:
    for name in ("Long.One.2001.mkv", "Long.Two.2002.mkv"):
        make_release(lib.incoming / name, size="640x360", seconds=12)
    policy = lib.policy("video: {codec: libx264, preset: veryslow}\n")
    with Rig(tmp_path / "rig") as rig:
        rig.env.update(MEDIATASKS_DATABASE_URL=lib.env["MEDIATASKS_DATABASE_URL"])
        rig.start_worker("w")
        sub = rig.mt("submit", str(lib.incoming), "--policy", str(policy), "--chunk-seconds", "2",
                     "--json")
        assert sub.returncode == 0, sub.stderr
        batch = json.loads(sub.stdout.strip().splitlines()[-1])["job_id"]
        jobs = json.loads(rig.mt("status", batch, "--json").stdout)["jobs"]
        rig.wait_for_chunk_encodes(jobs[0]["job_id"])
        cancelled = rig.mt("cancel", batch, "--json")
        assert cancelled.returncode == 0, cancelled.stderr
        assert len(json.loads(cancelled.stdout)["cancelled"]) == len(jobs) == 2
        followed = rig.mt("status", batch, "--follow", "--json")
        assert followed.returncode == 1
        assert {j["status"] for j in json.loads(followed.stdout)["jobs"]} == {"cancelled"}
        again = rig.mt("cancel", batch)
        assert again.returncode == 2 and "no queued or running job" in again.stderr
    assert lib.files(lib.lib) == []
