"""The job service with in-memory storage and dispatch: the lifecycle, hold and approve, cancel,
retry, the batch rule. No broker, no ffmpeg."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from mediatasks.errors import InvalidOptions
from mediatasks.models import EncodeOptions, JobResult, JobSpec
from mediatasks.service import JobService
from mediatasks.service.lifecycle import (
    ACTIVE,
    STATUSES,
    TERMINAL,
    TRANSITIONS,
    IllegalTransition,
    batch_status,
    check_transition,
)
from mediatasks.service.memory import MemoryDispatcher, MemoryKeyValue, MemoryStore
from mediatasks.service.runs import result_of


def spec(job_id: str = "j1", **kw: object) -> JobSpec:
    return JobSpec(job_id=job_id, input="/in.mkv", output=f"/out-{job_id}.mkv",
                   options=EncodeOptions(video_codec="libx264"), **kw)  # type: ignore[arg-type]


@pytest.fixture
def parts() -> tuple[JobService, MemoryStore, MemoryDispatcher, MemoryKeyValue]:
    store, dispatcher, kv = MemoryStore(), MemoryDispatcher(), MemoryKeyValue()
    return JobService(store, kv=kv, dispatcher=dispatcher), store, dispatcher, kv


def types(store: MemoryStore, job_id: str = "j1") -> list[str]:
    return [e.type for e in store.events(job_id)]


def test_every_state_is_in_the_table_and_every_state_before_an_end_can_fail_or_be_cancelled(
) -> None:
    assert set(TRANSITIONS) == set(STATUSES)
    assert all(target in STATUSES for targets in TRANSITIONS.values() for target in targets)
    for state in ACTIVE:
        assert {"failed", "cancelled"} <= TRANSITIONS[state], state
    for state in TERMINAL:
        assert not TRANSITIONS[state] & ACTIVE - {"queued"}, state


def test_an_illegal_transition_is_an_error_naming_both_states() -> None:
    with pytest.raises(IllegalTransition, match="job j1 is succeeded and cannot become encoding"):
        check_transition("j1", "succeeded", "encoding")
    check_transition("j1", "failed", "queued")


def test_a_batch_state_comes_from_its_jobs_by_one_rule() -> None:
    assert batch_status(["queued", "queued"]) == "queued"
    assert batch_status(["queued", "encoding"]) == "running"
    assert batch_status(["awaiting_approval", "queued"]) == "awaiting_approval"
    assert batch_status(["succeeded", "kept"]) == "succeeded"
    assert batch_status(["succeeded", "failed", "cancelled"]) == "failed"
    assert batch_status(["succeeded", "rejected"]) == "cancelled"
    assert batch_status(["undone", "undone"]) == "undone"


def test_a_job_moves_through_its_steps_and_ends_once(parts: tuple) -> None:
    service, store, dispatcher, _ = parts
    service.submit(spec())
    assert dispatcher.sent == [("analyse", "j1", {"attempt": 0})]
    service.step_started("j1", "probe")
    assert service.planned(spec(), chunks=3, frames=75, queue="cpu") == "probing"
    assert dispatcher.sent[-1] == ("encode", "j1", {"chunks": 3, "queue": "cpu"})
    for step in ("encode_chunk", "encode_chunk", "encode_audio", "concat", "mux", "verify",
                 "publish"):
        service.step_started("j1", step)
    service.step_started("j1", "encode_chunk")  # a late duplicate moves nothing back
    service.finished(JobResult(job_id="j1", status="succeeded", output="/out.mkv", frames_in=75,
                               frames_out=75, chunks=3))
    service.failed("j1", "an echo")
    assert service.get("j1").status == "succeeded"
    assert types(store) == ["job.queued", "job.probing", "job.planned", "job.encoding",
                            "job.assembling", "job.verifying", "job.publishing", "job.succeeded"]


def test_a_chunk_report_after_the_end_is_dropped(parts: tuple) -> None:
    """A worker cut off mid-encode reports its chunk once it is back, after another worker
    has run the chunk again and the job has ended: the finished job's log gains nothing."""
    service, store, _, _ = parts
    service.submit(spec())
    service.step_started("j1", "probe")
    service.planned(spec(), chunks=1, frames=25, queue="cpu")
    service.step_started("j1", "encode_chunk")
    service.chunk_finished("j1", 0, frames=25, reused=False, seconds=1.0)
    for step in ("concat", "mux", "verify", "publish"):
        service.step_started("j1", step)
    service.finished(JobResult(job_id="j1", status="succeeded", output="/out.mkv", frames_in=25,
                               frames_out=25, chunks=1))
    assert not service.chunk_progress("j1", 0, frames=10, total=25, fps=5.0)
    service.chunk_finished("j1", 0, frames=25, reused=False, seconds=9.0)
    assert types(store).count("chunk.finished") == 1 and types(store)[-1] == "job.succeeded"


def test_a_held_job_waits_with_nothing_encoded_until_approved(parts: tuple) -> None:
    service, _store, dispatcher, _ = parts
    service.submit(spec(hold=True))
    service.step_started("j1", "probe")
    assert service.planned(spec(hold=True), chunks=2, frames=50, queue="cpu") == (
        "awaiting_approval")
    assert [s[0] for s in dispatcher.sent] == ["analyse"]
    record = service.approve("j1")
    assert record.status == "approved" and record.settings["hold"] is False
    assert dispatcher.sent[-1] == ("encode", "j1", {"chunks": 2, "queue": "cpu"})
    with pytest.raises(IllegalTransition, match="only a job awaiting approval"):
        service.approve("j1")


def test_a_rejected_job_ends_without_an_encode_and_its_work_dir_is_discarded(parts: tuple) -> None:
    service, _store, dispatcher, _ = parts
    service.submit(spec(hold=True))
    service.step_started("j1", "probe")
    service.planned(spec(hold=True), chunks=2, frames=50, queue="cpu")
    assert service.reject("j1").status == "rejected"
    assert [s[0] for s in dispatcher.sent] == ["analyse", "discard"]
    with pytest.raises(InvalidOptions):
        service.reject("j1")


def test_a_local_job_is_approved_without_being_sent_by_the_approver(parts: tuple) -> None:
    service, _, dispatcher, _ = parts
    service.submit(spec(hold=True, local=True))
    service.step_started("j1", "probe")
    service.planned(spec(hold=True, local=True), chunks=1, frames=25, queue="cpu")
    service.approve("j1")
    assert [s[0] for s in dispatcher.sent] == ["analyse"]  # the `run` holding the cluster sends


def test_cancel_raises_the_flag_and_ends_the_job_and_retry_starts_a_new_attempt(
        parts: tuple) -> None:
    service, _store, dispatcher, _kv = parts
    service.submit(spec())
    service.step_started("j1", "probe")
    assert service.cancel("j1") == ["j1"]
    assert service.live("j1").cancelled() and service.get("j1").status == "cancelled"
    with pytest.raises(InvalidOptions, match="already cancelled"):
        service.cancel("j1")
    retried = service.retry("j1")
    assert retried.attempt == 1 and not service.live("j1").cancelled()
    assert dispatcher.sent[-1] == ("analyse", "j1", {"attempt": 1})
    assert service.get("j1").status == "queued" and service.get("j1").error is None
    service.failed("j1", "from the cancelled attempt", attempt=0)  # too late: dropped
    assert service.get("j1").status == "queued"


def test_a_job_kept_by_the_size_guard_is_not_succeeded_and_says_why(parts: tuple) -> None:
    service, _, _, _ = parts
    service.submit(spec())
    for step in ("probe", "encode_chunk", "concat", "verify", "publish"):
        service.step_started("j1", step)
    service.finished(JobResult(job_id="j1", status="succeeded", output=None,
                               outcome="kept-source", note="the source was kept: larger"))
    record = service.get("j1")
    assert record.status == "kept" and record.note == "the source was kept: larger"
    assert result_of(service, "j1").outcome == "kept-source"


def test_a_batch_is_cancelled_job_by_job_and_followed_to_its_end(parts: tuple) -> None:
    service, _store, _, _ = parts
    for i in range(2):
        service.submit(spec(f"j{i}", batch_id="b1"))
    seen: list[str] = []

    def follow() -> None:
        for event in service.follow("b1", idle=0.05):
            if event is not None:
                seen.append(event.type)

    follower = threading.Thread(target=follow)
    follower.start()
    time.sleep(0.2)
    assert sorted(service.cancel("b1")) == ["j0", "j1"]
    follower.join(5)
    assert not follower.is_alive()
    assert seen.count("job.cancelled") == 2 and service.batch_status("b1") == "cancelled"


def test_an_unknown_id_and_a_bogus_status_are_refused_with_the_fix(parts: tuple) -> None:
    service, _, _, _ = parts
    with pytest.raises(InvalidOptions, match=r"no job nope .*mediatasks jobs list"):
        service.get("nope")
    with pytest.raises(InvalidOptions, match="no job or batch nope"):
        service.events("nope")
    with pytest.raises(InvalidOptions, match="not a job status"):
        service.list_jobs(status="bogus")


def test_importing_the_package_the_service_and_the_pure_steps_loads_no_celery_or_sqlalchemy(
) -> None:
    code = ("import sys, mediatasks, mediatasks.service, mediatasks.steps.plan, "
            "mediatasks.steps.probe, mediatasks.service.prepare; "
            "print(sorted(m for m in ('celery', 'kombu', 'sqlalchemy', 'redis') "
            "if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "[]"


def test_the_package_has_no_import_cycle() -> None:
    grimp = pytest.importorskip("grimp")
    graph = grimp.build_graph("mediatasks")
    cycles = []
    for module in sorted(graph.modules):
        for imported in graph.find_modules_directly_imported_by(module):
            if imported.startswith("mediatasks") and graph.chain_exists(
                    importer=imported, imported=module):
                cycles.append((module, imported))
    assert cycles == []


def test_the_two_phases_are_canvases_built_from_the_spec_without_a_broker() -> None:
    from mediatasks.cluster.app import app
    from mediatasks.cluster.canvas import analyse_workflow, encode_workflow

    analyse = analyse_workflow(app, spec())
    assert [t.task for t in analyse.tasks] == ["mediatasks.probe", "mediatasks.plan"]
    assert analyse.options["link_error"][0]["task"] == "mediatasks.cleanup"
    encode = encode_workflow(app, spec(), chunks=3, queue="gpu")
    chord = encode.tasks[0]
    header = [(t.task, t.options.get("queue"), t.kwargs.get("index")) for t in chord.tasks]
    assert header == [("mediatasks.encode_chunk", "gpu", 0), ("mediatasks.encode_chunk", "gpu", 1),
                      ("mediatasks.encode_chunk", "gpu", 2), ("mediatasks.encode_audio", None, None)]
    # Celery folds the steps after a chord into its body: concat, then the rest of the chain.
    assert [t.task for t in chord.body.tasks] == ["mediatasks.concat", "mediatasks.mux",
                                                  "mediatasks.verify", "mediatasks.publish"]
    remux = spec().model_copy(update={"options": EncodeOptions(video_codec="copy")})
    assert [t.task for t in encode_workflow(app, remux, chunks=3, queue="cpu").tasks[0].tasks] == [
        "mediatasks.encode_audio"]


def test_the_layering_contracts_hold() -> None:
    from pathlib import Path

    lint = Path(sys.executable).with_name("lint-imports")
    if not lint.exists():
        pytest.skip("import-linter is not installed: run 'make test', which installs it")
    done = subprocess.run([str(lint)], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stdout[-3000:]
