"""library.undo: what a job or batch did to the library, reversed, newest change first."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from mediatasks import files
from mediatasks.errors import InvalidOptions, NothingToUndo, UndoRefused
from mediatasks.library.oplog import Operation, OperationLog


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


def undo(job_or_batch_id: str, history: OperationLog) -> UndoReport:
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
            files.move(dst, src, sha256=op.sha256)
        except FileExistsError:
            raise UndoRefused(f"{src} appeared during the undo, so {dst} cannot be moved back there",
                              path=src, hint=f"move {src} away, then run undo again") from None
        done.restored.append(src)
    elif step.action == "drop_copy" and src is not None and dst is not None and os.path.lexists(src):
        dst.unlink(missing_ok=True)
        files.fsync_dir(dst.parent)
