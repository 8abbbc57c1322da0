"""Fixtures: clips made with lavfi, a private redis-server on a free port, real celery workers."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from mediatasks import runner
from mediatasks.models import EncodeOptions, JobSpec

if TYPE_CHECKING:
    from mediatasks.history import History

ROOT = Path(__file__).resolve().parents[1]
CORPUS = Path(os.environ.get("MEDIATASKS_CORPUS", ROOT.parent / "shared" / "corpus"))
# The folders the tests' workers may read and write: temp dirs and the corpus.
os.environ["MEDIATASKS_ROOTS"] = f"{tempfile.gettempdir()}:{CORPUS.resolve()}"
# The tests never touch the user's own job history or work folders: `run` and the CLI keep their
# default SQLite history and work directory in a state and a cache folder of this test run.
_HOME = Path(tempfile.mkdtemp(prefix="mediatasks-tests-"))
os.environ["XDG_STATE_HOME"] = str(_HOME / "state")
os.environ["XDG_CACHE_HOME"] = str(_HOME / "cache")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(_HOME, ignore_errors=True)


@pytest.fixture(autouse=True)
def _commands_recorded_by_one_test_only() -> Iterator[None]:
    """A test that asked the runner to record its commands leaves the next one none."""
    yield
    runner.stop_recording()


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True)


def frame_hashes(path: Path, stream: str = "v:0") -> list[str]:
    """MD5 of every decoded frame, in output order (no frame dropped or duplicated)."""
    done = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-map",
                           f"0:{stream}", "-fps_mode", "passthrough", "-f", "framemd5", "-"],
                          check=True, capture_output=True, text=True)
    return [line.rsplit(",", 1)[1].strip() for line in done.stdout.splitlines()
            if line and not line.startswith("#")]


def frame_times(path: Path) -> list[float]:
    """Every video frame's presentation time in seconds, relative to the first, sorted."""
    done = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                           "packet=pts_time", "-of", "csv=p=0", str(path)],
                          check=True, capture_output=True, text=True)
    times = sorted(float(x) for x in done.stdout.split() if x not in {"", "N/A"})
    return [t - times[0] for t in times]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``path`` (a file system of its own that can fill up);
    skips the test where mounting is not allowed (not root)."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Small clips covering what chunking must get right."""
    d = tmp_path_factory.mktemp("clips")
    out = {
        "cfr": d / "cfr_bframes.mkv",
        "vfr": d / "vfr.mkv",
        "odd": d / "odd size.mkv",
        "rich": d / "rich.mkv",
        "long": d / "long.mp4",
    }
    # CFR 30000/1001 with B-frames and a keyframe every 24 frames.
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=192x108:rate=30000/1001", "-t", "4",
           "-c:v", "libx264", "-preset", "ultrafast", "-bf", "3", "-g", "24", "-pix_fmt",
           "yuv420p", "-x264-params", "b-adapt=0:bframes=3", str(out["cfr"]))
    # Real VFR: 30, 24 and 60 fps sections joined, timestamps kept as they are.
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=192x108:rate=30:duration=1.5",
           "-f", "lavfi", "-i", "testsrc2=size=192x108:rate=24:duration=1.5",
           "-f", "lavfi", "-i", "testsrc2=size=192x108:rate=60:duration=1.5",
           "-filter_complex", "[0:v][1:v][2:v]concat=n=3:v=1[v]", "-map", "[v]",
           "-fps_mode", "passthrough", "-c:v", "libx264", "-preset", "ultrafast", "-bf", "2",
           "-g", "20", str(out["vfr"]))
    # Odd width and height (4:4:4 so the source codec accepts them; testsrc keeps odd sizes).
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=173x99:rate=25", "-t", "3", "-c:v", "libx264",
           "-preset", "ultrafast", "-pix_fmt", "yuv444p", "-g", "15", str(out["odd"]))
    # Two audio tracks, subtitles, chapters, metadata.
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_clip.py"), str(out["rich"]),
                    "--seconds", "4", "--size", "160x90"], check=True)
    # Long enough for a chord of many chunks.
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=128x72:rate=25", "-t", "8", "-c:v", "libx264",
           "-preset", "ultrafast", "-g", "12", "-pix_fmt", "yuv420p", str(out["long"]))
    return out


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private redis-server on a free port (never the shared 6379)."""
    svc, url = start_redis(tmp_path_factory.mktemp("redis"))
    try:
        yield url
    finally:
        svc.stop()


def start_redis(d: Path) -> tuple[runner.Service, str]:
    """A redis-server on a free port of 127.0.0.1, answering PING; its files in ``d``."""
    import redis

    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed: run 'make test', which installs it")
    port = free_port()
    svc = runner.spawn("redis", ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                                 "--save", "", "--appendonly", "no", "--dir", str(d)],
                       log_path=d / "redis.log")
    with redis.Redis(port=port) as client:
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
    return svc, f"redis://127.0.0.1:{port}/0"


@pytest.fixture(scope="session")
def work_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("work")


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The job history the test workers write (SQLite; PostgreSQL is tested in test_history)."""
    return f"sqlite:///{tmp_path_factory.mktemp('history') / 'history.sqlite'}"


@pytest.fixture(scope="session")
def cluster(redis_url: str, work_dir: Path, database_url: str,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Two real `celery worker` processes on all queues, and this process's app pointed at them."""
    from mediatasks.cluster.app import app
    from mediatasks.cluster.local import worker_args

    logs = tmp_path_factory.mktemp("workers")
    env = dict(os.environ, MEDIATASKS_BROKER_URL=redis_url, MEDIATASKS_RESULT_BACKEND=redis_url,
               MEDIATASKS_WORK_DIR=str(work_dir), MEDIATASKS_RETRY_BACKOFF="1",
               MEDIATASKS_DATABASE_URL=database_url, MEDIATASKS_HARDWARE_SURVEY="false",
               # Webhook retries a fraction of a second apart (tests/test_webhooks.py).
               MEDIATASKS_WEBHOOK_BACKOFF="0.2")
    app.conf.update(broker_url=redis_url, result_backend=redis_url)
    os.environ["MEDIATASKS_DATABASE_URL"] = database_url
    worker = runner.spawn("worker", worker_args(2, f"test-{uuid.uuid4().hex[:6]}"),
                          log_path=logs / "worker.log", env=env, cwd=logs)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if not worker.alive():
            pytest.fail(f"worker exited: {worker.log_tail()}")
        if app.control.ping(timeout=0.5):
            break
    else:
        pytest.fail(f"worker did not answer: {worker.log_tail()}")
    try:
        yield app
    finally:
        worker.stop(grace=10)


def submit(source: Path, output: Path, **options: Any) -> JobSpec:
    overwrite = bool(options.pop("overwrite", False))
    return JobSpec(job_id=uuid.uuid4().hex, input=str(source), output=str(output),
                   options=EncodeOptions(**options), overwrite=overwrite)


def job_service(cluster: Any) -> Any:
    """The job service as the CLI builds it, over the test cluster and its history."""
    from mediatasks.cluster.services import service_for

    return service_for(cluster, os.environ["MEDIATASKS_DATABASE_URL"])


def run_job(cluster: Any, spec: JobSpec, timeout: float = 240) -> dict[str, Any]:
    """Submit a job through the service to the test cluster, follow its events to its end and
    return its result (raise its one-line error if it did not succeed)."""
    from mediatasks.errors import JobFailed
    from mediatasks.service.runs import result_of

    service = job_service(cluster)
    service.submit(spec)
    deadline = time.monotonic() + timeout
    for _ in service.follow(spec.job_id):
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {spec.job_id} did not end within {timeout:.0f}s")
    result = result_of(service, spec.job_id)
    if result.status != "succeeded":
        raise JobFailed(result.error or result.status)
    return result.model_dump(mode="json")


# The job history on SQLite and on the PostgreSQL server of the machine (a database of its own).
POSTGRES = os.environ.get("MEDIATASKS_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """The URL of a new, empty database on the test server, dropped afterwards (skips without a
    server)."""
    psycopg = pytest.importorskip("psycopg")
    name = f"mediatasks_test_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg.connect(POSTGRES, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"no PostgreSQL server at {POSTGRES} (set MEDIATASKS_TEST_POSTGRES): {exc}")
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{POSTGRES.rsplit('/', 1)[0]}/{name}"
    finally:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def history(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[History]:
    from mediatasks.history import History

    if request.param == "sqlite":
        h = History(f"sqlite:///{tmp_path / 'history.sqlite'}")
        yield h
        h.close()
        return
    with postgres_database() as url:
        h = History(url)
        try:
            yield h
        finally:
            h.close()
