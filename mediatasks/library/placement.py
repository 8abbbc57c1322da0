"""library.placement: a file into the library, never over another unasked, each change logged."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Literal, NamedTuple

from pydantic import BaseModel, ConfigDict

from mediatasks import files
from mediatasks.errors import InvalidOptions, OutputExists, SourceNotFound, VerificationFailed
from mediatasks.library.oplog import Operation, OperationLog, _Log

OnExists = Literal["skip", "replace", "rename"]

TRASH_DIR_NAME = ".mediatasks-trash"
_ATTEMPTS = 100  # names tried when files keep appearing at the ones we pick


class Placed(BaseModel):
    """What ``place`` did: the published path, or the existing one when it skipped."""

    model_config = ConfigDict(frozen=True)

    path: Path
    skipped: bool = False
    trashed: Path | None = None  # where the file it replaced now is
    created_dirs: tuple[Path, ...] = ()


def trash_dir_for(root: Path, job_id: str) -> Path:
    """Where ``place`` moves the files a job replaces: inside the library, so a rename suffices."""
    return root / TRASH_DIR_NAME / job_id


def _unique_path(path: Path) -> Path:
    """``path`` if free, else "Name (2).ext", "Name (3).ext", ... within the 255-byte name limit.
    A broken symlink counts as taken. (A stem that ends in "(1999)" is a year, not a counter.)"""
    from mediatasks import naming  # guessit is slow to import; the history imports this package

    return naming.unique_path(path, os.path.lexists)


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


def place(built: Path, target: Path, *, on_exists: OnExists, job_id: str, history: OperationLog,
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
    tmp = files.temp_beside(target, f"{job_id}.placing")
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
                files.link_no_clobber(tmp, candidate)
            except FileExistsError:
                log.withdraw(op)
                continue
            except OSError as exc:
                log.withdraw(op)
                files.raise_disk_full(exc, candidate)
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
            files.raise_disk_full(exc, tmp)
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
            files.move(path, dst, sha256=digest)
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
        files.move(trashed.dst, trashed.src)
        log.withdraw(trashed.op)
