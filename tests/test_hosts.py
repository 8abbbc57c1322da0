"""Three hosts on one machine: network namespaces joined by a bridge, a broker host running
redis-server (with its append-only file) and two worker hosts each running a real `celery worker`.
They share only the file system (the work directory, the history, sources and outputs), as hosts
on one NFS mount do. A worker host that drops off the network mid-encode must cost the job nothing
but the visibility timeout, and must corrupt nothing when it comes back."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import frame_hashes, sha256
from rig import MEDIATASKS, make_source, processes_with

from mediatasks import runner
from mediatasks.cluster.local import worker_args

pytestmark = pytest.mark.cluster

# A private /24 that exists only inside the namespaces below: nothing here is routed anywhere else.
SUBNET = "10.213.77"
BROKER_ADDR = f"{SUBNET}.1"
VISIBILITY_TIMEOUT = 15


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=False,
                          stdin=subprocess.DEVNULL)


@dataclass
class Hosts:
    """Network namespaces named ``<tag>-<role>``; the broker host holds the bridge ``br0``."""

    tag: str
    made: list[str] = field(default_factory=list)

    def ns(self, role: str) -> str:
        return f"{self.tag}-{role}"

    def add_broker(self) -> None:
        self._add_ns("broker")
        self._must("-n", self.ns("broker"), "link", "add", "br0", "type", "bridge")
        self._must("-n", self.ns("broker"), "addr", "add", f"{BROKER_ADDR}/24", "dev", "br0")
        self._must("-n", self.ns("broker"), "link", "set", "br0", "up")

    def add_worker_host(self, role: str, host: int) -> None:
        """A host whose ``eth0`` is cabled to the broker host's bridge (a veth pair created
        straight inside the two namespaces: no link or address ever exists outside them)."""
        ns, port = self.ns(role), f"p-{role}"
        self._add_ns(role)
        self._must("link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", port,
                   "netns", self.ns("broker"))
        self._must("-n", self.ns("broker"), "link", "set", port, "master", "br0")
        self._must("-n", self.ns("broker"), "link", "set", port, "up")
        self._must("-n", ns, "addr", "add", f"{SUBNET}.{host}/24", "dev", "eth0")
        self._must("-n", ns, "link", "set", "eth0", "up")

    def cut(self, role: str) -> None:
        self._must("-n", self.ns(role), "link", "set", "eth0", "down")

    def reconnect(self, role: str) -> None:
        self._must("-n", self.ns(role), "link", "set", "eth0", "up")

    def exec_argv(self, role: str, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.ns(role), *argv]

    def holds(self, role: str, pid: int) -> bool:
        """Whether process ``pid`` lives in this host's network namespace."""
        try:
            return (os.stat(f"/proc/{pid}/ns/net").st_ino
                    == os.stat(f"/run/netns/{self.ns(role)}").st_ino)
        except OSError:
            return False

    def remove(self) -> None:
        # Deleting a namespace destroys its veth ends, and with them their peers.
        for ns in reversed(self.made):
            _ip("netns", "del", ns)
        self.made.clear()

    def _add_ns(self, role: str) -> None:
        done = _ip("netns", "add", self.ns(role))
        if done.returncode != 0:
            if not self.made:
                pytest.skip(f"cannot create network namespaces here ('ip netns add' failed: "
                            f"{done.stderr.strip()}); this test needs root and CAP_SYS_ADMIN")
            raise RuntimeError(done.stderr)
        self.made.append(self.ns(role))
        self._must("-n", self.ns(role), "link", "set", "lo", "up")

    @staticmethod
    def _must(*args: str) -> None:
        done = _ip(*args)
        if done.returncode != 0:
            raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


@pytest.fixture
def hosts() -> Iterator[Hosts]:
    if shutil.which("ip") is None:
        pytest.skip("iproute2 ('ip') is not installed")
    h = Hosts(f"mt{uuid.uuid4().hex[:6]}")
    try:
        h.add_broker()
        h.add_worker_host("a", 11)
        h.add_worker_host("b", 12)
        yield h
    finally:
        h.remove()


@dataclass
class Cluster:
    hosts: Hosts
    root: Path
    env: dict[str, str]
    services: dict[str, runner.Service] = field(default_factory=dict)

    def log(self, role: str) -> str:
        return (self.root / f"{role}.log").read_text(errors="replace")

    def mt(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """The CLI, run on the broker host (the only place that reaches the broker)."""
        return subprocess.run(self.hosts.exec_argv("broker", [MEDIATASKS, *args]),
                              capture_output=True, text=True, env=self.env, timeout=timeout,
                              stdin=subprocess.DEVNULL)

    def job(self, job_id: str) -> dict[str, Any]:
        done = self.mt("jobs", "show", job_id, "--json")
        assert done.returncode == 0, done.stderr
        record: dict[str, Any] = json.loads(done.stdout)
        return record

    def encodes_on(self, role: str, job_id: str) -> list[str]:
        """The command lines of the chunk encodes of ``job_id`` running on host ``role``."""
        return [cmd for pid, _, cmd in processes_with(job_id)
                if "ffmpeg" in cmd and "-progress" in cmd and "chunks/" in cmd
                and self.hosts.holds(role, pid)]


def _wait_for(what: str, check: Any, timeout: float, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(every)
    raise TimeoutError(f"{what} within {timeout:.0f}s")


@pytest.fixture
def cluster(hosts: Hosts, tmp_path: Path) -> Iterator[Cluster]:
    root = (tmp_path / "hosts").resolve()
    (root / "redis").mkdir(parents=True)
    url = f"redis://{BROKER_ADDR}:6379/0"
    env = dict(os.environ, MEDIATASKS_BROKER_URL=url, MEDIATASKS_RESULT_BACKEND=url,
               MEDIATASKS_WORK_DIR=str(root / "work"),
               MEDIATASKS_DATABASE_URL=f"sqlite:///{root / 'history.sqlite'}",
               MEDIATASKS_ROOTS=str(tmp_path.resolve()),
               MEDIATASKS_VISIBILITY_TIMEOUT=str(VISIBILITY_TIMEOUT),
               MEDIATASKS_RETRY_BACKOFF="1", MEDIATASKS_HARDWARE_SURVEY="false")
    c = Cluster(hosts, root, env)
    try:
        c.services["redis"] = runner.spawn("redis", hosts.exec_argv("broker", [
            "redis-server", "--bind", BROKER_ADDR, "--port", "6379", "--protected-mode", "no",
            "--dir", str(root / "redis"), "--save", "", "--appendonly", "yes",
            "--appendfsync", "always"]), log_path=root / "redis.log")
        _wait_for("redis-server did not start",
                  lambda: "Ready to accept connections" in c.log("redis"), 15)
        for role in ("a", "b"):
            # One encode at a time per host: a host cut off holds exactly the chunk it runs.
            argv = [*worker_args(1, f"host{role.upper()}-{hosts.tag}"), "--loglevel", "INFO"]
            c.services[role] = runner.spawn(role, hosts.exec_argv(role, argv),
                                            log_path=root / f"{role}.log", env=env, cwd=root)
        for role in ("a", "b"):
            _wait_for(f"worker {role} did not start: {c.services[role].log_tail()}",
                      lambda r=role: " ready." in c.log(r), 60, every=0.2)
        yield c
    finally:
        for svc in reversed(list(c.services.values())):
            svc.stop(grace=5)


def test_a_worker_host_cut_off_mid_encode_costs_the_visibility_timeout_and_corrupts_nothing(
        cluster: Cluster, tmp_path: Path) -> None:
    """Host A's link goes down while it encodes a chunk: after the visibility timeout host B
    runs that chunk and the job ends with every frame. A comes back with its stale task and the
    published output, the job's state and the output folder stay as they were."""
    source = make_source(tmp_path / "source.mkv", seconds=8, size="320x180")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "out.mkv"
    done = cluster.mt("submit", str(source), "-o", str(out), "--chunk-seconds", "1",
                      "--preset", "slow", "--crf", "0", "--json")
    assert done.returncode == 0, done.stderr
    job_id = json.loads(done.stdout)["job_id"]
    follower = subprocess.Popen(
        cluster.hosts.exec_argv("broker", [MEDIATASKS, "status", job_id, "--follow", "--json"]),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cluster.env,
        stdin=subprocess.DEVNULL)
    try:
        _wait_for("host A never encoded a chunk", lambda: cluster.encodes_on("a", job_id), 90)
        cluster.hosts.cut("a")
        cut_at = time.monotonic()
        received = re.findall(r"mediatasks\.encode_chunk\[([0-9a-f-]+)\] received",
                              cluster.log("a"))
        stranded = received[-1]  # A runs one task at a time: the chunk it was cut off with
        stdout, stderr = follower.communicate(timeout=120)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.communicate()
    ended_after = time.monotonic() - cut_at
    assert follower.returncode == 0, stderr
    assert json.loads(stdout.strip().splitlines()[-1])["status"] == "succeeded"

    # Every frame, each one the source's (crf 0 is lossless), and the stranded chunk run by B
    # once the visibility timeout gave it back.
    assert _packets(out) == 200
    assert frame_hashes(out) == frame_hashes(source)
    assert f"mediatasks.encode_chunk[{stranded}] received" in cluster.log("b")
    assert ended_after > VISIBILITY_TIMEOUT - 5, f"ended {ended_after:.0f}s after the cut"
    published = sha256(out)
    record = cluster.job(job_id)
    assert record["status"] == "succeeded" and record["frames_out"] == 200, record

    # A comes back: its stale task reaches the broker and the history, and may finish or be
    # dropped; it must not touch what was published.
    cluster.hosts.reconnect("a")
    back_at = time.monotonic()
    stale = re.compile(rf"encode_chunk\[{stranded}\] (succeeded|raised|retry|ignored|rejected)")
    while time.monotonic() - back_at < 60:
        if (stale.search(cluster.log("a"))
                and time.monotonic() - back_at > VISIBILITY_TIMEOUT + 5):
            break
        time.sleep(0.5)
    assert stale.search(cluster.log("a")), f"A's stale task never ended: {cluster.log('a')[-2000:]}"
    assert cluster.services["a"].alive(), cluster.services["a"].log_tail()
    assert sha256(out) == published
    assert sorted(p.name for p in out_dir.iterdir()) == ["out.mkv"]
    assert cluster.job(job_id)["status"] == "succeeded"
    assert not (cluster.root / "work" / job_id).exists(), "the job's work files came back"
    shown = cluster.mt("events", job_id, "--json")
    events = [json.loads(line) for line in shown.stdout.splitlines()]
    # Nor its history: A's late chunk reports are dropped, the job's log ends with its end.
    assert events[-1]["type"] == "job.succeeded", [e["type"] for e in events[-5:]]


def _packets(path: Path) -> int:
    done = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-count_packets",
                           "-show_entries", "stream=nb_read_packets", "-of", "csv=p=0",
                           str(path)], capture_output=True, text=True, check=True)
    return int(done.stdout.strip())
