"""`/metrics` in Prometheus' text format: the history's figures and the broker's queue depths.

Everything is read at scrape time (``read_figures`` over the shared history, the queues from the
broker), on a fresh registry per scrape: API processes keep no counters of their own, and the
workers' figures arrive through the history they write.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from mediatasks.history import History
from mediatasks.history.figures import Figures, Histogram, read_figures
from mediatasks.profiles import QUEUES

log = logging.getLogger(__name__)

BROKER_TIMEOUT = 3.0  # seconds; a scrape never waits longer for an unreachable broker


def queue_depths(broker_url: str, queues: tuple[str, ...] = QUEUES,
                 timeout: float = BROKER_TIMEOUT) -> dict[str, int] | None:
    """Messages waiting in each queue (on Redis, with kombu's priority sub-queues); None when the
    broker cannot be reached. Reserved messages (on a worker, not yet acknowledged) are not counted.
    """
    from kombu.connection import Connection
    from kombu.exceptions import ChannelError

    connection: Any = Connection  # kombu is untyped
    try:
        with connection(broker_url, connect_timeout=timeout,
                        transport_options={"socket_timeout": timeout}) as conn:
            conn.ensure_connection(max_retries=0)  # one try: the next scrape is the retry
            depths: dict[str, int] = {}
            for queue in queues:
                # Passive: never declare a queue (on RabbitMQ, with other arguments than the
                # workers'); a queue that does not exist (Redis deletes empty lists) holds nothing.
                with conn.channel() as channel:
                    try:
                        _, count, _ = channel.queue_declare(queue=queue, passive=True)
                    except ChannelError:
                        count = 0
                depths[queue] = int(count)
            return depths
    except Exception as exc:
        log.warning("cannot read the broker's queues: %s", " ".join(str(exc).split())[:300])
        return None


def _histogram(name: str, doc: str, labels: list[str],
               values: dict[tuple[str, ...], Histogram]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=labels)
    for label_values, h in values.items():
        buckets = [(_le(limit), float(n)) for limit, n in zip(h.buckets, h.counts, strict=True)]
        buckets.append(("+Inf", float(h.count)))
        family.add_metric(list(label_values), buckets, sum_value=h.total)
    return family


def _le(limit: float) -> str:
    return str(float(limit))


def families(figures: Figures | None, depths: dict[str, int] | None) -> Iterator[Metric]:
    """The metric families for these figures (None: the history could not be read) and depths
    (None: the broker could not be reached)."""
    history_up = GaugeMetricFamily("mediatasks_history_up",
                                   "1 when the job history could be read for this scrape")
    history_up.add_metric([], 0.0 if figures is None else 1.0)
    yield history_up
    broker_up = GaugeMetricFamily("mediatasks_broker_up",
                                  "1 when the broker's queues could be read for this scrape")
    broker_up.add_metric([], 0.0 if depths is None else 1.0)
    yield broker_up
    if depths is not None:
        depth = GaugeMetricFamily("mediatasks_queue_depth",
                                  "Task messages waiting in each broker queue", labels=["queue"])
        for queue, n in depths.items():
            depth.add_metric([queue], float(n))
        yield depth
    if figures is None:
        return
    window = f"{figures.window.total_seconds():.0f}s"

    states = GaugeMetricFamily("mediatasks_jobs", "Jobs in the history by state",
                               labels=["state"])
    for state, n in figures.jobs_by_state.items():
        states.add_metric([state], float(n))
    yield states
    yield _histogram("mediatasks_job_duration_seconds",
                     f"Seconds from the start of probing to the end, of the jobs that ended in "
                     f"the last {window}, by how they ended (a window: read it without rate())",
                     ["outcome"],
                     {(outcome, ): h for outcome, h in figures.job_seconds.items()})
    yield CounterMetricFamily("mediatasks_frames_encoded",
                              "Frames written by every job that ran to its end",
                              value=float(figures.frames_encoded))
    yield CounterMetricFamily("mediatasks_bytes_in", "Bytes of the sources of published jobs",
                              value=float(figures.bytes_in))
    yield CounterMetricFamily("mediatasks_bytes_out", "Bytes of the outputs of published jobs",
                              value=float(figures.bytes_out))
    yield GaugeMetricFamily("mediatasks_bytes_saved",
                            "bytes_in minus bytes_out of published jobs (negative when outputs "
                            "grew)", value=float(figures.bytes_saved))
    yield CounterMetricFamily("mediatasks_task_retries", "Retries of every task",
                              value=float(figures.retries))
    yield _histogram("mediatasks_chunk_encode_seconds",
                     f"Seconds per encode_chunk task that succeeded in the last {window} "
                     "(a window, not a running total: read it without rate())", [],
                     {(): figures.chunk_seconds})
    if figures.encode_fps is not None:
        yield GaugeMetricFamily("mediatasks_encode_fps",
                                f"Frames per second of wall-clock time of the jobs that finished "
                                f"in the last {window}", value=figures.encode_fps)
    attempts = CounterMetricFamily("mediatasks_webhook_attempts",
                                   "Webhook delivery attempts by outcome", labels=["outcome"])
    for outcome in sorted({"delivered", "http_error", "timeout", "connection_error",
                           *figures.webhook_attempts}):
        attempts.add_metric([outcome], float(figures.webhook_attempts.get(outcome, 0)))
    yield attempts
    deliveries = GaugeMetricFamily("mediatasks_webhook_deliveries",
                                   "Webhook deliveries by status", labels=["status"])
    for status in sorted({"pending", "delivered", "failed", *figures.webhook_deliveries}):
        deliveries.add_metric([status], float(figures.webhook_deliveries.get(status, 0)))
    yield deliveries


class _Scrape(Collector):
    """Reads the history and the broker when the registry is collected."""

    def __init__(self, history: History, broker_url: str | None):
        self.history = history
        self.broker_url = broker_url

    def collect(self) -> Iterator[Metric]:
        try:
            figures: Figures | None = read_figures(self.history.engine)
        except Exception as exc:
            log.warning("cannot read the job history: %s", " ".join(str(exc).split())[:300])
            figures = None
        depths = queue_depths(self.broker_url) if self.broker_url else None
        yield from families(figures, depths)


def render_metrics(history: History, broker_url: str | None) -> tuple[bytes, str]:
    """The Prometheus text body and its content type; never fails for an unreachable broker or
    history (``mediatasks_broker_up`` and ``mediatasks_history_up`` say 0 instead)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Scrape(history, broker_url))
    return generate_latest(registry), CONTENT_TYPE_LATEST
