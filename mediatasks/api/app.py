"""The HTTP API's application: ``create_app`` builds it (uvicorn calls it as a factory)."""

from __future__ import annotations

import logging

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mediatasks.api import hooks, jobs, more, problems
from mediatasks.api.auth import Context, limiter_for
from mediatasks.errors import InvalidOptions
from mediatasks.settings import Settings, get_settings

log = logging.getLogger("mediatasks.api")

DESCRIPTION = """Submit, follow and steer mediatasks jobs. Every endpoint but `/healthz` needs
`Authorization: Bearer <key>` (`mediatasks keys create`). Errors are RFC 9457 problems
(`application/problem+json`). See docs/api.md."""


class BodyLimit:
    """Refuses a request body over ``limit`` bytes with 413, by its Content-Length or as it
    streams in."""

    def __init__(self, app: ASGIApp, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                response = problems.problem(
                    413, "BodyTooLarge", f"the request body is over {self.limit} bytes",
                    kind="body-too-large", hint="send a smaller body (MEDIATASKS_API_MAX_BODY)")
                await response(scope, receive, send)
                return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise problems.BodyTooLarge(self.limit)
            return message

        await self.app(scope, counted, send)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The API over the shared cluster (MEDIATASKS_BROKER_URL) and the job history.

    Raises:
        InvalidOptions: MEDIATASKS_ROOTS is not set, or the rate limit cannot be read.
    """
    from mediatasks.cluster.app import app as celery_app
    from mediatasks.cluster.services import open_history, service_for, webhooks_for
    from mediatasks.history.keys import SqlKeyStore
    from mediatasks.service.keys import Keys

    settings = settings or get_settings()
    if not settings.root_paths:
        raise InvalidOptions("MEDIATASKS_ROOTS is not set", hint="set it to the folders jobs may "
                             "read and write, as on the workers, e.g. /media/in:/media/out")
    celery_app.conf.update(broker_url=settings.broker_url, result_backend=settings.backend_url)
    history = open_history(settings.database_url)
    service = service_for(celery_app, settings.database_url)
    limiter, limit = limiter_for(settings)
    app = FastAPI(title="mediatasks", version="1", description=DESCRIPTION,
                  openapi_url="/openapi.json", docs_url="/docs", redoc_url=None)
    app.state.mt = Context(settings=settings, service=service, keys=Keys(SqlKeyStore(history.engine)),
                           webhooks=webhooks_for(celery_app, settings.database_url),
                           history=history, celery=celery_app, limiter=limiter, limit=limit)
    problems.install(app)
    app.include_router(jobs.router)
    app.include_router(more.router)
    app.include_router(hooks.router)
    app.add_middleware(BodyLimit, limit=settings.api_max_body)
    return app


