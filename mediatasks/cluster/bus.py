"""The service's EventBus on Redis pub/sub (the result backend's server): one channel per job and
one per batch. A message only wakes followers; they read the events from the history."""

from __future__ import annotations

import time
from typing import Any

from mediatasks.service.records import Event


def channel(key: str) -> str:
    return f"mediatasks-events-{key}"


class RedisSubscription:
    def __init__(self, client: Any, key: str):
        self.pubsub = client.pubsub(ignore_subscribe_messages=True)
        self.pubsub.subscribe(channel(key))

    def get(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if self.pubsub.get_message(timeout=left) is not None:
                return True

    def close(self) -> None:
        self.pubsub.close()


class RedisBus:
    """Publish and subscribe through a redis-py client."""

    def __init__(self, client: Any):
        self.client = client

    def publish(self, event: Event) -> None:
        self.client.publish(channel(event.job_id), event.seq)
        if event.batch_id:
            self.client.publish(channel(event.batch_id), event.seq)

    def subscribe(self, key: str) -> RedisSubscription:
        return RedisSubscription(self.client, key)


def bus_for(app: Any) -> RedisBus | None:
    """The bus on the app's result backend, when that is Redis."""
    client = getattr(app.backend, "client", None)
    return RedisBus(client) if client is not None and hasattr(client, "pubsub") else None
