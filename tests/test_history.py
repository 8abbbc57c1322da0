"""The job history on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import postgres_database
from sqlalchemy import text

from mediatasks.errors import InvalidOptions
from mediatasks.history import History
from mediatasks.history.schema import SCHEMA_VERSION, current_version, migrate
from mediatasks.models import EncodeOptions, JobResult, JobSpec
from mediatasks.service import JobService


def spec(job_id: str = "j1", batch_id: str | None = None) -> JobSpec:
    return JobSpec(job_id=job_id, input="/in.mkv", output=f"/out-{job_id}.mkv", batch_id=batch_id,
                   options=EncodeOptions(video_codec="libx265", crf=24))


def test_the_schema_is_versioned_and_migrating_again_changes_nothing(history: History) -> None:
    assert migrate(history.engine) == SCHEMA_VERSION
    with history.engine.connect() as conn:
        assert current_version(conn) == SCHEMA_VERSION


def test_a_job_goes_through_its_states_with_its_tasks_and_an_event_for_each(
        history: History) -> None:
    service = JobService(history)
    service.submit(spec())
    assert history.get("j1") is not None and history.get("j1").status == "queued"  # type: ignore[union-attr]
    history.task_started("t1", "j1", name="mediatasks.probe", queue="io", worker="w1@host")
    service.step_started("j1", "probe")
    history.task_finished("t1", name="mediatasks.probe", state="SUCCESS")
    service.planned(spec(), chunks=1, frames=10, queue="cpu", duration=0.4)
    history.task_started("t2", "j1", name="mediatasks.encode_chunk", queue="cpu",
                         worker="w2@host")
    service.step_started("j1", "encode_chunk")
    history.task_retried("t2", name="mediatasks.encode_chunk", error="ffmpeg was killed")
    history.task_started("t2", "j1", name="mediatasks.encode_chunk", queue="cpu",
                         worker="w2@host")
    history.task_finished("t2", name="mediatasks.encode_chunk", state="SUCCESS")
    service.chunk_finished("j1", 0, frames=10, reused=False, seconds=0.2)
    history.task_started("t1", "j1", name="mediatasks.concat", queue="io", worker="w1@host")
    for step in ("concat", "mux", "verify", "publish"):
        service.step_started("j1", step)
    service.step_started("j1", "encode_chunk")  # a late redelivery moves nothing back
    service.finished(JobResult(job_id="j1", status="succeeded", output="/out.mkv", frames_in=10,
                               frames_out=10, chunks=1))
    service.failed("j1", "an echo of nothing")  # the first end wins
    job = history.get("j1")
    assert job is not None and job.status == "succeeded" and job.error is None
    assert job.frames_out == 10 and job.settings["options"]["video_codec"] == "libx265"
    assert [(t.name, t.queue, t.worker, t.state, t.retries) for t in job.tasks] == [
        ("mediatasks.probe", "io", "w1@host", "SUCCESS", 0),
        ("mediatasks.encode_chunk", "cpu", "w2@host", "SUCCESS", 1),
        ("mediatasks.concat", "io", "w1@host", "STARTED", 0)]
    assert all(t.started_at and t.finished_at for t in job.tasks[:2])
    assert [e.type for e in history.events("j1")] == [
        "job.queued", "job.probing", "job.planned", "job.encoding", "chunk.finished",
        "job.assembling", "job.verifying", "job.publishing", "job.succeeded"]
    seqs = [e.seq for e in history.events("j1")]
    assert seqs == sorted(seqs) and history.events("j1", after=seqs[3])[0].type == "chunk.finished"
    assert history.events("j1")[-1].data["frames_out"] == 10


def test_jobs_are_listed_newest_first_and_filtered_by_status(history: History) -> None:
    service = JobService(history)
    for i in range(3):
        service.submit(spec(f"j{i}"))
    service.step_started("j1", "probe")
    service.failed("j2", "bad media")
    assert [j.job_id for j in service.list_jobs()] == ["j2", "j1", "j0"]
    assert [j.job_id for j in service.list_jobs(status="running")] == ["j1"]
    assert [j.job_id for j in service.list_jobs(status="probing")] == ["j1"]
    assert service.list_jobs(status="failed")[0].error == "bad media"
    with pytest.raises(InvalidOptions, match="'bogus' is not a job status"):
        service.list_jobs(status="bogus")


def test_a_task_keeps_the_command_it_ran_until_a_later_run_runs_another(history: History) -> None:
    history.task_started("t", "j1", name="mediatasks.encode_chunk", queue="cpu", worker="w")
    history.task_retried("t", name="mediatasks.encode_chunk", error="disk full",
                         log=("ffmpeg -i a", "No space left on device"))
    history.task_started("t", "j1", name="mediatasks.encode_chunk", queue="cpu", worker="w")
    history.task_finished("t", name="mediatasks.encode_chunk", state="FAILURE", error="x")
    job = history.get("j1")
    assert job is not None
    (task,) = job.tasks
    assert (task.argv, task.log_tail, task.retries) == ("ffmpeg -i a", "No space left on device", 1)
    history.task_finished("t", name="mediatasks.encode_chunk", state="SUCCESS",
                          log=("ffmpeg -i b", ""))
    job = history.get("j1")
    assert job is not None and (job.tasks[0].argv, job.tasks[0].log_tail) == ("ffmpeg -i b", "")


def test_a_task_for_an_unknown_job_creates_the_job(history: History) -> None:
    history.task_started("t", "elsewhere", name="mediatasks.probe", queue="io", worker="w")
    job = history.get("elsewhere")
    assert job is not None and job.status == "queued"


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of a database with no tables yet."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'history.sqlite'}"
        return
    with postgres_database() as url:
        yield url


def test_a_version_1_database_is_upgraded_in_place_keeping_its_jobs(empty_database: str) -> None:
    from sqlalchemy import create_engine, inspect, text

    from mediatasks.history.schema import MIGRATIONS, schema_version

    engine = create_engine(empty_database.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as conn:  # what mediatasks 0.1 left behind
        schema_version.create(conn)
        conn.execute(schema_version.insert().values(version=1))
        MIGRATIONS[0](conn)
        conn.execute(text("INSERT INTO jobs (id, input, output, settings, status, created_at) "
                          "VALUES ('old', '/in.mkv', '/out.mkv', '{}', 'succeeded', CURRENT_TIMESTAMP)"))
    with engine.connect() as conn:
        assert "batch_id" not in {c["name"] for c in inspect(conn).get_columns("jobs")}
        assert not inspect(conn).has_table("operations")
    engine.dispose()
    history = History(empty_database)
    try:
        with history.engine.connect() as conn:
            assert current_version(conn) == SCHEMA_VERSION == 8
            assert inspect(conn).has_table("webhook_deliveries")
            assert inspect(conn).has_table("api_keys")
            assert "ix_jobs_batch_id" in {ix["name"] for ix in inspect(conn).get_indexes("jobs")}
            assert {"argv", "log_tail"} <= {c["name"] for c in inspect(conn).get_columns("tasks")}
            assert "ix_tasks_finished_at" in {ix["name"] for ix in inspect(conn).get_indexes("tasks")}
            assert "chunks_reused" in {c["name"] for c in inspect(conn).get_columns("jobs")}
        old = history.get("old")
        assert old is not None and old.status == "succeeded" and old.batch_id is None
        history.job_submitted(spec("new", "b1"))
        assert [j.job_id for j in history.jobs_in_batch("b1")] == ["new"]
        assert history.record_operation("new", "publish", dst="/lib/a.mkv", size=1) > 0
        assert history.transition("new", current="queued", new="awaiting_approval",
                                  event="job.awaiting_approval", data={},
                                  fields={"size_out": 5 * 2**30, "chunks_reused": 3})
        new = history.get("new")
        assert new is not None and new.size_out == 5 * 2**30 and new.chunks_reused == 3
        assert new.status == "awaiting_approval"  # the longest state name fits
    finally:
        history.close()


def test_jobs_are_grouped_by_batch(history: History) -> None:
    history.job_submitted(spec("j1", "b1"))
    history.job_submitted(spec("j2", "b1"))
    history.job_submitted(spec("j3"))
    assert [j.job_id for j in history.jobs_in_batch("b1")] == ["j1", "j2"]
    assert history.get("j1").batch_id == "b1" and history.get("j3").batch_id is None  # type: ignore[union-attr]
    assert history.jobs_in_batch("nope") == []


def test_operations_are_found_by_job_or_batch_in_order_and_marked_undone(history: History) -> None:
    history.job_submitted(spec("j2", "b1"))
    big = 5 * 1024**3  # files over 4 GiB, and mtimes in nanoseconds, need 64 bits
    mtime = 1_700_000_000_123_456_789
    first = history.record_operation("j1", "mkdir", batch_id="b1", dst="/lib/Show")
    second = history.record_operation("j1", "publish", batch_id="b1", src="/work/out.mkv",
                                      dst=Path("/lib/Show/a.mkv"), size=big, mtime_ns=mtime,
                                      sha256="ab" * 32)
    third = history.record_operation("j2", "delete", src="/in/b.mkv", size=3)  # in b1 by its job
    history.record_operation("j9", "delete", src="/in/other.mkv")
    assert first < second < third
    ops = history.operations("b1")
    assert [(op.id, op.job_id, op.seq, op.kind) for op in ops] == [
        (first, "j1", 1, "mkdir"), (second, "j1", 2, "publish"), (third, "j2", 1, "delete")]
    published = ops[1]
    assert (published.src, published.dst, published.size, published.mtime_ns, published.sha256) == (
        "/work/out.mkv", "/lib/Show/a.mkv", big, mtime, "ab" * 32)
    assert published.created_at.utcoffset() is not None and published.undone_at is None
    assert [op.id for op in history.operations("j1")] == [first, second]
    history.mark_undone(second)
    history.mark_undone(second)  # the first mark stays
    undone = history.operations("j1")[1].undone_at
    assert undone is not None and undone.utcoffset() is not None
    assert history.operations("j1")[1].undone_at == undone and history.operations("j1")[0].undone_at is None
    assert history.operations("nothing") == []


def test_processes_opening_a_new_history_at_once_all_get_it_migrated(empty_database: str,
                                                                      tmp_path: Path) -> None:
    """A worker and the CLI may create the same database at the same moment: none fails, and the
    database ends at the latest version with one version row."""
    url = empty_database
    go = tmp_path / "go"
    code = ("import sys, time\n"
            "from pathlib import Path\n"
            "from mediatasks.history import History\n"
            "Path(sys.argv[3]).touch()\n"
            "while not Path(sys.argv[2]).exists(): time.sleep(0.002)\n"
            "History(sys.argv[1]).close()\n")
    ready = [tmp_path / f"ready-{n}" for n in range(8)]
    procs = [subprocess.Popen([sys.executable, "-c", code, url, str(go), str(r)],
                              stderr=subprocess.PIPE, text=True) for r in ready]
    deadline = time.monotonic() + 120
    while not all(r.exists() for r in ready) and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()  # all of them open the new database now
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, errors
    history = History(url)
    try:
        with history.engine.connect() as conn:
            assert current_version(conn) == SCHEMA_VERSION
            assert conn.execute(text("SELECT COUNT(*) FROM schema_version")).scalar() == 1
    finally:
        history.close()
