"""library.oplog: the operation log, written ahead of the changes it describes."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel, ConfigDict

from mediatasks import files
from mediatasks.errors import InvalidOptions


class Operation(BaseModel):
    """One change a job made to files (see mediatasks.library for the kinds), in the order made."""

    model_config = ConfigDict(frozen=True)

    id: int
    job_id: str
    batch_id: str | None
    seq: int
    kind: str
    src: str | None
    dst: str | None
    size: int | None
    mtime_ns: int | None
    sha256: str | None
    created_at: datetime
    undone_at: datetime | None


class OperationLog(Protocol):
    """Where operations are recorded: ``mediatasks.history.History`` is one."""

    @property
    def url(self) -> str: ...

    def record_operation(self, job_id: str, kind: str, *, batch_id: str | None = None,
                         src: str | Path | None = None, dst: str | Path | None = None,
                         size: int | None = None, mtime_ns: int | None = None,
                         sha256: str | None = None) -> int: ...

    def mark_undone(self, op_id: int) -> None: ...

    def operations(self, job_or_batch_id: str) -> list[Operation]: ...

    # undo only asks whether an id with no operations names a job or a batch
    def get(self, job_id: str) -> object | None: ...

    def jobs_in_batch(self, batch_id: str) -> Sequence[object]: ...


@dataclass(frozen=True)
class _Log:
    """The operations of one job, written ahead of the changes they describe."""

    history: OperationLog
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
                files.raise_disk_full(exc, d)
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
