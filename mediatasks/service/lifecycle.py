"""A job's states and every transition allowed between them: one pure table.

    queued ─► probing ─┬─► encoding ─► assembling ─► verifying ─► publishing ─┬─► succeeded ─► undone
                       └─► awaiting_approval ─► approved ─► encoding          └─► kept
                                   └─► rejected
    every state before an end ─► failed | cancelled;   failed, cancelled ─► queued (retry)
    probing … publishing ─► stalled ─► queued (retry) | failed | cancelled

``kept``: the job ran, but the library's size guard kept the source and published nothing.
``stalled``: no task of the job is alive anywhere and nothing happened for a while (a broker that
lost its messages): followers stop waiting, and the job is sent again or retried by hand.
A batch's state is derived from its jobs' by ``batch_status`` and nowhere else.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, get_args

from mediatasks.errors import InvalidOptions

JobStatus = Literal["queued", "probing", "awaiting_approval", "approved", "encoding", "assembling",
                    "verifying", "publishing", "stalled", "succeeded", "kept", "failed",
                    "cancelled", "rejected", "undone"]
BatchStatus = Literal["queued", "running", "awaiting_approval", "stalled", "succeeded", "failed",
                      "cancelled", "undone"]

STATUSES: tuple[str, ...] = get_args(JobStatus)
TERMINAL = frozenset({"succeeded", "kept", "failed", "cancelled", "rejected", "undone"})
ACTIVE = frozenset(STATUSES) - TERMINAL
# What a person waits for: a job that is neither ended nor held (nor stalled).
RUNNING = ACTIVE - {"queued", "awaiting_approval", "stalled"}
# Where a follower stops waiting: the job ended, or nothing will happen until someone acts.
SETTLED = TERMINAL | {"stalled"}
# States whose work is on the workers: a job in one of them can stall.
WORKING = frozenset({"probing", "approved", "encoding", "assembling", "verifying", "publishing"})

_ENDS = ("failed", "cancelled")
TRANSITIONS: dict[str, frozenset[str]] = {
    "queued": frozenset({"probing", *_ENDS}),
    "probing": frozenset({"encoding", "awaiting_approval", "stalled", *_ENDS}),
    "awaiting_approval": frozenset({"approved", "rejected", *_ENDS}),
    "approved": frozenset({"encoding", "stalled", *_ENDS}),
    "encoding": frozenset({"assembling", "stalled", *_ENDS}),
    "assembling": frozenset({"verifying", "stalled", *_ENDS}),
    "verifying": frozenset({"publishing", "stalled", *_ENDS}),
    "publishing": frozenset({"succeeded", "kept", "stalled", *_ENDS}),
    "stalled": frozenset({"queued", *_ENDS}),
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
    "verifying": "verifying", "publishing": "publishing", "stalled": "stalled",
    "succeeded": "succeeded",
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
        if all(s == "stalled" for s in active):
            return "stalled"
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
