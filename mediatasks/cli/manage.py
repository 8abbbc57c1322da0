"""Jobs on the shared cluster: status, events, cancel, retry, approve, reject, undo, the history,
and `worker`."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from mediatasks.cli.common import JobArg, JsonOpt, err, history_service, out, shared_service
from mediatasks.cli.follow import Follower, print_events
from mediatasks.service import JobService
from mediatasks.service.lifecycle import LABELS, batch_status
from mediatasks.service.records import JobRecord
from mediatasks.settings import get_settings

FollowOpt = Annotated[bool, typer.Option("--follow", help="Go on until it has ended.")]


def _line(r: JobRecord) -> str:
    text = f"{r.job_id}: {LABELS.get(r.status, r.status)}"
    if r.status == "awaiting_approval":
        text += f" (run 'mediatasks approve {r.job_id}' or 'mediatasks reject {r.job_id}')"
    if r.error:
        text += f" ({r.error})"
    if r.note:
        text += f" ({r.note})"
    if r.chunks_reused:
        text += f" ({r.chunks_reused} of {r.chunks} chunks reused from the earlier attempt)"
    return text


def _current_attempt_start(service: JobService, job_id: str) -> int:
    """The seq just before the job's latest attempt was queued: a follower starts there, so an
    earlier attempt's progress never shows."""
    events = service.events(job_id)
    starts = [i for i, e in enumerate(events) if e.type == "job.queued"]
    return events[starts[-1] - 1].seq if starts and starts[-1] > 0 else 0


def status(job_id: JobArg, follow: FollowOpt = False, as_json: JsonOpt = False) -> None:
    """A job's (or batch's) status; with --follow, its progress until it ends (exit 1 unless it
    succeeded)."""
    service = shared_service() if follow else history_service()
    if service.is_batch(job_id):
        _batch_status(service, job_id, follow=follow, as_json=as_json)
        return
    record = service.get(job_id)
    if follow:
        from mediatasks.service.upkeep import find_stalled

        settings = get_settings()
        with Follower(err, enabled=not as_json) as follower:
            for event in service.follow(job_id, after=_current_attempt_start(service, job_id)):
                if event is not None:
                    follower.event(event)
                else:  # a quiet moment: is anything still working on it?
                    find_stalled(service, quiet_for=settings.stall_after,
                                 retries=settings.stall_retries, job_ids=[job_id])
        record = service.get(job_id)
    if as_json:
        print(record.model_dump_json(exclude={"tasks"}))
    else:
        out.print(_line(record), markup=False, highlight=False)
    if follow and record.status != "succeeded":
        raise typer.Exit(1)


def _batch_status(service: JobService, batch_id: str, *, follow: bool, as_json: bool) -> None:
    if follow:
        for _ in service.follow(batch_id, after=0):
            pass
    records = service.batch(batch_id)
    overall = batch_status(r.status for r in records)
    if as_json:
        print(json.dumps({"job_id": batch_id, "status": overall, "jobs": [
            json.loads(r.model_dump_json(exclude={"tasks"})) for r in records]}))
    else:
        for r in records:
            out.print(f"{r.job_id}  {LABELS.get(r.status, r.status):<17}  {r.input}"
                      + (f" ({r.error})" if r.error else ""), markup=False, highlight=False)
        out.print(f"batch {batch_id}: {overall} ({len(records)} job(s))")
    if follow and overall != "succeeded":
        raise typer.Exit(1)


def events(job_id: JobArg, follow: FollowOpt = False, as_json: JsonOpt = False) -> None:
    """A job's (or batch's) events: every change of state, every chunk finished, progress.
    --json prints one JSON object a line."""
    if not follow:
        print_events(history_service().events(job_id), out, as_json=as_json)
        return
    for event in shared_service().follow(job_id):
        if event is not None:
            print_events([event], out, as_json=as_json)


def cancel(job_id: JobArg, as_json: JsonOpt = False) -> None:
    """Stop a job (or every unfinished job of a batch): queued tasks are dropped, running ffmpeg
    killed, its temp files removed."""
    service = shared_service()
    batch = service.is_batch(job_id)
    done = service.cancel(job_id)
    if as_json:
        print(json.dumps({"job_id": job_id, "status": "cancelled",
                          **({"cancelled": done} if batch else {})}))
    elif batch:
        out.print(f"batch {job_id}: {len(done)} job(s) cancelled")
    else:
        out.print(f"{job_id}: cancelled (running encodes stop within a few seconds)")


def _can_run(spec: Any) -> None:
    from mediatasks.steps import probe, publish

    src = probe.check_source(spec.input)
    if spec.placement is None:  # a library placement decides itself (on_exists)
        publish.check_output(Path(spec.output), overwrite=spec.overwrite, source=src)


def retry(job_id: Annotated[str, typer.Argument(help="The job id.")],
          as_json: JsonOpt = False) -> None:
    """Run a failed or cancelled job again, reusing every chunk that was already verified."""
    spec = shared_service().retry(job_id, check=_can_run)
    if as_json:
        print(json.dumps({"job_id": job_id, "status": "queued"}))
    else:
        out.print(f"{job_id}: queued again (attempt {spec.attempt + 1})")


def approve(job_id: Annotated[str, typer.Argument(help="The job id.")],
            as_json: JsonOpt = False) -> None:
    """Let a job that awaits approval go on: it is encoded and published (same job id)."""
    record = shared_service().approve(job_id)
    if as_json:
        print(json.dumps({"job_id": job_id, "status": record.status}))
    elif record.settings.get("local"):
        out.print(f"{job_id}: approved; the 'mediatasks run' that holds it starts the encode")
    else:
        out.print(f"{job_id}: approved; encoding starts now")


def reject(job_id: Annotated[str, typer.Argument(help="The job id.")],
           as_json: JsonOpt = False) -> None:
    """End a job that awaits approval: nothing is encoded and no file is touched."""
    record = shared_service().reject(job_id)
    if as_json:
        print(json.dumps({"job_id": job_id, "status": record.status}))
    else:
        out.print(f"{job_id}: rejected; no file was touched")


def undo(job_id: Annotated[str, typer.Argument(help="A batch id or a job id.")],
         as_json: JsonOpt = False) -> None:
    """Put originals back and remove what a policy job or batch published (exit 1 if an
    original was deleted and cannot come back)."""
    report = history_service().undo(job_id)
    if as_json:
        print(json.dumps({"job_id": job_id, "status": "undone" if report.complete else "partial",
                          **json.loads(report.model_dump_json())}))
    else:
        for p in report.removed:
            out.print(f"removed   {p}")
        for p in report.restored:
            out.print(f"restored  {p}")
        for p in report.removed_dirs:
            out.print(f"removed   {p}/")
        for line in report.lost:
            err.print(f"mediatasks: {line}", markup=False, highlight=False)
        out.print(f"{job_id}: {report.undone} change(s) undone")
    if not report.complete:
        raise typer.Exit(1)


def jobs_list(
    status_filter: Annotated[str | None, typer.Option(
        "--status", help="A state (queued, encoding, succeeded, failed, …), or running or "
                         "active.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1)] = 50,
    as_json: JsonOpt = False,
) -> None:
    """The latest jobs, newest first."""
    records = history_service().list_jobs(status=status_filter, limit=limit)
    if as_json:
        print(json.dumps([json.loads(r.model_dump_json(exclude={"tasks"})) for r in records]))
        return
    for r in records:
        out.print(f"{r.job_id}  {r.status:<17}  {r.created_at:%Y-%m-%d %H:%M}  {r.input}",
                  markup=False, highlight=False)


def jobs_show(job_id: Annotated[str, typer.Argument(help="The job id.")],
              logs: Annotated[bool, typer.Option(
                  "--logs", help="Also each task's last ffmpeg/ffprobe command and the end of "
                                 "its stderr.")] = False,
              as_json: JsonOpt = False) -> None:
    """One job with every task: name, queue, worker, state, times, retries, error (with --logs,
    the command each task ran and its stderr tail)."""
    record = history_service().get(job_id)
    if as_json:
        print(record.model_dump_json())
        return
    out.print(f"{record.job_id}: {record.status}  {record.input} -> {record.output}",
              markup=False, highlight=False)
    if record.error:
        out.print(f"  error: {record.error}", markup=False, highlight=False)
    if record.note:
        out.print(f"  note: {record.note}", markup=False, highlight=False)
    for t in record.tasks:
        took = (f"{(t.finished_at - t.started_at).total_seconds():.1f}s"
                if t.started_at and t.finished_at else "-")
        out.print(f"  {t.name.removeprefix('mediatasks.'):<13} {t.queue or '-':<4} "
                  f"{t.state:<8} {took:>7}  retries {t.retries}  {t.worker or '-'}"
                  + (f"  {t.error}" if t.error else ""), markup=False, highlight=False)
        if logs:
            _print_log(t.argv, t.log_tail)


def _print_log(argv: str | None, tail: str | None) -> None:
    if argv is None:
        out.print("      (no command recorded)", markup=False, highlight=False)
        return
    out.print(f"      $ {argv}", markup=False, highlight=False)
    for line in (tail or "").splitlines():
        out.print(f"      | {line}", markup=False, highlight=False)


def gc(
    older_than_days: Annotated[float | None, typer.Option(
        "--older-than-days", min=0, help="Age at which things expire (default: "
                                          "MEDIATASKS_GC_AFTER_DAYS).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would go; remove "
                                                            "nothing.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Send stalled jobs again, and remove what has expired: work folders of ended jobs, the
    library trash, old progress events, webhook deliveries and subscriptions, the API's
    Idempotency-Keys. Workers also do this every MEDIATASKS_UPKEEP_INTERVAL seconds."""
    from mediatasks.cluster.app import app
    from mediatasks.cluster.services import open_history, webhooks_for
    from mediatasks.history.keys import SqlKeyStore
    from mediatasks.service.keys import Keys
    from mediatasks.service.upkeep import collect_garbage, find_stalled

    settings = get_settings()
    service = shared_service()
    stalled = [] if dry_run else find_stalled(service, quiet_for=settings.stall_after,
                                              retries=settings.stall_retries)
    days = settings.gc_after_days if older_than_days is None else older_than_days
    swept = collect_garbage(service, work_dir=settings.work_dir, older_than=days * 86400,
                            dry_run=dry_run, webhooks=webhooks_for(app, settings.database_url),
                            keys=Keys(SqlKeyStore(open_history(settings.database_url).engine)),
                            idempotency_hours=settings.api_idempotency_hours)
    if as_json:
        print(json.dumps({"stalled": stalled, "work_dirs": [str(p) for p in swept.work_dirs],
                          "trash_dirs": [str(p) for p in swept.trash_dirs],
                          "events": swept.events, "webhook_deliveries": swept.deliveries,
                          "webhook_attempts": swept.attempts,
                          "webhook_subscriptions": swept.subscriptions,
                          "idempotency_keys": swept.idempotency_keys, "dry_run": dry_run}))
        return
    verb = "would remove" if dry_run else "removed"
    for job_id in stalled:
        out.print(f"stalled   {job_id}", markup=False)
    for p in swept.work_dirs + swept.trash_dirs:
        out.print(f"{verb:<9} {p}/", markup=False, highlight=False)
    out.print(f"{len(stalled)} stalled job(s); {verb} {len(swept.work_dirs)} work folder(s), "
              f"{len(swept.trash_dirs)} trash folder(s), {swept.events} progress event(s), "
              f"{swept.deliveries} webhook delivery(ies) ({swept.attempts} attempt(s)), "
              f"{swept.subscriptions} webhook subscription(s), {swept.idempotency_keys} "
              "Idempotency-Key(s)", markup=False, highlight=False)


def worker(
    ctx: typer.Context,
    queues: Annotated[str, typer.Option("-Q", "--queues",
                                        help="cpu, gpu, io (comma-separated)")] = "cpu,gpu,io",
    concurrency: Annotated[int | None, typer.Option(
        "-c", "--concurrency", min=1,
        help="Processes (default: 2 on a gpu-only worker, to fit consumer NVENC session "
             "limits; else the CPU count).")] = None,
    gpu: Annotated[int | None, typer.Option("--gpu", min=0, help="Pin to this GPU index.")] = None,
) -> None:
    """Start a celery worker with mediatasks' defaults; other options go to celery as they
    are."""
    names = [q.strip() for q in queues.split(",") if q.strip()]
    if concurrency is None:
        concurrency = 2 if names == ["gpu"] else (os.cpu_count() or 2)
    env = dict(os.environ)
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(gpu)  # NVENC/CUDA see only this card
        env.setdefault("MEDIATASKS_VAAPI_DEVICE", f"/dev/dri/renderD{128 + gpu}")
    argv = [sys.executable, "-m", "celery", "-A", "mediatasks", "worker", "-Q", ",".join(names),
            "-c", str(concurrency), "-E", *ctx.args]
    from mediatasks import runner

    runner.exec_replace(argv, env)


