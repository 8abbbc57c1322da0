"""files: durable file operations shared by publish and the library: copy with fsync, directory
fsync, content hashes, no-clobber links and moves, temp names, disk-full errors."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
from pathlib import Path

from mediatasks.errors import DiskFull, VerificationFailed

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


def temp_beside(path: Path, tag: str) -> Path:
    """A hidden temp name beside ``path``, short whatever its length (names may take 255 bytes)."""
    key = hashlib.sha256(path.name.encode()).hexdigest()[:16]
    return path.with_name(f".mediatasks-{key}.{tag}")


def link_no_clobber(src: Path, dst: Path) -> None:
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


def move(src: Path, dst: Path, *, sha256: str | None = None) -> None:
    """Move ``src`` to ``dst``, never replacing a file at ``dst`` (FileExistsError).

    Across filesystems: copy to a temp name beside ``dst``, fsync, check size (and ``sha256``
    when given), link it in, and only then unlink ``src``.
    """
    try:
        link_no_clobber(src, dst)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        tmp = temp_beside(dst, "moving")
        try:
            digest = copy_synced(src, tmp)
            if os.stat(tmp).st_size != os.stat(src).st_size or (sha256 and digest != sha256):
                raise VerificationFailed(f"{src} changed while it was being copied to {dst}",
                                         path=src, hint="nothing was moved; run it again")
            link_no_clobber(tmp, dst)
        finally:
            tmp.unlink(missing_ok=True)
    with contextlib.suppress(FileNotFoundError):  # gone already when the link was a rename
        os.unlink(src)
    fsync_dir(dst.parent)
    fsync_dir(src.parent)


def raise_disk_full(exc: OSError, path: Path, message: str = "no space left", *,
                    hint: str | None = None) -> None:
    """Raise DiskFull for an ENOSPC (``hint`` defaults to freeing space in ``path``'s directory);
    the caller re-raises anything else as it is."""
    if exc.errno == errno.ENOSPC:
        raise DiskFull(message, path=path, hint=hint or f"free space in {path.parent}") from exc
