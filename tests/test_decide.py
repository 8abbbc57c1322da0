"""Pure tier: what a policy decides for one file, and which files a walk finds."""

from __future__ import annotations

from pathlib import Path

import pytest

from mediatasks.decide import decide, find_media
from mediatasks.errors import InvalidOptions, SourceNotFound
from mediatasks.models import Keyframe, ProbeResult, StreamInfo, VideoInfo
from mediatasks.policy import Policy


def probe(path: str, *, codec: str = "h264", height: int = 1080,
          streams: tuple[StreamInfo, ...] = ()) -> ProbeResult:
    v = VideoInfo(index=0, codec_name=codec, width=height * 16 // 9, height=height,
                  time_base="1/1000", start_pts=0, end_pts=1000, frame_count=25,
                  keyframes=(Keyframe(index=0, pts=0),))
    return ProbeResult(path=path, size=1000, format_name="matroska", video=v,
                       streams=(StreamInfo(index=0, codec_type="video", codec_name=codec),
                                *streams))


AUDIO = (StreamInfo(index=1, codec_type="audio", codec_name="ac3", language="eng"),
         StreamInfo(index=2, codec_type="audio", codec_name="flac", language="ger"))
SUBS = (StreamInfo(index=3, codec_type="subtitle", codec_name="subrip", language="fre"),)


def policy(tmp_path: Path, **sections: object) -> Policy:
    return Policy.model_validate({"library": {"root": str(tmp_path / "lib")}, **sections})


def test_a_codec_outside_skip_if_codec_is_transcoded_and_tracks_are_chosen(tmp_path: Path) -> None:
    src = tmp_path / "The.Film.2019.1080p.mkv"
    p = policy(tmp_path, video={"codec": "libx265", "crf": 24, "max_height": 720,
                                "skip_if_codec": ["hevc"]},
               audio={"keep": ["flac"], "transcode_to": {"codec": "aac", "bitrate": "192k"},
                      "languages": ["eng"]},
               subtitles={"languages": ["eng"]})
    d = decide(probe(str(src), streams=AUDIO + SUBS), p, source=src, job_id="j", batch_id="b")
    assert d.action == "transcode" and d.spec is not None
    opts = d.spec.options
    assert (opts.video_codec, opts.crf, opts.scale) == ("libx265", 24, (1280, 720))
    assert [(t.index, t.action, t.codec) for t in opts.audio_tracks or ()] == [
        (1, "transcode", "aac"), (2, "drop", "flac")]
    assert opts.drop_subtitles == (3,)
    assert d.output == str(tmp_path / "lib/Movies/The Film (2019)/The Film (2019).mkv")
    assert d.spec.batch_id == "b" and d.spec.placement is not None
    assert any("720" in r for r in d.reasons) and any("hevc" in r for r in d.reasons)


def test_compliant_video_is_remuxed_and_never_scaled_up(tmp_path: Path) -> None:
    src = tmp_path / "Show.S01E02.mkv"
    p = policy(tmp_path, video={"skip_if_codec": ["hevc"], "max_height": 1080})
    d = decide(probe(str(src), codec="hevc", height=720), p, source=src, job_id="j", batch_id=None)
    assert d.action == "remux" and d.spec is not None
    assert d.spec.options.remux and d.spec.options.scale is None and d.spec.options.crf is None
    assert d.output is not None and d.output.endswith("Show - S01E02.mkv")


def test_an_existing_destination_is_skipped_unless_on_exists_says_otherwise(tmp_path: Path) -> None:
    src = tmp_path / "Film.2001.mkv"
    skip = policy(tmp_path)
    d = decide(probe(str(src)), skip, source=src, job_id="j", batch_id=None, exists=True)
    assert d.action == "skip" and d.spec is None and "already exists" in d.reasons[0]
    rename = Policy.model_validate({"library": {"root": str(tmp_path / "lib"),
                                                "on_exists": "rename"}})
    d = decide(probe(str(src)), rename, source=src, job_id="j", batch_id=None, exists=True)
    assert d.action == "transcode" and d.spec is not None
    assert d.spec.placement is not None and d.spec.placement.on_exists == "rename"


def test_a_compliant_file_already_in_place_is_skipped(tmp_path: Path) -> None:
    root = tmp_path / "lib"
    src = root / "Movies" / "Film (2001)" / "Film (2001).mkv"
    p = Policy.model_validate({"library": {"root": str(root), "movie":
                                           "Movies/{title} ({year})/{title} ({year}).{ext}"},
                               "video": {"skip_if_codec": ["h264"]}})
    d = decide(probe(str(src)), p, source=src, job_id="j", batch_id=None)
    assert d.action == "skip" and d.reasons == ("already compliant and in place",)


def test_without_a_library_an_output_dir_is_needed(tmp_path: Path) -> None:
    src = tmp_path / "a: b?.mkv"
    with pytest.raises(InvalidOptions, match="--output-dir"):
        decide(probe(str(src)), Policy(), source=src, job_id="j", batch_id=None)
    d = decide(probe(str(src)), Policy(), source=src, job_id="j", batch_id=None,
               output_dir=tmp_path / "out")
    assert d.output == str(tmp_path / "out" / "a - b.mkv")


def test_a_walk_finds_media_files_once_in_order_and_skips_hidden_ones(tmp_path: Path) -> None:
    for rel in ("b/two.MKV", "a/one.mp4", "a/notes.txt", ".hidden/x.mkv", "a/.partial.mkv",
                "c/three.ts"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    (tmp_path / "link.mkv").symlink_to(tmp_path / "a" / "one.mp4")
    found = find_media([tmp_path / "a", tmp_path, tmp_path / "c" / "three.ts"])
    assert [p.relative_to(tmp_path).as_posix() for p in found] == [
        "a/one.mp4", "b/two.MKV", "c/three.ts"]
    with pytest.raises(SourceNotFound, match="no such file"):
        find_media([tmp_path / "missing"])


def test_tokens_describe_the_result_not_the_source(tmp_path: Path) -> None:
    src = tmp_path / "Film.2001.mkv"
    p = Policy.model_validate({
        "library": {"root": str(tmp_path / "lib"),
                    "movie": "{title} ({year}) [{resolution} {vcodec} {acodec}].{ext}"},
        "video": {"codec": "libx265", "max_height": 720},
        "audio": {"transcode_to": {"codec": "libopus"}}})
    d = decide(probe(str(src), streams=AUDIO), p, source=src, job_id="j", batch_id=None)
    assert d.output == str(tmp_path / "lib" / "Film (2001) [720p hevc opus].mkv")


def test_frames_an_edit_list_hides_force_an_encode_instead_of_a_copy(tmp_path: Path) -> None:
    src = tmp_path / "Clip.2020.mp4"
    hidden = probe(str(src), codec="hevc")
    hidden = hidden.model_copy(update={"video": hidden.video.model_copy(
        update={"discarded_packets": 20})})
    p = policy(tmp_path, video={"codec": "libx265", "skip_if_codec": ["hevc"]})
    d = decide(hidden, p, source=src, job_id="j", batch_id=None)
    assert d.action == "transcode" and d.spec is not None and not d.spec.options.remux
    assert "20 stored frame(s) are never shown" in d.reasons[0]
