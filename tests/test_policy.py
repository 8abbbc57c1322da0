"""Pure tier: policy files, their one-line errors, and the audio/subtitle/scaling plans they imply."""

from __future__ import annotations

from pathlib import Path

import pytest

from mediatasks.errors import InvalidOptions, InvalidPolicy
from mediatasks.models import StreamInfo
from mediatasks.policy import (
    AudioPolicy,
    Policy,
    SubtitlePolicy,
    TranscodeTo,
    audio_plan,
    language_key,
    load_policy,
    scaled_size,
    subtitle_plan,
)

FULL = """\
video:
  codec: libx265
  crf: 24
  preset: medium
  max_height: 1080
  skip_if_codec: [hevc, AV1]
audio:
  keep: [truehd, dts, eac3, flac]
  transcode_to: {codec: aac, bitrate: 192k}
  languages: [eng, und]
subtitles:
  languages: [eng]
library:
  root: ~/library
  movie: "Movies/{title} ({year})/{title} ({year}).{ext}"
  episode: "TV/{series}/Season {season:02d}/{series} - S{season:02d}E{episode:02d}.{ext}"
  on_exists: rename
source:
  after: backup
  backup_dir: /media/backup
guard:
  max_size_ratio: 1.0
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def error(tmp_path: Path, text: str) -> str:
    with pytest.raises(InvalidPolicy) as caught:
        load_policy(write(tmp_path, text))
    message = str(caught.value)
    assert "\n" not in message
    return message.replace(str(tmp_path) + "/", "")


def audio(index: int, codec: str | None, language: str | None = None) -> StreamInfo:
    return StreamInfo(index=index, codec_type="audio", codec_name=codec, language=language)


def subtitle(index: int, language: str | None) -> StreamInfo:
    return StreamInfo(index=index, codec_type="subtitle", codec_name="subrip", language=language)


# --- loading ---------------------------------------------------------------------------------------

def test_a_full_policy_loads_with_every_key(tmp_path: Path) -> None:
    policy = load_policy(write(tmp_path, FULL))
    assert policy.video.codec == "libx265" and policy.video.crf == 24 and policy.video.preset == "medium"
    assert policy.video.max_height == 1080 and policy.video.skip_if_codec == ("hevc", "av1")
    assert policy.audio.keep == ("truehd", "dts", "eac3", "flac")
    assert policy.audio.transcode_to == TranscodeTo(codec="aac", bitrate="192k")
    assert policy.audio.languages == ("eng", "und") and policy.subtitles.languages == ("eng",)
    assert policy.library is not None and policy.library.on_exists == "rename"
    assert policy.library.root == Path.home() / "library"
    assert policy.source.after == "backup" and policy.source.backup_dir == Path("/media/backup")
    assert policy.guard.max_size_ratio == 1.0


def test_policies_are_frozen(tmp_path: Path) -> None:
    policy = load_policy(write(tmp_path, FULL))
    with pytest.raises(ValueError):
        policy.video.crf = 30  # type: ignore[misc]


def test_an_empty_file_is_the_default_policy(tmp_path: Path) -> None:
    assert load_policy(write(tmp_path, "")) == Policy()
    assert load_policy(write(tmp_path, "# only a comment\n")) == Policy()
    default = Policy()
    assert default.video.codec == "libx264" and default.library is None and default.source.after == "keep"
    assert default.guard.max_size_ratio is None and default.audio.transcode_to is None


def test_an_empty_section_means_its_defaults(tmp_path: Path) -> None:
    policy = load_policy(write(tmp_path, "video:\naudio:\n  languages:\n"))
    assert policy.video == Policy().video and policy.audio.languages == ()


def test_a_single_codec_may_be_written_without_brackets(tmp_path: Path) -> None:
    assert load_policy(write(tmp_path, "video:\n  skip_if_codec: hevc\n")).video.skip_if_codec == ("hevc",)


def test_bitrates_are_validated_and_integers_accepted(tmp_path: Path) -> None:
    for good in ("192k", "1.5M", "128000"):
        policy = load_policy(write(tmp_path, f"audio:\n  transcode_to: {{codec: aac, bitrate: {good}}}\n"))
        assert policy.audio.transcode_to is not None and policy.audio.transcode_to.bitrate == good
    message = error(tmp_path, "audio:\n  transcode_to:\n    codec: aac\n    bitrate: 192 kbps\n")
    assert message.startswith("policy.yaml:4: audio.transcode_to.bitrate: '192 kbps' is not a bitrate")


def test_an_unknown_key_names_file_line_and_the_likely_key(tmp_path: Path) -> None:
    message = error(tmp_path, "video:\n  codec: libx265\n  codc: 24\n")
    assert message == "policy.yaml:3: video.codc: unknown key; did you mean 'codec'?"


def test_an_unknown_key_without_a_near_match_lists_the_known_keys(tmp_path: Path) -> None:
    message = error(tmp_path, "guard:\n  zzz: 1\n")
    assert message == "policy.yaml:2: guard.zzz: unknown key; known keys: max_size_ratio"


def test_an_unknown_section_is_refused(tmp_path: Path) -> None:
    assert error(tmp_path, "vidoe:\n  crf: 20\n") == "policy.yaml:1: vidoe: unknown key; did you mean 'video'?"


def test_a_bad_choice_lists_the_choices(tmp_path: Path) -> None:
    message = error(tmp_path, "library:\n  root: /lib\n\n\n  on_exists: overwrite\n")
    assert message == "policy.yaml:5: library.on_exists: must be one of skip, replace, rename (got 'overwrite')"


def test_several_problems_report_the_first_and_the_lines_of_the_others(tmp_path: Path) -> None:
    message = error(tmp_path, "video:\n  codc: 1\n  crf: -1\nlibrary:\n  root: /l\n  on_exists: x\n")
    assert message.startswith("policy.yaml:2: video.codc: unknown key")
    assert message.endswith("(and 2 more: lines 3, 6)")


def test_numbers_are_not_taken_from_booleans_or_units(tmp_path: Path) -> None:
    assert error(tmp_path, "video:\n  crf: yes\n").startswith("policy.yaml:2: video.crf: must be a valid number")
    assert "video.max_height" in error(tmp_path, "video:\n  max_height: 1080p\n")
    assert "greater than 0" in error(tmp_path, "video:\n  max_height: 0\n")
    assert "greater than 0" in error(tmp_path, "guard:\n  max_size_ratio: 0\n")


def test_a_section_that_is_not_a_mapping_is_refused(tmp_path: Path) -> None:
    assert error(tmp_path, "video: 3\n").startswith("policy.yaml:1: video: must be a mapping of keys (codec, crf")


def test_a_list_item_error_points_at_its_line(tmp_path: Path) -> None:
    message = error(tmp_path, "audio:\n  languages:\n    - eng\n    - english\n")
    assert message.startswith("policy.yaml:4: audio.languages[1]: 'english' is not an ISO 639 language code")


def test_backup_needs_a_backup_dir(tmp_path: Path) -> None:
    message = error(tmp_path, "source:\n  after: backup\n")
    assert message.startswith("policy.yaml:1: source.backup_dir: required when source.after is backup")


def test_paths_must_be_absolute(tmp_path: Path) -> None:
    assert "library.root: must be an absolute path" in error(tmp_path, "library:\n  root: media\n")
    relative_backup = "source:\n  after: backup\n  backup_dir: b\n"
    assert "source.backup_dir: must be an absolute path" in error(tmp_path, relative_backup)


def test_an_empty_library_section_needs_a_root(tmp_path: Path) -> None:
    assert error(tmp_path, "library:\n") == "policy.yaml:1: library.root: required key is missing"


def test_a_template_escaping_the_root_is_refused_with_its_line(tmp_path: Path) -> None:
    message = error(tmp_path, 'library:\n  root: /lib\n  movie: "../{title}.{ext}"\n')
    assert message.startswith("policy.yaml:3: library.movie: library template '../{title}.{ext}' contains '..'")
    assert "policy.yaml:3: library.episode:" in error(tmp_path, "library:\n  root: /l\n  episode: /abs/{title}\n")


def test_an_unknown_template_token_is_refused_with_the_known_ones(tmp_path: Path) -> None:
    message = error(tmp_path, 'library:\n  root: /lib\n  movie: "{titel}.{ext}"\n')
    assert message.startswith("policy.yaml:3: library.movie: library template '{titel}.{ext}': unknown token")
    assert "did you mean {title}?" in message and "release_group" in message


def test_a_duplicate_key_is_refused(tmp_path: Path) -> None:
    assert error(tmp_path, "video:\n  crf: 20\nvideo:\n  crf: 22\n") == \
        "policy.yaml:3: video: duplicate key (keep one of them)"


def test_a_yaml_syntax_error_gives_its_line(tmp_path: Path) -> None:
    message = error(tmp_path, "video:\n  codec: libx265\n  crf: [20\n")
    assert message.startswith("policy.yaml:4: not valid YAML:")


def test_the_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    message = error(tmp_path, "- video\n- audio\n")
    assert message.startswith("policy.yaml:1: the top level must be a mapping of sections (video, audio")


def test_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidPolicy, match="policy file not found"):
        load_policy(tmp_path / "nope.yaml")


def test_a_binary_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(InvalidPolicy, match="not UTF-8"):
        load_policy(path)


def test_invalid_policy_is_an_invalid_options_error_with_its_exit_code() -> None:
    assert issubclass(InvalidPolicy, InvalidOptions) and InvalidPolicy.exit_code == 2


# --- languages -------------------------------------------------------------------------------------

def test_language_codes_of_every_iso_639_flavour_compare_equal() -> None:
    assert language_key("en") == language_key("eng") == language_key("ENG") == "eng"
    assert language_key("ger") == language_key("deu") == language_key("de") == "deu"
    assert language_key("und") == "und"
    assert language_key("english") is None and language_key(None) is None


# --- scaling ---------------------------------------------------------------------------------------

def test_sources_within_max_height_are_not_scaled() -> None:
    assert scaled_size(1920, 1080, 1080) is None
    assert scaled_size(1280, 720, 1080) is None
    assert scaled_size(3840, 2160, None) is None


def test_larger_sources_are_scaled_keeping_aspect_with_even_sizes() -> None:
    assert scaled_size(3840, 2160, 1080) == (1920, 1080)
    assert scaled_size(3840, 1600, 720) == (1728, 720)
    assert scaled_size(1998, 1080, 720) == (1332, 720)
    assert scaled_size(1000, 999, 501) == (500, 500)  # odd max_height rounds down to even


def test_anamorphic_sources_are_scaled_to_square_pixels() -> None:
    assert scaled_size(720, 576, 480, "64:45") == (854, 480)
    assert scaled_size(1440, 1080, 720, "4:3") == (1280, 720)
    assert scaled_size(1920, 1080, 720, "0:1") == (1280, 720)  # unknown SAR: square pixels


# --- audio -----------------------------------------------------------------------------------------

POLICY = AudioPolicy(keep=("truehd", "dts", "eac3", "flac"), transcode_to=TranscodeTo(codec="aac", bitrate="192k"),
                     languages=("eng", "und"))


def test_kept_codecs_are_copied_and_others_transcoded() -> None:
    plan = audio_plan([audio(1, "truehd", "eng"), audio(2, "ac3", "eng")], POLICY)
    assert [(a.index, a.action, a.codec, a.bitrate) for a in plan] == [
        (1, "copy", "truehd", None), (2, "transcode", "aac", "192k")]
    assert plan[0].reason == "truehd is in audio.keep" and plan[1].reason == "ac3 is not in audio.keep"


def test_other_languages_are_dropped_and_untagged_tracks_count_as_und() -> None:
    streams = [StreamInfo(index=0, codec_type="video", codec_name="h264"), audio(1, "dts", "fre"),
               audio(2, "dts", "en"), audio(3, "flac", None)]
    plan = audio_plan(streams, POLICY)
    assert [(a.index, a.action) for a in plan] == [(1, "drop"), (2, "copy"), (3, "copy")]
    assert plan[0].reason == "language fre is not in audio.languages"


def test_the_first_track_is_kept_when_every_language_would_be_dropped() -> None:
    plan = audio_plan([audio(1, "ac3", "jpn"), audio(2, "dts", "fre")], POLICY)
    assert [(a.index, a.action) for a in plan] == [(1, "transcode"), (2, "drop")]
    assert "the output needs an audio track" in plan[0].reason


def test_without_a_language_list_every_track_is_kept() -> None:
    plan = audio_plan([audio(1, "ac3", "jpn"), audio(2, "dts", "fre")], AudioPolicy(keep=("dts",)))
    assert [(a.action, a.codec) for a in plan] == [("copy", "ac3"), ("copy", "dts")]
    assert plan[0].reason == "audio.transcode_to is not set"


def test_a_track_already_in_the_target_codec_is_copied_not_reencoded() -> None:
    opus = AudioPolicy(transcode_to=TranscodeTo(codec="libopus", bitrate="128k"))
    plan = audio_plan([audio(1, "opus"), audio(2, "aac"), audio(3, None)], opus)
    assert [(a.action, a.codec) for a in plan] == [("copy", "opus"), ("transcode", "libopus"),
                                                    ("transcode", "libopus")]
    assert plan[0].reason == "already opus" and plan[2].reason == "unknown codec is not in audio.keep"


def test_no_audio_gives_an_empty_plan() -> None:
    assert audio_plan([], POLICY) == []


# --- subtitles -------------------------------------------------------------------------------------

def test_subtitles_in_other_languages_are_dropped_even_all_of_them() -> None:
    streams = [subtitle(3, "eng"), subtitle(4, "ger"), audio(1, "aac", "eng"), subtitle(5, None)]
    plan = subtitle_plan(streams, SubtitlePolicy(languages=("en",)))
    assert [(s.index, s.action) for s in plan] == [(3, "copy"), (4, "drop"), (5, "drop")]
    assert plan[1].reason == "language ger is not in subtitles.languages"
    assert all(s.action == "drop" for s in subtitle_plan(streams, SubtitlePolicy(languages=("jpn",))))


def test_without_a_language_list_every_subtitle_is_kept() -> None:
    plan = subtitle_plan([subtitle(3, "eng"), subtitle(4, "ger")], SubtitlePolicy())
    assert [s.action for s in plan] == ["copy", "copy"]
