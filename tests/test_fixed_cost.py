"""What a job costs besides its encodes: one read of the source, few processes, no repeated
probe, checks that import nothing while the service loads beside them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mediatasks import fingerprint, runner
from mediatasks.cli.follow import StepTimes
from mediatasks.errors import InvalidOptions
from mediatasks.models import EncodeOptions, JobSpec
from mediatasks.service.records import TaskRecord
from mediatasks.steps import concat, encode, mux, plan, probe, verify
from mediatasks.steps.audio import encode_audio


def _tools(commands: list[runner.Completed]) -> list[str]:
    return [Path(c.argv[0]).name for c in commands]


def test_one_probe_pass_gives_the_plan_and_verify_every_frame_time(clips: dict[str, Path],
                                                                  tmp_path: Path) -> None:
    src = clips["cfr"]
    runner.record_commands()
    result, frame_pts = probe.probe_source(src)
    assert _tools(runner.recorded_commands()) == ["ffprobe"] * 3
    assert list(frame_pts) == list(probe.frame_timestamps(src, result.video.index))
    assert len(frame_pts) == result.video.frame_count == 120
    spec = JobSpec(job_id=uuid.uuid4().hex, input=str(src), output=str(tmp_path / "o.mkv"),
                   options=EncodeOptions(video_codec="ffv1", chunk_seconds=1.0))
    job_dir = tmp_path / "job"
    plan.save_frames(frame_pts, job_dir)
    runner.record_commands()
    jp = plan.plan_and_save(result, spec, job_dir, ffprobe="ffprobe", chunk_seconds=1.0,
                            min_chunk_frames=5)
    assert runner.recorded_commands() == [], "the plan read the source again"
    assert len(jp.chunks) == 4
    assert list(plan.load_frames(job_dir) or []) == list(frame_pts)


def test_encode_concat_mux_and_verify_start_one_process_each_but_mux(clips: dict[str, Path],
                                                                    tmp_path: Path) -> None:
    src, out = clips["rich"], tmp_path / "out.mkv"
    result, frame_pts = probe.probe_source(src)
    spec = JobSpec(job_id=uuid.uuid4().hex, input=str(src), output=str(out),
                   options=EncodeOptions(video_codec="ffv1", chunk_seconds=1.0))
    job_dir = tmp_path / "job"
    jp = plan.plan_job(result, spec, chunk_seconds=1.0, min_chunk_frames=5, frame_pts=frame_pts)
    plan.save_plan(jp, job_dir)
    runner.record_commands()
    chunks = [encode.encode_chunk(jp, c, job_dir) for c in jp.chunks]
    assert _tools(runner.recorded_commands()) == ["ffmpeg"] * len(jp.chunks)
    assert [c.frames for c in chunks] == [c.frames for c in jp.chunks]
    runner.record_commands()
    video = concat.concat(jp, chunks, job_dir)
    assert _tools(runner.recorded_commands()) == ["ffmpeg"] and video.frames == jp.frame_count
    mux.mux(jp, Path(video.path), encode_audio(jp, job_dir), out)
    runner.record_commands()
    assert verify.verify(jp, out, frames_encoded=video.frames,
                         source_pts=frame_pts) == jp.frame_count
    assert _tools(runner.recorded_commands()) == ["ffprobe"]


def test_verify_still_finds_a_frame_out_of_place(clips: dict[str, Path], tmp_path: Path) -> None:
    src = clips["cfr"]
    result, frame_pts = probe.probe_source(src)
    out = tmp_path / "out.mkv"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(src), "-c", "copy", str(out)],
                   check=True)
    spec = JobSpec(job_id=uuid.uuid4().hex, input=str(src), output=str(out),
                   options=EncodeOptions(video_codec="ffv1"))
    jp = plan.plan_job(result, spec, chunk_seconds=60, min_chunk_frames=5)
    assert verify.verify(jp, out, frames_encoded=120, source_pts=frame_pts) == 120
    moved = [*frame_pts[:50], frame_pts[50] + 100, *frame_pts[51:]]
    with pytest.raises(Exception, match="frame 50 is shown at"):
        verify.verify(jp, out, frames_encoded=120, source_pts=moved)


def test_a_passed_encoder_check_is_not_run_again_and_a_wrong_option_always_fails(
        tmp_path: Path) -> None:
    proven = tmp_path / "checks"
    good = EncodeOptions(video_codec="libx264", preset="ultrafast")
    runner.record_commands()
    encode.check_encoder_at(good, (64, 48), "yuv420p", "matroska", proven=proven)
    assert _tools(runner.recorded_commands()) == ["ffmpeg", "ffprobe"]
    runner.record_commands()
    encode.check_encoder_at(good, (64, 48), "yuv420p", "matroska", proven=proven)
    assert runner.recorded_commands() == []
    bad = EncodeOptions(video_codec="libx264", preset="nonsense")
    for _ in range(2):
        with pytest.raises(InvalidOptions, match="invalid preset 'nonsense'"):
            encode.check_encoder_at(bad, (64, 48), "yuv420p", "matroska", proven=proven)
    assert len(proven.read_text().split()) == 1


def _probe_task(spec: JobSpec, known: fingerprint.KnownSource | None, work: Path) -> list[str]:
    """The analyse step's probe task body, in a process whose work directory is ``work``;
    returns the programs it ran."""
    code = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from mediatasks import runner\n"
        "from mediatasks.cluster import tasks\n"
        "runner.record_commands()\n"
        "args = json.loads(sys.stdin.read())\n"
        "tasks.probe.run(**args)\n"
        "print(json.dumps([Path(c.argv[0]).name for c in runner.recorded_commands()]))\n")
    args = {"spec": spec.model_dump(mode="json"),
            "known": known.model_dump(mode="json") if known else None}
    done = subprocess.run([sys.executable, "-c", code], input=json.dumps(args), text=True,
                          capture_output=True, check=True,
                          env=dict(os.environ, MEDIATASKS_WORK_DIR=str(work)))
    tools: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return tools


def test_the_analyse_step_takes_the_probe_of_a_local_run_while_the_file_matches(
        clips: dict[str, Path], tmp_path: Path) -> None:
    src = tmp_path / "src.mkv"
    shutil.copy(clips["cfr"], src)
    taken = fingerprint.take(src)
    result = probe.probe(src)
    known = fingerprint.KnownSource(probe=result, fingerprint=taken)
    spec = JobSpec(job_id=uuid.uuid4().hex, input=str(src.resolve()),
                   output=str(tmp_path / "o.mkv"), options=EncodeOptions(video_codec="ffv1"))
    work = tmp_path / "work"
    assert _probe_task(spec, known, work) == []
    assert _probe_task(spec, None, work) == ["ffprobe"] * 3
    assert plan.load_frames(work / spec.job_id) is not None
    os.utime(src, ns=(taken.mtime_ns + 10**9, taken.mtime_ns + 10**9))  # the file changed
    assert _probe_task(spec, known, work) == ["ffprobe"] * 3
    other = spec.model_copy(update={"input": str(clips["vfr"].resolve())})
    assert _probe_task(other, known, work) == ["ffprobe"] * 3  # a probe of another file


def test_the_checks_import_nothing_once_their_modules_are_loaded(clips: dict[str, Path],
                                                                 tmp_path: Path) -> None:
    """`mediatasks run` loads the service on a thread while the checks run: the checks must
    not import (two threads importing at once can see half-initialised modules)."""
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from mediatasks.cli.local import ScheduleChooser, preload_checks\n"
        "from mediatasks.settings import get_settings\n"
        "preload_checks()\n"
        "from mediatasks.service.prepare import make_options, prepare_job\n"
        "before = set(sys.modules)\n"
        "s = get_settings()\n"
        "opts = make_options('libx264', None, 'ultrafast', ['tune=film'], 'aac', None)\n"
        "chooser = ScheduleChooser(s, workers=None)\n"
        "got = []\n"
        "prepare_job(Path(sys.argv[1]), Path(sys.argv[2]), opts, overwrite=True, settings=s,\n"
        "            exact_preview=False, local=True, chunk_length=chooser, on_probe=got.append,\n"
        "            on_container=lambda info: chooser.early(info, opts))\n"
        "assert got\n"
        "print(' '.join(sorted(set(sys.modules) - before)))\n")
    done = subprocess.run([sys.executable, "-c", code, str(clips["rich"]),
                           str(tmp_path / "o.mkv")], text=True, capture_output=True,
                          env=dict(os.environ, MEDIATASKS_WORK_DIR=str(tmp_path / "work")))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == []


def _row(name: str, start: float, end: float, at: datetime) -> TaskRecord:
    return TaskRecord(id=uuid.uuid4().hex, name=f"mediatasks.{name}", queue=None, worker=None,
                      state="SUCCESS", started_at=at + timedelta(seconds=start),
                      finished_at=at + timedelta(seconds=end), retries=0, error=None)


def test_step_times_come_from_the_tasks_each_step_apart() -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    steps = StepTimes()
    steps.events = [("queued", at.timestamp() - 0.5)]
    steps.tasks([_row("probe", 0.0, 0.1, at), _row("plan", 0.15, 0.25, at),
                 _row("encode_chunk", 0.3, 1.3, at), _row("encode_chunk", 0.35, 1.5, at),
                 _row("encode_audio", 0.31, 0.4, at), _row("concat", 1.6, 1.7, at),
                 _row("mux", 1.7, 1.9, at), _row("verify", 1.9, 2.0, at),
                 _row("publish", 2.0, 2.05, at)])
    got = steps.as_dict()
    assert list(got) == ["wait for a worker", "probe", "plan", "start encodes", "encode",
                         "concat", "mux", "verify", "publish"]
    assert got == pytest.approx({"wait for a worker": 0.5, "probe": 0.15, "plan": 0.1,
                                 "start encodes": 0.05, "encode": 1.3, "concat": 0.1,
                                 "mux": 0.2, "verify": 0.1, "publish": 0.05})
