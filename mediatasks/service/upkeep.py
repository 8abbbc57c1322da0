"""Nothing hangs and nothing grows forever: jobs whose work was lost are found and sent again,
and the work folders, library trash and progress events of old jobs expire, with old webhook
deliveries and subscriptions and the API's old Idempotency-Keys."""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from mediatasks.errors import MediatasksError
from mediatasks.library import TRASH_DIR_NAME
from mediatasks.service.jobs import JobService
from mediatasks.service.keys import Keys
from mediatasks.service.lifecycle import SETTLED, TERMINAL, WORKING
from mediatasks.service.webhooks import Webhooks

log = logging.getLogger(__name__)



def find_stalled(service: JobService, *, quiet_for: float, retries: int,
                 job_ids: list[str] | None = None) -> list[str]:
    """Mark as stalled every job that works on the workers, whose last event is older than
    ``quiet_for`` seconds and of which no task is alive (running, reserved, waiting for a retry,
    or queued): its messages were lost. A job stalled fewer than ``retries`` times is sent again
    at once (its verified chunks are reused). Returns the ids of the jobs found stalled.

    Nothing is marked while the dispatcher cannot tell which jobs are alive.
    """
    candidates = []
    now = datetime.now(UTC)
    records = ([r for r in (service.find(j) for j in job_ids) if r is not None] if job_ids
               else service.store.list_jobs(statuses=WORKING, limit=100000))
    for record in records:
        if record.status not in WORKING:
            continue
        last = service.store.last_event_at(record.job_id)
        if last is not None and (now - last).total_seconds() >= quiet_for:
            candidates.append(record)
    if not candidates or service.dispatcher is None:
        return []
    alive = service.dispatcher.live_jobs()
    if alive is None:
        return []
    stalled = []
    for record in candidates:
        if record.job_id in alive:
            continue
        message = (f"no task of this job is alive and nothing happened for {quiet_for:.0f}s "
                   f"(the broker may have lost its messages)")
        if service.mark_stalled(record.job_id, record.status, message) is None:
            continue  # it moved meanwhile
        stalled.append(record.job_id)
        earlier = sum(1 for e in service.store.events(record.job_id) if e.type == "job.stalled")
        if earlier <= retries:
            try:
                service.retry(record.job_id, reason="stalled")
            except MediatasksError as exc:
                log.warning("job %s stalled and could not be sent again: %s", record.job_id, exc)
    return stalled


@dataclass
class Swept:
    """What ``collect_garbage`` removed (or would remove, in a dry run)."""

    work_dirs: list[Path] = field(default_factory=list)
    trash_dirs: list[Path] = field(default_factory=list)
    events: int = 0
    deliveries: int = 0
    attempts: int = 0
    subscriptions: int = 0
    idempotency_keys: int = 0


def collect_garbage(service: JobService, *, work_dir: Path, older_than: float,
                    is_abandoned: object = None, dry_run: bool = False,
                    webhooks: Webhooks | None = None, keys: Keys | None = None,
                    idempotency_hours: float = 24.0) -> Swept:
    """Remove what nobody will use again, once it is ``older_than`` seconds old: the work
    folders of jobs that ended (a failed job's verified chunks wait that long for a retry) or
    that the history does not know, the library trash of replaced files (undo cannot bring
    those back afterwards), the progress events of jobs that ended, and (given ``webhooks``)
    webhook deliveries delivered or failed with their attempts and the subscriptions of jobs
    and batches that ended; (given ``keys``) Idempotency-Keys ``idempotency_hours`` old. A dry
    run lists the folders only: rows are counted as they are removed.
    """
    swept = Swept()
    cutoff = time.time() - older_than
    if work_dir.is_dir():
        for d in sorted(p for p in work_dir.iterdir() if p.is_dir()):
            record = service.find(d.name)
            if record is not None and record.status not in SETTLED:
                continue
            if record is not None and record.status == "stalled":
                continue  # a retry reuses its chunks
            if _newest_mtime(d) > cutoff:
                continue
            swept.work_dirs.append(d)
    roots = set()
    for record in service.store.list_jobs(statuses=TERMINAL, limit=100000):
        placement = record.settings.get("placement") if record.settings else None
        if isinstance(placement, dict) and placement.get("root"):
            roots.add(Path(placement["root"]))
    for root in sorted(roots):
        trash = root / TRASH_DIR_NAME
        if trash.is_dir():
            swept.trash_dirs.extend(d for d in sorted(trash.iterdir())
                                    if d.is_dir() and _newest_mtime(d) <= cutoff)
    if not dry_run:
        for d in swept.work_dirs + swept.trash_dirs:
            shutil.rmtree(d, ignore_errors=True)
        swept.events = service.store.prune_events(
            before=datetime.now(UTC) - timedelta(seconds=older_than), types=("chunk.progress",))
        if webhooks is not None:
            swept.deliveries, swept.attempts, swept.subscriptions = webhooks.expire(older_than)
        if keys is not None:
            swept.idempotency_keys = keys.expire(hours=idempotency_hours)
    return swept


def _newest_mtime(directory: Path) -> float:
    newest = directory.stat().st_mtime
    for p in directory.rglob("*"):
        try:
            newest = max(newest, p.lstat().st_mtime)
        except OSError:
            continue
    return newest
