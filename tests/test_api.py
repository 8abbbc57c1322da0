"""The HTTP API on a real uvicorn, a real redis-server and (marked cluster) real celery workers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import free_port
from test_webhooks import Receiver, wait_until

from mediatasks import runner

MEDIATASKS = str(Path(sys.executable).with_name("mediatasks"))


class Api:
    """A running `mediatasks api` and what it serves."""

    def __init__(self, url: str, env: dict[str, str], roots: tuple[Path, Path], log: Path):
        self.url = url
        self.env = env
        self.inbox, self.outbox = roots
        self.log = log

    def key(self, *scopes: str, name: str = "test") -> str:
        """A new API key made with the CLI, which prints it once."""
        done = subprocess.run([MEDIATASKS, "keys", "create", "--name", name,
                               *[a for s in scopes for a in ("--scope", s)]],
                              capture_output=True, text=True, env=self.env, check=True)
        return done.stdout.strip()

    def client(self, key: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


def start_api(tmp: Path, redis_url: str, database_url: str, work_dir: Path,
              **extra: str) -> tuple[runner.Service, Api]:
    inbox, outbox = tmp / "in", tmp / "out"
    inbox.mkdir(parents=True, exist_ok=True)
    outbox.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, MEDIATASKS_BROKER_URL=redis_url, MEDIATASKS_RESULT_BACKEND=redis_url,
               MEDIATASKS_DATABASE_URL=database_url, MEDIATASKS_WORK_DIR=str(work_dir),
               MEDIATASKS_ROOTS=f"{inbox}:{outbox}",
               MEDIATASKS_API_RATE_LIMIT="100000/minute")
    env.update(extra)
    port = free_port()
    log = tmp / "api.log"
    svc = runner.spawn("api", [MEDIATASKS, "api", "--port", str(port)], log_path=log, env=env)
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        if not svc.alive():
            pytest.fail(f"the API exited: {svc.log_tail()}")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.1)
    else:
        pytest.fail(f"the API did not answer: {svc.log_tail()}")
    return svc, Api(url, env, (inbox, outbox), log)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, redis_url: str, database_url: str,
        work_dir: Path) -> Iterator[Api]:
    svc, served = start_api(tmp_path_factory.mktemp("api"), redis_url, database_url, work_dir)
    try:
        yield served
    finally:
        svc.stop()


@pytest.fixture(scope="module")
def keys(api: Api) -> dict[str, str]:
    return {scope: api.key(scope, name=f"{scope}-client") for scope in ("read", "submit", "admin")}


@pytest.fixture(scope="module")
def source(api: Api, clips: dict[str, Path]) -> Path:
    target = api.inbox / "show.mkv"
    target.write_bytes(clips["cfr"].read_bytes())
    return target


def is_problem(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = r.json()
    assert body["status"] == status and body["title"] and body["detail"]
    assert "Traceback" not in r.text and "\n" not in body["detail"]
    return body


# -- keys and scopes -----------------------------------------------------------------------------

def test_healthz_needs_no_key_and_everything_else_does(api: Api) -> None:
    with api.client() as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        for method, path in [("GET", "/v1/jobs"), ("POST", "/v1/jobs"), ("GET", "/readyz"),
                             ("GET", "/metrics"), ("GET", "/v1/encoders"),
                             ("GET", "/v1/jobs/" + "0" * 32 + "/events")]:
            r = c.request(method, path, json={} if method == "POST" else None)
            assert is_problem(r, 401)["type"].endswith("not-authenticated"), path
            assert r.headers["www-authenticate"] == "Bearer"


def test_a_wrong_or_malformed_key_is_401(api: Api, keys: dict[str, str]) -> None:
    real = keys["read"]
    for bad in [real[:-2] + ("xx" if not real.endswith("xx") else "yy"), "mt_nosuchid_secret",
                "not-a-key", real + "0"]:
        with api.client(bad) as c:
            is_problem(c.get("/v1/jobs"), 401)


def test_keys_are_stored_hashed_and_listed_without_the_secret(api: Api, keys: dict[str, str]
                                                              ) -> None:
    import sqlite3

    secret = keys["read"].split("_", 2)[2]
    db = api.env["MEDIATASKS_DATABASE_URL"].removeprefix("sqlite:///")
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT * FROM api_keys").fetchall()
    assert rows and all(secret not in json.dumps(row, default=str) for row in rows)
    listed = subprocess.run([MEDIATASKS, "keys", "list", "--json"], capture_output=True,
                            text=True, env=api.env, check=True).stdout
    assert secret not in listed
    mine = [json.loads(line) for line in listed.splitlines()
            if json.loads(line)["name"] == "read-client"]
    assert mine[0]["scopes"] == ["read"] and mine[0]["prefix"] == "mt_" + mine[0]["id"]
    assert secret not in api.log.read_text()


def test_a_missing_scope_is_403(api: Api, keys: dict[str, str], source: Path) -> None:
    body = {"input": str(source), "output": str(api.outbox / "scoped.mkv")}
    with api.client(keys["read"]) as c:
        assert c.get("/v1/jobs").status_code == 200
        r = c.post("/v1/jobs", json=body)
        assert "submit" in is_problem(r, 403)["detail"]
    with api.client(keys["submit"]) as c:
        r = c.post("/v1/jobs/" + "0" * 32 + "/approve")
        assert "admin" in is_problem(r, 403)["detail"]


def test_a_revoked_key_is_refused_at_once(api: Api) -> None:
    key = api.key("read", name="soon-revoked")
    with api.client(key) as c:
        assert c.get("/v1/jobs").status_code == 200
        key_id = key.split("_")[1]
        subprocess.run([MEDIATASKS, "keys", "revoke", key_id], env=api.env, check=True,
                       capture_output=True)
        assert "revoked" in is_problem(c.get("/v1/jobs"), 401)["detail"]


def test_the_rate_limit_answers_429_with_retry_after(tmp_path: Path, redis_url: str,
                                                      database_url: str, work_dir: Path) -> None:
    svc, limited = start_api(tmp_path, redis_url, database_url, work_dir,
                             MEDIATASKS_API_RATE_LIMIT="3/minute")
    try:
        key, other = limited.key("read"), limited.key("read")
        with limited.client(key) as c:
            assert [c.get("/v1/jobs").status_code for _ in range(3)] == [200] * 3
            r = c.get("/v1/jobs")
            is_problem(r, 429)
            assert 1 <= int(r.headers["retry-after"]) <= 60
        with limited.client(other) as c:  # per key
            assert c.get("/v1/jobs").status_code == 200
    finally:
        svc.stop()


# -- submit, idempotency, listing ----------------------------------------------------------------

def test_submit_answers_202_with_the_queued_job(api: Api, keys: dict[str, str], source: Path) -> None:
    body = {"input": str(source), "output": str(api.outbox / "submitted.mkv"),
            "video_codec": "libx264", "crf": 30, "webhook_url": "https://hooks.example/mt"}
    with api.client(keys["submit"]) as c:
        r = c.post("/v1/jobs", json=body)
        assert r.status_code == 202, r.text
        job = r.json()
        assert job["status"] == "queued" and job["input"] == str(source)
        assert r.headers["location"] == f"/v1/jobs/{job['id']}"
        shown = c.get(f"/v1/jobs/{job['id']}").json()
        assert shown["id"] == job["id"] and shown["progress"]["percent"] == 0.0
        events = c.get(f"/v1/jobs/{job['id']}/events").json()["events"]
        assert [e["type"] for e in events] == ["job.queued"]


def test_the_same_idempotency_key_and_body_return_the_first_job(
        api: Api, keys: dict[str, str], source: Path) -> None:
    body = {"input": str(source), "output": str(api.outbox / "idem.mkv"), "crf": 24}
    headers = {"Idempotency-Key": "ep-1234"}
    with api.client(keys["submit"]) as c:
        first = c.post("/v1/jobs", json=body, headers=headers)
        assert first.status_code == 202, first.text
        # The same body spelled otherwise is the same body.
        again = c.post("/v1/jobs", content=json.dumps(dict(reversed(body.items())), indent=2),
                       headers={**headers, "Content-Type": "application/json"})
        assert again.status_code == 202 and again.json()["id"] == first.json()["id"]
        assert again.headers["idempotent-replayed"] == "true"
        listed = c.get("/v1/jobs", params={"limit": 500}).json()["jobs"]
        assert [j["id"] for j in listed if j["output"] == body["output"]] == [first.json()["id"]]
        other = c.post("/v1/jobs", json={**body, "crf": 25}, headers=headers)
        assert "Idempotency-Key" in is_problem(other, 409)["detail"]
    with api.client(keys["admin"]) as c:  # another key's Idempotency-Keys are its own
        r = c.post("/v1/jobs", json={**body, "output": str(api.outbox / "idem2.mkv")},
                   headers=headers)
        assert r.status_code == 202 and r.json()["id"] != first.json()["id"]


def test_jobs_are_listed_newest_first_a_page_at_a_time(api: Api, keys: dict[str, str],
                                                       source: Path) -> None:
    with api.client(keys["submit"]) as c:
        made = [c.post("/v1/jobs", json={"input": str(source),
                                         "output": str(api.outbox / f"page{i}.mkv")}).json()["id"]
                for i in range(3)]
        seen: list[str] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 2, "status": "queued"}
            if cursor:
                params["cursor"] = cursor
            page = c.get("/v1/jobs", params=params).json()
            assert len(page["jobs"]) <= 2
            seen += [j["id"] for j in page["jobs"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert len(seen) == len(set(seen))
        assert [j for j in seen if j in made] == list(reversed(made))
        is_problem(c.get("/v1/jobs", params={"status": "nonsense"}), 400)
        is_problem(c.get("/v1/jobs", params={"cursor": "!!"}), 400)


# -- path rules and bad requests -----------------------------------------------------------------

@pytest.mark.parametrize(("field", "value", "rule"), [
    ("input", "{inbox}/../../etc/passwd", "no-dotdot"),
    ("input", "/etc/passwd", "under-roots"),
    ("output", "/tmp/elsewhere.mkv", "under-roots"),
    ("input", "http://example.com/a.mkv", "no-protocol"),
    ("input", "file:{inbox}/show.mkv", "no-protocol"),
    ("input", "concat:{inbox}/show.mkv|{inbox}/show.mkv", "no-protocol"),
    ("input", "subfile,,start,0,end,0,,:{inbox}/show.mkv", "no-protocol"),
    ("input", "{inbox}/list.m3u8", "no-playlist"),
    ("input", "{inbox}/list.ffconcat", "no-playlist"),
    ("input", "show.mkv", "absolute"),
    ("input", "{inbox}/escape.mkv", "under-roots"),  # a symlink out of the roots
])
def test_paths_that_break_a_rule_are_refused_with_403_naming_it(
        api: Api, keys: dict[str, str], source: Path, field: str, value: str, rule: str) -> None:
    escape = api.inbox / "escape.mkv"
    if not escape.is_symlink():
        outside = api.inbox.parent / "outside.mkv"
        outside.write_bytes(source.read_bytes())
        escape.symlink_to(outside)
    body = {"input": str(source), "output": str(api.outbox / "refused.mkv")}
    body[field] = value.format(inbox=api.inbox)
    with api.client(keys["submit"]) as c:
        problem = is_problem(c.post("/v1/jobs", json=body), 403)
        assert problem["field"] == field and problem["rule"] == rule
        assert problem["type"].endswith("path-refused")
        if field == "input":
            probe = is_problem(c.post("/v1/probe", json={"input": body["input"]}), 403)
            assert probe["rule"] == rule


def test_bad_requests_are_problems_naming_the_field(api: Api, keys: dict[str, str],
                                                    source: Path) -> None:
    out = str(api.outbox / "bad.mkv")
    with api.client(keys["submit"]) as c:
        r = is_problem(c.post("/v1/jobs", json={"input": str(source)}), 422)
        assert r["field"] == "output"
        r = is_problem(c.post("/v1/jobs", json={"input": str(source), "output": out, "crf": -1}), 422)
        assert r["field"] == "crf"
        r = is_problem(c.post("/v1/jobs", json={"input": str(source), "output": out, "nope": 1}), 422)
        assert r["field"] == "nope"
        r = is_problem(c.post("/v1/jobs", json={"input": str(source), "output": out,
                                                "video_opt": ["stats=/etc/x"]}), 400)
        assert r["field"] == "video_opt" and "--video-opt stats" in r["detail"]
        r = is_problem(c.post("/v1/jobs", json={"input": str(api.inbox / "missing.mkv"),
                                                "output": out}), 422)
        assert r["field"] == "input" and "no such file" in r["detail"]
        (api.outbox / "exists.mkv").write_bytes(b"x")
        r = is_problem(c.post("/v1/jobs", json={"input": str(source),
                                                "output": str(api.outbox / "exists.mkv")}), 409)
        assert "--overwrite" in r["detail"]
        r = is_problem(c.post("/v1/jobs", content=b"{", headers={"Content-Type": "application/json"}), 422)
        is_problem(c.get("/v1/jobs/" + "f" * 32), 404)
        is_problem(c.post("/v1/jobs", content=b"x" * 2_000_000,
                          headers={"Content-Type": "application/json"}), 413)


def test_a_policy_batch_is_checked_and_submitted(api: Api, keys: dict[str, str], source: Path
                                                 ) -> None:
    with api.client(keys["submit"]) as c:
        r = is_problem(c.post("/v1/batches", json={"policy": {"video": {"bogus": 1}},
                                                   "inputs": [str(source)]}), 400)
        assert r["field"].startswith("policy.video")
        r = is_problem(c.post("/v1/batches", json={"policy": {}, "inputs": ["/etc"]}), 403)
        assert r["field"] == "inputs.0"
        (api.outbox / "batch").mkdir(exist_ok=True)
        r = c.post("/v1/batches", json={"policy": {}, "inputs": [str(source)],
                                        "output_dir": str(api.outbox / "batch")})
        assert r.status_code == 202, r.text
        batch = r.json()
        assert batch["job_id"].startswith("b") and len(batch["files"]) == 1
        shown = c.get(f"/v1/batches/{batch['job_id']}")
        if batch["files"][0]["status"] == "queued":
            assert shown.status_code == 200 and shown.json()["jobs"]
        is_problem(c.get("/v1/batches/bnosuchbatch0000"), 404)


def test_the_same_idempotency_key_and_body_return_the_first_batch(
        api: Api, keys: dict[str, str], source: Path) -> None:
    (api.outbox / "idem-batch").mkdir(exist_ok=True)
    (api.inbox / "empty").mkdir(exist_ok=True)
    body = {"policy": {"video": {"codec": "libx264", "crf": 30}}, "inputs": [str(source)],
            "output_dir": str(api.outbox / "idem-batch")}
    headers = {"Idempotency-Key": "batch-1"}
    with api.client(keys["submit"]) as c:
        # A request that made nothing leaves the key free for the next one.
        is_problem(c.post("/v1/batches", json={**body, "inputs": [str(api.inbox / "empty")]},
                          headers=headers), 400)
        first = c.post("/v1/batches", json=body, headers=headers)
        assert first.status_code == 202, first.text
        assert "idempotent-replayed" not in first.headers
        batch = first.json()
        assert [f["status"] for f in batch["files"]] == ["queued"]
        again = c.post("/v1/batches", content=json.dumps(dict(reversed(body.items())), indent=2),
                       headers={**headers, "Content-Type": "application/json"})
        assert again.status_code == 202 and again.headers["idempotent-replayed"] == "true"
        assert again.json() == batch
        jobs = c.get(f"/v1/batches/{batch['job_id']}").json()["jobs"]
        assert [j["id"] for j in jobs] == [batch["files"][0]["job_id"]]
        listed = c.get("/v1/jobs", params={"limit": 500}).json()["jobs"]
        assert [j["id"] for j in listed if j["output"] == batch["files"][0]["output"]] == [
            jobs[0]["id"]]
        other = c.post("/v1/batches", json={**body, "hold": True}, headers=headers)
        assert "Idempotency-Key" in is_problem(other, 409)["detail"]
        # The key of a job submit and of a batch share one namespace per API key.
        job = c.post("/v1/jobs", json={"input": str(source), "output": str(api.outbox / "x.mkv")},
                     headers=headers)
        is_problem(job, 409)
    with api.client(keys["admin"]) as c:  # another key's Idempotency-Keys are its own
        (api.outbox / "idem-batch2").mkdir(exist_ok=True)
        r = c.post("/v1/batches", json={**body, "output_dir": str(api.outbox / "idem-batch2")},
                   headers=headers)
        assert r.status_code == 202 and r.json()["job_id"] != batch["job_id"]


def test_readyz_sees_the_broker_and_the_history(api: Api, keys: dict[str, str]) -> None:
    with api.client(keys["read"]) as c:
        assert c.get("/readyz").json() == {"status": "ready", "broker": "ok", "history": "ok"}
        m = c.get("/metrics")
        assert m.status_code == 200 and m.headers["content-type"].startswith("text/plain")


def test_readyz_is_503_when_the_broker_is_away(tmp_path: Path, database_url: str,
                                               work_dir: Path) -> None:
    svc, away = start_api(tmp_path, f"redis://127.0.0.1:{free_port()}/0", database_url, work_dir)
    try:
        with away.client(away.key("read")) as c:
            assert "broker" in is_problem(c.get("/readyz"), 503)["detail"]
    finally:
        svc.stop()


# -- with workers --------------------------------------------------------------------------------

def _sse(c: httpx.Client, path: str, headers: dict[str, str] | None = None
         ) -> list[tuple[int, str, dict[str, Any]]]:
    """Every event of a stream until the server ends it: (id, event, data)."""
    return list(_events(c, path, headers))


def _events(c: httpx.Client, path: str, headers: dict[str, str] | None = None
            ) -> Iterator[tuple[int, str, dict[str, Any]]]:
    """The events of a stream as they come: (id, event, data)."""
    item: dict[str, str] = {}
    with c.stream("GET", path, headers={"Accept": "text/event-stream", **(headers or {})},
                  timeout=240) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if not line:
                if "data" in item:
                    yield int(item["id"]), item["event"], json.loads(item["data"])
                item = {}
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            item[name] = value.removeprefix(" ")


@pytest.mark.cluster
def test_a_job_runs_and_its_event_stream_resumes_from_last_event_id(
        api: Api, cluster: Any, keys: dict[str, str], source: Path) -> None:
    output = api.outbox / "streamed.mkv"
    with api.client(keys["submit"]) as c:
        job = c.post("/v1/jobs", json={"input": str(source), "output": str(output),
                                       "crf": 35, "chunk_seconds": 1}).json()
        stream = _sse(c, f"/v1/jobs/{job['id']}/events")
        kinds = [kind for _, kind, _ in stream]
        assert kinds[0] == "job.queued" and kinds[-1] == "job.succeeded", kinds
        assert "job.planned" in kinds and "chunk.finished" in kinds
        assert [seq for seq, _, _ in stream] == sorted({seq for seq, _, _ in stream})
        assert all(data["seq"] == seq and data["type"] == kind for seq, kind, data in stream)
        middle = stream[len(stream) // 2][0]
        resumed = _sse(c, f"/v1/jobs/{job['id']}/events", {"Last-Event-ID": str(middle)})
        assert resumed == [e for e in stream if e[0] > middle]
        assert _sse(c, f"/v1/jobs/{job['id']}/events?after={middle}") == resumed
        shown = c.get(f"/v1/jobs/{job['id']}").json()
        assert shown["status"] == "succeeded" and shown["progress"]["percent"] == 100.0
        assert shown["frames_out"] == shown["frames_in"] and shown["size_out"] and output.exists()
        logs = c.get(f"/v1/jobs/{job['id']}/logs").json()["tasks"]
        assert {"mediatasks.probe", "mediatasks.publish"} <= {t["name"] for t in logs}
        assert all({"argv", "log_tail", "worker", "state"} <= set(t) for t in logs)
        plan = c.get(f"/v1/jobs/{job['id']}/plan").json()
        assert plan["chunks"] and plan["frames"] == shown["frames_in"]


@pytest.mark.cluster
def test_webhooks_of_a_job_submitted_over_http_are_signed_with_its_keys_secret_and_replayable(
        api: Api, cluster: Any, source: Path) -> None:
    made = subprocess.run([MEDIATASKS, "keys", "create", "--name", "hooks", "--scope", "submit",
                           "--json"], capture_output=True, text=True, env=api.env, check=True)
    created = json.loads(made.stdout)
    receiver = Receiver(created["webhook_secret"])
    try:
        with api.client(created["key"]) as c:
            output = api.outbox / "hooked.mkv"
            body = {"input": str(source), "output": str(output), "crf": 35}
            bad = is_problem(c.post("/v1/jobs", json={**body, "webhook_url": "ftp://example/x"}),
                             422)
            assert bad["field"] == "webhook_url" and not output.exists()
            job = c.post("/v1/jobs", json={**body, "webhook_url": receiver.url + "/hook"}).json()

            def delivered() -> list[dict[str, Any]]:
                found: list[dict[str, Any]] = c.get(f"/v1/jobs/{job['id']}/webhooks").json()[
                    "deliveries"]
                return found

            wait_until(lambda: any(d["type"] == "job.succeeded" and d["status"] == "delivered"
                                   for d in delivered()), "job.succeeded delivered", timeout=120)
            assert receiver.bad == []
            kinds = [m["type"] for m in receiver.messages("/hook")]
            assert {"job.queued", "job.started", "job.succeeded"} <= set(kinds), kinds
            assert all(m["data"]["job_id"] == job["id"] for m in receiver.messages("/hook"))
            last = next(d for d in delivered() if d["type"] == "job.succeeded")
            assert last["payload"]["data"]["status"] == "succeeded"
            assert [a["status_code"] for a in last["history"]] == [200]
            replayed = c.post(f"/v1/webhooks/{last['id']}/replay")
            assert replayed.status_code == 202, replayed.text
            wait_until(lambda: sum(1 for _, i, _ in receiver.seen if i == last["id"]) == 2,
                       "the replay received")
            is_problem(c.post("/v1/webhooks/msg_nosuch/replay"), 404)
        with api.client(created["key"]) as c:
            assert is_problem(c.get("/v1/jobs/" + "0" * 32 + "/webhooks"), 404)
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()


@pytest.mark.cluster
def test_a_held_job_waits_for_an_admin_to_approve_or_reject(
        api: Api, cluster: Any, keys: dict[str, str], source: Path) -> None:
    with api.client(keys["submit"]) as c:
        job = c.post("/v1/jobs", json={"input": str(source), "hold": True,
                                       "output": str(api.outbox / "held.mkv")}).json()
        for _seq, kind, _ in _events(c, f"/v1/jobs/{job['id']}/events"):
            if kind == "job.awaiting_approval":
                break
        else:
            pytest.fail("the job was never held")
        plan = c.get(f"/v1/jobs/{job['id']}/plan").json()
        assert plan["chunks"] and all(ch["argv"][0].endswith("ffmpeg") for ch in plan["chunks"])
        is_problem(c.post(f"/v1/jobs/{job['id']}/reject"), 403)
    with api.client(keys["admin"]) as c:
        assert c.post(f"/v1/jobs/{job['id']}/reject").json()["status"] == "rejected"
        assert "rejected" in is_problem(c.post(f"/v1/jobs/{job['id']}/approve"), 409)["detail"]
        assert c.post(f"/v1/jobs/{job['id']}/retry").status_code == 409


@pytest.mark.cluster
def test_a_queued_job_can_be_cancelled_and_retried(api: Api, cluster: Any, keys: dict[str, str],
                                                   source: Path) -> None:
    with api.client(keys["submit"]) as c:
        job = c.post("/v1/jobs", json={"input": str(source), "hold": True,
                                       "output": str(api.outbox / "cancelled.mkv")}).json()
        assert c.delete(f"/v1/jobs/{job['id']}").json() == {"cancelled": [job["id"]]}
        assert c.get(f"/v1/jobs/{job['id']}").json()["status"] == "cancelled"
        assert "already" in is_problem(c.delete(f"/v1/jobs/{job['id']}"), 400)["detail"]
        retried = c.post(f"/v1/jobs/{job['id']}/retry")
        assert retried.status_code == 202 and retried.json()["status"] == "queued"
        c.delete(f"/v1/jobs/{job['id']}")


@pytest.mark.cluster
def test_encoders_lists_each_worker_with_what_runs_there(api: Api, cluster: Any,
                                                         keys: dict[str, str]) -> None:
    with api.client(keys["read"]) as c:
        workers = c.get("/v1/encoders").json()["workers"]
    assert workers, "no worker answered"
    for w in workers:
        assert {"cpu", "io"} <= set(w["queues"]) and "libx264" in w["usable"]
        assert w["hardware"] == {}  # the test workers survey no hardware


# -- the OpenAPI document, fuzzed ----------------------------------------------------------------

def test_the_openapi_document_and_docs_are_served(api: Api) -> None:
    with api.client() as c:
        doc = c.get("/openapi.json").json()
        assert c.get("/docs").status_code == 200
    paths = set(doc["paths"])
    assert {"/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/events", "/v1/batches",
            "/v1/probe", "/v1/encoders", "/healthz", "/readyz", "/metrics"} <= paths
    assert "HTTPBearer" in doc["components"]["securitySchemes"]


def test_no_request_the_openapi_document_allows_gets_a_5xx(api: Api, keys: dict[str, str]
                                                            ) -> None:
    """schemathesis generates requests for every operation (a bounded number each); none may
    make the server fail."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis.checks import not_a_server_error

    schema = schemathesis.openapi.from_url(api.url + "/openapi.json")
    headers = {"Authorization": f"Bearer {keys['admin']}", "Accept": "application/json"}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=12, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def check(case: Any) -> None:
            case.call_and_validate(base_url=api.url, headers=headers, checks=[not_a_server_error])

        check()
