"""/v1/batches, /v1/probe, /v1/encoders, /healthz, /readyz, /metrics."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response
from pydantic import ValidationError
from sqlalchemy import text

from mediatasks.api.auth import Context, ReadKey, SubmitKey, context
from mediatasks.api.jobs import at, subscribe
from mediatasks.api.metrics import render_metrics
from mediatasks.api.schemas import BatchIn, ProbeIn, job_json
from mediatasks.errors import BrokerUnavailable, InvalidOptions, InvalidPolicy
from mediatasks.service import batches, trust
from mediatasks.service.reads import JobNotFound
from mediatasks.service.records import ApiKey, JobRecord

log = logging.getLogger("mediatasks.api")
router = APIRouter()


@router.post("/v1/batches", status_code=202, tags=["batches"],
             summary="Apply a policy to files and folders: one job per file that needs one")
def submit_batch(body: BatchIn, request: Request, response: Response, key: SubmitKey,
                 idempotency_key: Annotated[str | None, Header(max_length=255)] = None
                 ) -> dict[str, Any]:
    from mediatasks.policy import Policy

    ctx = context(request)
    roots = ctx.settings.root_paths
    try:
        policy = Policy.model_validate(body.policy)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        error = InvalidPolicy(f"policy.{where}: {first['msg']}", hint="see docs/policies.md")
        error.field = f"policy.{where}" if where else "policy"
        raise error from None
    inputs = [trust.check_client_path(p, roots, field=f"inputs.{i}")
              for i, p in enumerate(body.inputs)]
    output_dir = (trust.check_client_path(body.output_dir, roots, field="output_dir")
                  if body.output_dir else None)
    if policy.library is not None:
        trust.check_client_path(str(policy.library.root), roots, field="policy.library.root")
    backup = policy.source.backup_dir
    if backup is not None:
        trust.check_client_path(str(backup), roots, field="policy.source.backup_dir")
    batch_id = batches.new_batch_id()
    if idempotency_key is not None:
        earlier = ctx.keys.claim(key, idempotency_key, body.model_dump(mode="json"), batch_id,
                                 hours=ctx.settings.api_idempotency_hours)
        if earlier is not None:
            response.headers["Idempotent-Replayed"] = "true"
            return _await_answer(ctx, key, idempotency_key)
    try:
        with at("inputs"):
            prepared = batches.prepare(inputs, policy, batch_id=batch_id, output_dir=output_dir,
                                       settings=ctx.settings, on_error=body.on_error,
                                       chunk_seconds=body.chunk_seconds, hold=body.hold)
        if any(p.error for p in prepared) and body.on_error == "stop":
            results = batches.initial_results(prepared, stopped=True)
        else:
            for sub_key in [batch_id] + [p.plan.spec.job_id for p in prepared
                                         if p.plan is not None]:
                subscribe(ctx, sub_key, body.webhook_url, key)
            results = batches.submit(prepared, ctx.service)
        answer: dict[str, Any] = batches.overall(batch_id, results).model_dump(mode="json")
        if idempotency_key is not None:
            ctx.keys.keep(key, idempotency_key, batch_id, answer)
    except BaseException:
        if idempotency_key is not None:
            recorded = ctx.service.batch(batch_id)
            if not recorded:  # nothing was made: the key may be sent again for a new batch
                ctx.keys.release(key, idempotency_key, batch_id)
            else:  # cut short after some of its jobs were made: the key gives those
                ctx.keys.keep(key, idempotency_key, batch_id, _recorded_answer(batch_id, recorded))
        raise
    return answer


def _recorded_answer(batch_id: str, records: list[JobRecord]) -> dict[str, Any]:
    files = [batches.FileResult(source=r.input, job_id=r.job_id, output=r.output, error=r.error,
                                status="failed" if r.status == "failed" else "queued")
             for r in records]
    return batches.overall(batch_id, files).model_dump(mode="json")


def _await_answer(ctx: Context, key: ApiKey, idem_key: str) -> dict[str, Any]:
    """The answer an earlier request with the same Idempotency-Key gave (it may still be
    probing its files)."""
    deadline = time.monotonic() + 5
    while True:
        found = ctx.keys.kept(key, idem_key)
        if isinstance(found, dict):
            return found
        if time.monotonic() > deadline:
            raise InvalidOptions("the request with this Idempotency-Key is still being "
                                 "handled", hint="send it again in a moment")
        time.sleep(0.05)


@router.get("/v1/batches/{batch_id}", tags=["batches"], summary="A batch's state and its jobs")
def show_batch(batch_id: str, request: Request, _: ReadKey
               ) -> dict[str, Any]:
    service = context(request).service
    jobs = service.batch(batch_id)
    if not jobs:
        raise JobNotFound(f"no batch {batch_id} in {service.where}",
                          hint="see 'mediatasks jobs list'")
    return {"id": batch_id, "status": service.batch_status(batch_id),
            "jobs": [job_json(r) for r in jobs]}


@router.post("/v1/probe", tags=["files"], summary="What mediatasks knows about a file")
def probe_file(body: ProbeIn, request: Request, _: SubmitKey
               ) -> dict[str, Any]:
    from mediatasks.steps.probe import probe

    ctx = context(request)
    with at("input"):
        source = trust.check_client_path(body.input, ctx.settings.root_paths, field="input")
        result = probe(Path(source), ffprobe=ctx.settings.ffprobe)
    data: dict[str, Any] = result.model_dump(mode="json")
    return data


@router.get("/v1/encoders", tags=["cluster"],
            summary="Per worker: its queues and the encoders that work there")
def encoders(request: Request, _: ReadKey) -> dict[str, Any]:
    ctx = context(request)
    try:
        replies = ctx.celery.control.broadcast("mediatasks_encoders", reply=True, timeout=1.0)
    except Exception as exc:  # kombu and redis-py raise their own errors
        raise BrokerUnavailable(f"cannot reach the broker: {exc}",
                                hint="check MEDIATASKS_BROKER_URL") from exc
    workers = []
    for reply in replies or []:
        for name, answer in reply.items():
            if isinstance(answer, dict) and "error" not in answer:
                workers.append({"worker": name, **answer})
    return {"workers": sorted(workers, key=lambda w: str(w["worker"]))}


@router.get("/healthz", tags=["health"], summary="The API process answers (no key needed)")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", tags=["health"], summary="The broker and the job history are reachable")
def readyz(request: Request, _: ReadKey) -> dict[str, str]:
    ctx = context(request)
    try:
        with ctx.history.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        raise BrokerUnavailable(f"the job history does not answer: {' '.join(str(exc).split())[:200]}",
                                hint="check MEDIATASKS_DATABASE_URL") from exc
    try:
        with ctx.celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
    except Exception as exc:
        raise BrokerUnavailable(f"the broker does not answer: {' '.join(str(exc).split())[:200]}",
                                hint="check MEDIATASKS_BROKER_URL") from exc
    return {"status": "ready", "broker": "ok", "history": "ok"}


@router.get("/metrics", tags=["health"], summary="Prometheus metrics",
            response_class=Response)
def metrics(request: Request, _: ReadKey) -> Response:
    """Read from the shared job history and the broker at each scrape (docs/operations.md)."""
    ctx = context(request)
    body, content_type = render_metrics(ctx.history, ctx.settings.broker_url)
    return Response(body, media_type=content_type)


