"""A cluster to break: a redis-server with persistence on a free port and celery workers that can
be killed and started again, driven through the real CLI; RabbitRig puts the broker on a vhost of
its own on the local RabbitMQ instead. Used by test_reliability, test_rabbitmq and by
scripts/reliability.py, which reports the numbers in docs/reliability.md."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from mediatasks import runner
from mediatasks.cluster.local import worker_args

MEDIATASKS = str(Path(sys.executable).with_name("mediatasks"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_source(path: Path, *, seconds: int, size: str = "640x360", gop: int = 25,
                noise: bool = False) -> Path:
    """A clip of testsrc2; with ``noise``, grain that no lossless codec can squeeze."""
    vf = ["-vf", "noise=alls=60:allf=t"] if noise else []
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i",
                    f"testsrc2=size={size}:rate=25", *vf, "-t", str(seconds), "-c:v", "libx264",
                    "-preset", "ultrafast", "-g", str(gop), "-pix_fmt", "yuv420p", str(path)],
                   check=True)
    return path


def processes_with(text: str) -> list[tuple[int, int, str]]:
    """(pid, parent pid, command line) of every process whose command line holds ``text``."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        if text.encode() in cmd:
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            found.append((int(pid), ppid, cmd.replace(b"\0", b" ").decode(errors="replace")))
    return found


class Rig:
    """One broker, any number of workers, all children of this process."""

    def __init__(self, root: Path, *, visibility_timeout: int = 30, **env: str):
        self.root = root
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.work_dir = root / "work"
        self.env = dict(os.environ, MEDIATASKS_BROKER_URL=self.url,
                        MEDIATASKS_RESULT_BACKEND=self.url, MEDIATASKS_WORK_DIR=str(self.work_dir),
                        MEDIATASKS_DATABASE_URL=f"sqlite:///{root / 'history.sqlite'}",
                        MEDIATASKS_HARDWARE_SURVEY="false", MEDIATASKS_RETRY_BACKOFF="1",
                        MEDIATASKS_VISIBILITY_TIMEOUT=str(visibility_timeout),
                        # The rig's jobs read and write under its root (scripts use it too).
                        MEDIATASKS_ROOTS=os.environ.get("MEDIATASKS_ROOTS") or str(root.resolve()),
                        **env)
        self.redis: runner.Service | None = None
        self.workers: dict[str, runner.Service] = {}
        self.restarts = 0  # workers the supervisor started again after they exited
        self._supervised: dict[str, dict[str, str]] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._supervisor: threading.Thread | None = None

    # -- the broker ------------------------------------------------------------------------
    def start_redis(self) -> None:
        import redis

        d = self.root / "redis"
        d.mkdir(parents=True, exist_ok=True)
        self.redis = runner.spawn("redis", [
            "redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(d),
            "--save", "", "--appendonly", "yes", "--appendfsync", "always"],
            log_path=d / "redis.log")
        client = redis.Redis(port=self.port)
        try:
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                try:
                    if client.ping():
                        return
                except redis.ConnectionError:
                    time.sleep(0.05)
            raise RuntimeError(f"redis-server did not start: {self.redis.log_tail()}")
        finally:
            client.close()

    def stop_redis(self) -> None:
        """A clean shutdown: redis-server writes its append-only file and exits."""
        assert self.redis is not None
        self.redis.stop(grace=10)

    def crash_redis(self) -> None:
        """kill -9 of redis-server: what it had acknowledged is in its append-only file
        (``--appendfsync always``), nothing else is written on the way down."""
        assert self.redis is not None
        self.redis.proc.send_signal(signal.SIGKILL)
        self.redis.proc.wait(timeout=10)

    def flush_redis(self) -> None:
        """FLUSHALL: every queued task, unacknowledged delivery, chord counter and live key
        goes; the job history (SQLite) stays."""
        client = self.client()
        try:
            client.flushall()
        finally:
            client.close()

    def client(self) -> Any:
        import redis

        return redis.Redis(port=self.port)

    # -- workers ---------------------------------------------------------------------------
    def start_worker(self, name: str, *, concurrency: int = 2, supervise: bool = True,
                     **env: str) -> runner.Service:
        """A worker; ``supervise`` starts it again if it exits, as systemd or Compose's
        ``restart: unless-stopped`` do (kombu can crash a worker while it reconnects)."""
        argv = [*worker_args(concurrency, f"{name}-{uuid.uuid4().hex[:6]}"), "--loglevel", "INFO"]
        svc = runner.spawn(name, argv, log_path=self.root / f"{name}.log",
                           env={**self.env, **env}, cwd=self.root)
        self.workers[name] = svc
        if supervise:
            self._supervised[name] = {"concurrency": str(concurrency), **env}
            if self._supervisor is None:
                self._supervisor = threading.Thread(target=self._supervise, daemon=True)
                self._supervisor.start()
        return svc

    def _supervise(self) -> None:
        while not self._stop.wait(0.5):
            with self._lock:
                for name, opts in list(self._supervised.items()):
                    svc = self.workers.get(name)
                    if svc is not None and not svc.alive():
                        self.restarts += 1
                        env = {k: v for k, v in opts.items() if k != "concurrency"}
                        self.start_worker(name, concurrency=int(opts["concurrency"]), **env)

    def kill_worker(self, name: str) -> None:
        """kill -9 of the worker, its pool processes and their ffmpeg children at once (it is
        not started again)."""
        with self._lock:
            self._supervised.pop(name, None)
            svc = self.workers.pop(name)
        runner.kill_group(svc.proc, signal.SIGKILL)
        svc.proc.wait(timeout=10)

    def log(self, name: str) -> str:
        return (self.root / f"{name}.log").read_text(errors="replace")

    def stop(self) -> None:
        self._stop.set()
        self._supervised.clear()
        if self._supervisor is not None:
            self._supervisor.join(timeout=5)
        for svc in self.workers.values():
            svc.stop(grace=5, sig=signal.SIGKILL)
        self.workers.clear()
        if self.redis is not None:
            self.redis.stop(grace=5)

    def __enter__(self) -> Rig:
        self.start_redis()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the CLI ---------------------------------------------------------------------------
    def mt(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run([MEDIATASKS, *args], capture_output=True, text=True, env=self.env,
                              timeout=timeout, stdin=subprocess.DEVNULL)

    def submit(self, source: Path, output: Path, *args: str) -> str:
        done = self.mt("submit", str(source), "-o", str(output), "--json", *args)
        if done.returncode != 0:
            raise RuntimeError(done.stderr)
        job_id: str = json.loads(done.stdout)["job_id"]
        return job_id

    def follow(self, job_id: str) -> subprocess.Popen[str]:
        return subprocess.Popen([MEDIATASKS, "status", job_id, "--follow", "--json"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=self.env, stdin=subprocess.DEVNULL)

    def events(self, job_id: str) -> list[str]:
        """The types of the job's events, oldest first."""
        done = self.mt("events", job_id, "--json")
        if done.returncode != 0:
            raise RuntimeError(done.stderr)
        return [json.loads(line)["type"] for line in done.stdout.splitlines() if line.strip()]

    def job(self, job_id: str) -> dict[str, Any]:
        done = self.mt("jobs", "show", job_id, "--json")
        if done.returncode != 0:
            raise RuntimeError(done.stderr)
        record: dict[str, Any] = json.loads(done.stdout)
        return record

    def wait_job(self, job_id: str, timeout: float = 300) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            record = self.job(job_id)
            if record["status"] in {"succeeded", "failed", "cancelled"}:
                return record
            time.sleep(0.5)
        raise TimeoutError(f"job {job_id} did not end within {timeout:.0f}s")

    def running_chunk_encodes(self, job_id: str) -> list[tuple[int, int, str]]:
        """The ffmpeg processes encoding chunks of the job: (pid, pool process pid, argv)."""
        return [p for p in processes_with(job_id) if "chunks/" in p[2] and "ffmpeg" in p[2]
                and "-progress" in p[2]]

    def wait_for_stored(self, job_id: str, names: tuple[str, ...], timeout: float = 120) -> None:
        """Until the job's tasks of these names have stored their results (their rows say
        SUCCESS, written after the result and the chord's bookkeeping)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = {t["name"]: t["state"] for t in self.job(job_id).get("tasks", [])}
            if all(states.get(f"mediatasks.{n}") == "SUCCESS" for n in names):
                return
            time.sleep(0.1)
        raise TimeoutError(f"the {', '.join(names)} task(s) of job {job_id} did not end within "
                           f"{timeout:.0f}s")

    def wait_for_chunk_encodes(self, job_id: str, count: int = 1, timeout: float = 120) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.running_chunk_encodes(job_id)) >= count:
                return time.monotonic()
            time.sleep(0.05)
        raise TimeoutError(f"no chunk of job {job_id} started encoding within {timeout:.0f}s")


AMQP_HOST = os.environ.get("MEDIATASKS_TEST_AMQP_HOST", "127.0.0.1")
AMQP_PORT = 5672


class RabbitMQUnavailable(RuntimeError):
    """The local RabbitMQ (or rabbitmqctl) cannot be reached: start it, or skip what needs it."""


def rabbitmqctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, text=True,
                          timeout=60, check=True)


class RabbitRig(Rig):
    """The broker on a vhost of the rig's own on the local RabbitMQ (guest), deleted on exit;
    the result backend stays the rig's redis-server."""

    def __init__(self, root: Path, *, visibility_timeout: int = 30, **env: str):
        super().__init__(root, visibility_timeout=visibility_timeout, **env)
        self.vhost = f"mt-test-{uuid.uuid4().hex[:8]}"
        self.amqp_url = f"amqp://guest:guest@{AMQP_HOST}:{AMQP_PORT}/{self.vhost}"

    def __enter__(self) -> RabbitRig:
        try:
            socket.create_connection((AMQP_HOST, AMQP_PORT), timeout=2).close()
            rabbitmqctl("add_vhost", self.vhost)
        except (OSError, subprocess.SubprocessError) as exc:
            raise RabbitMQUnavailable(
                f"RabbitMQ is not reachable at {AMQP_HOST}:{AMQP_PORT} with rabbitmqctl "
                f"(start rabbitmq-server, or set MEDIATASKS_TEST_AMQP_HOST): {exc}") from exc
        try:
            rabbitmqctl("set_permissions", "-p", self.vhost, "guest", ".*", ".*", ".*")
            self.env["MEDIATASKS_BROKER_URL"] = self.amqp_url
            super().__enter__()
        except BaseException:
            rabbitmqctl("delete_vhost", self.vhost)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            super().__exit__(*exc)
        finally:
            rabbitmqctl("delete_vhost", self.vhost)
