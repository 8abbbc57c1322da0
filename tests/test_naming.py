"""Pure tier: tokens from release names and probes, and safe library paths rendered from templates."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mediatasks.errors import InvalidPolicy
from mediatasks.models import ProbeResult, StreamInfo, VideoInfo
from mediatasks.naming import (
    MAX_COMPONENT_BYTES,
    channel_label,
    check_template,
    kind,
    render,
    resolution_label,
    tokens,
    unique_path,
)
from mediatasks.policy import LibraryPolicy

ROOT = Path("/media/library")
LIBRARY = LibraryPolicy(root=ROOT)
EPISODE = "{series} - S{season:02d}E{episode:02d} - {episode_title}.{ext}"


def name(source: str, template: str | None = None) -> str:
    """The default (or given) template rendered for a source file name, relative to ROOT."""
    found = tokens(Path("/incoming") / source)
    if template is None:
        template = LIBRARY.episode if kind(found) == "episode" else LIBRARY.movie
    return render(template, found, root=ROOT).relative_to(ROOT).as_posix()


def probe(width: int = 1920, height: int = 1080, transfer: str | None = None,
          audio: tuple[str, ...] = ("eac3",)) -> ProbeResult:
    video = VideoInfo(index=0, codec_name="hevc", width=width, height=height, time_base="1/1000",
                      color_transfer=transfer)
    streams = tuple(StreamInfo(index=i + 1, codec_type="audio", codec_name=c) for i, c in enumerate(audio))
    return ProbeResult(path="x.mkv", size=1, format_name="matroska", video=video, streams=streams)


# --- tokens from release names ---------------------------------------------------------------------

def test_a_movie_release_name_gives_title_year_and_group() -> None:
    found = tokens(Path("The.Matrix.1999.1080p.BluRay.x264-GROUP.mkv"))
    assert (found["title"], found["year"], found["release_group"], found["ext"]) == (
        "The Matrix", 1999, "GROUP", "mkv")
    assert kind(found) == "movie" and found["type"] == "movie" and found["series"] is None
    assert name("The.Matrix.1999.1080p.BluRay.x264-GROUP.mkv") == "Movies/The Matrix (1999)/The Matrix (1999).mkv"


def test_an_edition_is_found_and_named() -> None:
    found = tokens(Path("Blade.Runner.1982.Directors.Cut.1080p.BluRay.x264-GRP.mkv"))
    assert found["edition"] == "Director's Cut"
    assert name("Blade.Runner.1982.Directors.Cut.1080p.BluRay.x264-GRP.mkv") == \
        "Movies/Blade Runner (1982)/Blade Runner (1982) - Director's Cut.mkv"


def test_an_episode_gives_series_season_episode_and_its_title() -> None:
    found = tokens(Path("Show.Name.S01E02.Episode.Title.720p.WEB-DL.mkv"))
    assert kind(found) == "episode" and found["series"] == found["title"] == "Show Name"
    assert (found["season"], found["episode"], found["episodes"], found["episode_title"]) == (
        1, 2, "E02", "Episode Title")
    assert name("Show.Name.S01E02.Episode.Title.720p.WEB-DL.mkv") == \
        "TV/Show Name/Season 01/Show Name - S01E02 - Episode Title.mkv"


def test_a_multi_episode_file_takes_the_first_and_names_the_range() -> None:
    found = tokens(Path("Show.Name.S01E01E02.720p.mkv"))
    assert found["episode"] == 1 and found["episodes"] == "E01-E02"
    assert name("Show.Name.S01E01E02.720p.mkv") == "TV/Show Name/Season 01/Show Name - S01E01-E02.mkv"
    assert tokens(Path("Show.S01.E01-E03.mkv"))["episodes"] == "E01-E03"


def test_an_anime_name_without_a_season_is_season_one() -> None:
    found = tokens(Path("[SubGroup] Anime Title - 12 [1080p][ABCD1234].mkv"))
    assert (found["series"], found["season"], found["episode"], found["release_group"]) == (
        "Anime Title", 1, 12, "SubGroup")
    assert name("[SubGroup] Anime Title - 12 [1080p][ABCD1234].mkv") == \
        "TV/Anime Title/Season 01/Anime Title - S01E12.mkv"


def test_folders_in_the_source_path_help_the_guess() -> None:
    found = tokens(Path("/incoming/Show Name/Season 2/03 - Pilot.mkv"))
    assert (found["series"], found["season"], found["episode"], found["episode_title"]) == (
        "Show Name", 2, 3, "Pilot")


def test_a_download_folder_name_does_not_leak_into_the_name() -> None:
    found = tokens(Path("/downloads/tmp_job_0042/Show.Name.S01E02.mkv"))
    assert (found["series"], found["season"], found["episode"], found["episode_title"]) == (
        "Show Name", 1, 2, None)
    found = tokens(Path("/downloads/Some Folder/The.Movie.2019.mkv"))
    assert (found["title"], found["year"], found["edition"]) == ("The Movie", 2019, None)


def test_underscores_and_no_year_give_a_name_without_empty_parentheses() -> None:
    assert name("some_movie_without_year.mkv") == "Movies/some movie without year/some movie without year.mkv"


def test_unicode_titles_are_kept() -> None:
    assert name("Amélie.2001.mkv") == "Movies/Amélie (2001)/Amélie (2001).mkv"
    assert name("千と千尋の神隠し.2001.mkv") == "Movies/千と千尋の神隠し (2001)/千と千尋の神隠し (2001).mkv"


def test_the_extension_can_be_the_outputs() -> None:
    assert tokens(Path("a.avi"), ext="mkv")["ext"] == "mkv"
    assert tokens(Path("a.avi"), ext=".mp4")["ext"] == "mp4"


# --- tokens from the probe -------------------------------------------------------------------------

def test_the_probe_gives_resolution_codecs_and_hdr() -> None:
    found = tokens(Path("Movie.2020.mkv"), probe(3840, 2160, "smpte2084", ("truehd", "ac3")))
    assert (found["resolution"], found["vcodec"], found["acodec"], found["hdr"]) == (
        "2160p", "hevc", "truehd", "HDR10")
    assert tokens(Path("M.mkv"), probe(transfer="arib-std-b67"))["hdr"] == "HLG"
    assert tokens(Path("M.mkv"), probe(transfer="bt709"))["hdr"] is None
    assert tokens(Path("M.mkv"), probe(audio=()))["acodec"] is None
    assert tokens(Path("M.mkv"))["resolution"] is None


def test_resolution_labels_follow_the_frame_not_only_its_height() -> None:
    assert resolution_label(1920, 800) == "1080p"  # scope
    assert resolution_label(1440, 1080) == "1080p"  # 4:3
    assert resolution_label(1080, 1920) == "1080p"  # portrait
    assert resolution_label(1280, 536) == "720p"
    assert resolution_label(720, 576) == "576p" and resolution_label(640, 480) == "480p"


def test_channel_counts_read_as_layouts() -> None:
    assert [channel_label(n) for n in (1, 2, 6, 8, 4, None, 0)] == ["1.0", "2.0", "5.1", "7.1", "4.0", None, None]


# --- cleaning --------------------------------------------------------------------------------------

def test_missing_tokens_vanish_with_their_brackets_and_separators() -> None:
    found = {"series": "Show", "season": 1, "episode": 2, "ext": "mkv"}
    assert render(EPISODE, found, root=ROOT) == ROOT / "Show - S01E02.mkv"
    template = "{title} [{release_group}] {edition} ({year}) - {resolution}.{hdr}.{ext}"
    assert render(template, {"title": "Title", "ext": "mkv"}, root=ROOT) == ROOT / "Title.mkv"
    assert render("{title}.{year}.{resolution}.{ext}", {"title": "T", "resolution": "720p", "ext": "mkv"},
                  root=ROOT) == ROOT / "T.720p.mkv"
    assert render("{year} - {title}.{ext}", {"title": "T", "year": "", "ext": "mkv"}, root=ROOT) == ROOT / "T.mkv"


def test_a_format_spec_on_a_missing_value_does_not_crash() -> None:
    assert render("S{season:02d}E{episode:02d} {title}", {"title": "x"}, root=ROOT) == ROOT / "SE x"


def test_a_folder_made_only_of_missing_tokens_is_left_out() -> None:
    assert render("{edition}/{title}.{ext}", {"title": "T", "ext": "mkv"}, root=ROOT) == ROOT / "T.mkv"


def test_an_empty_file_name_is_refused() -> None:
    with pytest.raises(InvalidPolicy, match="empty file name"):
        render("{title}.{ext}", {"ext": "mkv"}, root=ROOT)


def test_windows_and_macos_illegal_characters_are_replaced() -> None:
    found = {"title": 'Star Wars: Episode IV? <A> "New" Hope*|', "ext": "mkv"}
    assert render("{title}.{ext}", found, root=ROOT).name == "Star Wars - Episode IV A 'New' Hope.mkv"
    assert render("{title}.{ext}", {"title": "12:30", "ext": "mkv"}, root=ROOT).name == "12-30.mkv"
    assert render("At: {title}.{ext}", {"title": "x", "ext": "mkv"}, root=ROOT).name == "At - x.mkv"


def test_newlines_and_control_characters_become_spaces() -> None:
    assert render("{title}.{ext}", {"title": "A\nB\tC\x07D", "ext": "mkv"}, root=ROOT).name == "A B C D.mkv"


def test_slashes_in_values_never_make_folders() -> None:
    for title in ("AC/DC", "AC\\DC", "AC//DC"):
        assert render("{title}.{ext}", {"title": title, "ext": "mkv"}, root=ROOT) == ROOT / "AC-DC.mkv"


def test_hostile_titles_stay_inside_the_root() -> None:
    for title, expected in (("../../etc/passwd", "etc-passwd"), ("/etc/passwd", "etc-passwd"),
                            ("..\\..\\x", "x"), ("~/x", "~-x"), ("a/../../b", "a-..-..-b")):
        path = render("{title}/{title}.{ext}", {"title": title, "ext": "mkv"}, root=ROOT)
        assert path == ROOT / expected / f"{expected}.mkv"
    assert render("{title} ({year}).{ext}", {"title": "..", "year": 2000, "ext": "mkv"}, root=ROOT) == \
        ROOT / "(2000).mkv"
    for title in ("..", ".", "/"):
        with pytest.raises(InvalidPolicy, match="empty file name"):
            render("{title}/{title}.{ext}", {"title": title, "ext": "mkv"}, root=ROOT)


def test_leading_dots_and_trailing_dots_or_spaces_are_removed() -> None:
    assert render("{title}.{ext}", {"title": ".hidden", "ext": "mkv"}, root=ROOT).name == "hidden.mkv"
    assert render("{title}/x", {"title": "What If... ", "ext": "mkv"}, root=ROOT).parent.name == "What If"


def test_windows_reserved_names_get_a_suffix() -> None:
    for title, expected in (("CON", "CON_.mkv"), ("nul", "nul_.mkv"), ("COM1", "COM1_.mkv"),
                            ("LPT9.part", "LPT9_.part.mkv"), ("CONSOLE", "CONSOLE.mkv")):
        assert render("{title}.{ext}", {"title": title, "ext": "mkv"}, root=ROOT).name == expected
    assert render("{title}/a", {"title": "aux"}, root=ROOT).parent.name == "aux_"


def test_long_multibyte_titles_are_cut_at_a_word_within_255_bytes_keeping_the_extension() -> None:
    title = " ".join(["日本語のタイトル"] * 40)  # 40 words of 24 bytes: far over 255 bytes, 300+ characters
    assert len(title) >= 300
    path = render("{title}/{title} - {resolution}.{ext}", {"title": title, "resolution": "1080p", "ext": "mkv"},
                  root=ROOT)
    folder, file = path.parent.name, path.name
    assert len(folder.encode()) <= MAX_COMPONENT_BYTES and len(file.encode()) <= MAX_COMPONENT_BYTES
    assert file.endswith("タイトル.mkv") and folder.endswith("タイトル")  # cut between words
    assert title.startswith(folder) and title.startswith(file.removesuffix(".mkv"))


def test_a_long_title_without_spaces_is_cut_on_a_character_boundary() -> None:
    path = render("{title}.{ext}", {"title": "é" * 300, "ext": "mkv"}, root=ROOT)
    assert path.name == "é" * 125 + ".mkv" and len(path.name.encode()) == 254


def test_a_cut_never_separates_a_letter_from_its_accent() -> None:
    title = "q\u0301\u0302" * 100  # a letter with two accents that NFC cannot fold into one character
    stem = render("{title}.{ext}", {"title": title, "ext": "mkv"}, root=ROOT).name.removesuffix(".mkv")
    assert len(stem.encode()) <= MAX_COMPONENT_BYTES - 4 and stem.endswith("\u0302") and len(stem) % 3 == 0


def test_a_path_over_the_length_limit_is_refused() -> None:
    template = "/".join(["{title}"] * 20) + ".{ext}"
    with pytest.raises(InvalidPolicy, match="over the 4095 limit"):
        render(template, {"title": "x" * 250, "ext": "mkv"}, root=ROOT)


# --- templates -------------------------------------------------------------------------------------

@pytest.mark.parametrize("template", ["../{title}.{ext}", "Movies/../../{title}", "/abs/{title}", "~/x/{title}",
                                      "C:/x/{title}", "a\\{title}", "a//{title}", "a/{title}/", "./{title}", ""])
def test_unsafe_templates_are_refused_at_check_time(template: str) -> None:
    with pytest.raises(InvalidPolicy):
        check_template(template)


def test_an_unknown_token_is_refused_with_the_known_tokens() -> None:
    with pytest.raises(InvalidPolicy, match=r"unknown token \{name\}.*known tokens: title, year"):
        check_template("{name}.{ext}")
    with pytest.raises(InvalidPolicy, match="unknown token"):
        check_template("{title.__class__}")


def test_bad_format_specs_and_braces_are_refused() -> None:
    for template in ("{title:02d}", "{season:{year}}", "{title!r}", "{title", "{title:/>9}"):
        with pytest.raises(InvalidPolicy):
            check_template(template)
    check_template("{{literal}} {season:02d} {title:.20} {year!s}")


def test_the_default_templates_are_valid() -> None:
    check_template(LIBRARY.movie)
    check_template(LIBRARY.episode)


def test_a_symbolic_link_out_of_the_root_is_refused(tmp_path: Path) -> None:
    root, outside = tmp_path / "library", tmp_path / "elsewhere"
    root.mkdir()
    outside.mkdir()
    (root / "Movies").symlink_to(outside)
    with pytest.raises(InvalidPolicy, match="outside the library root"):
        render("Movies/{title}.{ext}", {"title": "T", "ext": "mkv"}, root=root)
    assert render("Films/{title}.{ext}", {"title": "T", "ext": "mkv"}, root=root) == root / "Films" / "T.mkv"


def test_a_relative_root_is_made_absolute() -> None:
    assert render("{title}", {"title": "T"}, root=Path("lib")) == Path(os.getcwd()) / "lib" / "T"


# --- on_exists: rename -----------------------------------------------------------------------------

def test_unique_path_numbers_taken_names_from_two() -> None:
    taken = {ROOT / "Name.mkv", ROOT / "Name (2).mkv"}
    assert unique_path(ROOT / "Free.mkv", taken.__contains__) == ROOT / "Free.mkv"
    assert unique_path(ROOT / "Name.mkv", taken.__contains__) == ROOT / "Name (3).mkv"
    assert unique_path(ROOT / "Mr. Robot", {ROOT / "Mr. Robot"}.__contains__) == ROOT / "Mr. Robot (2)"


def test_unique_path_checks_the_filesystem_by_default(tmp_path: Path) -> None:
    (tmp_path / "a.mkv").touch()
    assert unique_path(tmp_path / "a.mkv") == tmp_path / "a (2).mkv"


def test_unique_path_keeps_a_full_length_name_within_255_bytes() -> None:
    long = ROOT / ("x" * 251 + ".mkv")
    renamed = unique_path(long, {long}.__contains__)
    assert renamed.name.endswith(" (2).mkv") and len(renamed.name.encode()) <= MAX_COMPONENT_BYTES
