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
from redis.backoff import NoBackoff
from redis.retry import Retry

from mediatasks import runner
from mediatasks.errors import BrokerUnavailable, MediatasksError
from mediatasks.models import JobSpec
from mediatasks.profiles import QUEUES
from mediatasks.settings import Settings

# The io worker's processes: probe, plan, audio, concat, mux, verify and publish never wait
# behind a long encode, which runs in the encode worker.
IO_CONCURRENCY = 2


def default_workers() -> int:
    """Encodes at once for a local run when no schedule chose (a policy batch): half the cores,
    each ffmpeg threading itself."""
    return max(1, len(os.sched_getaffinity(0)) // 2)


def redis_args(redis_server: str, sock: Path, data_dir: Path) -> list[str]:
    return [redis_server, "--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700",
            "--save", "", "--appendonly", "no", "--dir", str(data_dir),
            "--maxmemory-policy", "noeviction", "--loglevel", "warning"]


def worker_args(concurrency: int, name: str, queues: tuple[str, ...] = QUEUES) -> list[str]:
    """A prefork worker that sends task events, without gossip, mingle or heartbeats (nobody
    else is on the private broker), fair scheduling, one message prefetched (celeryconfig):
    what ``celery -A mediatasks worker`` would run, started by ``mediatasks.cluster.boot``."""
    return [sys.executable, "-m", "mediatasks.cluster.boot", "-Q", ",".join(queues),
            "-c", str(concurrency), "-n", f"{name}@%h", "--loglevel", "WARNING"]


class LocalCluster:
    """``with LocalCluster(settings, workers=2) as c:`` -> c.broker_url, c.work_dir."""

    def __init__(self, settings: Settings, *, workers: int, work_dir: Path | None = None,
                 hardware: bool = True, roots: tuple[Path, ...] = (),
                 threads: int | None = None, encoders_later: bool = False):
        self.settings = settings
        self.workers = workers
        self.threads = threads
        # Start the encode worker only when start_encoders() is called (once the source is
        # probed and the schedule known); the broker and the io worker start at once.
        self.encoders_later = encoders_later
        self.tag = uuid.uuid4().hex[:6]
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
        self.worker: runner.Service | None = None  # the io worker
        self.encoder: runner.Service | None = None

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
        # Each ping is tried once: redis-py's own retries back off for seconds on the socket
        # that redis-server has not made yet (it answers within milliseconds).
        with redis.Redis(unix_socket_path=str(self.sock), retry=Retry(NoBackoff(), 0)) as client:
            while time.monotonic() < deadline:
                assert self.redis is not None
                if not self.redis.alive():
                    raise BrokerUnavailable(f"redis-server exited: {self.redis.log_tail(5)}")
                try:
                    if client.ping():
                        return
                except redis.RedisError:
                    time.sleep(0.01)
        raise BrokerUnavailable(f"redis-server did not start within {timeout:.0f}s")

    def start(self) -> LocalCluster:
        """redis-server, the io worker (probe, plan, audio, concat, mux, verify, publish) and,
        unless ``encoders_later``, the encode worker."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.redis = runner.spawn("redis", redis_args(self.settings.redis_server, self.sock,
                                                      self.tmp), log_path=self.tmp / "redis.log")
        self._wait_redis()
        self.worker = runner.spawn(
            "io worker", worker_args(IO_CONCURRENCY, f"local-io-{self.tag}", ("io",)),
            log_path=self.tmp / "worker-io.log", env=self.env(), cwd=self.tmp)
        if not self.encoders_later:
            self.start_encoders()
        return self

    def start_encoders(self, workers: int | None = None, threads: int | None = None) -> None:
        """The worker that encodes chunks (cpu and gpu queues): ``workers`` at once, each ffmpeg
        with ``threads`` threads (None: the encoder's default). Once; later calls do nothing."""
        if self.encoder is not None:
            return
        if workers is not None:
            self.workers = workers
        self.threads = threads if threads is not None else self.threads
        env = self.env()
        if self.threads is not None:
            env["MEDIATASKS_ENCODER_THREADS"] = str(self.threads)
        self.encoder = runner.spawn(
            "encode worker", worker_args(self.workers, f"local-enc-{self.tag}", ("cpu", "gpu")),
            log_path=self.tmp / "worker-encode.log", env=env, cwd=self.tmp)

    def services(self) -> list[runner.Service]:
        return [svc for svc in (self.redis, self.worker, self.encoder) if svc is not None]

    def check_alive(self) -> None:
        """Raise if a service died (a worker that cannot import, a crashed redis)."""
        for svc in self.services():
            if not svc.alive():
                raise MediatasksError(f"the local {svc.name} exited: "
                                      f"{' | '.join(svc.log_tail(3).splitlines())}")

    def stop(self) -> None:
        # The job is finished (or abandoned) and the private broker is thrown away with it:
        # nothing waits to be acked, so the workers' process groups are killed at once, both
        # before either is waited for (a warm shutdown takes a second and saves nothing).
        # ffmpeg children die with their parent.
        workers = [svc for svc in (self.encoder, self.worker) if svc is not None]
        for svc in workers:
            if svc.alive():
                runner.kill_group(svc.proc, signal.SIGKILL)
        for svc in workers:
            svc.stop(grace=5, sig=signal.SIGKILL)
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
