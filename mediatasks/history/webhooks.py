"""The webhook outbox in SQL: the ``WebhookStore`` of ``mediatasks.service.webhooks``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import case, exists, func, or_, select
from sqlalchemy.engine import Engine

from mediatasks.history.schema import (
    events,
    jobs,
    webhook_attempts,
    webhook_attempts_expired,
    webhook_deliveries,
    webhook_subscriptions,
)
from mediatasks.service.lifecycle import TERMINAL
from mediatasks.service.webhook_messages import Attempt, Delivery, RelayState, Subscription


def _utc(value: datetime | None) -> datetime | None:
    """SQLite hands timestamps back naive; they were written in UTC."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _subscription(row: Any) -> Subscription:
    m = row._mapping
    return Subscription(key=m["key"], url=m["url"], secret=m["secret"], key_id=m["key_id"],
                        cursor=m["cursor"], progress_pct=m["progress_pct"],
                        progress_at=_utc(m["progress_at"]), created_at=_utc(m["created_at"]),
                        state=(RelayState.model_validate_json(m["state"]) if m["state"]
                               else None))


def _delivery(row: Any, attempts: Sequence[Any] = ()) -> Delivery:
    m = row._mapping
    return Delivery(
        id=m["id"], key=m["key"], job_id=m["job_id"], type=m["type"], url=m["url"],
        payload=m["payload"], status=m["status"], attempts=m["attempts"],
        created_at=_utc(m["created_at"]), last_attempt_at=_utc(m["last_attempt_at"]),
        next_attempt_at=_utc(m["next_attempt_at"]),
        history=tuple(Attempt(n=a.n, at=_utc(a.at), status_code=a.status_code,
                              latency_ms=a.latency_ms, error=a.error, outcome=a.outcome)
                      for a in attempts))


def _tally(conn: Any, outcome: str, n: int) -> None:
    """Add ``n`` expired attempts of ``outcome`` to their count."""
    x = webhook_attempts_expired
    done = conn.execute(x.update().where(x.c.outcome == outcome)
                        .values(attempts=x.c.attempts + n))
    if done.rowcount == 0:
        conn.execute(x.insert().values(outcome=outcome, attempts=n))


class SqlWebhookStore:
    """Subscriptions, deliveries and attempts in the job history's database."""

    def __init__(self, engine: Engine):
        self.engine = engine

    def subscribe(self, subscription: Subscription) -> None:
        s = subscription
        with self.engine.begin() as conn:
            this = webhook_subscriptions.c.key == s.key
            if conn.execute(select(webhook_subscriptions.c.key).where(this)).first():
                conn.execute(webhook_subscriptions.update().where(this).values(
                    url=s.url, secret=s.secret, key_id=s.key_id))
            else:
                conn.execute(webhook_subscriptions.insert().values(
                    **s.model_dump(exclude={"state"}),
                    state=s.state.model_dump_json() if s.state is not None else None))

    def subscription(self, key: str) -> Subscription | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(webhook_subscriptions)
                               .where(webhook_subscriptions.c.key == key)).first()
        return _subscription(row) if row is not None else None

    def advance(self, key: str, *, cursor_was: int, cursor: int, progress_pct: int | None,
                progress_at: datetime | None, state: RelayState,
                deliveries: Sequence[Delivery]) -> bool:
        with self.engine.begin() as conn:
            done = conn.execute(webhook_subscriptions.update()
                                .where(webhook_subscriptions.c.key == key)
                                .where(webhook_subscriptions.c.cursor == cursor_was)
                                .values(cursor=cursor, progress_pct=progress_pct,
                                        progress_at=progress_at,
                                        state=state.model_dump_json()))
            if done.rowcount != 1:
                return False
            if deliveries:
                conn.execute(webhook_deliveries.insert(), [
                    d.model_dump(exclude={"history"}) for d in deliveries])
            return True

    def lagging(self, limit: int = 1000) -> list[Subscription]:
        s = webhook_subscriptions
        later = or_(
            exists().where(events.c.job_id == s.c.key).where(events.c.seq > s.c.cursor),
            exists().where(events.c.batch_id == s.c.key).where(events.c.seq > s.c.cursor))
        with self.engine.connect() as conn:
            return [_subscription(r) for r in conn.execute(select(s).where(later).limit(limit))]

    def _with_attempts(self, conn: Any, rows: Sequence[Any]) -> list[Delivery]:
        if not rows:
            return []
        a = webhook_attempts
        attempts: dict[str, list[Any]] = {}
        for row in conn.execute(select(a).where(a.c.delivery_id.in_([r.id for r in rows]))
                                .order_by(a.c.id)):
            attempts.setdefault(row.delivery_id, []).append(row)
        return [_delivery(r, attempts.get(r.id, [])) for r in rows]

    def delivery(self, delivery_id: str) -> Delivery | None:
        with self.engine.connect() as conn:
            rows = list(conn.execute(select(webhook_deliveries)
                                     .where(webhook_deliveries.c.id == delivery_id)))
            found = self._with_attempts(conn, rows)
        return found[0] if found else None

    def deliveries(self, key: str) -> list[Delivery]:
        d = webhook_deliveries
        with self.engine.connect() as conn:
            rows = list(conn.execute(select(d).where(d.c.key == key)
                                     .order_by(d.c.created_at, d.c.id)))
            return self._with_attempts(conn, rows)

    def record_attempt(self, delivery_id: str, attempt: Attempt, *, status: str,
                       next_attempt_at: datetime | None) -> None:
        d = webhook_deliveries
        with self.engine.begin() as conn:
            conn.execute(webhook_attempts.insert().values(delivery_id=delivery_id,
                                                          **attempt.model_dump()))
            conn.execute(d.update().where(d.c.id == delivery_id).values(
                attempts=d.c.attempts + 1, status=status, last_attempt_at=attempt.at,
                next_attempt_at=next_attempt_at))

    def reopen(self, delivery_id: str, *, next_attempt_at: datetime) -> None:
        d = webhook_deliveries
        with self.engine.begin() as conn:
            conn.execute(d.update().where(d.c.id == delivery_id).values(
                status="pending", next_attempt_at=next_attempt_at))

    def prune_deliveries(self, *, before: datetime) -> tuple[int, int]:
        d, a = webhook_deliveries, webhook_attempts
        old = ((d.c.status.in_(["delivered", "failed"])) & (d.c.created_at < before)
               & (d.c.last_attempt_at.is_(None) | (d.c.last_attempt_at < before)))
        deliveries = attempts = 0
        with self.engine.connect() as conn:
            ids = [r.id for r in conn.execute(select(d.c.id).where(old))]
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            with self.engine.begin() as conn:
                # Checked again as it is removed: a replay may have reopened one meanwhile.
                done = conn.execute(d.delete().where(d.c.id.in_(chunk)).where(old))
                theirs = a.c.delivery_id.in_(chunk) & ~exists().where(d.c.id == a.c.delivery_id)
                for outcome, n in conn.execute(select(a.c.outcome, func.count()).where(theirs)
                                               .group_by(a.c.outcome)):
                    _tally(conn, str(outcome), int(n))
                gone = conn.execute(a.delete().where(theirs))
                deliveries += int(done.rowcount or 0)
                attempts += int(gone.rowcount or 0)
        return deliveries, attempts

    def prune_subscriptions(self, *, ended_before: datetime) -> int:
        s, d = webhook_subscriptions, webhook_deliveries
        terminal = sorted(TERMINAL)
        ended_jobs = (select(jobs.c.id).where(jobs.c.status.in_(terminal))
                      .where(jobs.c.finished_at < ended_before))
        ended_batches = (select(jobs.c.batch_id).where(jobs.c.batch_id.is_not(None))
                         .group_by(jobs.c.batch_id)
                         .having(func.sum(case((jobs.c.status.in_(terminal), 0), else_=1)) == 0)
                         .having(func.count(jobs.c.finished_at) == func.count())
                         .having(func.max(jobs.c.finished_at) < ended_before))
        orphan = ((s.c.created_at < ended_before)
                  & ~exists().where(jobs.c.id == s.c.key)
                  & ~exists().where(jobs.c.batch_id == s.c.key))
        with self.engine.begin() as conn:
            done = conn.execute(s.delete()
                                .where(s.c.key.in_(ended_jobs) | s.c.key.in_(ended_batches)
                                       | orphan)
                                .where(~exists().where(d.c.key == s.c.key)))
        return int(done.rowcount or 0)

    def due(self, before: datetime, limit: int = 1000) -> list[Delivery]:
        d = webhook_deliveries
        with self.engine.connect() as conn:
            rows = list(conn.execute(select(d).where(d.c.status == "pending")
                                     .where(d.c.next_attempt_at < before)
                                     .order_by(d.c.next_attempt_at).limit(limit)))
            return self._with_attempts(conn, rows)
