"""Worker start-up: on RabbitMQ every worker declares every queue; a worker that consumes the
``gpu`` queue surveys its hardware encoders.

The result is logged, kept in the result backend under ``mediatasks-worker-<hostname>``, and
kept in this process (pool children inherit it), so an encode with an encoder that cannot work
on this worker fails at once with the reason, instead of running ffmpeg into a retry loop.
"""

from __future__ import annotations

import json
import logging
import sys
from functools import lru_cache
from typing import Any

from celery.signals import celeryd_after_setup, celeryd_init
from celery.worker.control import inspect_command

from mediatasks.errors import HardwareUnavailable

log = logging.getLogger(__name__)

# encoder -> None (works) or the reason it does not; empty until a survey ran in this worker.
SURVEY: dict[str, str | None] = {}
HOSTNAME: list[str] = []


@celeryd_init.connect
def _require_roots(**_: Any) -> None:
    """A worker that would believe any path refuses to start."""
    from mediatasks.settings import get_settings

    if not get_settings().root_paths:
        print("mediatasks worker: error: MEDIATASKS_ROOTS is not set (set it to the folders "
              "jobs may read and write, separated by ':', e.g. MEDIATASKS_ROOTS=/media/in:"
              "/media/out)", file=sys.stderr, flush=True)
        raise SystemExit(2)


@celeryd_after_setup.connect
def _survey(sender: Any = None, instance: Any = None, **_: Any) -> None:
    from mediatasks import hardware
    from mediatasks.settings import get_settings

    settings = get_settings()
    queues = set(getattr(instance.app.amqp.queues, "consume_from", None) or {})
    HOSTNAME[:] = [str(sender)]
    if "gpu" not in queues or not settings.hardware_survey:
        return
    SURVEY.update(hardware.survey(settings.ffmpeg))
    ok = sorted(name for name, why in SURVEY.items() if why is None)
    log.warning("hardware encoders on %s: usable: %s", sender, ", ".join(ok) or "none")
    for name, why in sorted(SURVEY.items()):
        if why is not None:
            log.warning("hardware encoders on %s: %s unavailable: %s", sender, name, why)
    try:
        instance.app.backend.set(f"mediatasks-worker-{sender}", json.dumps(SURVEY))
    except Exception:
        log.exception("could not publish the hardware survey")


@celeryd_after_setup.connect
def _declare_queues(sender: Any = None, instance: Any = None, **_: Any) -> None:
    """Celery binds every queue of task_queues to RabbitMQ's delayed-delivery exchange, also
    those this worker does not consume; their exchanges must exist first."""
    app = instance.app
    try:
        with app.connection_for_write() as conn:
            if conn.transport.driver_type != "amqp":
                return
            for queue in app.conf.task_queues:
                queue(conn.default_channel).declare()
    except Exception:
        log.exception("could not declare the queues")


def check_encoder_here(encoder: str, worker: str | None) -> None:
    """Raise at once when this worker's survey found ``encoder`` unusable."""
    why = SURVEY.get(encoder)
    if why is not None:
        raise HardwareUnavailable(
            f"{encoder} cannot run on worker {worker or (HOSTNAME or ['?'])[0]}: {why}",
            hint="run gpu workers only where the encoder works (see the worker's start-up log)")


@lru_cache(maxsize=1)
def _software_encoders(ffmpeg: str) -> tuple[str, ...]:
    """The video encoders of this worker's ffmpeg that need no hardware."""
    from mediatasks import runner
    from mediatasks.hardware import encoders_args
    from mediatasks.profiles import is_hardware

    done = runner.run(encoders_args(ffmpeg), keep_stdout=True, timeout=60)
    return tuple(parts[1] for line in done.stdout.splitlines()
                 if len(parts := line.split()) >= 2 and len(parts[0]) == 6
                 and parts[0].startswith("V") and parts[1] != "=" and not is_hardware(parts[1]))


@inspect_command(name="mediatasks_encoders")
def mediatasks_encoders(state: Any, **_: Any) -> dict[str, Any]:
    """What `GET /v1/encoders` shows of this worker: its queues, the software encoders of its
    ffmpeg, and each hardware encoder with why it cannot run here (null: it works; only workers
    on the gpu queue survey them)."""
    from mediatasks.settings import get_settings

    consumer = getattr(state, "consumer", None)
    queues = sorted(q.name for q in getattr(getattr(consumer, "task_consumer", None),
                                            "queues", []) or [])
    try:
        software = list(_software_encoders(get_settings().ffmpeg))
    except Exception as exc:
        log.warning("cannot list the encoders: %s", exc)
        software = []
    return {"queues": queues, "software": software, "hardware": dict(SURVEY),
            "usable": software + sorted(n for n, why in SURVEY.items() if why is None)}
