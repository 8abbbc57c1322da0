"""A private cluster for one command: redis-server on a unix socket in a temp directory and local
``celery worker`` processes for every queue. The same canvas a shared cluster runs."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import redis

from mediatasks import runner
from mediatasks.errors import BrokerUnavailable, MediatasksError
from mediatasks.models import JobSpec
from mediatasks.profiles import QUEUES
from mediatasks.settings import Settings


def default_workers() -> int:
    """Worker processes for a local run: half the cores (each ffmpeg threads itself), at least 2
    so the audio and file tasks never wait behind a long encode."""
    return max(2, (os.cpu_count() or 2) // 2)


def redis_args(redis_server: str, sock: Path, data_dir: Path) -> list[str]:
    return [redis_server, "--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700",
            "--save", "", "--appendonly", "no", "--dir", str(data_dir),
            "--maxmemory-policy", "noeviction", "--loglevel", "warning"]


def worker_args(concurrency: int, name: str, queues: tuple[str, ...] = QUEUES) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "mediatasks", "worker", "-Q", ",".join(queues),
            "-c", str(concurrency), "-n", f"{name}@%h", "-P", "prefork", "-E",
            "--loglevel", "WARNING", "--without-gossip", "--without-mingle", "--without-heartbeat"]


class LocalCluster:
    """``with LocalCluster(settings, workers=2) as c:`` -> c.broker_url, c.work_dir."""

    def __init__(self, settings: Settings, *, workers: int, work_dir: Path | None = None,
                 hardware: bool = True, roots: tuple[Path, ...] = ()):
        self.settings = settings
        self.workers = workers
        self._work_dir = work_dir
        self.tmp = Path(tempfile.mkdtemp(prefix="mt-"))
        if len(str(self.tmp / "redis.sock")) > 100:  # unix socket paths are limited to 108 bytes
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = Path(tempfile.mkdtemp(prefix="mt-", dir="/tmp"))
        self.sock = self.tmp / "redis.sock"
        self.broker_url = f"redis+socket://{self.sock}"
        self.work_dir = work_dir or self.tmp / "work"
        self.hardware = hardware
        # The folders of the run's sources and outputs: its workers touch nothing else.
        self.roots = tuple(dict.fromkeys(str(r.resolve()) for r in roots))
        self.redis: runner.Service | None = None
        self.worker: runner.Service | None = None

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(MEDIATASKS_BROKER_URL=self.broker_url, MEDIATASKS_RESULT_BACKEND=self.broker_url,
                   MEDIATASKS_WORK_DIR=str(self.work_dir),
                   # The worker's own temp files (billiard's pymp-*) go with the cluster.
                   TMPDIR=str(self.tmp),
                   # The hardware survey costs seconds; only a hardware encode needs it.
                   MEDIATASKS_HARDWARE_SURVEY="true" if self.hardware else "false",
                   MEDIATASKS_ROOTS=":".join(self.roots) or "/nonexistent")
        return env

    def _wait_redis(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        with redis.Redis(unix_socket_path=str(self.sock)) as client:
            while time.monotonic() < deadline:
                assert self.redis is not None
                if not self.redis.alive():
                    raise BrokerUnavailable(f"redis-server exited: {self.redis.log_tail(5)}")
                try:
                    if client.ping():
                        return
                except redis.RedisError:
                    time.sleep(0.05)
        raise BrokerUnavailable(f"redis-server did not start within {timeout:.0f}s")

    def start(self) -> LocalCluster:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.redis = runner.spawn("redis", redis_args(self.settings.redis_server, self.sock,
                                                      self.tmp), log_path=self.tmp / "redis.log")
        self._wait_redis()
        self.worker = runner.spawn(
            "worker", worker_args(self.workers, f"local-{uuid.uuid4().hex[:6]}"),
            log_path=self.tmp / "worker.log", env=self.env(), cwd=self.tmp)
        return self

    def check_alive(self) -> None:
        """Raise if a service died (a worker that cannot import, a crashed redis)."""
        for svc in (self.redis, self.worker):
            if svc is not None and not svc.alive():
                raise MediatasksError(f"the local {svc.name} exited: "
                                      f"{' | '.join(svc.log_tail(3).splitlines())}")

    def stop(self) -> None:
        if self.worker is not None:
            # The job is finished (or abandoned) and the private broker is thrown away with it:
            # nothing waits to be acked, so the worker's process group is killed at once (a warm
            # shutdown takes a second and saves nothing). ffmpeg children die with their parent.
            self.worker.stop(grace=5, sig=signal.SIGKILL)
        if self.redis is not None:
            self.redis.stop(grace=5)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


# -- resuming a run that died -----------------------------------------------------------------
# `mediatasks run` keeps its job directory in MEDIATASKS_WORK_DIR and holds a lock on it while it
# runs. A directory whose lock nobody holds belongs to a run that died (killed, machine reset):
# the next run of the same source, output and options takes over its verified chunks, and the
# encode step reuses every one whose fingerprint still matches.

RUN_LOCK = ".run.lock"


@contextlib.contextmanager
def run_lock(job_dir: Path) -> Iterator[None]:
    """Hold the job directory's lock while this process runs the job."""
    job_dir.mkdir(parents=True, exist_ok=True)
    with open(job_dir / RUN_LOCK, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _abandoned(job_dir: Path) -> bool:
    """A job directory of a `mediatasks run` that is not running any more (cluster jobs have no
    lock file and are never taken)."""
    lock = job_dir / RUN_LOCK
    if not lock.exists():
        return False
    try:
        with open(lock) as f:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def abandoned_runs(work_dir: Path) -> list[str]:
    """The job ids of `mediatasks run`s that died: their directory's lock is held by nobody."""
    if not work_dir.is_dir():
        return []
    return sorted(d.name for d in work_dir.iterdir() if d.is_dir() and _abandoned(d))


def adopt_abandoned_chunks(work_dir: Path, spec: JobSpec) -> int:
    """Move the verified chunks of dead runs of the same job (source, output, options) into
    ``spec``'s job directory, remove those directories, and return how many chunks came over."""
    from mediatasks.steps.encode import verified_chunks
    from mediatasks.steps.plan import load_plan

    target = work_dir / spec.job_id / "chunks"
    moved = 0
    for plan_file in sorted(work_dir.glob("*/plan.json")):
        old = plan_file.parent
        if old.name == spec.job_id or not _abandoned(old):
            continue
        try:
            was = load_plan(old).spec
        except (OSError, ValueError):
            continue
        if (was.input, was.output, was.options) != (spec.input, spec.output, spec.options):
            continue
        target.mkdir(parents=True, exist_ok=True)
        for chunk, sidecar in verified_chunks(old):
            os.replace(chunk, target / chunk.name)
            os.replace(sidecar, target / sidecar.name)
            moved += 1
        shutil.rmtree(old, ignore_errors=True)
    return moved
