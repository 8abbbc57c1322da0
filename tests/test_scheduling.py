"""The encoder-aware schedule of a local run (pure: no ffmpeg, no workers), and where it meets
the plan, the encode argv and the canvas."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mediatasks.cli.follow import StepTimes
from mediatasks.cli.local import ScheduleChooser
from mediatasks.models import EncodeOptions, JobSpec, Keyframe, ProbeResult, StreamInfo, VideoInfo
from mediatasks.scheduling import for_source, longest_first, plan_schedule, profile
from mediatasks.service.records import Event
from mediatasks.settings import Settings
from mediatasks.steps import encode
from mediatasks.steps.plan import plan_job


def source(seconds: int, *, width: int = 1920, height: int = 1080, **kw: object) -> ProbeResult:
    n = seconds * 25
    v = VideoInfo.model_validate(dict(
        index=0, codec_name="h264", width=width, height=height, time_base="1/25", start_pts=0,
        end_pts=n, frame_count=n, keyframes=tuple(Keyframe(index=i, pts=i) for i in range(0, n, 50)),
        **kw))
    return ProbeResult(path="/src/a.mkv", size=1, format_name="matroska", duration=seconds,
                       video=v, streams=(StreamInfo(index=0, codec_type="video", codec_name="h264"),))


def test_x264_on_two_cores_is_one_encode_with_its_own_threads_like_plain_ffmpeg() -> None:
    s = plan_schedule("libx264", cores=2, width=1280, height=720, duration=60)
    assert (s.workers, s.threads, s.chunks) == (1, None, 1)
    assert s.chunk_seconds == 60


def test_x264_on_sixteen_cores_runs_few_encodes_with_many_threads() -> None:
    s = plan_schedule("libx264", cores=16, width=1920, height=1080, duration=120)
    assert s.workers == 2 and s.threads == 8
    assert s.chunks % s.workers == 0  # full waves: the last one is as long as the others


def test_slow_encoders_run_many_encodes_with_few_threads() -> None:
    aom = plan_schedule("libaom-av1", cores=16, width=1280, height=720, duration=120,
                        options={"cpu-used": "6", "row-mt": "1"})
    vp9 = plan_schedule("libvpx-vp9", cores=16, width=1280, height=720, duration=120,
                        options={"row-mt": "1"})
    x264 = plan_schedule("libx264", cores=16, width=1280, height=720, duration=120)
    assert aom.workers >= 5 and vp9.workers >= 5 and x264.workers <= 3
    assert aom.threads is not None and aom.threads * aom.workers <= 16


def test_no_chunk_is_shorter_than_the_encoders_minimum() -> None:
    """Fewer workers rather than short chunks, whose own keyframes make the output larger."""
    aom = plan_schedule("libaom-av1", cores=16, width=1280, height=720, duration=20,
                        options={"cpu-used": "6", "row-mt": "1"})
    assert aom.chunk_seconds >= profile("libaom-av1").min_chunk
    assert aom.workers * aom.chunk_seconds <= 20 + 1e-9


def test_svt_av1_threads_better_at_fast_presets() -> None:
    slow = plan_schedule("libsvtav1", cores=16, width=1920, height=1080, duration=600, preset="4")
    fast = plan_schedule("libsvtav1", cores=16, width=1920, height=1080, duration=600, preset="12")
    assert slow.workers > fast.workers


@pytest.mark.parametrize("cores", [1, 2, 4, 8, 16, 64])
@pytest.mark.parametrize("encoder", ["libx264", "libx265", "libaom-av1", "libvpx-vp9",
                                     "libsvtav1", "h264_nvenc", "mpeg4"])
@pytest.mark.parametrize("duration", [0.5, 2, 30, 7200])
def test_every_schedule_is_whole(cores: int, encoder: str, duration: float) -> None:
    s = plan_schedule(encoder, cores=cores, width=640, height=360, duration=duration)
    assert s.workers >= 1 and s.chunks >= 1
    assert s.threads is None or 1 <= s.threads <= cores
    assert abs(s.chunk_seconds * s.chunks - duration) < 1e-6
    assert s.chunk_seconds <= 600 + 1e-6


def test_workers_and_chunk_seconds_given_win() -> None:
    s = plan_schedule("libx264", cores=2, width=1920, height=1080, duration=120, workers=4,
                      chunk_seconds=10)
    assert (s.workers, s.chunk_seconds, s.chunks, s.threads) == (4, 10, 12, 1)
    assert "--workers" in s.reason and "--chunk-seconds" in s.reason


def test_a_source_that_cannot_be_cut_is_one_chunk_on_one_worker() -> None:
    s = for_source(source(120, split_blocker="timestamps go backwards"),
                   EncodeOptions(video_codec="libaom-av1"), cores=16)
    assert (s.workers, s.chunks, s.threads) == (1, 1, None)


def test_the_plan_cuts_the_chunks_the_schedule_chose() -> None:
    src = source(120)
    opts = EncodeOptions(video_codec="libvpx-vp9", video_opts=(("row-mt", "1"),))
    s = for_source(src, opts, cores=16)
    spec = JobSpec(job_id="j", input="/src/a.mkv", output="/o/a.mkv",
                   options=opts.model_copy(update={"chunk_seconds": round(s.chunk_seconds, 3)}))
    jp = plan_job(src, spec, chunk_seconds=30, min_chunk_frames=12)
    assert len(jp.chunks) == s.chunks


def test_the_local_chooser_keeps_a_chunk_length_that_was_given(monkeypatch: pytest.MonkeyPatch
                                                                ) -> None:
    chooser = ScheduleChooser(Settings(), workers=None, cores=16)
    assert chooser(source(120), EncodeOptions()) is not None
    assert chooser(source(120), EncodeOptions(chunk_seconds=5)) is None
    assert chooser.schedule is not None and chooser.schedule.chunk_seconds == 5
    monkeypatch.setenv("MEDIATASKS_CHUNK_SECONDS", "7")
    chooser = ScheduleChooser(Settings(), workers=3, cores=16)
    assert chooser(source(120), EncodeOptions()) is None
    assert chooser.schedule is not None and chooser.schedule.workers == 3


def test_chunks_are_sent_longest_first() -> None:
    assert longest_first([10, 30, 20, 30]) == [1, 3, 2, 0]
    assert longest_first([]) == []


def test_the_canvas_sends_chunks_in_the_given_order() -> None:
    from mediatasks.cluster.app import app
    from mediatasks.cluster.canvas import encode_workflow

    spec = JobSpec(job_id="j", input="/a.mkv", output="/b.mkv")
    wf = encode_workflow(app, spec, chunks=3, queue="cpu", order=[2, 0, 1])
    header = wf.tasks[0].tasks
    assert [t.kwargs.get("index") for t in header] == [2, 0, 1, None]
    wf = encode_workflow(app, spec, chunks=3, queue="cpu", order=[0, 0, 1])  # not a permutation
    assert [t.kwargs.get("index") for t in wf.tasks[0].tasks] == [0, 1, 2, None]


def test_threads_go_to_encoders_that_take_them_unless_the_options_set_them() -> None:
    src = source(60)

    def argv(opts: EncodeOptions, threads: int | None) -> list[str]:
        spec = JobSpec(job_id="j", input="/src/a.mkv", output="/o/a.mkv", options=opts)
        jp = plan_job(src, spec, chunk_seconds=30, min_chunk_frames=12)
        return encode.encode_args(jp, jp.chunks[0], Path("/w/0.nut"), seek_pts=None,
                                  threads=threads)

    a = argv(EncodeOptions(), 4)
    assert a[a.index("-threads:v") + 1] == "4" and a[-1] == "/w/0.nut"
    assert "-threads:v" not in argv(EncodeOptions(), None)
    assert "-threads:v" not in argv(EncodeOptions(video_codec="libx265"), 4)
    mine = argv(EncodeOptions(video_opts=(("threads", "3"),)), 4)
    assert mine[mine.index("-threads:v") + 1] == "3" and mine.count("-threads:v") == 1


def test_step_times_come_from_the_state_events() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    times = StepTimes()
    times.add("checks", 0.5)
    for i, (kind, dt) in enumerate([("job.queued", 0), ("job.probing", 0.25), ("job.planned", 1),
                                    ("chunk.finished", 1.5), ("job.encoding", 1.25),
                                    ("job.assembling", 4), ("job.verifying", 4.5),
                                    ("job.publishing", 5), ("job.succeeded", 5.125)]):
        times.event(Event(seq=i, job_id="j", type=kind, at=t0 + timedelta(seconds=dt)))
    times.add("stop workers", 0.125)
    assert times.as_dict() == {"checks": 0.5, "wait for a worker": 0.25, "probe + plan": 0.75,
                               "start encodes": 0.25, "encode": 2.75, "concat + mux": 0.5,
                               "verify": 0.5, "publish": 0.125, "stop workers": 0.125}
    assert times.line().startswith("steps: checks 0.50s, wait for a worker 0.25s")
