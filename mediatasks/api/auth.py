"""Who is asking: the Bearer key, its scopes and its rate limit (a FastAPI dependency)."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from limits import RateLimitItem, parse
from limits.storage import Storage, storage_from_string
from limits.strategies import FixedWindowRateLimiter

from mediatasks.errors import InvalidOptions, RateLimited
from mediatasks.history import History
from mediatasks.service import JobService
from mediatasks.service.keys import Keys
from mediatasks.service.records import ApiKey
from mediatasks.service.webhooks import Webhooks
from mediatasks.settings import Settings

log = logging.getLogger("mediatasks.api")

bearer = HTTPBearer(auto_error=False, description="An API key from 'mediatasks keys create'.")
Bearer = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


@dataclass
class Context:
    """What every request shares: the settings, the job service, the keys, the limiter."""

    settings: Settings
    service: JobService
    keys: Keys
    webhooks: Webhooks
    history: History
    celery: Any
    limiter: FixedWindowRateLimiter
    limit: RateLimitItem


def limiter_for(settings: Settings) -> tuple[FixedWindowRateLimiter, RateLimitItem]:
    """A fixed-window limiter on the broker's Redis (memory when the broker is not Redis).

    Raises:
        InvalidOptions: MEDIATASKS_API_RATE_LIMIT cannot be read.
    """
    try:
        item = parse(settings.api_rate_limit)
    except ValueError:
        raise InvalidOptions(f"MEDIATASKS_API_RATE_LIMIT {settings.api_rate_limit!r} is not a "
                             "rate", hint="e.g. 120/minute or 10/second") from None
    url = settings.broker_url
    storage = storage_from_string(url if url.startswith(("redis://", "rediss://"))
                                           else "memory://")
    assert isinstance(storage, Storage)  # the synchronous kind, for a synchronous URL
    return FixedWindowRateLimiter(storage), item


def context(request: Request) -> Context:
    ctx: Context = request.app.state.mt
    return ctx


def need(scope: str) -> Callable[..., ApiKey]:
    """A dependency: the request's key, if it is valid, has ``scope`` and is within its rate."""

    def dependency(request: Request, credentials: Bearer) -> ApiKey:
        ctx = context(request)
        key = ctx.keys.authenticate(credentials.credentials if credentials else None)
        _within_rate(ctx, key)
        ctx.keys.require(key, scope)
        return key

    return dependency


def _within_rate(ctx: Context, key: ApiKey) -> None:
    try:
        if ctx.limiter.hit(ctx.limit, key.id):
            return
        stats = ctx.limiter.get_window_stats(ctx.limit, key.id)
    except Exception as exc:  # the limiter's store is away: serve rather than refuse everyone
        log.warning("rate limit not checked: %s", exc)
        return
    retry = max(1, math.ceil(stats.reset_time - time.time()))
    raise RateLimited(f"the API key {key.prefix} made more than {ctx.settings.api_rate_limit} "
                      "requests", retry_after=retry, hint=f"retry in {retry} s")


ReadKey = Annotated[ApiKey, Depends(need("read"))]
SubmitKey = Annotated[ApiKey, Depends(need("submit"))]
AdminKey = Annotated[ApiKey, Depends(need("admin"))]
