"""library: safe moves into the library, and an undo log that can reverse them.

Every change to a file the user can see is an operation in the history (``History.operations``):

    mkdir    dst   a directory we created (undo removes it if it is empty)
    trash    src -> dst   a file ``place(on_exists="replace")`` moved aside before publishing over it
    publish  dst   a file we published (src: the file it was built as)
    backup   src -> dst   the source moved into the backup directory (``source.after: backup``)
    delete   src   the source deleted (``source.after: delete``): undo can only report it lost

Crash ordering: write-ahead. An operation is recorded before its change is made, with everything
undo needs to check it (size, mtime_ns, sha256 of the file as it will be); a change that fails is
withdrawn (marked undone). A crash in between leaves an operation that never happened, which undo
recognises from the files and skips: a published file that is not there, a moved file still at its
original path, a deleted file still present. The other order would let a crash leave a file moved
or deleted with no record of where it went: that is the lossy one. Undo does each step, then marks
it undone, so an undo cut short can simply be run again.

Nothing is ever overwritten: every final step is a hard link (which fails if the name is taken)
then an unlink, or, where hard links are not supported, a rename after a check; a file moved
across filesystems is copied, fsynced and checked before its original is unlinked. A replaced file
is moved aside before the new one is linked in, so one of them is always under a recorded name.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, NamedTuple

from pydantic import BaseModel, ConfigDict

from mediatasks import files, naming
from mediatasks.errors import (
    DiskFull,
    InvalidOptions,
    NothingToUndo,
    OutputExists,
    SourceNotFound,
    UndoRefused,
    VerificationFailed,
)
from mediatasks.history.store import History, Operation

OnExists = Literal["skip", "replace", "rename"]
After = Literal["keep", "backup", "delete"]

TRASH_DIR_NAME = ".mediatasks-trash"
_ATTEMPTS = 100  # names tried when files keep appearing at the ones we pick


class Placed(BaseModel):
    """What ``place`` did: the published path, or the existing one when it skipped."""

    model_config = ConfigDict(frozen=True)

    path: Path
    skipped: bool = False
    trashed: Path | None = None  # where the file it replaced now is
    created_dirs: tuple[Path, ...] = ()


class UndoReport(BaseModel):
    """What ``undo`` did; ``lost`` names each original it could not bring back (the CLI exits 1)."""

    model_config = ConfigDict(frozen=True)

    undone: int = 0
    removed: tuple[Path, ...] = ()
    restored: tuple[Path, ...] = ()
    removed_dirs: tuple[Path, ...] = ()
    kept_dirs: tuple[Path, ...] = ()
    lost: tuple[str, ...] = ()

    @property
    def complete(self) -> bool:
        return not self.lost


def trash_dir_for(root: Path, job_id: str) -> Path:
    """Where ``place`` moves the files a job replaces: inside the library, so a rename suffices."""
    return root / TRASH_DIR_NAME / job_id


# -- files ------------------------------------------------------------------------------------


def _unique_path(path: Path) -> Path:
    """``path`` if free, else "Name (2).ext", "Name (3).ext", ... within the 255-byte name limit.
    A broken symlink counts as taken. (A stem that ends in "(1999)" is a year, not a counter.)"""
    return naming.unique_path(path, os.path.lexists)


def _temp_beside(path: Path, tag: str) -> Path:
    """A hidden temp name beside ``path``, short whatever its length (names may take 255 bytes)."""
    key = hashlib.sha256(path.name.encode()).hexdigest()[:16]
    return path.with_name(f".mediatasks-{key}.{tag}")


def _link_no_clobber(src: Path, dst: Path) -> None:
    """Give ``src``'s file the name ``dst`` too; FileExistsError if ``dst`` is taken.

    Without hard links (some network filesystems) it renames after a check instead; ``src`` is
    then gone. Raises OSError EXDEV across filesystems.
    """
    try:
        os.link(src, dst, follow_symlinks=False)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno == errno.EXDEV:
            raise
        if os.path.lexists(dst):
            raise FileExistsError(errno.EEXIST, "File exists", str(dst)) from None
        os.rename(src, dst)


def _move(src: Path, dst: Path, *, sha256: str | None = None) -> None:
    """Move ``src`` to ``dst``, never replacing a file at ``dst`` (FileExistsError).

    Across filesystems: copy to a temp name beside ``dst``, fsync, check size (and ``sha256``
    when given), link it in, and only then unlink ``src``.
    """
    try:
        _link_no_clobber(src, dst)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        tmp = _temp_beside(dst, "moving")
        try:
            digest = files.copy_synced(src, tmp)
            if os.stat(tmp).st_size != os.stat(src).st_size or (sha256 and digest != sha256):
                raise VerificationFailed(f"{src} changed while it was being copied to {dst}",
                                         path=src, hint="nothing was moved; run it again")
            _link_no_clobber(tmp, dst)
        finally:
            tmp.unlink(missing_ok=True)
    with contextlib.suppress(FileNotFoundError):  # gone already when the link was a rename
        os.unlink(src)
    files.fsync_dir(dst.parent)
    files.fsync_dir(src.parent)


def _raise_disk_full(exc: OSError, path: Path) -> None:
    """Raise DiskFull for an ENOSPC; the caller re-raises anything else as it is."""
    if exc.errno == errno.ENOSPC:
        raise DiskFull("no space left", path=path, hint=f"free space in {path.parent}") from exc


# -- the log ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Log:
    """The operations of one job, written ahead of the changes they describe."""

    history: History
    job_id: str
    batch_id: str | None

    def record(self, kind: str, *, src: Path | None = None, dst: Path | None = None,
               file: Path | None = None, sha256: str | None = None) -> int:
        """Record ``kind``; ``file`` is the file whose size and mtime it carries."""
        st = os.stat(file) if file is not None else None
        return self.history.record_operation(
            self.job_id, kind, batch_id=self.batch_id, src=src, dst=dst,
            size=st.st_size if st else None, mtime_ns=st.st_mtime_ns if st else None, sha256=sha256)

    def withdraw(self, op_id: int) -> None:
        self.history.mark_undone(op_id)

    def make_dirs(self, directory: Path) -> list[tuple[Path, int]]:
        """Create ``directory`` and its missing parents, each recorded; return those we created."""
        missing: list[Path] = []
        d = directory
        while not d.is_dir():
            if os.path.lexists(d):
                raise InvalidOptions("is not a directory", path=d, hint="move it out of the way")
            missing.append(d)
            d = d.parent
        created: list[tuple[Path, int]] = []
        for d in reversed(missing):
            op = self.record("mkdir", dst=d)
            try:
                os.mkdir(d)
            except FileExistsError:  # made meanwhile by someone else: not ours to remove
                self.withdraw(op)
                if not d.is_dir():
                    raise InvalidOptions("is not a directory", path=d,
                                         hint="move it out of the way") from None
            except OSError as exc:
                self.withdraw(op)
                _raise_disk_full(exc, d)
                raise
            else:
                created.append((d, op))
                files.fsync_dir(d.parent)
        return created

    def remove_dirs(self, created: list[tuple[Path, int]]) -> None:
        """Take back directories ``make_dirs`` created, newest first, where they are still empty."""
        for d, op in reversed(created):
            try:
                os.rmdir(d)
            except OSError:
                continue
            self.withdraw(op)

    def done_before(self, kind: str, src: Path) -> Operation | None:
        """This job's live operation of ``kind`` on ``src``: a task run again after a crash."""
        for op in reversed(self.history.operations(self.job_id)):
            if op.job_id == self.job_id and op.kind == kind and op.src == str(src) and not op.undone_at:
                return op
        return None


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise InvalidOptions(f"{name} is {value!r}", hint=f"use one of: {', '.join(allowed)}")


def _unchanged(op: Operation) -> bool:
    """Whether the file ``op`` published is still there as it was (size and mtime)."""
    try:
        st = os.lstat(op.dst or "")
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_size == op.size and st.st_mtime_ns == op.mtime_ns


# -- place ------------------------------------------------------------------------------------


def place(built: Path, target: Path, *, on_exists: OnExists, job_id: str, history: History,
          trash_dir: Path, batch_id: str | None = None, move: bool = False,
          verify: Callable[[Path], None] | None = None,
          unique: Callable[[Path], Path] = _unique_path) -> Placed:
    """Publish ``built`` at ``target`` in the library, recording each change for ``undo``.

    The file goes to a temp name beside the target (renamed there when ``move`` and on the same
    filesystem, else copied; with ``move`` a copied ``built`` is removed at the end), is fsynced
    and checked by ``verify``, then linked in under its final name. A target that exists is kept
    (``skip``), avoided with a "Name (2).ext" name from ``unique`` (``rename``), or moved into
    ``trash_dir`` first (``replace``; see ``trash_dir_for``). Run again for the same job and
    ``built`` (a task retried after a crash), it returns what the first run published.

    Raises:
        SourceNotFound: ``built`` is not a file.
        InvalidOptions: ``target`` is a directory, or something on its path is a file.
        OutputExists: other files kept appearing at the target while it was being published.
        DiskFull: no space at the target (the temp file is removed).
        Whatever ``verify`` raises: nothing is published, the temp file and the directories made
            for it are removed (a moved ``built`` is put back).
    """
    _check_choice("on_exists", on_exists, ("skip", "replace", "rename"))
    log = _Log(history, job_id, batch_id)
    earlier = log.done_before("publish", built)
    if earlier is not None and earlier.dst and Path(earlier.dst).parent == target.parent:
        if _unchanged(earlier):
            return Placed(path=Path(earlier.dst))
        if not os.path.lexists(earlier.dst):
            log.withdraw(earlier.id)  # recorded, then the crash came before the link
    if not built.is_file():
        raise SourceNotFound("the file to publish does not exist", path=built, hint="build it again")
    if target.is_dir():
        raise InvalidOptions("the library path is a directory", path=target,
                             hint="check the library name template")
    if on_exists == "skip" and os.path.lexists(target):
        return Placed(path=target, skipped=True)
    created = log.make_dirs(target.parent)
    tmp = _temp_beside(target, f"{job_id}.placing")
    moved = False
    trashed: _Trashed | None = None
    try:
        moved, digest = _stage(built, tmp, move=move)
        if verify is not None:
            verify(tmp)
        final: Path | None = None
        candidate = target
        for _ in range(_ATTEMPTS):
            if os.path.lexists(candidate):
                if on_exists == "skip":  # appeared while we copied
                    _unstage(tmp, built, moved)
                    log.remove_dirs(created)
                    return Placed(path=candidate, skipped=True)
                if on_exists == "rename":
                    candidate = unique(target)
                elif trashed is None:
                    trashed = _trash(candidate, trash_dir, log, created, unique)
                else:
                    break  # replaced once; what appeared since is someone else's
            op = log.record("publish", src=built, dst=candidate, file=tmp, sha256=digest)
            try:
                _link_no_clobber(tmp, candidate)
            except FileExistsError:
                log.withdraw(op)
                continue
            except OSError as exc:
                log.withdraw(op)
                _raise_disk_full(exc, candidate)
                raise
            final = candidate
            break
        if final is None:
            kept = f"; the file it replaced is kept at {trashed.dst}" if trashed else ""
            raise OutputExists(f"other files kept appearing while publishing{kept}", path=target,
                               hint="find out what else writes there, then run it again")
    except BaseException:
        _unstage(tmp, built, moved)
        if trashed is not None:
            _untrash(trashed, log)
        log.remove_dirs(created)
        raise
    tmp.unlink(missing_ok=True)
    if move and not moved:
        built.unlink(missing_ok=True)
    files.fsync_dir(final.parent)
    return Placed(path=final, trashed=trashed.dst if trashed else None,
                  created_dirs=tuple(d for d, _ in created))


def _stage(built: Path, tmp: Path, *, move: bool) -> tuple[bool, str]:
    """Put ``built`` at ``tmp``, fsynced; return whether it was renamed there, and its sha256."""
    renamed = False
    try:
        if move:
            try:
                os.rename(built, tmp)
                renamed = True
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
        if renamed:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            digest = files.sha256(tmp)
        else:
            digest = files.copy_synced(built, tmp)
        files.fsync_dir(tmp.parent)
        return renamed, digest
    except BaseException as exc:
        _unstage(tmp, built, renamed)
        if isinstance(exc, OSError):
            _raise_disk_full(exc, tmp)
        raise


def _unstage(tmp: Path, built: Path, moved: bool) -> None:
    """Undo ``_stage``: a renamed file goes back to ``built`` (it is not ours to lose)."""
    with contextlib.suppress(OSError):
        if moved and not os.path.lexists(built):
            os.rename(tmp, built)
        tmp.unlink(missing_ok=True)


class _Trashed(NamedTuple):
    src: Path
    dst: Path
    op: int


def _move_aside(kind: str, path: Path, folder: Path, log: _Log, unique: Callable[[Path], Path],
                what: str) -> tuple[Path, int]:
    """Move ``path`` into ``folder`` under a free name, each try recorded first; return where
    it went and its operation id."""
    digest = files.sha256(path)
    for _ in range(_ATTEMPTS):
        dst = unique(folder / path.name)
        op = log.record(kind, src=path, dst=dst, file=path, sha256=digest)
        try:
            _move(path, dst, sha256=digest)
        except FileExistsError:  # taken between the choice and the move: the next name
            log.withdraw(op)
            continue
        except BaseException:
            if os.path.lexists(path):
                log.withdraw(op)
            raise
        return dst, op
    raise OutputExists(f"no free name in the {what} directory", path=folder,
                       hint="empty it" if what == "trash" else "clear out old backups")


def _trash(path: Path, trash_dir: Path, log: _Log, created: list[tuple[Path, int]],
           unique: Callable[[Path], Path]) -> _Trashed:
    """Move the file at ``path`` aside into ``trash_dir``, recorded first; return where and the op."""
    created.extend(log.make_dirs(trash_dir))
    dst, op = _move_aside("trash", path, trash_dir, log, unique, "trash")
    return _Trashed(path, dst, op)


def _untrash(trashed: _Trashed, log: _Log) -> None:
    """Put a file ``_trash`` moved aside back, if its name is still free (else undo can, later)."""
    with contextlib.suppress(OSError, VerificationFailed):
        _move(trashed.dst, trashed.src)
        log.withdraw(trashed.op)


# -- the source -------------------------------------------------------------------------------


def handle_source(source: Path, *, after: After, backup_dir: Path | None, job_id: str,
                  history: History, batch_id: str | None = None,
                  unique: Callable[[Path], Path] = _unique_path) -> Path | None:
    """Keep, back up or delete the source once its output is published; return where it is now.

    ``backup`` moves it into ``backup_dir`` under its own name ("Name (2).ext" if taken; across
    filesystems copied, fsynced and checked before the original is unlinked); ``delete`` unlinks
    it, which undo cannot reverse. Both are recorded first, with the file's size and sha256. Run
    again for the same job and source, it returns what the first run did.

    Raises:
        InvalidOptions: ``after`` is unknown, or ``backup`` without a usable ``backup_dir``.
        SourceNotFound: the source is not a file.
        VerificationFailed: the source changed while it was copied to another filesystem.
        DiskFull: no space in ``backup_dir``.
    """
    _check_choice("source.after", after, ("keep", "backup", "delete"))
    if after == "keep":
        return source
    log = _Log(history, job_id, batch_id)
    earlier = log.done_before(after, source)
    if earlier is not None:
        done, where = _finish_earlier(earlier, source, log)
        if done:
            return where
    if not source.is_file():
        raise SourceNotFound("the source is gone", path=source, hint="check the source path")
    if after == "delete":
        op = log.record("delete", src=source, file=source, sha256=files.sha256(source))
        try:
            source.unlink()
        except OSError:
            if os.path.lexists(source):
                log.withdraw(op)
            raise
        files.fsync_dir(source.parent)
        return None
    if backup_dir is None:
        raise InvalidOptions("source.after is backup but no backup directory is set", path=source,
                             hint="set source.backup_dir")
    if backup_dir.is_dir() and backup_dir.samefile(source.parent):
        raise InvalidOptions("the backup directory is the source's own directory", path=backup_dir,
                             hint="choose another source.backup_dir")
    created = log.make_dirs(backup_dir)
    try:
        return _move_aside("backup", source, backup_dir, log, unique, "backup")[0]
    except OSError as exc:
        log.remove_dirs(created)
        _raise_disk_full(exc, backup_dir)
        raise
    except BaseException:
        log.remove_dirs(created)
        raise


def _finish_earlier(earlier: Operation, source: Path, log: _Log) -> tuple[bool, Path | None]:
    """A backup or delete this job recorded before: whether it happened, and where the source is."""
    dst = Path(earlier.dst) if earlier.dst else None
    if not os.path.lexists(source):
        return True, dst
    if dst is not None and os.path.lexists(dst) and os.path.samefile(source, dst):
        source.unlink()  # the crash came between the link and the unlink of the move
        return True, dst
    log.withdraw(earlier.id)  # recorded, then the crash came before the change
    return False, None


# -- undo -------------------------------------------------------------------------------------


def undo(job_or_batch_id: str, history: History) -> UndoReport:
    """Reverse what a job (or every job of a batch) did to the library, newest change first.

    Everything is checked before anything is touched: a published file is removed only if it is
    as it was published (size, mtime, sha256), a moved file is moved back only if it is as it was
    moved and its old name is free. A file that is gone already is skipped. A deleted source, or
    a moved one that is no longer where it was moved, is named in ``report.lost`` and the rest of
    the undo goes on; the caller should print those lines and exit non-zero.

    Raises:
        InvalidOptions: no job or batch has this id.
        NothingToUndo: every change was undone already, or there were none.
        UndoRefused: a file changed since; nothing was undone (the message names each file and
            what to do about it).
    """
    ops = history.operations(job_or_batch_id)
    live = [op for op in ops if op.undone_at is None]
    if not live:
        if ops:
            raise NothingToUndo(f"nothing to undo for {job_or_batch_id}: its {len(ops)} recorded "
                                "change(s) are undone already")
        if history.get(job_or_batch_id) is not None or history.jobs_in_batch(job_or_batch_id):
            raise NothingToUndo(f"nothing to undo for {job_or_batch_id}: it changed no files")
        raise InvalidOptions(f"no job or batch {job_or_batch_id} in the history at {history.url}",
                             hint="see 'mediatasks jobs list'")
    done = _Done()
    for step in _plan_undo(live):
        _act(step, done)
        history.mark_undone(step.op.id)
        done.undone += 1
    return UndoReport(undone=done.undone, removed=tuple(done.removed), restored=tuple(done.restored),
                      removed_dirs=tuple(done.removed_dirs), kept_dirs=tuple(done.kept_dirs),
                      lost=tuple(done.lost))


_Action = Literal["remove", "move_back", "drop_copy", "rmdir", "lost", "skip"]


@dataclass(frozen=True)
class _Step:
    op: Operation
    action: _Action
    note: str = ""


@dataclass
class _Done:
    undone: int = 0
    removed: list[Path] = field(default_factory=list)
    restored: list[Path] = field(default_factory=list)
    removed_dirs: list[Path] = field(default_factory=list)
    kept_dirs: list[Path] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)


def _when(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat(timespec="microseconds")


def _change(path: Path, op: Operation, *, mtime: bool) -> str | None:
    """How the file at ``path`` differs from the one ``op`` recorded, or None if it does not."""
    st = os.lstat(path)
    if not stat.S_ISREG(st.st_mode):
        return "it is no longer a regular file"
    if op.size is not None and st.st_size != op.size:
        return f"{op.size} bytes then, {st.st_size} now"
    if mtime and op.mtime_ns is not None and st.st_mtime_ns != op.mtime_ns:
        return f"its modification time is {_when(st.st_mtime_ns)}, it was {_when(op.mtime_ns)}"
    if op.sha256 and files.sha256(path) != op.sha256:
        return "same size, different content"
    return None


def _plan_undo(ops: list[Operation]) -> list[_Step]:
    """The steps that undo ``ops``, newest first, checked against the files as they are now.

    Raises:
        UndoRefused: listing every file in the way; nothing has been touched.
    """
    # What each path will hold once the steps before have run: the file now at that location.
    view: dict[str, str | None] = {}

    def where(path: str | None) -> Path | None:
        if path is None:
            return None
        if path in view:
            found = view[path]
            return Path(found) if found is not None else None
        return Path(path) if os.path.lexists(path) else None

    steps: list[_Step] = []
    problems: list[tuple[str, str]] = []
    for op in reversed(ops):
        if op.kind == "mkdir":
            steps.append(_Step(op, "rmdir"))
        elif op.kind == "publish":
            at = where(op.dst)
            if at is None:
                steps.append(_Step(op, "skip"))
                continue
            change = _change(at, op, mtime=True)
            if change:
                problems.append((str(op.dst), f"{op.dst} changed after job {op.job_id} published it "
                                              f"({change}): move it away first, undo leaves it alone then"))
            steps.append(_Step(op, "remove"))
            view[str(op.dst)] = None
        elif op.kind in ("trash", "backup"):
            original, moved = where(op.src), where(op.dst)
            steps.append(_plan_move_back(op, original, moved, problems))
            if steps[-1].action in ("move_back", "drop_copy"):
                view[str(op.dst)] = None
            if steps[-1].action == "move_back":
                view[str(op.src)] = str(moved)
        elif op.kind == "delete":
            at = where(op.src)
            if at is not None and _change(at, op, mtime=False) is None:
                steps.append(_Step(op, "skip"))  # recorded, but the crash came before the unlink
            else:
                steps.append(_Step(op, "lost", f"the original {op.src} was deleted (source.after: delete) "
                                                "and cannot be restored"))
        else:
            problems.append((str(op.dst or op.src), f"operation {op.id} is of an unknown kind "
                                                    f"{op.kind!r}: undo it with the mediatasks that made it"))
    if problems:
        raise UndoRefused("nothing was undone: " + "; ".join(text for _, text in problems),
                          path=problems[0][0], hint="then run undo again")
    return steps


def _plan_move_back(op: Operation, original: Path | None, moved: Path | None,
                    problems: list[tuple[str, str]]) -> _Step:
    """The step that puts a trashed or backed-up file back where it was."""
    what = "the file it replaced" if op.kind == "trash" else "the source"
    if original is not None and _change(original, op, mtime=False) is None:
        # Back already, or never moved (a crash after recording); a second name left by a move cut
        # short is dropped, a different file there is left alone.
        if moved is not None and (os.path.samefile(original, moved) or _change(moved, op, mtime=False) is None):
            return _Step(op, "drop_copy")
        return _Step(op, "skip")
    if moved is None:
        return _Step(op, "lost", f"{what} {op.src} was moved to {op.dst}, which is gone: it cannot be restored")
    if original is not None:
        problems.append((str(op.src), f"{op.src} exists again, so {op.dst} cannot be moved back there: "
                                      f"move {op.src} away first"))
        return _Step(op, "skip")
    change = _change(moved, op, mtime=False)
    if change:
        problems.append((str(op.dst), f"{op.dst}, {what} {op.src} moved there by job {op.job_id}, "
                                      f"has changed ({change}): put it back as it was or move it away"))
    return _Step(op, "move_back")


def _act(step: _Step, done: _Done) -> None:
    """Do one planned step (the files are checked again where a race would lose data).

    Raises:
        UndoRefused: a file changed between the check and the step.
    """
    op = step.op
    src = Path(op.src) if op.src else None
    dst = Path(op.dst) if op.dst else None
    if step.action == "lost":
        done.lost.append(step.note)
    elif step.action == "rmdir" and dst is not None:
        try:
            os.rmdir(dst)
        except FileNotFoundError:
            pass
        except OSError:
            done.kept_dirs.append(dst)
        else:
            done.removed_dirs.append(dst)
            files.fsync_dir(dst.parent)
    elif step.action == "remove" and dst is not None:
        try:
            st = os.lstat(dst)
        except FileNotFoundError:
            return
        if (st.st_size, st.st_mtime_ns) != (op.size, op.mtime_ns) and op.size is not None:
            raise UndoRefused(f"{dst} changed during the undo", path=dst,
                              hint="move it away, then run undo again")
        dst.unlink()
        files.fsync_dir(dst.parent)
        done.removed.append(dst)
    elif step.action == "move_back" and src is not None and dst is not None:
        try:
            _move(dst, src, sha256=op.sha256)
        except FileExistsError:
            raise UndoRefused(f"{src} appeared during the undo, so {dst} cannot be moved back there",
                              path=src, hint=f"move {src} away, then run undo again") from None
        done.restored.append(src)
    elif step.action == "drop_copy" and src is not None and dst is not None and os.path.lexists(src):
        dst.unlink(missing_ok=True)
        files.fsync_dir(dst.parent)
