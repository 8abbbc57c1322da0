"""library.source: the source kept, backed up or deleted once its output is in the library."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from mediatasks import files
from mediatasks.errors import InvalidOptions, SourceNotFound
from mediatasks.library.oplog import Operation, OperationLog, _Log
from mediatasks.library.placement import _check_choice, _move_aside, _unique_path

After = Literal["keep", "backup", "delete"]


def handle_source(source: Path, *, after: After, backup_dir: Path | None, job_id: str,
                  history: OperationLog, batch_id: str | None = None,
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
        files.raise_disk_full(exc, backup_dir)
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
