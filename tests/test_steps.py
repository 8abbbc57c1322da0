"""ffmpeg tier: probe and single steps on generated clips."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import submit

from mediatasks.errors import InvalidOptions, UnknownEncoder
from mediatasks.models import EncodeOptions
from mediatasks.steps import encode, plan, probe


def test_probe_reports_rates_time_base_frames_and_keyframes(clips: dict[str, Path]) -> None:
    r = probe.probe(clips["cfr"])
    v = r.video
    assert v.r_frame_rate == "30000/1001"
    assert v.frame_count == 120
    assert [k.index for k in v.keyframes] == [0, 24, 48, 72, 96]
    assert v.split_blocker is None and not v.is_vfr
    vfr = probe.probe(clips["vfr"]).video
    assert vfr.is_vfr and vfr.frame_count == 45 + 36 + 90


def test_probe_reads_streams_and_chapters(clips: dict[str, Path]) -> None:
    r = probe.probe(clips["rich"])
    assert [s.language for s in r.of_type("audio")] == ["eng", "fra"]
    assert len(r.of_type("subtitle")) == 1
    assert [c.title for c in r.chapters] == ["One", "Two"]


def test_an_encoded_chunk_is_reused_when_it_is_already_verified(
        clips: dict[str, Path], tmp_path: Path) -> None:
    src = probe.probe(clips["cfr"])
    spec = submit(clips["cfr"], tmp_path / "o.mkv", video_codec="ffv1", chunk_seconds=1)
    jp = plan.plan_job(src, spec, chunk_seconds=1, min_chunk_frames=12)
    plan.save_plan(jp, tmp_path / "job")
    first = encode.encode_chunk(jp, jp.chunks[1], tmp_path / "job")
    again = encode.encode_chunk(jp, jp.chunks[1], tmp_path / "job")
    assert first.frames == again.frames == jp.chunks[1].frames
    assert not first.reused and again.reused
    assert list((tmp_path / "job" / "chunks").glob("*.nut")) == [Path(first.path)]
    # a chunk made from other options is not taken for this one
    other = jp.model_copy(update={"spec": spec.model_copy(update={"options": EncodeOptions(
        video_codec="ffv1", chunk_seconds=1, video_opts=(("slices", "4"),))})})
    assert not encode.encode_chunk(other, other.chunks[1], tmp_path / "job").reused


def test_the_encoder_check_names_a_bad_option(clips: dict[str, Path]) -> None:
    v = probe.probe(clips["cfr"]).video
    with pytest.raises(UnknownEncoder, match="nope"):
        encode.check_encoder(EncodeOptions(video_codec="nope"), v, "matroska")
    with pytest.raises(InvalidOptions, match="preset"):
        encode.check_encoder(EncodeOptions(preset="warp9"), v, "matroska")
    with pytest.raises(InvalidOptions, match=r"divisible by 2|picture size 173x99"):
        encode.check_encoder(EncodeOptions(video_codec="libx264"),
                             probe.probe(clips["odd"]).video.model_copy(
                                 update={"pix_fmt": "yuv420p"}), "matroska")
    with pytest.raises(InvalidOptions, match=r"cannot hold|codec"):
        encode.check_encoder(EncodeOptions(video_codec="ffv1"), v, "mp4")


def test_a_chunk_short_of_its_frames_without_a_decode_error_is_reported_as_our_bug(
        clips: dict[str, Path], tmp_path: Path) -> None:
    from mediatasks.errors import FrameCountMismatch

    src = probe.probe(clips["cfr"])
    spec = submit(clips["cfr"], tmp_path / "o.mkv", video_codec="ffv1", chunk_seconds=1)
    jp = plan.plan_job(src, spec, chunk_seconds=1, min_chunk_frames=12)
    last = jp.chunks[-1]
    wrong = last.model_copy(update={"end_frame": last.end_frame + 1})  # a frame that is not there
    plan.save_plan(jp, tmp_path / "job")
    with pytest.raises(FrameCountMismatch) as got:
        encode.encode_chunk(jp, wrong, tmp_path / "job")
    assert "the file is damaged" not in str(got.value) and "mediatasks bug" in str(got.value)
