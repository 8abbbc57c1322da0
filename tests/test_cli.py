"""The command line, as a user runs it: real processes, one-line errors, sources untouched."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import frame_hashes, sha256

MEDIATASKS = str(Path(sys.executable).with_name("mediatasks"))


def mt(*args: str, timeout: float = 240, env: dict[str, str] | None = None
       ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([MEDIATASKS, *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, env=env)


def private_tmp(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A TMPDIR of the test's own, so other runs on the machine cannot be mistaken for ours."""
    d = tmp_path / "t"
    d.mkdir()
    return d, dict(os.environ, TMPDIR=str(d))


def leftovers(directory: Path, before: set[str]) -> set[str]:
    return {p.name for p in directory.iterdir()} - before


def test_run_encodes_end_to_end_on_a_private_broker_and_prints_json(
        clips: dict[str, Path], tmp_path: Path) -> None:
    tmp, env = private_tmp(tmp_path)
    out = tmp_path / "out.mkv"
    done = mt("run", str(clips["cfr"]), "-o", str(out), "--video-codec", "ffv1",
              "--chunk-seconds", "1", "--workers", "2", "--json", env=env)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == "succeeded" and result["error"] is None
    assert result["frames_in"] == result["frames_out"] == 120
    assert result["output"] == str(out)
    assert frame_hashes(out) == frame_hashes(clips["cfr"])
    assert list(tmp.iterdir()) == []  # the private broker's directory is gone


def test_run_without_json_shows_a_summary(clips: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    done = mt("run", str(clips["rich"]), "-o", str(out), "--crf", "35", "--chunk-seconds", "1")
    assert done.returncode == 0, done.stderr
    assert "done:" in done.stdout and "frames" in done.stdout


@pytest.mark.parametrize("name", ["with space 'quote' $(touch x) ü.mkv", "-leading dash.mkv"])
def test_hostile_file_names_work(clips: dict[str, Path], tmp_path: Path, name: str) -> None:
    src = tmp_path / name
    shutil.copy(clips["cfr"], src)
    out = tmp_path / f"out {name}"
    done = mt("run", str(src), "-o", str(out), "--video-codec", "ffv1", "--chunk-seconds", "1",
              "--json")
    assert done.returncode == 0, done.stderr
    assert frame_hashes(out) == frame_hashes(src)
    assert not (tmp_path / "x").exists()


def bad_inputs(tmp: Path, good: Path) -> dict[str, tuple[Path, str]]:
    text = tmp / "notes.mkv"
    text.write_text("this is not a video\n")
    empty = tmp / "empty.mkv"
    empty.touch()
    truncated = tmp / "truncated.mp4"
    mp4 = tmp / "whole.mp4"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(good), "-c", "copy",
                    "-movflags", "+faststart", str(mp4)], check=True)
    truncated.write_bytes(mp4.read_bytes()[: mp4.stat().st_size // 3])
    audio = tmp / "audio only.mka"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", "sine",
                    "-t", "1", str(audio)], check=True)
    directory = tmp / "a directory.mkv"
    directory.mkdir()
    return {
        "missing": (tmp / "missing.mkv", "no such file"),
        "directory": (directory, "directory"),
        "empty": (empty, "empty"),
        "text": (text, "cannot be read"),
        "truncated": (truncated, "cannot be read|truncated|frames"),
        "no video": (audio, "no video stream"),
    }


def test_bad_inputs_fail_with_one_line_naming_the_file_and_leave_no_output(
        clips: dict[str, Path], tmp_path: Path) -> None:
    cases = bad_inputs(tmp_path, clips["cfr"])
    for label, (path, words) in cases.items():
        hashes = sha256(path) if path.is_file() else None
        before = {p.name for p in tmp_path.iterdir()}
        out = tmp_path / f"out-{label.replace(' ', '-')}.mkv"
        done = mt("run", str(path), "-o", str(out))
        lines = done.stderr.strip().splitlines()
        assert done.returncode != 0, label
        # A file refused before its job starts prints one line; one that fails while it runs
        # may have printed its steps first (no TTY: a line per step), but the error is last
        # and the only one.
        errors = [line for line in lines if line.startswith("mediatasks:")]
        assert errors == lines[-1:], (label, done.stderr)
        if not done.stderr.startswith("job "):
            assert len(lines) == 1, (label, done.stderr)
        assert path.name in lines[-1] and "Traceback" not in done.stderr, (label, lines)
        import re

        assert re.search(words, lines[-1]), (label, lines[-1])
        assert not out.exists() and leftovers(tmp_path, before) == set(), label
        if hashes is not None:
            assert sha256(path) == hashes, label


@pytest.mark.parametrize(("args", "words"), [
    (["--video-codec", "nope"], "unknown encoder 'nope'"),
    (["--preset", "warp9"], "preset"),
    (["--crf", "abc"], "--crf"),
    (["--video-opt", "notkeyvalue"], "KEY=VALUE"),
    (["--video-opt", "nosuchopt=1"], "nosuchopt"),
    (["--video-codec", "ffv1", "--crf", "20"], "lossless"),
    (["--chunk-seconds", "0"], "chunk-seconds"),
    (["--audio-codec", "nosuch"], "nosuch"),
    (["--video-codec", "copy"], "skip_if_codec"),
])
def test_bad_options_fail_fast_with_one_line(clips: dict[str, Path], tmp_path: Path,
                                             args: list[str], words: str) -> None:
    out = tmp_path / "o.mkv"
    done = mt("run", str(clips["cfr"]), "-o", str(out), *args)
    assert done.returncode != 0
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert words in done.stderr
    assert not out.exists()


def test_bad_outputs_are_refused(clips: dict[str, Path], tmp_path: Path) -> None:
    src = tmp_path / "src.mkv"
    shutil.copy(clips["cfr"], src)
    before = sha256(src)
    same = mt("run", str(src), "-o", str(src), "--overwrite")
    assert same.returncode != 0 and "output is the input" in same.stderr
    missing_dir = mt("run", str(src), "-o", str(tmp_path / "nope" / "o.mkv"))
    assert missing_dir.returncode != 0 and "does not exist" in missing_dir.stderr
    ext = mt("run", str(src), "-o", str(tmp_path / "o.xyz"))
    assert ext.returncode != 0 and "extension" in ext.stderr
    proc = mt("run", str(src), "-o", "/proc/x.mkv")
    assert proc.returncode != 0 and "cannot write in /proc" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    folder = mt("run", str(src), "-o", str(tmp_path))
    assert folder.returncode != 0 and "is a directory" in folder.stderr, folder.stderr
    assert "give a file name" in folder.stderr
    assert sha256(src) == before


def test_plan_json_lists_chunks_queues_and_every_argv_without_encoding(
        clips: dict[str, Path], tmp_path: Path) -> None:
    done = mt("plan", str(clips["long"]), "--chunk-seconds", "1", "--json")
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    assert len(plan["chunks"]) >= 8
    assert sum(c["frames"] for c in plan["chunks"]) == plan["frames"] == 200
    assert all(c["queue"] == "cpu" and c["argv"][0].endswith("ffmpeg") for c in plan["chunks"])
    assert plan["mux"]["argv"] and plan["concat"]["argv"]
    assert not Path(plan["output"]).exists()
    gpu = json.loads(mt("plan", str(clips["long"]), "--video-codec", "h264_nvenc",
                        "--json").stdout)
    assert {c["queue"] for c in gpu["chunks"]} == {"gpu"}


def test_probe_json_describes_the_file(clips: dict[str, Path]) -> None:
    done = mt("probe", str(clips["vfr"]), "--json")
    assert done.returncode == 0
    info = json.loads(done.stdout)
    assert info["video"]["is_vfr"] is True and info["video"]["frame_count"] == 171


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        for part in ("cmdline", "environ"):
            try:
                if text.encode() in Path(f"/proc/{pid}/{part}").read_bytes():
                    found.append(int(pid))
                    break
            except OSError:
                continue
    return found


def test_ctrl_c_stops_workers_and_ffmpeg_and_leaves_no_temp_files(tmp_path: Path) -> None:
    import signal
    import time

    src = tmp_path / "long.mkv"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc2=size=640x360:rate=25", "-t", "60", "-c:v", "libx264", "-preset",
                    "ultrafast", "-g", "25", str(src)], check=True)
    out = tmp_path / "out.mkv"
    tmp, env = private_tmp(tmp_path)
    work = tmp_path / "work"
    env["MEDIATASKS_WORK_DIR"] = str(work)
    # 30 chunks at a very slow preset: minutes of work on any machine, so the interrupt always
    # lands while chunks are being encoded, never after the job is done.
    proc = subprocess.Popen([MEDIATASKS, "run", str(src), "-o", str(out), "--preset", "veryslow",
                             "--chunk-seconds", "2"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL, env=env,
                            # Ctrl-C as a terminal delivers it, even when the tests themselves
                            # were started in the background (where a shell ignores SIGINT).
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 60
    mine: set[str] = set()
    while time.monotonic() < deadline:
        mine = {p.name for p in tmp.iterdir() if p.name.startswith("mt-")}
        if mine and work.is_dir() and any(work.rglob("*.tmp")):
            break  # a chunk encode is running
        time.sleep(0.2)
    assert mine, "the run never started its private cluster"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    lines = err.strip().splitlines()
    assert lines[0].startswith("job ") and "interrupted" in lines[-1], err
    assert [line for line in lines if line.startswith("mediatasks:")] == lines[-1:], err
    time.sleep(1)
    for d in mine:
        assert not (tmp / d).exists()
        assert _processes_mentioning(d) == [], "a worker, redis-server or ffmpeg survived"
    assert _processes_mentioning(str(src)) == []
    assert not out.exists() and not list(tmp_path.glob(".*part"))
    assert [p for p in work.iterdir() if p.is_dir()] == [], \
        "an interrupted run leaves its job directory behind"


def test_names_with_newlines_and_names_at_the_length_limit_work(clips: dict[str, Path],
                                                                tmp_path: Path) -> None:
    newline = tmp_path / "line one\nline two.mkv"
    shutil.copy(clips["cfr"], newline)
    longest = tmp_path / ("ü" * 125 + "x.mkv")  # 255 bytes: the most one file name may hold
    assert len(longest.name.encode()) == 255
    shutil.copy(clips["cfr"], longest)
    for src in (newline, longest):
        out = tmp_path / "out" / src.name
        out.parent.mkdir(exist_ok=True)
        done = mt("run", str(src), "-o", str(out), "--video-codec", "ffv1", "--chunk-seconds", "1",
                  "--json")
        assert done.returncode == 0, done.stderr
        assert frame_hashes(out) == frame_hashes(src)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted([newline.name,
                                                                          longest.name])


def test_a_symlinked_input_is_read_through_and_left_as_it_is(clips: dict[str, Path],
                                                             tmp_path: Path) -> None:
    real = tmp_path / "real.mkv"
    shutil.copy(clips["cfr"], real)
    link = tmp_path / "link.mkv"
    link.symlink_to(real)
    before = sha256(real)
    out = tmp_path / "out.mkv"
    done = mt("run", str(link), "-o", str(out), "--video-codec", "ffv1", "--chunk-seconds", "1")
    assert done.returncode == 0, done.stderr
    assert link.is_symlink() and sha256(real) == before
    assert frame_hashes(out) == frame_hashes(real)
    # Writing over the file the link points to is writing over the input.
    same = mt("run", str(link), "-o", str(real), "--overwrite")
    assert same.returncode != 0 and "output is the input" in same.stderr
    dangling = tmp_path / "dangling.mkv"
    dangling.symlink_to(tmp_path / "gone.mkv")
    gone = mt("run", str(dangling), "-o", str(tmp_path / "o2.mkv"))
    assert gone.returncode != 0 and "dangling.mkv" in gone.stderr and "no such file" in gone.stderr


def without_root_powers(args: list[str]) -> list[str]:
    """Root reads and writes past file modes; drop that power (CAP_DAC_*) so modes count."""
    if os.geteuid() != 0:
        return args
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is needed to test permissions as root")
    return ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--inh-caps",
            "-dac_override,-dac_read_search", *args]


def test_unreadable_inputs_and_unwritable_outputs_are_refused_in_one_line(
        clips: dict[str, Path], tmp_path: Path) -> None:
    secret = tmp_path / "secret.mkv"
    shutil.copy(clips["cfr"], secret)
    secret.chmod(0o000)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    src = tmp_path / "ok.mkv"
    shutil.copy(clips["cfr"], src)
    try:
        for args, words in (
            ([str(secret), "-o", str(tmp_path / "o.mkv")], ("secret.mkv", "permission")),
            ([str(src), "-o", str(locked / "o.mkv")], ("o.mkv", "not writable")),
        ):
            done = subprocess.run(without_root_powers([MEDIATASKS, "run", *args]),
                                  capture_output=True, text=True, timeout=120,
                                  stdin=subprocess.DEVNULL)
            lines = done.stderr.strip().splitlines()
            assert done.returncode != 0 and len(lines) == 1, done.stderr
            assert all(w in lines[0] for w in words), lines
            assert "Traceback" not in done.stderr
        assert list(locked.iterdir()) == [] and not (tmp_path / "o.mkv").exists()
    finally:
        secret.chmod(0o644)
        locked.chmod(0o755)


def test_a_run_that_died_is_resumed_by_the_next_run_with_its_verified_chunks(
        tmp_path: Path) -> None:
    """kill -9 of `mediatasks run` (a power cut): its workers and ffmpeg die with it, its job
    directory stays; the same command again takes over the chunks that were verified."""
    import signal
    import time

    src = tmp_path / "long.mkv"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc2=size=640x360:rate=25", "-t", "12", "-c:v", "libx264", "-preset",
                    "ultrafast", "-g", "25", str(src)], check=True)
    out = tmp_path / "out.mkv"
    work = tmp_path / "work"
    env = dict(os.environ, MEDIATASKS_WORK_DIR=str(work))
    args = [MEDIATASKS, "run", str(src), "-o", str(out), "--preset", "slow", "--chunk-seconds",
            "1", "--json"]
    first = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             stdin=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(work.glob("*/chunks/*.json"))) < 3:
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    verified = len(list(work.glob("*/chunks/*.json")))
    assert verified >= 3 and not out.exists()
    (old,) = [p for p in work.iterdir() if p.is_dir()]
    deadline = time.monotonic() + 10
    while _processes_mentioning(old.name) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _processes_mentioning(old.name) == [], "a worker or ffmpeg outlived the killed run"
    done = mt("run", *args[2:], env=env)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == "succeeded" and result["frames_out"] == result["frames_in"] == 300
    assert result["chunks_reused"] >= verified - 1  # a chunk may land between count and kill
    assert [p for p in work.iterdir() if p.is_dir()] == []


def test_a_broker_that_cannot_be_reached_is_said_once_and_the_job_ends_failed(
        clips: dict[str, Path], tmp_path: Path) -> None:
    env = dict(os.environ, MEDIATASKS_BROKER_URL="redis://127.0.0.1:9/0",
               MEDIATASKS_RESULT_BACKEND="redis://127.0.0.1:9/0",
               MEDIATASKS_DATABASE_URL=f"sqlite:///{tmp_path / 'h.sqlite'}")
    done = mt("submit", str(clips["cfr"]), "-o", str(tmp_path / "o.mkv"), "--json", env=env,
              timeout=60)
    lines = done.stderr.strip().splitlines()
    assert done.returncode != 0 and len(lines) == 1, done.stderr
    assert "cannot reach the broker at redis://127.0.0.1:9/0" in lines[0]
    listed = json.loads(mt("jobs", "list", "--json", env=env).stdout)
    assert [j["status"] for j in listed] == ["failed"]
    bogus = mt("jobs", "list", "--status", "bogus", env=env)
    assert bogus.returncode == 2 and "not a job status" in bogus.stderr
