"""publish: the verified output to its final path, atomically, never replacing a file unasked.

Same filesystem: rename. Across filesystems: copy to a temp name beside the target, fsync, then
rename. Without --overwrite the final step is a hard link, which fails if the target appeared
meanwhile, so a file that exists is never replaced.
"""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from mediatasks import files
from mediatasks.errors import InvalidOptions, OutputExists, VerificationFailed
from mediatasks.models import JobResult, JobSpec

if TYPE_CHECKING:
    from mediatasks.library import OperationLog

log = logging.getLogger(__name__)


def temp_path(output: Path, job_id: str) -> Path:
    """The temp name a job's output has in the target directory before its final rename: hidden,
    unique to the job, and short enough whatever the output's name (at most 255 bytes)."""
    head = output.name.encode()[:100].decode(errors="ignore")
    return output.with_name(f".{head}.{job_id}.part")


def check_output(output: Path, *, overwrite: bool, source: Path | None = None) -> None:
    """Refuse an output we must not or cannot write.

    Raises:
        OutputExists, InvalidOptions.
    """
    if source is not None and output.exists() and source.exists() and output.samefile(source):
        raise InvalidOptions("the output is the input file", path=output,
                             hint="choose another output path")
    if source is not None and output.resolve() == source.resolve():
        raise InvalidOptions("the output is the input file", path=output,
                             hint="choose another output path")
    if output.exists() and not overwrite:
        raise OutputExists("already exists", path=output, hint="pass --overwrite to replace it")
    if output.is_dir():
        raise InvalidOptions("is a directory", path=output, hint="give an output file name")
    parent = output.parent
    if not parent.is_dir():
        raise InvalidOptions("the output directory does not exist", path=output,
                             hint=f"create {parent} first")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InvalidOptions("the output directory is not writable", path=output,
                             hint="choose a directory you can write to")


def _marker(built: Path) -> Path:
    return built.with_name(f"{built.name}.publishing")


def _already_published(built: Path, output: Path, tmp: Path) -> bool:
    """Whether an earlier run of this publish (a worker that died before acking) put the output
    in place: its temp file is hard-linked as the output, or the output is the inode it was
    about to rename there."""
    if tmp.exists() and output.exists() and output.samefile(tmp):
        return True
    marker = _marker(built)
    if built.exists() or not marker.exists() or not output.exists():
        return False
    st = output.stat()
    return marker.read_text() == f"{st.st_dev}:{st.st_ino}"


def publish(built: Path, output: Path, *, job_id: str, overwrite: bool) -> Path:
    """Move ``built`` to ``output``. Safe to run again after a crash at any point: a temp file
    left over is reused and an output this job already published is recognised.

    Raises:
        OutputExists: the output exists and ``overwrite`` is false.
        DiskFull: no space at the output (the temp file is removed).
    """
    tmp = temp_path(output, job_id)
    if _already_published(built, output, tmp):
        tmp.unlink(missing_ok=True)
        _marker(built).unlink(missing_ok=True)
        return output
    check_output(output, overwrite=overwrite)
    try:
        if built.exists():
            try:
                os.rename(built, tmp)
                with open(tmp, "rb") as f:
                    os.fsync(f.fileno())
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
                files.copy_synced(built, tmp)
        elif not tmp.exists():
            raise FileNotFoundError(errno.ENOENT, "the verified output is missing", str(built))
        st = tmp.stat()
        _marker(built).write_text(f"{st.st_dev}:{st.st_ino}")
        if overwrite:
            os.replace(tmp, output)
        else:
            try:
                files.link_no_clobber(tmp, output)
            except FileExistsError as exc:
                raise OutputExists("already exists", path=output,
                                   hint="pass --overwrite to replace it") from exc
        files.fsync_dir(output.parent)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        files.raise_disk_full(exc, output, "no space left for the output",
                              hint="free space at the output")
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.unlink(missing_ok=True)
    _marker(built).unlink(missing_ok=True)
    return output


def publish_to_library(spec: JobSpec, built: Path, result: JobResult, *, history: OperationLog,
                       ffprobe: str = "ffprobe") -> JobResult:
    """A policy job's end: the guard, the library (each change recorded for undo), then the
    source as ``source.after`` says. Returns ``result`` with where the output and source are.

    Raises:
        VerificationFailed: the copy in the library is not the verified output.
        OutputExists, DiskFull, InvalidOptions: from the library.
    """
    from mediatasks import library
    from mediatasks.steps.probe import count_packets

    p = spec.placement
    assert p is not None
    size_in, size_out = Path(spec.input).stat().st_size, built.stat().st_size
    if p.max_size_ratio is not None and size_out > size_in * p.max_size_ratio:
        log.warning("%s: the result (%d bytes) is larger than %.2f x the source (%d bytes); the "
                    "source is kept", spec.input, size_out, p.max_size_ratio, size_in)
        return result.model_copy(update={
            "output": None, "outcome": "kept-source",
            "note": f"the source was kept: the result ({size_out} bytes) is "
                    f"{size_out / max(1, size_in):.2f} x the source ({size_in} bytes), over "
                    f"library.max_size_ratio {p.max_size_ratio}"})

    def check_copy(tmp: Path) -> None:
        """The file about to be linked into the library is the one verify passed: same size,
        every frame (a copy across filesystems is read back, not trusted)."""
        if tmp.stat().st_size != size_out:
            raise VerificationFailed(f"the copy in the library holds {tmp.stat().st_size} bytes, "
                                     f"the verified output {size_out}", path=spec.input)
        frames = count_packets(tmp, ffprobe=ffprobe)
        if result.frames_out is not None and frames != result.frames_out:
            raise VerificationFailed(f"the copy in the library holds {frames} frames, the "
                                     f"verified output {result.frames_out}", path=spec.input)

    placed = library.place(built, Path(spec.output), on_exists=p.on_exists, job_id=spec.job_id,
                           history=history, batch_id=spec.batch_id, move=True, verify=check_copy,
                           trash_dir=library.trash_dir_for(Path(p.root), spec.job_id))
    if placed.skipped:
        return result.model_copy(update={"output": str(placed.path), "outcome": "exists"})
    now = library.handle_source(Path(spec.input), after=p.source_after,
                                backup_dir=Path(p.backup_dir) if p.backup_dir else None,
                                job_id=spec.job_id, history=history, batch_id=spec.batch_id)
    return result.model_copy(update={"output": str(placed.path),
                                     "source_now": str(now) if now else None})


def publish_result(spec: JobSpec, built: Path, result: JobResult, *,
                   library_log: OperationLog | None,
                   ffprobe: str = "ffprobe") -> JobResult:
    """The publish step: a plain job's output to its path; a policy job's into its library.

    Raises:
        OutputExists, DiskFull, VerificationFailed, InvalidOptions.
    """
    if spec.placement is None:
        publish(built, Path(spec.output), job_id=spec.job_id, overwrite=spec.overwrite)
        return result
    assert library_log is not None, "a policy job publishes into a library, which needs its log"
    return publish_to_library(spec, built, result, history=library_log, ffprobe=ffprobe)
