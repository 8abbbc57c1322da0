"""run, submit or plan several files under a policy: one batch id, one job per file."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from mediatasks.cli.common import err, on_error_choice, out, shared_service
from mediatasks.service import batches
from mediatasks.settings import get_settings


def batch_command(mode: str, sources: list[Path], policy_path: Path, *, output_dir: Path | None,
                  on_error: str, workers: int | None, as_json: bool,
                  chunk_seconds: float | None = None, hold: bool = False) -> None:
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
    if failed_early and stop == "stop":
        results = batches.initial_results(prepared, stopped=True)
    elif mode == "submit":
        results = batches.submit(prepared, shared_service())
    else:
        from mediatasks.cli.local import run_local_batch

        ended = run_local_batch(prepared, batch_id, workers=workers, stop=stop == "stop",
                                as_json=as_json)
        results = batches.collect(prepared, ended)
    summary = batches.overall(batch_id, results)
    if as_json:
        print(summary.model_dump_json())
    else:
        for r in results:
            out.print(batches.describe_file(r))
        out.print(f"batch {batch_id}: {summary.status} ({len(results)} file(s))")
        if mode == "submit":
            err.print(f"follow it with 'mediatasks status {batch_id} --follow'")
    if summary.status in {"failed", "cancelled"}:
        raise typer.Exit(1)
