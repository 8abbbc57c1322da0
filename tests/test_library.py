"""Safe moves into the library and their undo, on real files and a SQLite history."""

from __future__ import annotations

import errno
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import sha256, small_tmpfs

from mediatasks import library
from mediatasks.errors import (
    DiskFull,
    InvalidOptions,
    NothingToUndo,
    OutputExists,
    UndoRefused,
    VerificationFailed,
)
from mediatasks.history import History
from mediatasks.library import handle_source, place, trash_dir_for, undo


@pytest.fixture
def history(tmp_path: Path) -> Iterator[History]:
    h = History(f"sqlite:///{tmp_path / 'h.sqlite'}")
    yield h
    h.close()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "lib").mkdir()
    return tmp_path / "lib"


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def files(directory: Path) -> list[str]:
    """Every file and directory under ``directory``, relative, sorted."""
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


def put(built: Path, target: Path, history: History, root: Path, job_id: str = "j1", **kw: Any
        ) -> library.Placed:
    kw.setdefault("on_exists", "skip")
    return place(built, target, job_id=job_id, history=history, trash_dir=trash_dir_for(root, job_id), **kw)


def test_a_file_is_placed_into_new_directories_and_each_change_is_recorded(
        tmp_path: Path, root: Path, history: History) -> None:
    built = write(tmp_path / "work" / "out.mkv", b"new video")
    target = root / "Show" / "Season 1" / "Show - 01.mkv"
    placed = put(built, target, history, root)
    assert placed.path == target and not placed.skipped and target.read_bytes() == b"new video"
    assert placed.created_dirs == (root / "Show", root / "Show" / "Season 1")
    assert files(root) == ["Show", "Show/Season 1", "Show/Season 1/Show - 01.mkv"]  # no temp file
    assert built.read_bytes() == b"new video"  # copied: not ours to move
    ops = history.operations("j1")
    assert [(op.kind, op.seq, op.dst) for op in ops] == [
        ("mkdir", 1, str(root / "Show")), ("mkdir", 2, str(root / "Show" / "Season 1")),
        ("publish", 3, str(target))]
    assert ops[2].src == str(built) and ops[2].size == 9 and ops[2].sha256 == sha256(target)
    assert ops[2].mtime_ns == target.stat().st_mtime_ns and ops[2].created_at.tzinfo is not None


def test_a_built_file_we_own_is_renamed_into_place(tmp_path: Path, root: Path, history: History) -> None:
    built = write(tmp_path / "work" / "out.mkv", b"new video")
    inode = built.stat().st_ino
    placed = put(built, root / "a.mkv", history, root, move=True)
    assert not built.exists() and placed.path.stat().st_ino == inode


def test_skip_leaves_the_existing_file_and_the_built_one_as_they_are(
        tmp_path: Path, root: Path, history: History) -> None:
    built = write(tmp_path / "out.mkv", b"new")
    target = write(root / "a.mkv", b"old")
    placed = put(built, target, history, root, on_exists="skip", move=True)
    assert placed.skipped and placed.path == target
    assert target.read_bytes() == b"old" and built.read_bytes() == b"new"
    assert files(root) == ["a.mkv"] and history.operations("j1") == []


def test_rename_publishes_beside_the_existing_file_as_name_2(
        tmp_path: Path, root: Path, history: History) -> None:
    write(root / "a.mkv", b"old")
    assert put(write(tmp_path / "1.mkv", b"one"), root / "a.mkv", history, root, on_exists="rename",
               job_id="j1").path == root / "a (2).mkv"
    assert put(write(tmp_path / "2.mkv", b"two"), root / "a.mkv", history, root, on_exists="rename",
               job_id="j2").path == root / "a (3).mkv"
    assert [(root / n).read_bytes() for n in ("a.mkv", "a (2).mkv", "a (3).mkv")] == [b"old", b"one", b"two"]
    # A number in parentheses is part of the name (a year), never a counter to go on from.
    write(root / "Clash (1999).mkv", b"x")
    assert library.placement._unique_path(root / "Clash (1999).mkv") == root / "Clash (1999) (2).mkv"


def test_replace_moves_the_old_file_aside_and_undo_brings_it_back_byte_for_byte(
        tmp_path: Path, root: Path, history: History) -> None:
    target = write(root / "a.mkv", b"old bytes")
    os.utime(target, ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))
    placed = put(write(tmp_path / "out.mkv", b"new"), target, history, root, on_exists="replace")
    assert placed.path == target and target.read_bytes() == b"new"
    assert placed.trashed == trash_dir_for(root, "j1") / "a.mkv" and placed.trashed.read_bytes() == b"old bytes"
    assert [op.kind for op in history.operations("j1")] == ["mkdir", "mkdir", "trash", "publish"]
    report = undo("j1", history)
    assert report.complete and report.removed == (target,) and report.restored == (target,)
    assert target.read_bytes() == b"old bytes" and target.stat().st_mtime_ns == 1_600_000_000_123_456_789
    assert files(root) == ["a.mkv"]  # the trash directories it made are gone too


def test_a_failed_verification_publishes_nothing_and_leaves_no_temp_file(
        tmp_path: Path, root: Path, history: History) -> None:
    built = write(tmp_path / "out.mkv", b"broken")

    def verify(path: Path) -> None:
        assert path.parent == root / "new" and path.read_bytes() == b"broken"
        raise VerificationFailed("the output has 0 frames", path=path)

    with pytest.raises(VerificationFailed):
        put(built, root / "new" / "a.mkv", history, root, move=True, verify=verify)
    assert files(root) == []  # neither the file, its temp name nor the directory made for it
    assert built.read_bytes() == b"broken"  # renamed to the temp name, then back
    with pytest.raises(NothingToUndo):
        undo("j1", history)


def test_backup_then_undo_restores_the_source_and_removes_what_was_published(
        tmp_path: Path, root: Path, history: History) -> None:
    source = write(tmp_path / "in" / "movie.mkv", b"original source")
    mtime = source.stat().st_mtime_ns
    write(tmp_path / "backup" / "movie.mkv", b"an older backup")
    put(write(tmp_path / "out.mkv", b"encoded"), root / "Movies" / "movie.mkv", history, root)
    backup = handle_source(source, after="backup", backup_dir=tmp_path / "backup", job_id="j1",
                           history=history)
    assert backup == tmp_path / "backup" / "movie (2).mkv" and not source.exists()
    assert backup.read_bytes() == b"original source"
    report = undo("j1", history)
    assert report.complete and report.restored == (source,) and report.removed == (root / "Movies" / "movie.mkv",)
    assert report.removed_dirs == (root / "Movies",) and report.undone == 3
    assert source.read_bytes() == b"original source" and source.stat().st_mtime_ns == mtime
    assert files(root) == [] and files(tmp_path / "backup") == ["movie.mkv"]


def test_a_backup_directory_that_did_not_exist_is_removed_by_undo(tmp_path: Path, history: History) -> None:
    source = write(tmp_path / "in" / "movie.mkv", b"src")
    backup = handle_source(source, after="backup", backup_dir=tmp_path / "bk" / "2024", job_id="j1",
                           history=history)
    assert backup == tmp_path / "bk" / "2024" / "movie.mkv"
    report = undo("j1", history)
    assert report.removed_dirs == (tmp_path / "bk" / "2024", tmp_path / "bk") and source.exists()


def test_delete_then_undo_removes_what_was_published_and_reports_the_source_lost(
        tmp_path: Path, root: Path, history: History) -> None:
    source = write(tmp_path / "in" / "movie.mkv", b"original source")
    put(write(tmp_path / "out.mkv", b"encoded"), root / "movie.mkv", history, root)
    assert handle_source(source, after="delete", backup_dir=None, job_id="j1", history=history) is None
    assert not source.exists()
    delete = history.operations("j1")[-1]
    assert (delete.kind, delete.src, delete.size) == ("delete", str(source), 15)
    report = undo("j1", history)
    assert report.removed == (root / "movie.mkv",) and not report.complete
    assert report.lost == (f"the original {source} was deleted (source.after: delete) and cannot be restored",)
    assert files(root) == []
    with pytest.raises(NothingToUndo, match="nothing to undo"):
        undo("j1", history)


def test_keep_leaves_the_source_and_records_nothing(tmp_path: Path, history: History) -> None:
    source = write(tmp_path / "movie.mkv", b"src")
    assert handle_source(source, after="keep", backup_dir=None, job_id="j1", history=history) == source
    assert source.exists() and history.operations("j1") == []
    with pytest.raises(InvalidOptions, match=r"source\.backup_dir"):
        handle_source(source, after="backup", backup_dir=None, job_id="j1", history=history)


@pytest.mark.parametrize("change", ["append", "touch", "same size"])
def test_undo_is_refused_and_changes_nothing_when_a_published_file_was_modified(
        tmp_path: Path, root: Path, history: History, change: str) -> None:
    source = write(tmp_path / "in" / "movie.mkv", b"original source")
    target = put(write(tmp_path / "out.mkv", b"encoded"), root / "Movies" / "movie.mkv", history, root).path
    backup = handle_source(source, after="backup", backup_dir=tmp_path / "backup", job_id="j1",
                           history=history)
    assert backup is not None
    mtime = target.stat().st_mtime_ns
    if change == "append":
        target.write_bytes(b"encoded, then edited")
    elif change == "touch":
        os.utime(target, ns=(mtime + 10**9, mtime + 10**9))
    else:
        target.write_bytes(b"ENCODED")
        os.utime(target, ns=(mtime, mtime))
    before = {p: p.read_bytes() for p in (target, backup)}
    with pytest.raises(UndoRefused) as refused:
        undo("j1", history)
    message = str(refused.value)
    assert str(target) in message and "move it away first" in message and "nothing was undone" in message
    assert "\n" not in message
    assert {p: p.read_bytes() for p in (target, backup)} == before and not source.exists()
    assert all(op.undone_at is None for op in history.operations("j1"))
    # The fix the message names: move it away, and undo leaves the missing file alone.
    target.rename(tmp_path / "kept.mkv")
    report = undo("j1", history)
    assert report.removed == () and report.restored == (source,) and source.read_bytes() == b"original source"
    assert files(root) == []


def test_undo_is_refused_when_something_now_exists_where_a_backup_goes_back(
        tmp_path: Path, root: Path, history: History) -> None:
    source = write(tmp_path / "in" / "movie.mkv", b"original source")
    target = put(write(tmp_path / "out.mkv", b"encoded"), root / "movie.mkv", history, root).path
    handle_source(source, after="backup", backup_dir=tmp_path / "backup", job_id="j1", history=history)
    write(source, b"a new file with the old name")
    with pytest.raises(UndoRefused, match=re.escape(f"move {source} away first")):
        undo("j1", history)
    assert target.exists() and source.read_bytes() == b"a new file with the old name"
    source.unlink()
    assert undo("j1", history).restored == (source,) and source.read_bytes() == b"original source"


def test_undo_reports_a_backup_that_is_gone_as_lost_and_goes_on(
        tmp_path: Path, root: Path, history: History) -> None:
    source = write(tmp_path / "in" / "movie.mkv", b"original source")
    put(write(tmp_path / "out.mkv", b"encoded"), root / "movie.mkv", history, root)
    backup = handle_source(source, after="backup", backup_dir=tmp_path / "backup", job_id="j1",
                           history=history)
    assert backup is not None
    backup.unlink()
    report = undo("j1", history)
    assert report.removed == (root / "movie.mkv",) and len(report.lost) == 1
    assert str(source) in report.lost[0] and "cannot be restored" in report.lost[0]


def test_a_second_undo_says_nothing_to_undo_and_an_unknown_id_is_an_error(
        tmp_path: Path, root: Path, history: History) -> None:
    put(write(tmp_path / "out.mkv", b"encoded"), root / "movie.mkv", history, root)
    assert undo("j1", history).removed == (root / "movie.mkv",)
    with pytest.raises(NothingToUndo, match="nothing to undo for j1"):
        undo("j1", history)
    with pytest.raises(InvalidOptions, match="no job or batch nope") as unknown:
        undo("nope", history)
    assert not isinstance(unknown.value, NothingToUndo)


def test_a_batch_id_undoes_every_job_of_the_batch_newest_first(
        tmp_path: Path, root: Path, history: History) -> None:
    for i, name in enumerate(["a", "b", "c"]):
        place(write(tmp_path / f"{name}.out", name.encode()), root / "Shows" / f"{name}.mkv",
              on_exists="replace", job_id=f"job-{name}", batch_id="b1" if i < 2 else None,
              history=history, trash_dir=trash_dir_for(root, f"job-{name}"))
    report = undo("b1", history)
    assert report.removed == (root / "Shows" / "b.mkv", root / "Shows" / "a.mkv")
    assert report.kept_dirs == (root / "Shows",)  # c.mkv, of another job, is still in it
    assert files(root) == ["Shows", "Shows/c.mkv"]
    with pytest.raises(NothingToUndo):
        undo("job-a", history)
    assert undo("job-c", history).removed_dirs == ()  # Shows was made by job-a, not job-c
    assert files(root) == ["Shows"]


def test_a_later_job_that_replaced_an_earlier_one_is_undone_in_order(
        tmp_path: Path, root: Path, history: History) -> None:
    target = write(root / "a.mkv", b"the user's file")
    for job in ("j1", "j2"):
        place(write(tmp_path / f"{job}.out", job.encode()), target, on_exists="replace", job_id=job,
              batch_id="b", history=history, trash_dir=trash_dir_for(root, job))
    assert target.read_bytes() == b"j2"
    report = undo("b", history)
    assert report.complete and target.read_bytes() == b"the user's file" and files(root) == ["a.mkv"]


def test_a_file_that_appears_at_the_target_while_publishing_is_never_overwritten(
        tmp_path: Path, root: Path, history: History) -> None:
    raced: set[str] = set()

    class Racing(History):
        """Another program writes the target just before our first link of each job."""

        def record_operation(self, job_id: str, kind: str, **kw: Any) -> int:
            if kind == "publish" and job_id not in raced:
                raced.add(job_id)
                write(Path(kw["dst"]), b"theirs")
            return super().record_operation(job_id, kind, **kw)

    racing = Racing(history.url)
    built = write(tmp_path / "out.mkv", b"ours")
    assert put(built, root / "a.mkv", racing, root, on_exists="skip").skipped
    assert (root / "a.mkv").read_bytes() == b"theirs" and files(root) == ["a.mkv"]
    assert put(built, root / "b.mkv", racing, root, on_exists="rename", job_id="j2").path == root / "b (2).mkv"
    write(root / "c.mkv", b"old")
    with pytest.raises(OutputExists, match="is kept at"):
        put(built, root / "c.mkv", racing, root, on_exists="replace", job_id="j3")
    assert (root / "c.mkv").read_bytes() == b"theirs" and built.read_bytes() == b"ours"
    assert (trash_dir_for(root, "j3") / "c.mkv").read_bytes() == b"old"
    assert not [p for p in files(root) if p.endswith(".placing")]
    racing.close()


def test_without_hard_links_a_rename_after_a_check_is_used(
        tmp_path: Path, root: Path, history: History, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_links(*_: Any, **__: Any) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    write(root / "a.mkv", b"old")
    placed = put(write(tmp_path / "out.mkv", b"new"), root / "a.mkv", history, root, on_exists="replace")
    assert placed.path.read_bytes() == b"new" and placed.trashed is not None
    assert placed.trashed.read_bytes() == b"old"
    assert undo("j1", history).complete and (root / "a.mkv").read_bytes() == b"old"


def test_placing_again_after_a_crash_returns_what_the_first_run_published(
        tmp_path: Path, root: Path, history: History) -> None:
    built = write(tmp_path / "out.mkv", b"new")
    first = put(built, root / "a.mkv", history, root, on_exists="rename", move=True)
    assert put(built, root / "a.mkv", history, root, on_exists="rename", move=True) == library.Placed(
        path=first.path)
    assert files(root) == ["a.mkv"]
    source = write(tmp_path / "in.mkv", b"src")
    backup = handle_source(source, after="backup", backup_dir=tmp_path / "bk", job_id="j1", history=history)
    assert handle_source(source, after="backup", backup_dir=tmp_path / "bk", job_id="j1",
                         history=history) == backup


def test_changes_recorded_but_never_made_are_skipped_by_undo(tmp_path: Path, history: History) -> None:
    """Write-ahead: a crash between the record and the change leaves a record undo must tolerate."""
    kept = write(tmp_path / "in.mkv", b"src")
    history.record_operation("j1", "publish", dst=tmp_path / "never.mkv", size=3, mtime_ns=1, sha256="0" * 64)
    history.record_operation("j1", "backup", src=kept, dst=tmp_path / "bk" / "in.mkv", size=3,
                             mtime_ns=kept.stat().st_mtime_ns, sha256=sha256(kept))
    history.record_operation("j1", "delete", src=kept, size=3, mtime_ns=kept.stat().st_mtime_ns,
                             sha256=sha256(kept))
    report = undo("j1", history)
    assert report.complete and report.undone == 3 and report.removed == report.restored == ()
    assert kept.read_bytes() == b"src"


@pytest.fixture
def other_fs(tmp_path: Path) -> Iterator[Path]:
    """A small tmpfs: another filesystem than tmp_path's (root only)."""
    with small_tmpfs(tmp_path / "tmpfs", "4m") as mount:
        if mount.stat().st_dev == tmp_path.stat().st_dev:
            pytest.skip("the tmpfs is on the same filesystem")
        yield mount


def test_moves_across_filesystems_copy_check_and_undo_restores_them(
        tmp_path: Path, root: Path, history: History, other_fs: Path) -> None:
    built = write(other_fs / "work" / f"{uuid.uuid4().hex}.mkv", b"encoded on another disk")
    source = write(tmp_path / "in" / "movie.mkv", b"original source")
    os.utime(source, ns=(1_600_000_000_987_654_321, 1_600_000_000_987_654_321))
    placed = put(built, root / "movie.mkv", history, root, move=True)
    assert placed.path.read_bytes() == b"encoded on another disk" and not built.exists()
    backup = handle_source(source, after="backup", backup_dir=other_fs / "backup", job_id="j1",
                           history=history)
    assert backup is not None and backup.read_bytes() == b"original source" and not source.exists()
    assert backup.stat().st_mtime_ns == 1_600_000_000_987_654_321
    assert files(other_fs) == ["backup", "backup/movie.mkv", "work"]  # no temp file left there
    report = undo("j1", history)
    assert report.complete and report.restored == (source,) and report.removed == (placed.path,)
    assert source.read_bytes() == b"original source"
    assert source.stat().st_mtime_ns == 1_600_000_000_987_654_321
    assert files(other_fs) == ["work"] and files(root) == []


def test_a_full_disk_raises_disk_full_and_leaves_nothing_behind(
        tmp_path: Path, history: History, other_fs: Path) -> None:
    built = write(tmp_path / "out.mkv", b"x" * (5 * 1024 * 1024))  # the tmpfs holds 4 MiB
    with pytest.raises(DiskFull, match="no space left"):
        place(built, other_fs / "lib" / "a.mkv", on_exists="skip", job_id="j1", history=history,
              trash_dir=trash_dir_for(other_fs / "lib", "j1"), move=True)
    assert files(other_fs) == [] and built.stat().st_size == 5 * 1024 * 1024
    with pytest.raises(NothingToUndo):
        undo("j1", history)


def test_a_name_of_255_bytes_is_placed_replaced_and_undone(tmp_path: Path, root: Path, history: History) -> None:
    name = "é" * 125 + ".mkv"  # 254 bytes: no room for a longer temp name beside it
    target = write(root / "Movies" / name, b"old")
    placed = put(write(tmp_path / "out.mkv", b"new"), target, history, root, on_exists="replace")
    assert placed.path.read_bytes() == b"new" and placed.trashed is not None
    assert undo("j1", history).complete and target.read_bytes() == b"old"
