"""A source's fingerprint: size, mtime, inode and a hash of sampled blocks, taken when the job
probes it and checked before every chunk and before publishing, so a job never joins pieces of
two different files."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from mediatasks.errors import SourceChanged
from mediatasks.models import ProbeResult

_BLOCK = 64 * 1024
_SAMPLES = 16
FILE_NAME = "source.json"


class Fingerprint(BaseModel):
    """What identifies the file a job started from."""

    model_config = ConfigDict(frozen=True)

    size: int
    mtime_ns: int
    inode: int
    device: int
    sampled_sha256: str


class KnownSource(BaseModel):
    """A source's probe result with the fingerprint of the file it describes: what `mediatasks
    run` hands the analyse step, which uses it only while the file still has that fingerprint."""

    model_config = ConfigDict(frozen=True)

    probe: ProbeResult
    fingerprint: Fingerprint


def take(path: str | Path) -> Fingerprint:
    """Read the source's size, times and inode, and hash 16 blocks of 64 KiB spread over it (the
    first and the last among them): a few milliseconds for any size."""
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        digest = hashlib.sha256()
        span = max(0, st.st_size - _BLOCK)
        for i in range(_SAMPLES):
            f.seek(span * i // (_SAMPLES - 1))
            digest.update(f.read(_BLOCK))
    return Fingerprint(size=st.st_size, mtime_ns=st.st_mtime_ns, inode=st.st_ino,
                       device=st.st_dev, sampled_sha256=digest.hexdigest())


def save(fingerprint: Fingerprint, job_dir: Path) -> None:
    job_dir.mkdir(parents=True, exist_ok=True)
    tmp = job_dir / f".{FILE_NAME}.{os.getpid()}"
    tmp.write_text(fingerprint.model_dump_json())
    os.replace(tmp, job_dir / FILE_NAME)


def check(path: str | Path, job_dir: Path) -> None:
    """Raise SourceChanged when the source is not the file the job probed (or is gone). A job
    directory without a fingerprint (made by an older version) is not checked."""
    try:
        was = Fingerprint.model_validate(json.loads((job_dir / FILE_NAME).read_text()))
    except FileNotFoundError:
        return
    try:
        now = take(path)
    except FileNotFoundError:
        raise SourceChanged("the source was deleted while the job ran", path=path,
                            hint="put it back and run 'mediatasks retry', or submit it again"
                            ) from None
    if now != was:
        what = []
        if now.size != was.size:
            what.append(f"size {was.size} -> {now.size} bytes")
        if (now.inode, now.device) != (was.inode, was.device):
            what.append("replaced by another file")
        if now.mtime_ns != was.mtime_ns:
            what.append("modified")
        if not what:
            what.append("its content differs")
        raise SourceChanged(f"the source changed while the job ran ({', '.join(what)})",
                            path=path, hint="wait until the file is complete, then "
                                            "'mediatasks retry' the job")
