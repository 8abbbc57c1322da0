"""files: durable file operations shared by publish and the library: copy with fsync, directory
fsync, content hashes."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from pathlib import Path

_BLOCK = 1024 * 1024


def fsync_dir(path: Path) -> None:
    """Make a rename or link in ``path`` durable (best effort: some file systems refuse)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def copy_synced(src: Path, dst: Path) -> str:
    """Copy bytes and mtime, fsync, return the sha256 of what was written."""
    digest = hashlib.sha256()
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        while block := fin.read(_BLOCK):
            digest.update(block)
            fout.write(block)
        fout.flush()
        shutil.copystat(src, dst)
        os.fsync(fout.fileno())
    return digest.hexdigest()


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()
