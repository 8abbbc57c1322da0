"""`keys create|list|revoke` (the HTTP API's keys) and `api` (the HTTP API itself)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer

from mediatasks.cli.common import JsonOpt, err, out
from mediatasks.settings import get_settings

if TYPE_CHECKING:
    from mediatasks.service.keys import Keys


def _keys() -> Keys:
    from mediatasks.cluster.services import open_history
    from mediatasks.history.keys import SqlKeyStore
    from mediatasks.service.keys import Keys

    return Keys(SqlKeyStore(open_history(get_settings().database_url).engine))


def keys_create(
    name: Annotated[str, typer.Option("--name", help="Who uses the key, e.g. sonarr.")],
    scope: Annotated[list[str], typer.Option(
        "--scope", help="read, submit (includes read) or admin (everything); repeatable.")],
    webhook_url: Annotated[str | None, typer.Option(
        "--webhook-url", help="Where events of jobs submitted with this key go by default.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create an API key and print it, once: only its hash is kept. Also prints the secret that
    signs the key's webhooks."""
    key, token = _keys().create(name, scope, webhook_url=webhook_url)
    if as_json:
        print(json.dumps({"id": key.id, "name": key.name, "scopes": list(key.scopes),
                          "key": token, "webhook_secret": key.webhook_secret}))
        return
    out.print(token)
    err.print(f"key {key.prefix} ({key.name}; {', '.join(key.scopes)}): copy it now, it is not "
              "shown again")
    err.print(f"webhook signing secret: {key.webhook_secret}")


def keys_list(as_json: JsonOpt = False) -> None:
    """The API keys: id, name, prefix, scopes, created, last used, revoked (never the keys)."""
    keys = _keys().list()
    if as_json:
        for k in keys:
            print(k.model_dump_json(exclude={"webhook_secret"}))
        return
    for k in keys:
        used = k.last_used_at.strftime("%Y-%m-%d %H:%M") if k.last_used_at else "never"
        state = f"revoked {k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "active"
        out.print(f"{k.id}  {k.prefix}…  {k.name:<16} {','.join(k.scopes):<12} "
                  f"created {k.created_at:%Y-%m-%d %H:%M}  used {used}  {state}")


def keys_revoke(key_id: Annotated[str, typer.Argument(help="The key's id (keys list).")]) -> None:
    """Revoke an API key: requests with it are refused from now on."""
    _keys().revoke(key_id)
    out.print(f"revoked {key_id}")


def api(
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 8080,
    workers: Annotated[int, typer.Option("--workers", min=1, help="uvicorn processes.")] = 1,
) -> None:
    """Serve the HTTP API (docs/api.md) with uvicorn; OpenAPI at /openapi.json, docs at /docs."""
    import uvicorn

    if not get_settings().root_paths:
        from mediatasks.errors import InvalidOptions

        raise InvalidOptions("MEDIATASKS_ROOTS is not set", hint="set it to the folders jobs "
                             "may read and write, as on the workers, e.g. /media/in:/media/out")
    uvicorn.run("mediatasks.api.app:create_app", factory=True, host=host, port=port,
                workers=workers, proxy_headers=True, log_level="info")
