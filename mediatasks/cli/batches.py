"""run, submit or plan several files under a policy: one batch id, one job per file."""

from __future__ import annotations

import contextlib
import json
import os
import signal
from pathlib import Path
from typing import Any

import typer

from mediatasks.cli.common import err, local_service, on_error_choice, on_sigterm, out, shared_service
from mediatasks.errors import JobCancelled
from mediatasks.models import JobResult
from mediatasks.service import batches
from mediatasks.settings import get_settings


def batch_command(mode: str, sources: list[Path], policy_path: Path, *, output_dir: Path | None,
                  on_error: str, workers: int | None, as_json: bool,
                  chunk_seconds: float | None = None, hold: bool = False,
                  webhook_url: str | None = None) -> None:
    from mediatasks.policy import load_policy

    settings = get_settings()
    stop = on_error_choice(on_error)
    policy = load_policy(policy_path)
    batch_id = batches.new_batch_id()
    prepared = batches.prepare(sources, policy, batch_id=batch_id,
                               output_dir=output_dir.resolve() if output_dir else None,
                               settings=settings, on_error=stop, chunk_seconds=chunk_seconds,
                               hold=hold)
    failed_early = any(p.error for p in prepared)
    if mode == "plan":
        results = batches.initial_results(prepared, stopped=False)
        if as_json:
            print(json.dumps({"job_id": batch_id, "files": [
                {**json.loads(r.model_dump_json()), "status": "planned" if r.status == "queued"
                 else r.status} for r in results]}))
        else:
            for r in results:
                out.print(batches.describe_file(r).replace(" [queued]", ""))
                for why in r.reasons if r.status != "skipped" else ():
                    out.print(f"           because {why}")
        if failed_early:
            raise typer.Exit(1)
        return
    ended: dict[str, JobResult] = {}
    if failed_early and stop == "stop":
        results = batches.initial_results(prepared, stopped=True)
    elif mode == "submit":
        if webhook_url is not None:
            from mediatasks.cli.webhooks import subscribe

            subscribe([batch_id] + [p.plan.spec.job_id for p in prepared if p.plan is not None],
                      webhook_url)
        results = batches.submit(prepared, shared_service())
    else:
        ended = run_local_batch(prepared, batch_id, workers=workers, stop=stop == "stop",
                                as_json=as_json)
        results = batches.collect(prepared, ended)
    summary = batches.overall(batch_id, results)
    if as_json:
        print(summary.model_dump_json())
    else:
        for r in results:
            out.print(batches.describe_file(r))
        out.print(f"batch {batch_id}: {summary.status} ({len(results)} file(s))"
                  + (f"; {_totals(ended)}" if mode == "run" and ended else ""))
        if mode == "submit":
            err.print(f"follow it with 'mediatasks status {batch_id} --follow'")
    if summary.status in {"failed", "cancelled"}:
        raise typer.Exit(1)


def _totals(ended: dict[str, JobResult]) -> str:
    """What the whole batch did: frames, bytes in and out, what was saved."""
    from mediatasks.service.summary import human_size

    done = [r for r in ended.values() if r.status == "succeeded"]
    frames = sum(r.frames_out or 0 for r in done)
    size_in = sum(r.size_in or 0 for r in done if r.size_out is not None)
    size_out = sum(r.size_out or 0 for r in done)
    saved = f" ({100 * (1 - size_out / size_in):.1f}% saved)" if size_in else ""
    return (f"{len(done)} encoded, {frames} frames, {human_size(size_in)} -> "
            f"{human_size(size_out)}{saved}")


def _roots(specs: list[Any]) -> tuple[Path, ...]:
    """The folders a batch's jobs read and write: its workers may touch nothing else."""
    folders: list[Path] = []
    for spec in specs:
        folders += [Path(spec.input).resolve().parent, Path(spec.output).resolve().parent]
        if spec.placement is not None:
            folders.append(Path(spec.placement.root))
            if spec.placement.backup_dir:
                folders.append(Path(spec.placement.backup_dir))
    return tuple(folders)


def run_local_batch(prepared: list[Any], batch_id: str, *, workers: int | None,
                    stop: bool, as_json: bool) -> dict[str, JobResult]:
    """The jobs of a prepared batch on a private cluster, until every one has ended."""
    from mediatasks.cli.follow import BatchBars
    from mediatasks.cluster.local import LocalCluster, default_workers
    from mediatasks.profiles import is_hardware
    from mediatasks.service.runs import run_batch

    settings = get_settings()
    plans = [p.plan for p in prepared if p.plan is not None]
    specs = [jp.spec.model_copy(update={"local": True}) for jp in plans]
    work_dir = settings.work_dir if "MEDIATASKS_WORK_DIR" in os.environ else None
    hardware = any(is_hardware(s.options.video_codec) for s in specs)
    cluster = LocalCluster(settings, workers=workers or default_workers(), work_dir=work_dir,
                           hardware=hardware, roots=_roots(specs))
    previous = signal.signal(signal.SIGTERM, on_sigterm)
    service = None
    bars = BatchBars(err if err.is_terminal and not as_json else None,
                     {s.job_id: Path(s.input).name for s in specs}, len(prepared))
    try:
        with cluster:
            service = local_service(cluster.broker_url)
            return run_batch(service, batch_id, specs, watch=cluster.check_alive,
                             on_event=bars.event, stop_on_failure=stop)
    except KeyboardInterrupt:
        if service is not None:
            for spec in specs:
                with contextlib.suppress(Exception):
                    service.cancel_job(spec.job_id, reason="interrupted")
        raise JobCancelled("interrupted: workers stopped, temp files removed") from None
    finally:
        bars.close()
        signal.signal(signal.SIGTERM, previous)
