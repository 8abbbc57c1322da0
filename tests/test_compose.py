"""docker-compose.yml and the Dockerfile, tested without a Docker engine: the file parses, the
services are there, and every command is one the real CLIs accept."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

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


def test_the_services_are_redis_two_workers_flower_and_an_optional_postgres() -> None:
    services = compose()["services"]
    assert set(services) == {"redis", "worker-cpu", "worker-gpu", "flower", "postgres"}
    assert services["postgres"]["profiles"] == ["postgres"]
    assert "redis:/data" in services["redis"]["volumes"]
    assert "--appendonly" in services["redis"]["command"]


def test_workers_share_the_work_volume_and_one_broker() -> None:
    services = compose()["services"]
    for name in ("worker-cpu", "worker-gpu", "flower"):
        s = services[name]
        assert "work:/work" in s["volumes"]
        assert s["environment"]["MEDIATASKS_WORK_DIR"] == "/work"
        assert s["environment"]["MEDIATASKS_BROKER_URL"] == "redis://redis:6379/0"


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


def test_flower_needs_basic_auth_and_keeps_its_state() -> None:
    cmd = compose()["services"]["flower"]["command"]
    assert cmd[:4] == ["celery", "-A", "mediatasks", "flower"]
    auth = next(a for a in cmd if a.startswith("--basic-auth="))
    assert ":?" in auth  # compose refuses to start it without FLOWER_BASIC_AUTH
    assert "--persistent=True" in cmd and any(a.startswith("--db=/state/") for a in cmd)
    import flower.options  # noqa: F401  (defines Flower's tornado options)
    from tornado.options import options

    known = {name.replace("_", "-") for name in options._options}
    for arg in cmd[4:]:
        assert arg.split("=", 1)[0].lstrip("-").replace("_", "-") in known, arg


def test_the_image_installs_ffmpeg_and_the_package() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "apt-get install" in text and "ffmpeg" in text
    assert "pip install" in text and "COPY mediatasks" in text and "celeryconfig.py" in text
