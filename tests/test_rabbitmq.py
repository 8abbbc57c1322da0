"""RabbitMQ as the broker (the result backend stays a private redis-server): the queues are quorum
queues, a job runs through them, and a worker killed with kill -9 has its chunks redelivered as
soon as its connection drops, not after the visibility timeout. Uses the RabbitMQ of this machine
(127.0.0.1:5672, guest) in a vhost of the test's own."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from rig import RabbitMQUnavailable, RabbitRig, Rig, make_source, rabbitmqctl

pytestmark = pytest.mark.cluster


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[RabbitRig]:
    # A visibility timeout of an hour: a recovery within seconds can only be AMQP's redelivery.
    try:
        with RabbitRig(tmp_path / "rig", visibility_timeout=3600) as r:
            yield r
    except RabbitMQUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture
def vhost(rig: RabbitRig) -> str:
    """The rig's vhost on the local RabbitMQ; its amqp:// URL."""
    return rig.amqp_url


COUNTDOWN = """
from mediatasks.cluster.app import app
result = app.send_task("mediatasks.cleanup", kwargs={"job_id": "0" * 32}, queue="io", countdown=2)
result.get(timeout=60)
print(result.state)
"""


def queue_types(url: str) -> dict[str, str]:
    listed = rabbitmqctl("list_queues", "-p", url.rsplit("/", 1)[1], "name", "type").stdout
    return dict(line.split()[:2] for line in listed.splitlines()[1:] if line.strip())


def test_a_job_runs_on_rabbitmq_through_quorum_queues(rig: Rig, vhost: str, tmp_path: Path) -> None:
    source = make_source(tmp_path / "small.mkv", seconds=4, size="128x72")
    rig.start_worker("rabbit", supervise=False)
    job_id = rig.submit(source, tmp_path / "out.mkv", "--chunk-seconds", "2")
    record = rig.wait_job(job_id, timeout=120)
    assert record["status"] == "succeeded", record
    assert record["frames_in"] == record["frames_out"] == 100, record
    assert {q: t for q, t in queue_types(vhost).items() if q in {"cpu", "gpu", "io"}} == {
        "cpu": "quorum", "gpu": "quorum", "io": "quorum"}
    # A countdown (a retry's backoff) goes through RabbitMQ's delayed delivery and comes back.
    done = subprocess.run([sys.executable, "-c", COUNTDOWN], env=rig.env, capture_output=True,
                          text=True, timeout=90)
    assert done.stdout.split() == ["SUCCESS"], done.stderr


def test_a_killed_workers_chunks_are_redelivered_when_its_connection_drops(
        rig: Rig, tmp_path: Path) -> None:
    """kill -9 of a whole worker mid-encode: RabbitMQ requeues its unacknowledged chunks at
    once, and a second worker finishes the job long before the 1 h visibility timeout."""
    source = make_source(tmp_path / "source.mkv", seconds=10)
    rig.start_worker("doomed", supervise=False)
    job_id = rig.submit(source, tmp_path / "out.mkv", "--preset", "veryslow",
                        "--chunk-seconds", "2")
    rig.wait_for_chunk_encodes(job_id, count=1)
    rig.kill_worker("doomed")
    killed_at = time.monotonic()
    deadline = killed_at + 10
    while rig.running_chunk_encodes(job_id) and time.monotonic() < deadline:
        time.sleep(0.1)  # ffmpeg dies with its pool process (the parent-death signal)
    assert rig.running_chunk_encodes(job_id) == [], "ffmpeg outlived its worker"
    rig.start_worker("survivor", supervise=False)
    # The chunks the dead worker held are already back in the queue: the survivor starts
    # encoding as soon as it is up.
    assert rig.wait_for_chunk_encodes(job_id, timeout=60) - killed_at < 60
    record = rig.wait_job(job_id, timeout=150)
    assert record["status"] == "succeeded", record
    assert record["frames_in"] == record["frames_out"] == 250, record
    assert "survivor" in {t["worker"].split("-")[0] for t in rig.job(job_id)["tasks"]
                          if t["name"] == "mediatasks.encode_chunk" and t["state"] == "SUCCESS"}
