"""docker-compose.yml and the Dockerfile, tested without a Docker engine: the file parses, the
services are there, and every command is one the real CLIs accept."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import free_port

ROOT = Path(__file__).resolve().parents[1]


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def accepted(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """Run a service's command with --help last: unknown options fail before help is shown."""
    tool = {"celery": [sys.executable, "-m", "celery"],
            "mediatasks": [str(Path(sys.executable).with_name("mediatasks"))]}[argv[0]]
    return subprocess.run([*tool, *argv[1:], "--help"], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)


def test_the_services_are_redis_two_workers_flower_the_api_and_optional_postgres_and_rabbitmq(
        ) -> None:
    services = compose()["services"]
    assert set(services) == {"redis", "worker-cpu", "worker-gpu", "flower", "api", "postgres",
                             "rabbitmq"}
    assert services["postgres"]["profiles"] == ["postgres"]
    assert services["rabbitmq"]["profiles"] == ["rabbitmq"]
    assert "redis:/data" in services["redis"]["volumes"]
    assert "--appendonly" in services["redis"]["command"]


def test_a_plain_compose_up_needs_no_nvidia_gpu() -> None:
    services = compose()["services"]
    assert services["worker-gpu"]["profiles"] == ["gpu"]
    without_profile = [name for name, s in services.items() if not s.get("profiles")]
    assert sorted(without_profile) == ["api", "flower", "redis", "worker-cpu"]
    for name in without_profile:
        assert "deploy" not in services[name], name


def test_nothing_has_a_working_default_password() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    assert "${REDIS_PASSWORD:?" in text and "${FLOWER_BASIC_AUTH:?" in text
    for doc in ("docker-compose.yml", "docs/operations.md", "README.md"):
        body = (ROOT / doc).read_text()
        assert "admin:secret" not in body and "guest:guest" not in body, doc
        assert "change-me" not in body, doc


def test_workers_share_the_work_volume_and_one_broker_with_credentials() -> None:
    services = compose()["services"]
    for name in ("worker-cpu", "worker-gpu", "flower", "api"):
        s = services[name]
        env = s["environment"]
        assert "work:/work" in s["volumes"]
        assert env["MEDIATASKS_WORK_DIR"] == "/work"
        assert env["MEDIATASKS_BROKER_URL"] == (
            "${MEDIATASKS_BROKER_URL:-redis://mediatasks:${REDIS_PASSWORD}@redis:6379/0}")
        assert env["MEDIATASKS_RESULT_BACKEND"] == "redis://mediatasks:${REDIS_PASSWORD}@redis:6379/1"


def test_services_wait_for_a_healthy_broker_and_workers_outlast_their_soft_shutdown() -> None:
    services = compose()["services"]
    for name in ("worker-cpu", "worker-gpu", "flower", "api"):
        depends = services[name]["depends_on"]
        assert depends["redis"] == {"condition": "service_healthy"}, name
        assert depends["rabbitmq"] == {"condition": "service_healthy", "required": False}, name
    soft = int(re.search(r"^worker_soft_shutdown_timeout = (\d+)$",
                         (ROOT / "celeryconfig.py").read_text(), re.M)[1])  # type: ignore[index]
    for name in ("worker-cpu", "worker-gpu"):
        grace = services[name]["stop_grace_period"]
        assert grace.endswith("s") and int(grace[:-1]) > soft + 15, name
    for name, s in services.items():
        assert s["healthcheck"]["test"][0] in {"CMD", "CMD-SHELL"}, name


def test_worker_health_checks_ping_their_own_worker_with_real_celery_options() -> None:
    services = compose()["services"]
    for name, node in (("worker-cpu", "cpu"), ("worker-gpu", "gpu")):
        check = services[name]["healthcheck"]["test"]
        argv = shlex.split(check[1].replace("$$", "$"))
        assert argv[:5] == ["celery", "-A", "mediatasks", "inspect", "ping"]
        assert argv[argv.index("-d") + 1] == f"{node}@$HOSTNAME"
        assert f"-n {node}@%h" in " ".join(services[name]["command"])
        done = accepted(argv)
        assert done.returncode == 0, done.stderr


def test_the_redis_command_and_health_check_work_with_the_password_only(tmp_path: Path) -> None:
    """The compose redis command, run here on a free port: the ACL user and its password work,
    a client without them is refused, and the health check answers."""
    import redis

    password = os.urandom(12).hex()
    redis_service = compose()["services"]["redis"]
    argv = [re.sub(r"\$\{REDIS_PASSWORD(:\?[^}]*)?\}", password, a) for a in redis_service["command"]]
    port = free_port()
    proc = subprocess.Popen([*argv, "--port", str(port), "--bind", "127.0.0.1", "--dir",
                             str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"redis://mediatasks:{password}@127.0.0.1:{port}/0"
        with redis.Redis.from_url(url) as client:
            for _ in range(100):
                try:
                    assert client.ping()
                    break
                except redis.ConnectionError:
                    time.sleep(0.05)
        with redis.Redis(port=port) as anonymous, pytest.raises(redis.AuthenticationError):
            anonymous.ping()
        check = redis_service["healthcheck"]["test"]
        assert check[0] == "CMD-SHELL"
        shell = check[1].replace("$$", "$").replace("redis-cli ", f"redis-cli -p {port} ", 1)
        ok = subprocess.run(["sh", "-c", shell], env={**os.environ, "REDIS_PASSWORD": password})
        wrong = subprocess.run(["sh", "-c", shell], env={**os.environ, "REDIS_PASSWORD": "x"})
        assert (ok.returncode, wrong.returncode != 0) == (0, True), shell
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_worker_commands_are_accepted_by_the_real_clis() -> None:
    services = compose()["services"]
    cpu = services["worker-cpu"]["command"]
    assert cpu[:4] == ["celery", "-A", "mediatasks", "worker"]
    assert cpu[cpu.index("-Q") + 1] == "cpu,io"
    done = accepted(cpu)
    assert done.returncode == 0, done.stderr
    gpu = services["worker-gpu"]["command"]
    assert gpu[:2] == ["mediatasks", "worker"] and gpu[gpu.index("-Q") + 1] == "gpu"
    assert int(gpu[gpu.index("-c") + 1]) in {2, 3}  # consumer NVENC session limits
    done = accepted(gpu)
    assert done.returncode == 0, done.stderr
    devices = services["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia"


def test_flower_needs_basic_auth_keeps_its_state_and_is_published_on_loopback_only() -> None:
    service = compose()["services"]["flower"]
    assert service["ports"] == ["127.0.0.1:5555:5555"]
    assert "/healthcheck" in " ".join(service["healthcheck"]["test"])
    cmd = service["command"]
    assert cmd[:4] == ["celery", "-A", "mediatasks", "flower"]
    auth = next(a for a in cmd if a.startswith("--basic-auth="))
    assert ":?" in auth  # compose refuses to start it without FLOWER_BASIC_AUTH
    assert "--persistent=True" in cmd and any(a.startswith("--db=/state/") for a in cmd)
    import flower.options  # noqa: F401  (defines Flower's tornado options)
    from tornado.options import options

    known = {name.replace("_", "-") for name in options._options}
    for arg in cmd[4:]:
        assert arg.split("=", 1)[0].lstrip("-").replace("_", "-") in known, arg


def test_the_rabbitmq_profile_mounts_a_consumer_timeout_longer_than_any_task() -> None:
    from mediatasks.settings import Settings

    rabbit = compose()["services"]["rabbitmq"]
    conf = next(v for v in rabbit["volumes"] if v.startswith("./deploy/rabbitmq.conf:"))
    assert conf.split(":")[1].startswith("/etc/rabbitmq/conf.d/")
    text = (ROOT / "deploy" / "rabbitmq.conf").read_text()
    timeout_ms = int(re.search(r"^consumer_timeout = (\d+)$", text, re.M)[1])  # type: ignore[index]
    assert timeout_ms > Settings().task_time_limit * 1000
    assert rabbit["healthcheck"]["test"][:2] == ["CMD", "rabbitmq-diagnostics"]
    assert "RABBITMQ_DEFAULT_PASS" in " ".join(rabbit["entrypoint"])  # refuses an empty one


def test_the_image_installs_ffmpeg_and_the_package() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "apt-get install" in text and "ffmpeg" in text
    assert "pip install" in text and "COPY mediatasks" in text and "celeryconfig.py" in text


def test_workers_are_told_the_only_folders_jobs_may_touch() -> None:
    services = compose()["services"]
    for name in ("worker-cpu", "worker-gpu"):
        assert services[name]["environment"]["MEDIATASKS_ROOTS"] == "/media"


def test_the_api_shares_the_workers_environment_and_history_and_is_on_loopback_only() -> None:
    services = compose()["services"]
    api, worker = services["api"], services["worker-cpu"]
    assert api["environment"] == worker["environment"]  # the same broker and job history
    assert api["volumes"] == worker["volumes"] and api["image"] == worker["image"]
    assert api["ports"] == ["127.0.0.1:8080:8080"]
    cmd = api["command"]
    assert cmd[:2] == ["mediatasks", "api"]
    assert cmd[cmd.index("--host") + 1] == "0.0.0.0" and cmd[cmd.index("--port") + 1] == "8080"
    done = accepted(cmd)
    assert done.returncode == 0, done.stderr


class _Health(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_the_api_health_check_passes_on_a_healthy_answer_and_fails_otherwise() -> None:
    """The health check's own command, run against a local server on a free port."""
    check = compose()["services"]["api"]["healthcheck"]["test"]
    assert check[:3] == ["CMD", "python", "-c"] and "/healthz" in check[3]
    outcomes = {}
    for status in (200, 503):
        handler = type("Health", (_Health,), {"status": status})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            code = check[3].replace(":8080/", f":{server.server_address[1]}/")
            outcomes[status] = subprocess.run([sys.executable, "-c", code], capture_output=True,
                                              timeout=30).returncode
        finally:
            server.shutdown()
            server.server_close()
    code = check[3].replace(":8080/", f":{free_port()}/")  # nothing listening
    refused = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=30)
    assert (outcomes[200], outcomes[503] != 0, refused.returncode != 0) == (0, True, True)
