"""Pure tier: ffprobe output captured from small clips (tests/data) parsed into the models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mediatasks.errors import NoVideoStream, UndecodableMedia
from mediatasks.models import ProbeResult
from mediatasks.steps.probe_parse import PacketIndex, parse_probe, shown_packets

DATA = Path(__file__).parent / "data"


def parsed(name: str) -> ProbeResult:
    d = json.loads((DATA / f"{name}.json").read_text(encoding="utf-8"))
    return parse_probe(d["container"], "\n".join(d["packets"]), d["window"],
                       path=f"/src/{name}", size=1000)


def test_a_plain_clip_has_every_frame_and_its_keyframes() -> None:
    r = parsed("plain")
    v = r.video
    assert r.format_name == "matroska,webm" and v.codec_name == "h264"
    assert (v.width, v.height, v.pix_fmt, v.time_base) == (96, 64, "yuv420p", "1/1000")
    assert v.frame_count == 75 and v.start_pts == 0 and v.end_pts == 3000
    assert [k.index for k in v.keyframes] == [0, 25, 50]
    assert v.split_blocker is None and not v.is_vfr
    assert v.skipped_frames == v.discarded_packets == 0


def test_b_frames_in_mp4_are_frames_in_presentation_order() -> None:
    v = parsed("bframes").video
    assert v.frame_count == 75 and v.start_pts == 0 and v.end_pts == 75 * 512
    assert [k.pts for k in v.keyframes] == [0, 25 * 512, 50 * 512]
    assert v.split_blocker is None


def test_an_edit_list_hides_the_frames_before_the_cut_and_keeps_the_rest_decodable() -> None:
    # cut at 0.5 s with -c copy: the keyframe at 0 is stored, hidden, and still decoded
    v = parsed("editlist").video
    assert v.discarded_packets == 13 and v.skipped_frames == 0
    assert v.frame_count == 62 and v.start_pts == 0
    assert [k.index for k in v.keyframes] == [12, 37]  # the hidden keyframe is not a frame
    assert v.split_blocker is None


def test_a_rotated_mov_with_an_edit_list_carries_its_display_matrix() -> None:
    v = parsed("rotated").video
    assert v.rotation == 90
    assert v.display_matrix == (0, -65536, 0, 65536, 0, 0, 0, 0, 1 << 30)
    assert v.frame_count == 75 - v.discarded_packets and v.skipped_frames == 0


def test_a_full_range_clip_says_so() -> None:
    v = parsed("fullrange").video
    assert (v.pix_fmt, v.color_range) == ("yuvj420p", "pc")


def test_packets_before_the_first_keyframe_are_undecodable_unless_hidden_by_an_edit() -> None:
    # decode order: a B-frame of an earlier GOP, a keyframe, its leading frame, two more
    assert shown_packets([(40, "__"), (80, "K_"), (60, "__"), (120, "__"), (100, "__")]) == [
        "undecodable", "shown", "undecodable", "shown", "shown"]
    # an edit list hides the keyframe and its first frames: the rest decode from it
    assert shown_packets([(-80, "KD"), (-40, "_D"), (0, "__"), (40, "__")]) == [
        "hidden", "hidden", "shown", "shown"]
    index = PacketIndex.parse("-80,40,KD\n-40,40,_D\n0,40,__\n40,40,__\n")
    assert list(index.pts) == [0, 40] and index.discarded == 2 and index.skipped == 0
    assert index.lead == 2 and index.keyframe_pts == []


def test_a_file_without_video_or_without_streams_is_refused() -> None:
    d = json.loads((DATA / "plain.json").read_text(encoding="utf-8"))
    audio_only = {**d["container"], "streams": [{"index": 0, "codec_type": "audio"}]}
    with pytest.raises(NoVideoStream, match="found: audio"):
        parse_probe(audio_only, "", {}, path="/a", size=1)
    with pytest.raises(UndecodableMedia, match="not a media file"):
        parse_probe({}, "", {}, path="/a", size=1)
    with pytest.raises(UndecodableMedia, match="decodes to no frames"):
        parse_probe(d["container"], "\n".join(d["packets"]), {"packets_and_frames": []},
                    path="/a", size=1)
