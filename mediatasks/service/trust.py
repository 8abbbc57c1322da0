"""What a job message may name: ids that are ids, paths under the configured roots. The workers
check every message with these before doing anything; the service checks a job at submit."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from mediatasks.errors import PathRefused, UntrustedMessage
from mediatasks.models import JobSpec

JOB_ID = re.compile(r"[0-9a-f]{32}")
BATCH_ID = re.compile(r"b[0-9a-f]{15}")


def check_job_id(value: object, *, field: str = "job_id") -> str:
    """Raises UntrustedMessage unless ``value`` is a job id (32 hex digits)."""
    if not isinstance(value, str) or not JOB_ID.fullmatch(value):
        raise UntrustedMessage(f"{field} {str(value)[:80]!r} is not a job id",
                               hint="job ids are 32 hexadecimal digits")
    return value


def check_under_roots(path: str | Path, roots: Sequence[Path], *, field: str) -> Path:
    """The path with symlinks resolved, when it lies under one of ``roots``.

    Raises:
        UntrustedMessage: naming the field and the rule.
    """
    text = str(path)
    if "\0" in text:
        raise UntrustedMessage(f"{field} holds a NUL byte", hint="name a plain file")
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]+:", text) and not text.startswith("file:"):
        raise UntrustedMessage(f"{field} {text[:120]!r} is a URL, not a file",
                               hint="name a file under MEDIATASKS_ROOTS")
    resolved = Path(text.removeprefix("file:")).resolve()
    for root in roots:
        if resolved.is_relative_to(root.resolve()):
            return resolved
    allowed = ":".join(str(r) for r in roots) or "(none configured)"
    raise UntrustedMessage(f"{field} {text[:200]} is outside MEDIATASKS_ROOTS ({allowed})",
                           hint="put the file under a root, or add its folder to "
                                "MEDIATASKS_ROOTS on the workers")


# Files whose content names other files or URLs for ffmpeg to read, refused by name before any
# probe (the probe refuses them by content too, whatever their name: steps/probe.INDIRECT).
PLAYLISTS = (".m3u8", ".m3u", ".ffconcat", ".concat", ".mpd", ".sdp", ".pls")


def check_client_path(text: str, roots: Sequence[Path], *, field: str) -> Path:
    """A path a client sent (the HTTP API), with symlinks resolved, when it breaks no rule: an
    absolute path, no '..', no protocol or playlist ffmpeg would follow, under one of ``roots``.

    Raises:
        PathRefused: naming the field and the rule.
    """
    hint = "name a file under MEDIATASKS_ROOTS by its absolute path"
    if "\0" in text or not text.strip():
        raise PathRefused(f"{field} is empty or holds a NUL byte", field=field, rule="plain-path",
                          hint=hint)
    if ":" in text.split("/", 1)[0]:  # a protocol, with or without options (subfile,,start,…:)
        scheme = text.split(":", 1)[0][:20]
        raise PathRefused(f"{field} {text[:120]!r} names the protocol '{scheme}:'; only plain "
                          "files are read", field=field, rule="no-protocol", hint=hint)
    if ".." in Path(text).parts:
        raise PathRefused(f"{field} {text[:200]} contains '..'", field=field, rule="no-dotdot",
                          hint=hint)
    if not text.startswith("/"):
        raise PathRefused(f"{field} {text[:200]} is not an absolute path", field=field,
                          rule="absolute", hint=hint)
    if text.lower().endswith(PLAYLISTS):
        raise PathRefused(f"{field} {text[:200]} is a playlist or list of other files",
                          field=field, rule="no-playlist", hint="give the video file itself")
    resolved = Path(text).resolve()
    for root in roots:
        if resolved.is_relative_to(root.resolve()):
            if resolved.name.lower().endswith(PLAYLISTS):
                raise PathRefused(f"{field} {text[:200]} is a link to a playlist", field=field,
                                  rule="no-playlist", hint="give the video file itself")
            return resolved
    allowed = ":".join(str(r) for r in roots) or "(none configured)"
    raise PathRefused(f"{field} {text[:200]} is outside MEDIATASKS_ROOTS ({allowed}) once "
                      "symlinks are resolved", field=field, rule="under-roots",
                      hint="put the file under a root, or add its folder to MEDIATASKS_ROOTS")


def check_spec(spec: JobSpec, roots: Sequence[Path]) -> None:
    """Every path a job reads or writes lies under ``roots``; its ids are ids.

    Raises:
        UntrustedMessage: the first thing that is not.
    """
    check_job_id(spec.job_id)
    if spec.batch_id is not None and not BATCH_ID.fullmatch(spec.batch_id):
        raise UntrustedMessage(f"batch_id {spec.batch_id[:80]!r} is not a batch id")
    check_under_roots(spec.input, roots, field="input")
    check_under_roots(spec.output, roots, field="output")
    if spec.placement is not None:
        check_under_roots(spec.placement.root, roots, field="placement.root")
        if spec.placement.backup_dir:
            check_under_roots(spec.placement.backup_dir, roots, field="placement.backup_dir")


def job_folder(work_dir: Path, job_id: object) -> Path:
    """The work folder of a job: the only kind of folder a cleanup may remove.

    Raises:
        UntrustedMessage: ``job_id`` is no job id.
    """
    folder = work_dir / check_job_id(job_id)
    if folder.resolve().parent != work_dir.resolve():
        raise UntrustedMessage(f"job folder {folder} is not inside {work_dir}")
    return folder
