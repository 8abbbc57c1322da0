"""The HTTP API's keys and Idempotency-Keys in the history's database (the service's KeyStore)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from mediatasks.history.schema import api_keys, idempotency_keys
from mediatasks.history.store import _utc
from mediatasks.service.records import ApiKey


def _key(row: Any) -> ApiKey:
    m = row._mapping
    return ApiKey(id=m["id"], name=m["name"], prefix=m["prefix"],
                  scopes=tuple(s for s in m["scopes"].split(",") if s),
                  webhook_url=m["webhook_url"], webhook_secret=m["webhook_secret"],
                  created_at=_utc(m["created_at"]) or m["created_at"],
                  last_used_at=_utc(m["last_used_at"]), revoked_at=_utc(m["revoked_at"]))


class SqlKeyStore:
    """API keys (sha256 of each secret, never the secret) and Idempotency-Keys, in SQL."""

    def __init__(self, engine: Engine):
        self.engine = engine

    def add_key(self, key: ApiKey, *, secret_hash: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(api_keys.insert().values(
                id=key.id, name=key.name, prefix=key.prefix, hash=secret_hash,
                scopes=",".join(key.scopes), webhook_url=key.webhook_url,
                webhook_secret=key.webhook_secret, created_at=key.created_at))

    def find_key(self, key_id: str) -> tuple[ApiKey, str] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(api_keys).where(api_keys.c.id == key_id)).first()
        return (_key(row), str(row.hash)) if row is not None else None

    def list_keys(self) -> list[ApiKey]:
        with self.engine.connect() as conn:
            return [_key(r) for r in conn.execute(select(api_keys).order_by(api_keys.c.created_at))]

    def revoke_key(self, key_id: str, *, at: datetime) -> bool:
        with self.engine.begin() as conn:
            found = conn.execute(select(api_keys.c.id).where(api_keys.c.id == key_id)).first()
            conn.execute(api_keys.update().where(api_keys.c.id == key_id)
                         .where(api_keys.c.revoked_at.is_(None)).values(revoked_at=at))
        return found is not None

    def touch_key(self, key_id: str, *, at: datetime) -> None:
        with self.engine.begin() as conn:
            conn.execute(api_keys.update().where(api_keys.c.id == key_id).values(last_used_at=at))

    def claim_idempotency(self, key_id: str, idem_key: str, *, body_hash: str, job_id: str,
                          at: datetime, since: datetime) -> tuple[str, str] | None:
        this = (idempotency_keys.c.key_id == key_id) & (idempotency_keys.c.idem_key == idem_key)
        for _ in range(3):
            with self.engine.begin() as conn:
                row = conn.execute(select(idempotency_keys).where(this)).first()
                if row is not None and (_utc(row.created_at) or at) >= since:
                    return str(row.body_hash), str(row.job_id)
                if row is not None:  # expired: the key may name a new request now
                    conn.execute(delete(idempotency_keys).where(this))
            try:
                with self.engine.begin() as conn:
                    conn.execute(idempotency_keys.insert().values(
                        key_id=key_id, idem_key=idem_key, body_hash=body_hash, job_id=job_id,
                        created_at=at))
                return None
            except IntegrityError:  # another request claimed it meanwhile: read its claim
                continue
        raise RuntimeError(f"Idempotency-Key {idem_key[:80]!r} keeps changing")

    def keep_response(self, key_id: str, idem_key: str, *, job_id: str, response: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(idempotency_keys.update().where(idempotency_keys.c.key_id == key_id)
                         .where(idempotency_keys.c.idem_key == idem_key)
                         .where(idempotency_keys.c.job_id == job_id).values(response=response))

    def kept_response(self, key_id: str, idem_key: str) -> str | None:
        with self.engine.connect() as conn:
            value = conn.execute(select(idempotency_keys.c.response)
                                 .where(idempotency_keys.c.key_id == key_id)
                                 .where(idempotency_keys.c.idem_key == idem_key)).scalar()
        return None if value is None else str(value)

    def prune_idempotency(self, *, before: datetime) -> int:
        with self.engine.begin() as conn:
            done = conn.execute(delete(idempotency_keys)
                                .where(idempotency_keys.c.created_at < before))
        return int(done.rowcount or 0)

    def release_idempotency(self, key_id: str, idem_key: str, *, job_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(idempotency_keys).where(idempotency_keys.c.key_id == key_id)
                         .where(idempotency_keys.c.idem_key == idem_key)
                         .where(idempotency_keys.c.job_id == job_id))
