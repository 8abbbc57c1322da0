"""The job history on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from mediatasks.history import History
from mediatasks.history.schema import SCHEMA_VERSION, current_version, migrate
from mediatasks.models import EncodeOptions, JobSpec

POSTGRES = os.environ.get("MEDIATASKS_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(params=["sqlite", "postgresql"])
def history(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[History]:
    if request.param == "sqlite":
        h = History(f"sqlite:///{tmp_path / 'history.sqlite'}")
        yield h
        h.close()
        return
    psycopg = pytest.importorskip("psycopg")
    name = f"mediatasks_test_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg.connect(POSTGRES, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"no PostgreSQL server at {POSTGRES} (set MEDIATASKS_TEST_POSTGRES): {exc}")
    admin.execute(f'CREATE DATABASE "{name}"')
    base = POSTGRES.rsplit("/", 1)[0]
    h = History(f"{base}/{name}")
    try:
        yield h
    finally:
        h.close()
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        admin.close()


def spec(job_id: str = "j1") -> JobSpec:
    return JobSpec(job_id=job_id, input="/in.mkv", output="/out.mkv",
                   options=EncodeOptions(video_codec="libx265", crf=24))


def test_the_schema_is_versioned_and_migrating_again_changes_nothing(history: History) -> None:
    assert migrate(history.engine) == SCHEMA_VERSION
    with history.engine.connect() as conn:
        assert current_version(conn) == SCHEMA_VERSION


def test_a_job_goes_from_queued_to_running_to_succeeded_with_its_tasks(history: History) -> None:
    history.job_submitted(spec())
    assert history.get("j1") is not None and history.get("j1").status == "queued"  # type: ignore[union-attr]
    history.task_started("t1", "j1", name="mediatasks.probe", queue="io", worker="w1@host")
    history.task_finished("t1", name="mediatasks.probe", state="SUCCESS")
    history.task_started("t2", "j1", name="mediatasks.encode_chunk", queue="cpu",
                         worker="w2@host")
    history.task_retried("t2", name="mediatasks.encode_chunk", error="ffmpeg was killed")
    history.task_started("t2", "j1", name="mediatasks.encode_chunk", queue="cpu",
                         worker="w2@host")
    history.task_finished("t2", name="mediatasks.encode_chunk", state="SUCCESS")
    history.task_started("t1", "j1", name="mediatasks.concat", queue="io", worker="w1@host")
    history.job_finished("j1", "succeeded", frames_in=10, frames_out=10, chunks=1)
    history.job_finished("j1", "failed", error="an echo of nothing")  # the first end wins
    job = history.get("j1")
    assert job is not None and job.status == "succeeded" and job.error is None
    assert job.frames_out == 10 and job.settings["options"]["video_codec"] == "libx265"
    assert [(t.name, t.queue, t.worker, t.state, t.retries) for t in job.tasks] == [
        ("mediatasks.probe", "io", "w1@host", "SUCCESS", 0),
        ("mediatasks.encode_chunk", "cpu", "w2@host", "SUCCESS", 1),
        # a replaced task's id goes on to the chord's body: a row of its own
        ("mediatasks.concat", "io", "w1@host", "STARTED", 0)]
    assert all(t.started_at and t.finished_at for t in job.tasks[:2])


def test_jobs_are_listed_newest_first_and_filtered_by_status(history: History) -> None:
    for i in range(3):
        history.job_submitted(spec(f"j{i}"))
    history.task_started("t", "j1", name="mediatasks.probe", queue="io", worker="w")
    history.job_finished("j2", "failed", error="bad media")
    assert [j.job_id for j in history.list()] == ["j2", "j1", "j0"]
    assert [j.job_id for j in history.list(status="running")] == ["j1"]
    assert history.list(status="failed")[0].error == "bad media"


def test_a_task_for_an_unknown_job_creates_the_job(history: History) -> None:
    history.task_started("t", "elsewhere", name="mediatasks.probe", queue="io", worker="w")
    job = history.get("elsewhere")
    assert job is not None and job.status == "running"
