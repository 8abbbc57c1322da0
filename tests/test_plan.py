"""Pure tier: plans, argv and canvases, without ffmpeg or a broker."""

from __future__ import annotations

import itertools
from fractions import Fraction
from pathlib import Path

import pytest

from mediatasks import profiles
from mediatasks.errors import InvalidOptions
from mediatasks.models import (
    Chunk,
    ChunkResult,
    EncodeOptions,
    JobSpec,
    Keyframe,
    ProbeResult,
    StreamInfo,
    VideoInfo,
)
from mediatasks.steps import concat, encode, mux
from mediatasks.steps.plan import plan_chunks, plan_job
from mediatasks.steps.probe import PacketIndex, window_blocker


def video(n: int = 300, step: int = 1001, gop: int = 24, **kw: object) -> VideoInfo:
    """A CFR 30000/1001 stream of ``n`` frames with a keyframe every ``gop`` frames."""
    fields: dict[str, object] = dict(
        index=0, codec_name="h264", width=320, height=240, time_base="1/30000",
        start_pts=0, end_pts=n * step, frame_count=n,
        keyframes=tuple(Keyframe(index=i, pts=i * step) for i in range(0, n, gop)))
    fields.update(kw)
    return VideoInfo.model_validate(fields)


def assert_partition(chunks: tuple[Chunk, ...], n: int) -> None:
    assert chunks[0].start_frame == 0 and chunks[-1].end_frame == n
    for a, b in itertools.pairwise(chunks):
        assert a.end_frame == b.start_frame and a.end_pts == b.start_pts
    assert all(c.frames > 0 for c in chunks)
    assert [c.index for c in chunks] == list(range(len(chunks)))


def test_chunks_partition_the_frames_and_cut_on_keyframes() -> None:
    v = video()
    chunks = plan_chunks(v, chunk_seconds=2, min_chunk_frames=12)
    assert_partition(chunks, 300)
    keys = {k.index for k in v.keyframes}
    assert all(c.start_frame in keys for c in chunks)
    assert len(chunks) >= 4
    assert chunks[0].seek_pts is None
    assert all(c.seek_pts == c.start_pts for c in chunks[1:])
    assert chunks[-1].end_pts is None


def test_a_single_gop_source_is_cut_between_keyframes_with_a_seek_before_the_cut() -> None:
    v = video(n=200, gop=1000)
    pts = [i * 1001 for i in range(200)]
    chunks = plan_chunks(v, chunk_seconds=1, min_chunk_frames=12, frame_pts=pts)
    assert_partition(chunks, 200)
    assert len(chunks) > 4
    assert all(c.seek_pts == 0 for c in chunks[1:])
    assert all(c.start_pts == pts[c.start_frame] for c in chunks)


def test_no_chunk_is_shorter_than_the_minimum() -> None:
    v = video(n=100, gop=5)
    chunks = plan_chunks(v, chunk_seconds=0.1, min_chunk_frames=12)
    assert_partition(chunks, 100)
    assert min(c.frames for c in chunks) >= 12


def test_a_stream_with_unsafe_timestamps_is_one_chunk() -> None:
    v = video(split_blocker="several video packets share a timestamp")
    chunks = plan_chunks(v, chunk_seconds=1, min_chunk_frames=12)
    assert len(chunks) == 1 and chunks[0].frames == 300
    assert chunks[0].start_pts is None and chunks[0].seek_pts is None


def test_a_short_stream_is_one_chunk() -> None:
    assert len(plan_chunks(video(n=20), chunk_seconds=0.1, min_chunk_frames=12)) == 1


def test_chapter_starts_pull_the_cut_to_their_keyframe() -> None:
    v = video(n=600, gop=6)
    plain = plan_chunks(v, chunk_seconds=5, min_chunk_frames=12)
    guided = plan_chunks(v, chunk_seconds=5, min_chunk_frames=12,
                         chapter_starts=(float(Fraction(162 * 1001, 30000)),))
    assert plain[1].start_frame == 150
    assert guided[1].start_frame == 162


def test_eight_or_more_chunks_for_a_long_clip() -> None:
    chunks = plan_chunks(video(n=2000, gop=12), chunk_seconds=1, min_chunk_frames=12)
    assert_partition(chunks, 2000)
    assert len(chunks) >= 8


def probe_result(**kw: object) -> ProbeResult:
    fields: dict[str, object] = dict(
        path="/src/in put.mkv", size=1, format_name="matroska", video=video(),
        streams=(StreamInfo(index=0, codec_type="video", codec_name="h264"),
                 StreamInfo(index=1, codec_type="audio", codec_name="aac", language="eng"),
                 StreamInfo(index=2, codec_type="subtitle", codec_name="ass")))
    fields.update(kw)
    return ProbeResult.model_validate(fields)


def job(output: str = "/out/o.mp4", **opts: object) -> JobSpec:
    return JobSpec(job_id="j1", input="/src/in put.mkv", output=output,
                   options=EncodeOptions.model_validate(opts))


def test_encode_argv_selects_frames_by_pts_and_never_uses_a_shell() -> None:
    plan = plan_job(probe_result(), job(video_codec="libx265", crf=24, preset="slow"),
                    chunk_seconds=2, min_chunk_frames=12)
    c = plan.chunks[2]
    argv = encode.encode_args(plan, c, encode.chunk_path(__import__("pathlib").Path("/w"), 2),
                              seek_pts=c.seek_pts)
    assert argv[0] == "ffmpeg" and "-copyts" in argv and "-noaccurate_seek" in argv
    assert f"trim=end_pts={c.end_pts}:start_pts={c.start_pts}" in " ".join(argv)
    assert argv[argv.index("-frames:v") + 1] == str(c.frames)
    assert argv[argv.index("-fps_mode") + 1] == "passthrough"
    assert "file:/src/in put.mkv" in argv
    assert argv[argv.index("-crf") + 1] == "24" and argv[argv.index("-preset") + 1] == "slow"
    assert "open-gop=0" in argv[argv.index("-x265-params") + 1]
    assert argv[-1] == "/w/chunks/00002.nut"


def test_the_encoder_decides_the_queue() -> None:
    assert profiles.queue_for("libx264") == "cpu"
    assert profiles.queue_for("ffv1") == "cpu"
    for hw in ("h264_nvenc", "hevc_qsv", "av1_vaapi", "hevc_videotoolbox", "h264_amf"):
        assert profiles.queue_for(hw) == "gpu"
    assert plan_job(probe_result(), job(video_codec="hevc_nvenc"), chunk_seconds=2,
                    min_chunk_frames=12).queue == "gpu"


def test_crf_for_a_lossless_encoder_is_refused() -> None:
    with pytest.raises(InvalidOptions, match="lossless"):
        profiles.quality_args(EncodeOptions(video_codec="ffv1", crf=20))


def test_text_subtitles_are_converted_for_mp4_and_copied_for_mkv() -> None:
    for_mp4 = plan_job(probe_result(), job("/o.mp4"), chunk_seconds=2, min_chunk_frames=12)
    assert for_mp4.subtitles[0].action == "convert" and for_mp4.subtitles[0].to_codec == "mov_text"
    for_mkv = plan_job(probe_result(), job("/o.mkv"), chunk_seconds=2, min_chunk_frames=12)
    assert for_mkv.subtitles[0].action == "copy"


def test_bitmap_subtitles_into_mp4_are_refused_with_the_fix() -> None:
    src = probe_result(streams=(StreamInfo(index=0, codec_type="video", codec_name="h264"),
                                StreamInfo(index=1, codec_type="subtitle",
                                           codec_name="hdmv_pgs_subtitle")))
    with pytest.raises(InvalidOptions, match=r"\.mkv"):
        plan_job(src, job("/o.mp4"), chunk_seconds=2, min_chunk_frames=12)


def test_unknown_output_extension_is_refused() -> None:
    with pytest.raises(InvalidOptions, match="extension"):
        mux.output_format("/o.avi2")


def test_concat_durations_place_each_chunk_on_its_source_time() -> None:
    plan = plan_job(probe_result(), job("/o.mkv"), chunk_seconds=2, min_chunk_frames=12)
    results = [ChunkResult(index=c.index, path=f"/w/{c.index}.nut", frames=c.frames, bytes=1,
                           seconds=0) for c in reversed(plan.chunks)]
    text = concat.concat_list(plan, results)
    durations = [line.split()[1] for line in text.splitlines() if line.startswith("duration")]
    assert len(durations) == len(plan.chunks) - 1
    total_us = 0
    for c, d in zip(plan.chunks, durations, strict=False):
        total_us += int(d.replace(".", ""))
        assert c.end_pts is not None
        assert abs(total_us - c.end_pts * 1_000_000 / 30000) <= 0.5
    assert text.index("/w/0.nut") < text.index("/w/1.nut")


def test_concat_refuses_a_missing_chunk() -> None:
    plan = plan_job(probe_result(), job("/o.mkv"), chunk_seconds=2, min_chunk_frames=12)
    results = [ChunkResult(index=0, path="/w/0.nut", frames=1, bytes=1, seconds=0)]
    with pytest.raises(Exception, match="planned"):
        concat.concat_list(plan, results)


def test_mux_maps_every_stream_and_its_metadata_from_the_source() -> None:
    plan = plan_job(probe_result(), job("/o.mp4"), chunk_seconds=2, min_chunk_frames=12)
    from mediatasks.models import AudioResult

    argv = mux.mux_args(plan, __import__("pathlib").Path("/w/video.nut"),
                        AudioResult(path=None, streams=1), __import__("pathlib").Path("/w/o.mp4"))
    joined = " ".join(argv)
    assert "-map 0:0 -map 1:1 -map 1:2" in joined
    assert "-c:s:0 mov_text" in joined
    assert "-map_metadata:s:0 1:s:0" in joined and "-map_metadata:s:1 1:s:1" in joined
    assert "-map_chapters 1" in joined


def test_packet_index_finds_missing_and_duplicate_timestamps() -> None:
    ok = PacketIndex.parse("0,1001,K_\n3003,1001,__\n1001,1001,__\n2002,1001,__\n")
    assert ok.blocker() is None and list(ok.pts) == [0, 1001, 2002, 3003]
    assert [k.index for k in ok.keyframes()] == [0]
    assert PacketIndex.parse("0,1,K_\nN/A,1,__\n").blocker() is not None
    assert PacketIndex.parse("0,1,K_\n0,1,__\n").blocker() is not None
    discarded = PacketIndex.parse("-1001,1001,K_D\n0,1001,__\n")
    assert list(discarded.pts) == [0] and discarded.discarded == 1


def test_field_coded_video_is_detected_from_the_first_decoded_frames() -> None:
    packets = [{"pts": str(i * 1500), "flags": "__"} for i in range(10)]
    frames = [{"best_effort_timestamp": str(i * 3000)} for i in range(5)]
    assert "field-coded" in str(window_blocker({"packets": packets, "frames": frames}))
    broken = [{"best_effort_timestamp": str(i * 1500)} for i in range(9)]
    assert window_blocker({"packets": packets, "frames": broken}) is None  # counts catch it
    same = [{"best_effort_timestamp": p["pts"]} for p in packets]
    assert window_blocker({"packets": packets, "frames": same}) is None


def test_hdr10_mastering_metadata_is_passed_to_x265() -> None:
    from mediatasks.models import MasteringDisplay

    m = MasteringDisplay(red=("35400/50000", "14600/50000"), green=("8500/50000", "39850/50000"),
                         blue=("6550/50000", "2300/50000"),
                         white_point=("15635/50000", "16450/50000"),
                         min_luminance="50/10000", max_luminance="10000000/10000",
                         max_content=1000, max_average=400)
    v = video(mastering=m, color_transfer="smpte2084", color_primaries="bt2020")
    args = profiles.stream_args(EncodeOptions(video_codec="libx265"), v)
    params = args[args.index("-x265-params") + 1]
    assert "master-display=G(8500,39850)B(6550,2300)R(35400,14600)WP(15635,16450)L(10000000,50)" \
        in params
    assert "max-cll=1000,400" in params and "open-gop=0" in params
    assert args[args.index("-color_trc:v") + 1] == "smpte2084"


def test_a_wrong_seek_is_retried_from_an_earlier_keyframe_before_the_file_start() -> None:
    v = video(n=3000, gop=30)  # a keyframe every second
    plan = plan_job(probe_result(video=v), job("/o.mkv"), chunk_seconds=30, min_chunk_frames=12)
    c = plan.chunks[2]
    tries = encode.seek_attempts(plan, c)
    assert tries[0] == c.seek_pts and tries[-1] is None
    assert c.seek_pts is not None and tries[1] is not None
    assert (c.seek_pts - tries[1]) * Fraction(1, 30000) >= encode.SEEK_PREROLL_SECONDS
    assert encode.seek_attempts(plan, plan.chunks[0]) == [None]


def test_vaapi_encodes_upload_frames_to_the_device_the_survey_tested() -> None:
    plan = plan_job(probe_result(), job("/o.mkv", video_codec="hevc_vaapi"), chunk_seconds=2,
                    min_chunk_frames=12)
    c = plan.chunks[1]
    argv = encode.encode_args(plan, c, __import__("pathlib").Path("/w/c.nut"), seek_pts=None)
    assert argv[argv.index("-vaapi_device") + 1].startswith("/dev/dri/")
    assert argv.index("-vaapi_device") < argv.index("-i")
    graph = argv[argv.index("-filter_complex") + 1]
    assert graph.index("trim") < graph.index("hwupload")
    from mediatasks import hardware

    assert "hwupload" in " ".join(hardware.test_args("hevc_vaapi"))


def test_color_values_are_spelled_as_the_encoder_options_spell_them() -> None:
    v = video(color_transfer="bt470bg", color_primaries="bt470bg", color_space="gbr",
              color_range="tv")
    args = profiles.color_args(v)
    assert args == ["-color_primaries:v", "bt470bg", "-color_trc:v", "gamma28",
                    "-colorspace:v", "rgb", "-color_range:v", "tv"]
    assert profiles.color_warnings(v) == []


def test_a_color_value_no_encoder_option_knows_is_left_out_with_a_warning() -> None:
    v = video(color_transfer="some-new-curve", color_primaries="unknown")
    assert profiles.color_args(v) == []
    src = ProbeResult(path="/in.mkv", size=1, format_name="matroska", video=v)
    spec = JobSpec(job_id="j", input="/in.mkv", output="/out.mkv")
    warnings = plan_job(src, spec, chunk_seconds=1, min_chunk_frames=12).warnings
    assert any("some-new-curve" in w and "left out" in w for w in warnings)


def test_a_full_range_yuvj_source_is_handed_to_the_encoder_as_yuv_without_a_range_conversion(
) -> None:
    keep = {"in_range": "full", "out_range": "full"}
    v = video(pix_fmt="yuvj420p")
    assert profiles.picture_filters(v) == [("scale", (), keep), ("format", ("yuv420p",), {})]
    # every scale keeps the range, and a last one makes the encoder's conversion keep it too
    assert profiles.picture_filters(video(pix_fmt="yuv420p", color_range="pc"), (64, 48),
                                    ("transpose=clock",)) == [
        ("scale", (), keep), ("scale", (64, 48), keep), ("setsar", (1,), {}),
        ("transpose", ("clock",), {}), ("scale", (), keep)]
    assert profiles.picture_filters(video(pix_fmt="yuv420p")) == []
    args = profiles.color_args(v)
    assert args[args.index("-color_range:v") + 1] == "pc"


def test_a_frame_count_mismatch_blames_the_file_only_when_ffmpeg_reported_decode_errors() -> None:
    src = ProbeResult(path="/in.mkv", size=1, format_name="matroska", video=video())
    jp = plan_job(src, JobSpec(job_id="j", input="/in.mkv", output="/out.mkv"), chunk_seconds=2,
                  min_chunk_frames=12)
    chunk = jp.chunks[1]
    damaged = encode.mismatch(jp, chunk, chunk.frames - 1, [
        "[h264 @ 0x55d1] error while decoding MB 5 3", "[h264 @ 0x55d1] concealing 10 errors"])
    assert "ffmpeg reports decode errors near" in str(damaged)
    assert "error while decoding MB 5 3" in str(damaged) and "damaged" in str(damaged)
    ours = encode.mismatch(jp, chunk, chunk.frames - 1, ["[libx264 @ 0x1] some note"])
    assert "the file is damaged" not in str(ours) and "mediatasks bug" in str(ours)
    assert "ffmpeg reported no decode error" in str(ours)
    assert "mediatasks probe FILE --json" in str(ours) and "\n" not in str(ours)


def test_a_display_matrix_becomes_the_filters_ffmpeg_autorotation_uses() -> None:
    one = 65536
    assert mux.display_filters((0, one, 0, -one, 0, 0, 0, 0, 1 << 30)) == ("transpose=clock",)
    assert mux.display_filters((0, -one, 0, one, 0, 0, 0, 0, 1 << 30)) == ("transpose=cclock",)
    assert mux.display_filters((-one, 0, 0, 0, -one, 0, 0, 0, 1 << 30)) == ("hflip", "vflip")
    assert mux.display_filters((0, one, 0, one, 0, 0, 0, 0, 1 << 30)) == (
        "transpose=cclock_flip",)
    assert mux.display_filters((one, 0, 0, 0, one, 0, 0, 0, 1 << 30)) == ()
    assert mux.display_filters(None) == ()


def test_rotation_is_applied_to_the_pixels_only_for_a_container_that_cannot_store_it() -> None:
    turned = video(rotation=270, display_matrix=(0, 65536, 0, -65536, 0, 0, 0, 0, 1 << 30))
    src = ProbeResult(path="/in.mp4", size=1, format_name="mov", video=turned)
    for out, want in (("/o.mkv", ("transpose=clock",)), ("/o.webm", ("transpose=clock",)),
                      ("/o.mp4", ()), ("/o.mov", ())):
        codec = "libvpx-vp9" if out.endswith("webm") else "libx264"
        spec = JobSpec(job_id="j", input="/in.mp4", output=out,
                       options=EncodeOptions(video_codec=codec))
        jp = plan_job(src, spec, chunk_seconds=2, min_chunk_frames=12)
        assert jp.display_filters == want
        argv = encode.encode_args(jp, jp.chunks[1], encode.chunk_path(Path("/j"), 1),
                                  seek_pts=jp.chunks[1].seek_pts)
        assert ("transpose=clock" in " ".join(argv)) == bool(want)
        assert any("display matrix is applied" in w for w in jp.warnings) == bool(want)


def test_a_policy_scale_is_for_the_picture_as_stored_and_the_turn_comes_after_it() -> None:
    turned = video(display_matrix=(0, 65536, 0, -65536, 0, 0, 0, 0, 1 << 30), rotation=270)
    src = ProbeResult(path="/in.mp4", size=1, format_name="mov", video=turned)
    spec = JobSpec(job_id="j", input="/in.mp4", output="/o.mkv",
                   options=EncodeOptions(video_codec="ffv1", scale=(160, 120)))
    jp = plan_job(src, spec, chunk_seconds=2, min_chunk_frames=12)
    graph = encode.encode_args(jp, jp.chunks[0], Path("/j/0.nut"), seek_pts=None)
    graph_text = graph[graph.index("-filter_complex") + 1]
    assert graph_text.index("scale=160:120") < graph_text.index("transpose=clock")
