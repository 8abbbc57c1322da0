"""A job's states and every transition allowed between them: one pure table.

    queued ─► probing ─┬─► encoding ─► assembling ─► verifying ─► publishing ─┬─► succeeded ─► undone
                       └─► awaiting_approval ─► approved ─► encoding          └─► kept
                                   └─► rejected
    every state before an end ─► failed | cancelled;   failed, cancelled ─► queued (retry)

``kept``: the job ran, but the library's size guard kept the source and published nothing.
A batch's state is derived from its jobs' by ``batch_status`` and nowhere else.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, get_args

from mediatasks.errors import InvalidOptions

JobStatus = Literal["queued", "probing", "awaiting_approval", "approved", "encoding", "assembling",
                    "verifying", "publishing", "succeeded", "kept", "failed", "cancelled",
                    "rejected", "undone"]
BatchStatus = Literal["queued", "running", "awaiting_approval", "succeeded", "failed",
                      "cancelled", "undone"]

STATUSES: tuple[str, ...] = get_args(JobStatus)
TERMINAL = frozenset({"succeeded", "kept", "failed", "cancelled", "rejected", "undone"})
ACTIVE = frozenset(STATUSES) - TERMINAL
# What a person waits for: a job that is neither ended nor held.
RUNNING = ACTIVE - {"queued", "awaiting_approval"}

_ENDS = ("failed", "cancelled")
TRANSITIONS: dict[str, frozenset[str]] = {
    "queued": frozenset({"probing", *_ENDS}),
    "probing": frozenset({"encoding", "awaiting_approval", *_ENDS}),
    "awaiting_approval": frozenset({"approved", "rejected", *_ENDS}),
    "approved": frozenset({"encoding", *_ENDS}),
    "encoding": frozenset({"assembling", *_ENDS}),
    "assembling": frozenset({"verifying", *_ENDS}),
    "verifying": frozenset({"publishing", *_ENDS}),
    "publishing": frozenset({"succeeded", "kept", *_ENDS}),
    "succeeded": frozenset({"undone"}),
    "kept": frozenset(),
    "failed": frozenset({"queued"}),
    "cancelled": frozenset({"queued"}),
    "rejected": frozenset(),
    "undone": frozenset(),
}

# The state a job is in while a pipeline step runs (the Celery task names without their prefix).
STEP_STATUS: dict[str, str] = {
    "probe": "probing",
    "plan": "probing",
    "encode_chunk": "encoding",
    "encode_audio": "encoding",
    "concat": "assembling",
    "mux": "assembling",
    "verify": "verifying",
    "publish": "publishing",
}

# How a person reads each state (progress lines, status).
LABELS: dict[str, str] = {
    "queued": "queued", "probing": "probing", "awaiting_approval": "awaiting approval",
    "approved": "approved", "encoding": "encoding", "assembling": "joining",
    "verifying": "verifying", "publishing": "publishing", "succeeded": "succeeded",
    "kept": "source kept", "failed": "failed", "cancelled": "cancelled", "rejected": "rejected",
    "undone": "undone",
}


class IllegalTransition(InvalidOptions):
    """A job was asked to move to a state its current state does not lead to."""


def allowed(current: str, new: str) -> bool:
    return new in TRANSITIONS.get(current, frozenset())


def check_transition(job_id: str, current: str, new: str, *, hint: str | None = None) -> None:
    """Raise ``IllegalTransition`` unless ``current`` may become ``new``."""
    if not allowed(current, new):
        raise IllegalTransition(f"job {job_id} is {LABELS.get(current, current)} and cannot become "
                                f"{LABELS.get(new, new)}", hint=hint)


def parse_status(value: str) -> frozenset[str]:
    """A status filter as people type it: a state, 'running' (every state between queued and an
    end) or 'active' (every state before an end).

    Raises:
        InvalidOptions: not a state.
    """
    value = value.strip().lower().replace(" ", "_").replace("-", "_")
    if value == "running":
        return RUNNING
    if value == "active":
        return ACTIVE
    if value in STATUSES:
        return frozenset({value})
    raise InvalidOptions(f"--status '{value}' is not a job status",
                         hint="one of " + ", ".join(("running", "active", *STATUSES)))


def batch_status(statuses: Iterable[str]) -> BatchStatus:
    """A batch's state from its jobs' states: the one rule."""
    states = list(statuses)
    active = [s for s in states if s not in TERMINAL]
    if active:
        if all(s == "queued" for s in states):
            return "queued"
        if all(s in {"awaiting_approval", "queued"} for s in active) and "awaiting_approval" in active:
            return "awaiting_approval"
        return "running"
    ended = set(states)
    if "failed" in ended:
        return "failed"
    if ended & {"cancelled", "rejected"}:
        return "cancelled"
    if states and ended == {"undone"}:
        return "undone"
    return "succeeded"
