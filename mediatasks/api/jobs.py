"""/v1/jobs: submit, list, show, cancel, retry, approve, reject, events, plan, logs."""

from __future__ import annotations

import base64
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Header, Query, Request, Response
from sse_starlette import EventSourceResponse, ServerSentEvent

from mediatasks import encoder_options
from mediatasks.api.auth import AdminKey, Context, ReadKey, SubmitKey, context
from mediatasks.api.schemas import JobIn, event_json, job_json
from mediatasks.errors import InvalidOptions, MediatasksError
from mediatasks.history.pages import page_jobs
from mediatasks.service import trust
from mediatasks.service.lifecycle import parse_status
from mediatasks.service.prepare import check_job, make_options, new_job_id
from mediatasks.service.reads import JobNotFound
from mediatasks.service.records import ApiKey, Event, JobRecord

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
_END = object()


@contextlib.contextmanager
def at(field: str) -> Iterator[None]:
    """An error raised inside names ``field`` as the one at fault (unless it names one)."""
    try:
        yield
    except MediatasksError as exc:
        if exc.field is None:
            exc.field = field
        raise


def subscribe(ctx: Context, key: str, url: str | None, api_key: ApiKey) -> None:
    """Send the webhooks of job or batch ``key`` to the request's webhook_url, else to the API
    key's default, signed with the API key's own webhook secret. Called before the job is
    submitted, so that job.queued goes out too.

    Raises:
        InvalidOptions: the URL cannot be used (field webhook_url), or the key has no secret.
    """
    target = url or api_key.webhook_url
    if target is None:
        return
    if not api_key.webhook_secret:
        raise InvalidOptions(f"API key {api_key.id} has no webhook secret",
                             hint="create a new key with 'mediatasks keys create'")
    with at("webhook_url"):
        ctx.webhooks.subscribe(key, target, api_key.webhook_secret, api_key.id)


@router.post("", status_code=202, summary="Submit a job (the options of `mediatasks submit`)")
def submit_job(body: JobIn, request: Request, response: Response,
               key: SubmitKey,
               idempotency_key: Annotated[str | None, Header(max_length=255)] = None
               ) -> dict[str, Any]:
    ctx = context(request)
    roots = ctx.settings.root_paths
    with at("input"):
        source = trust.check_client_path(body.input, roots, field="input")
    with at("output"):
        output = trust.check_client_path(body.output, roots, field="output")
    with at("video_opt"):
        opts = make_options(body.video_codec, body.crf, body.preset, body.video_opt,
                            body.audio_codec, body.chunk_seconds)
        encoder_options.check_options(opts.video_codec, opts.video_opts,
                                      ffmpeg=ctx.settings.ffmpeg)
    job_id = new_job_id()
    if idempotency_key is not None:
        earlier = ctx.keys.claim(key, idempotency_key, body.model_dump(mode="json"), job_id,
                                 hours=ctx.settings.api_idempotency_hours)
        if earlier is not None:
            response.headers["Idempotent-Replayed"] = "true"
            return job_json(_await_job(ctx.service, earlier))
    try:
        with at("input"):
            spec = check_job(Path(source), Path(output), opts, overwrite=body.overwrite,
                             settings=ctx.settings, job_id=job_id, hold=body.hold,
                             strict=body.strict)
        subscribe(ctx, job_id, body.webhook_url, key)
        record = ctx.service.submit(spec)
    except BaseException:
        if idempotency_key is not None and ctx.service.find(job_id) is None:
            ctx.keys.release(key, idempotency_key, job_id)
        raise
    response.headers["Location"] = f"/v1/jobs/{record.job_id}"
    return job_json(record)


def _await_job(service: Any, job_id: str) -> JobRecord:
    """The job an earlier request with the same Idempotency-Key made (it may be being
    recorded right now by that request)."""
    deadline = time.monotonic() + 5
    while True:
        record: JobRecord | None = service.find(job_id)
        if record is not None:
            return record
        if time.monotonic() > deadline:
            raise InvalidOptions("the request with this Idempotency-Key is still being "
                                 "handled", hint="send it again in a moment")
        time.sleep(0.05)


def _cursor(record: JobRecord) -> str:
    raw = f"{record.created_at.isoformat()}|{record.job_id}"
    return base64.urlsafe_b64encode(raw.encode()).decode()


def _parse_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        when, _, job_id = base64.urlsafe_b64decode(cursor.encode()).decode().partition("|")
        return datetime.fromisoformat(when), job_id
    except ValueError:
        raise InvalidOptions("cursor is not one this API gave", hint="pass next_cursor from "
                             "the previous page") from None


@router.get("", summary="List jobs, newest first (cursor pagination)")
def list_jobs(request: Request, _: ReadKey,
              status: Annotated[str | None, Query(
                  max_length=200, description="A state, or several separated by commas.")] = None,
              batch: Annotated[str | None, Query(max_length=64)] = None,
              since: Annotated[datetime | None, Query(
                  description="Only jobs created at or after this.")] = None,
              cursor: Annotated[str | None, Query(max_length=400)] = None,
              limit: Annotated[int, Query(ge=1, le=500)] = 50) -> dict[str, Any]:
    ctx = context(request)
    with at("status"):
        statuses = parse_status(status) if status else None
    with at("cursor"):
        after = _parse_cursor(cursor) if cursor else None
    records = page_jobs(ctx.history.engine, statuses=statuses, batch_id=batch, since=since,
                        after=after, limit=limit + 1)
    more = len(records) > limit
    records = records[:limit]
    return {"jobs": [job_json(r) for r in records],
            "next_cursor": _cursor(records[-1]) if more and records else None}


@router.get("/{job_id}", summary="One job: status, progress, frames, chunks, sizes, error")
def show_job(job_id: str, request: Request, _: ReadKey) -> dict[str, Any]:
    service = context(request).service
    record = service.get(job_id)
    return job_json(record, service.store.events(job_id))


@router.delete("/{job_id}", summary="Cancel a job (or every job of a batch)")
def cancel_job(job_id: str, request: Request, _: SubmitKey
               ) -> dict[str, Any]:
    return {"cancelled": context(request).service.cancel(job_id)}


@router.post("/{job_id}/retry", status_code=202, summary="Run a failed or cancelled job again")
def retry_job(job_id: str, request: Request, _: SubmitKey
              ) -> dict[str, Any]:
    service = context(request).service
    service.retry(job_id, reason="retried through the API")
    return job_json(service.get(job_id))


@router.post("/{job_id}/approve", summary="Let a held job go on")
def approve_job(job_id: str, request: Request, _: AdminKey
                ) -> dict[str, Any]:
    return job_json(context(request).service.approve(job_id))


@router.post("/{job_id}/reject", summary="End a held job without touching any file")
def reject_job(job_id: str, request: Request, _: AdminKey
               ) -> dict[str, Any]:
    return job_json(context(request).service.reject(job_id))


@router.get("/{job_id}/events", summary="Events as JSON, or a server-sent-event stream",
            response_model=None)
async def job_events(job_id: str, request: Request, _: ReadKey,
                     after: Annotated[int, Query(ge=0, le=2**62,
                                                 description="Only events with a larger seq.")] = 0,
                     last_event_id: Annotated[str | None, Header(max_length=32)] = None
                     ) -> dict[str, Any] | EventSourceResponse:
    service = context(request).service
    if last_event_id is not None:
        if not last_event_id.strip().isdigit():
            raise InvalidOptions(f"Last-Event-ID {last_event_id[:32]!r} is not an event seq")
        after = max(after, int(last_event_id))
    events: list[Event] = await anyio.to_thread.run_sync(lambda: service.events(job_id,
                                                                                after=after))
    if "text/event-stream" not in request.headers.get("accept", ""):
        return {"events": [event_json(e) for e in events]}
    return EventSourceResponse(_stream(service, job_id, after), ping=15)


async def _stream(service: Any, job_id: str, after: int) -> AsyncIterator[ServerSentEvent]:
    """Events as they come, until the job has ended; the service's follower runs in a thread
    (it blocks on the bus), so the event loop never waits on it."""
    follower = service.follow(job_id, after=after)
    try:
        while True:
            event = await anyio.to_thread.run_sync(next, follower, _END)
            if event is _END:
                return
            if isinstance(event, Event):
                yield ServerSentEvent(data=json.dumps(event_json(event)), id=str(event.seq),
                                      event=event.type)
    finally:
        await anyio.to_thread.run_sync(follower.close)


@router.get("/{job_id}/plan", summary="The job's plan: chunks, queues and every ffmpeg argv")
def job_plan(job_id: str, request: Request, _: ReadKey) -> dict[str, Any]:
    from mediatasks.service.prepare import plan_preview
    from mediatasks.steps.plan import load_plan

    ctx = context(request)
    ctx.service.get(job_id)
    job_dir = trust.job_folder(ctx.settings.work_dir, job_id)
    if (job_dir / "plan.json").is_file():
        try:
            return plan_preview(load_plan(job_dir), ctx.settings)
        except (OSError, ValueError):
            pass  # published meanwhile: the job folder is gone
    plans = [e for e in ctx.service.store.events(job_id) if e.type == "job.planned"]
    if not plans:
        raise JobNotFound(f"job {job_id} has no plan yet", hint="wait until it is planned")
    return {"job_id": job_id, **plans[-1].data, "argv": None}


@router.get("/{job_id}/logs", summary="Each task's state, worker, error, argv and stderr tail")
def job_logs(job_id: str, request: Request, _: ReadKey) -> dict[str, Any]:
    record = context(request).service.get(job_id)
    return {"job_id": job_id, "tasks": [
        {"id": t.id, "name": t.name, "state": t.state, "queue": t.queue, "worker": t.worker,
         "retries": t.retries, "started_at": t.started_at, "finished_at": t.finished_at,
         "error": t.error, "argv": t.argv, "log_tail": t.log_tail} for t in record.tasks]}
