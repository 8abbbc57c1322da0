"""Data that must not be lost or mixed: a source that changes or goes away under a job, and a
disk that fills while ffmpeg still exits 0."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import run_job, submit

from mediatasks import fingerprint, runner
from mediatasks.errors import DiskFull, MediatasksError, SourceChanged


def clip(path: Path, seconds: float, pattern: str = "testsrc2") -> Path:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i",
                    f"{pattern}=size=320x180:rate=25", "-t", str(seconds), "-c:v", "libx264",
                    "-preset", "ultrafast", "-g", "25", str(path)], check=True)
    return path


def test_a_fingerprint_sees_a_replaced_a_modified_and_a_deleted_source(tmp_path: Path) -> None:
    src = clip(tmp_path / "a.mkv", 2)
    job = tmp_path / "job"
    fingerprint.save(fingerprint.take(src), job)
    fingerprint.check(src, job)  # unchanged
    other = clip(tmp_path / "b.mkv", 2, "smptebars")
    os.replace(other, src)
    with pytest.raises(SourceChanged, match=r"changed while the job ran .*replaced"):
        fingerprint.check(src, job)
    fingerprint.save(fingerprint.take(src), job)
    with open(src, "r+b") as f:  # same size, same inode: a block in the middle rewritten
        f.seek(src.stat().st_size // 2)
        f.write(b"\0" * 4096)
    with pytest.raises(SourceChanged, match="changed while the job ran"):
        fingerprint.check(src, job)
    src.unlink()
    with pytest.raises(SourceChanged, match="deleted while the job ran"):
        fingerprint.check(src, job)


@pytest.mark.parametrize("change", ["replaced", "deleted"])
def test_a_source_that_changes_during_the_job_fails_it_and_nothing_is_published(
        cluster: Any, tmp_path: Path, work_dir: Path, change: str) -> None:
    src = clip(tmp_path / "src.mkv", 8)
    other = clip(tmp_path / "other.mkv", 8, "smptebars")
    out = tmp_path / "out.mkv"
    spec = submit(src, out, video_codec="libx264", preset="slow", chunk_seconds=1)

    def change_after_first_chunk() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if list((work_dir / spec.job_id / "chunks").glob("*.json")):
                if change == "replaced":
                    shutil.move(other, src)  # same length, another picture
                else:
                    src.unlink()
                return
            time.sleep(0.05)

    changer = threading.Thread(target=change_after_first_chunk)
    changer.start()
    with pytest.raises(MediatasksError, match=r"source (changed|was deleted) while the job ran"):
        run_job(cluster, spec)
    changer.join()
    assert not out.exists()


def test_a_full_disk_that_ffmpeg_exits_0_on_is_a_disk_full_error(tmp_path: Path) -> None:
    fake = tmp_path / "ffmpeg"
    fake.write_text("#!/bin/sh\necho '[matroska @ 0x1] Error writing trailer of out.mkv: "
                    "No space left on device' >&2\nexit 0\n")
    fake.chmod(0o755)
    with pytest.raises(DiskFull, match=r"No space left|no space"):
        runner.run([str(fake), "-i", "in.mkv", str(tmp_path / "out.mkv")])


def test_a_source_cut_short_is_said_with_counts_and_refused_under_strict(tmp_path: Path) -> None:
    import json
    import sys

    full = clip(tmp_path / "full.mkv", 4)
    half = tmp_path / "half.mkv"
    half.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    cli = str(Path(sys.executable).with_name("mediatasks"))
    env = dict(os.environ, MEDIATASKS_WORK_DIR=str(tmp_path / "work"),
               MEDIATASKS_DATABASE_URL=f"sqlite:///{tmp_path / 'h.sqlite'}")
    done = subprocess.run([cli, "run", str(half), "-o", str(tmp_path / "o.mkv"), "--json"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["frames_out"] < 100
    assert any("declares 4.00s but its frames reach" in w and "frame(s)" in w
               for w in result["warnings"]), result["warnings"]
    strict = subprocess.run([cli, "run", str(half), "-o", str(tmp_path / "s.mkv"), "--strict"],
                            capture_output=True, text=True, env=env, timeout=300)
    lines = strict.stderr.strip().splitlines()
    assert strict.returncode == 3 and len(lines) == 1 and "--strict" in lines[0], strict.stderr
    assert "half.mkv" in lines[0] and not (tmp_path / "s.mkv").exists()
    whole = subprocess.run([cli, "plan", str(full), "--json"], capture_output=True, text=True,
                           env=env, timeout=120)
    assert not [w for w in json.loads(whole.stdout)["warnings"] if "declares" in w]
