"""Message signing (MEDIATASKS_SIGNING_*): a real worker with Celery's auth serializer runs a task
signed with a trusted key and refuses the same task as plain JSON or signed by a stranger."""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from conftest import start_redis

from mediatasks import runner
from mediatasks.cluster.local import worker_args

pytestmark = pytest.mark.cluster

SEND_SIGNED = """
import sys
from mediatasks.cluster.app import app
result = app.send_task("mediatasks.cleanup", kwargs={"job_id": sys.argv[1], "remove": True},
                       queue="io")
if sys.argv[2:] == ["--wait"]:
    result.get(timeout=60)
print(app.conf.task_serializer, result.state)
"""


def make_identity(d: Path, name: str) -> tuple[Path, Path]:
    """A private key and a self-signed certificate for ``name``, as PEM files in ``d``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    key_path, cert_path = d / f"{name}.key", d / f"{name}.pem"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


def wait_ready(worker: runner.Service, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not worker.alive():
            pytest.fail(f"worker exited: {worker.log_tail()}")
        if " ready." in worker.log_path.read_text(errors="replace"):
            return
        time.sleep(0.2)
    pytest.fail(f"worker did not start: {worker.log_tail()}")


def wait_for_log(worker: runner.Service, text: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while text not in worker.log_path.read_text(errors="replace"):
        assert time.monotonic() < deadline, worker.log_tail()
        time.sleep(0.2)


def send_unsigned(url: str, job_id: str) -> str:
    """A task message in Celery's protocol 2, as JSON, the way anyone on the broker could send it."""
    from kombu import Connection

    task_id = uuid.uuid4().hex
    headers = {"lang": "py", "task": "mediatasks.cleanup", "id": task_id, "root_id": task_id,
               "parent_id": None, "group": None, "retries": 0, "eta": None, "expires": None,
               "argsrepr": "()", "kwargsrepr": "{}", "origin": "forger"}
    body = ([], {"job_id": job_id, "remove": True},
            {"callbacks": None, "errbacks": None, "chain": None, "chord": None})
    with Connection(url) as conn:
        conn.Producer().publish(body, routing_key="io", exchange="", serializer="json",
                                headers=headers)
    return task_id


def test_a_signing_worker_runs_trusted_tasks_and_refuses_unsigned_and_foreign_ones(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    certs.mkdir()
    key, cert = make_identity(tmp_path, "worker")
    (certs / cert.name).write_bytes(cert.read_bytes())
    redis_svc, url = start_redis(tmp_path / "redis")
    work = tmp_path / "work"
    env = dict(os.environ, MEDIATASKS_BROKER_URL=url, MEDIATASKS_RESULT_BACKEND=url,
               MEDIATASKS_WORK_DIR=str(work), MEDIATASKS_HARDWARE_SURVEY="false",
               MEDIATASKS_DATABASE_URL=f"sqlite:///{tmp_path / 'history.sqlite'}",
               MEDIATASKS_SIGNING_KEY=str(key), MEDIATASKS_SIGNING_CERT=str(cert),
               MEDIATASKS_SIGNING_CERT_STORE=str(certs))
    worker = runner.spawn("worker", [*worker_args(1, f"signed-{uuid.uuid4().hex[:6]}",
                                                  ("io",)), "--loglevel", "INFO"],
                          log_path=tmp_path / "worker.log", env=env, cwd=tmp_path)
    try:
        wait_ready(worker)
        signed, forged = uuid.uuid4().hex, uuid.uuid4().hex
        (work / signed).mkdir(parents=True)
        (work / forged).mkdir(parents=True)

        done = subprocess.run([sys.executable, "-c", SEND_SIGNED, signed, "--wait"], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=90)
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == ["auth", "SUCCESS"]
        assert not (work / signed).exists()  # the signed cleanup ran

        send_unsigned(url, forged)
        wait_for_log(worker, "untrusted content")

        # Signed, but with a key whose certificate the worker does not trust.
        intruder_key, intruder_cert = make_identity(tmp_path, "intruder")
        intruder = dict(env, MEDIATASKS_SIGNING_KEY=str(intruder_key),
                        MEDIATASKS_SIGNING_CERT=str(intruder_cert),
                        MEDIATASKS_SIGNING_CERT_STORE=str(intruder_cert))
        subprocess.run([sys.executable, "-c", SEND_SIGNED, forged],
                       env=intruder, cwd=tmp_path, check=True, timeout=90)
        wait_for_log(worker, "Unable to deserialize")

        assert (work / forged).exists()  # neither forged cleanup ran
        assert worker.alive()
    finally:
        worker.stop(grace=10)
        redis_svc.stop()


def test_signing_needs_the_key_the_certificate_and_the_store_together(tmp_path: Path) -> None:
    from pydantic import ValidationError

    from mediatasks.settings import Settings

    assert not Settings().signing
    with pytest.raises(ValidationError, match="set all three or none"):
        Settings(signing_key=tmp_path / "worker.key")
    both = Settings(signing_key=tmp_path / "k", signing_cert=tmp_path / "c",
                    signing_cert_store=str(tmp_path))
    assert both.signing
