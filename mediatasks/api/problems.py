"""Every error as an RFC 9457 problem (application/problem+json), mapped in this one place: the
same one-line message the CLI prints, the field at fault, the hint; never a stack trace."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from mediatasks.errors import (
    BrokerUnavailable,
    IdempotencyConflict,
    InvalidMedia,
    InvalidOptions,
    MediatasksError,
    NotAuthenticated,
    OutputExists,
    PathRefused,
    RateLimited,
    ScopeMissing,
    ToolNotFound,
    UntrustedMessage,
)
from mediatasks.service.lifecycle import IllegalTransition
from mediatasks.service.reads import JobNotFound

log = logging.getLogger("mediatasks.api")

PROBLEM = "application/problem+json"
TYPE_BASE = "https://mediatasks.dev/problems/"

# Most specific first: the first class the error is an instance of decides.
STATUS: list[tuple[type[MediatasksError], int, str]] = [
    (JobNotFound, 404, "not-found"),
    (NotAuthenticated, 401, "not-authenticated"),
    (ScopeMissing, 403, "scope-missing"),
    (UntrustedMessage, 403, "path-refused"),
    (RateLimited, 429, "rate-limited"),
    (IdempotencyConflict, 409, "idempotency-conflict"),
    (IllegalTransition, 409, "illegal-transition"),
    (OutputExists, 409, "output-exists"),
    (InvalidOptions, 400, "invalid-options"),
    (InvalidMedia, 422, "invalid-media"),
    (BrokerUnavailable, 503, "broker-unavailable"),
    (ToolNotFound, 503, "tool-not-found"),
]


class BodyTooLarge(Exception):
    """The request body is over MEDIATASKS_API_MAX_BODY."""

    def __init__(self, limit: int):
        super().__init__(f"the request body is over {limit} bytes")
        self.limit = limit


def problem(status: int, title: str, detail: str, *, kind: str, field: str | None = None,
            hint: str | None = None, headers: dict[str, str] | None = None,
            **extra: Any) -> JSONResponse:
    body: dict[str, Any] = {"type": TYPE_BASE + kind, "title": title, "status": status,
                            "detail": detail}
    if field is not None:
        body["field"] = field
    if hint is not None:
        body["hint"] = hint
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def from_error(exc: MediatasksError) -> JSONResponse:
    status, kind = 400, "error"
    for cls, code, name in STATUS:
        if isinstance(exc, cls):
            status, kind = code, name
            break
    else:
        status, kind = 500, "internal"
    headers = {}
    if isinstance(exc, RateLimited):
        headers["Retry-After"] = str(exc.retry_after)
    if isinstance(exc, NotAuthenticated):
        headers["WWW-Authenticate"] = "Bearer"
    extra = {"rule": exc.rule} if isinstance(exc, PathRefused) else {}
    return problem(status, type(exc).__name__, exc.message, kind=kind, field=exc.field,
                   hint=exc.hint, headers=headers, **extra)


def _field(loc: Any) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


def install(app: FastAPI) -> None:
    """Register the handlers that turn every error into a problem."""

    @app.exception_handler(MediatasksError)
    async def _mediatasks(request: Request, exc: MediatasksError) -> JSONResponse:
        return from_error(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        field = _field(first.get("loc", ()))
        more = len(exc.errors()) - 1
        detail = f"{field}: {first.get('msg', 'invalid')}" + (f" (and {more} more)" if more else "")
        return problem(422, "InvalidRequest", " ".join(detail.split()), kind="invalid-request",
                       field=field, errors=[{"field": _field(e.get("loc", ())),
                                             "message": str(e.get("msg", ""))}
                                            for e in exc.errors()[:20]])

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem(exc.status_code, "HTTPError", str(exc.detail), kind=f"http-{exc.status_code}",
                       headers=dict(exc.headers or {}))

    @app.exception_handler(BodyTooLarge)
    async def _too_large(request: Request, exc: BodyTooLarge) -> JSONResponse:
        return problem(413, "BodyTooLarge", str(exc), kind="body-too-large",
                       hint="send a smaller body (MEDIATASKS_API_MAX_BODY)")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        return problem(500, "InternalError", "the server failed to answer this request; the "
                       "error is in its log", kind="internal")
