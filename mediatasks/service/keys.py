"""API keys: made, checked, listed and revoked; and the Idempotency-Keys of submits.

A key reads ``mt_<id>_<secret>``: the id is public (lists show it, with the ``mt_`` prefix), the
secret is 32 random bytes of which only the sha256 is stored. The secret being random, a fast
hash is right; hashes are compared in constant time. A key is never logged.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from mediatasks.errors import IdempotencyConflict, InvalidOptions, NotAuthenticated, ScopeMissing
from mediatasks.service.ports import KeyStore
from mediatasks.service.records import ApiKey

# Each scope grants the ones after it: admin ⊃ submit ⊃ read.
SCOPES = ("admin", "submit", "read")
_GRANTS = {"admin": {"admin", "submit", "read"}, "submit": {"submit", "read"}, "read": {"read"}}
_DUMMY_HASH = hashlib.sha256(b"no such key").hexdigest()
# last_used_at is written at most this often per key: a busy key costs no write per request.
TOUCH_EVERY = timedelta(seconds=60)


def _now() -> datetime:
    return datetime.now(UTC)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_key(token: str) -> tuple[str, str] | None:
    """(id, secret) of a key as given, or None when it is not shaped like one."""
    prefix, _, rest = token.partition("_")
    key_id, _, secret = rest.partition("_")
    if prefix != "mt" or not key_id or not secret or len(token) > 200:
        return None
    return key_id, secret


def check_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    """The scopes, each one known, in a fixed order.

    Raises:
        InvalidOptions: an unknown scope, or none.
    """
    given = list(scopes)
    for scope in given:
        if scope not in SCOPES:
            raise InvalidOptions(f"--scope {scope}: not a scope",
                                 hint=f"choose from {', '.join(SCOPES)}")
    if not given:
        raise InvalidOptions("no --scope given", hint=f"choose from {', '.join(SCOPES)}")
    return tuple(s for s in SCOPES if s in given)


def body_hash(body: Any) -> str:
    """The hash of a request body as parsed: the same JSON in another spacing or key order is
    the same body."""
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"),
                                     default=str).encode()).hexdigest()


class Keys:
    """Every operation on API keys and Idempotency-Keys, over a ``KeyStore``."""

    def __init__(self, store: KeyStore, *, now: Callable[[], datetime] = _now):
        self.store = store
        self.now = now

    def create(self, name: str, scopes: Iterable[str], *, webhook_url: str | None = None
               ) -> tuple[ApiKey, str]:
        """A new key; returns it and the key itself, which is shown once and never stored.

        Raises:
            InvalidOptions: no name, an unknown scope.
        """
        if not name.strip():
            raise InvalidOptions("--name is empty", hint="name the client, e.g. --name sonarr")
        key_id = secrets.token_hex(6)
        secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
        webhook_secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
        key = ApiKey(id=key_id, name=name.strip(), prefix=f"mt_{key_id}",
                     scopes=check_scopes(scopes), webhook_url=webhook_url,
                     webhook_secret=webhook_secret, created_at=self.now())
        self.store.add_key(key, secret_hash=hash_secret(secret))
        return key, f"mt_{key_id}_{secret}"

    def authenticate(self, token: str | None) -> ApiKey:
        """The key ``token`` is, if it is one and not revoked.

        Raises:
            NotAuthenticated: no key, a wrong one or a revoked one (the message says which, never
                the key).
        """
        if not token:
            raise NotAuthenticated("no API key given",
                                   hint="send 'Authorization: Bearer mt_…' (mediatasks keys create)")
        parsed = parse_key(token)
        found = self.store.find_key(parsed[0]) if parsed else None
        stored = found[1] if found else _DUMMY_HASH
        given = hash_secret(parsed[1]) if parsed else ""
        if not hmac.compare_digest(stored, given) or found is None:
            raise NotAuthenticated("the API key is not valid",
                                   hint="check the key; 'mediatasks keys list' shows the keys")
        key = found[0]
        if key.revoked_at is not None:
            raise NotAuthenticated(f"the API key {key.prefix} was revoked",
                                   hint="create a new one with 'mediatasks keys create'")
        now = self.now()
        if key.last_used_at is None or now - key.last_used_at > TOUCH_EVERY:
            self.store.touch_key(key.id, at=now)
        return key

    @staticmethod
    def require(key: ApiKey, scope: str) -> None:
        """Raises ScopeMissing unless one of the key's scopes grants ``scope``."""
        if not any(scope in _GRANTS.get(s, set()) for s in key.scopes):
            raise ScopeMissing(f"the API key {key.prefix} lacks the '{scope}' scope",
                               hint=f"use a key created with --scope {scope}")

    def list(self) -> list[ApiKey]:
        return self.store.list_keys()

    def revoke(self, key_id: str) -> None:
        """Raises InvalidOptions when there is no such key."""
        key_id = key_id.removeprefix("mt_").split("_")[0]
        if not self.store.revoke_key(key_id, at=self.now()):
            raise InvalidOptions(f"no API key {key_id}", hint="see 'mediatasks keys list'")

    # -- idempotency ----------------------------------------------------------------------------

    def claim(self, key: ApiKey, idem_key: str, body: Any, job_id: str, *, hours: float
              ) -> str | None:
        """Claim ``idem_key`` for a new job (or batch) ``job_id``; returns the earlier one's id
        when the same key came with the same body within ``hours``, None when the claim is new.

        Raises:
            IdempotencyConflict: the same key came with another body.
        """
        if not idem_key or len(idem_key) > 255:
            raise InvalidOptions("Idempotency-Key must be 1 to 255 characters",
                                 hint="send a short unique string per request, e.g. a UUID")
        now = self.now()
        wanted = body_hash(body)
        earlier = self.store.claim_idempotency(key.id, idem_key, body_hash=wanted, job_id=job_id,
                                               at=now, since=now - timedelta(hours=hours))
        if earlier is None:
            return None
        earlier_hash, earlier_job = earlier
        if not hmac.compare_digest(earlier_hash, wanted):
            raise IdempotencyConflict(
                f"Idempotency-Key {idem_key[:80]!r} was used for another request (job "
                f"{earlier_job})", hint="send a new Idempotency-Key for a new request")
        return earlier_job

    def release(self, key: ApiKey, idem_key: str, job_id: str) -> None:
        self.store.release_idempotency(key.id, idem_key, job_id=job_id)

    def keep(self, key: ApiKey, idem_key: str, job_id: str, response: Any) -> None:
        """Keep the answer to the request that claimed ``idem_key`` for ``job_id``."""
        self.store.keep_response(key.id, idem_key, job_id=job_id,
                                 response=json.dumps(response, default=str))

    def kept(self, key: ApiKey, idem_key: str) -> Any | None:
        """The answer kept for ``idem_key`` (None: none yet, its request is still running)."""
        found = self.store.kept_response(key.id, idem_key)
        return None if found is None else json.loads(found)

    def expire(self, *, hours: float) -> int:
        """Remove the Idempotency-Keys older than ``hours`` (the window in which a key
        returns its first request); returns how many."""
        return self.store.prune_idempotency(before=self.now() - timedelta(hours=hours))
