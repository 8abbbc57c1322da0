"""Progress drawn from a job's events: the step it is in, frames, fps, a smoothed ETA. On a
terminal a live bar; elsewhere a line per step and per 10 %."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn

from mediatasks.service import progress as counting
from mediatasks.service.lifecycle import LABELS
from mediatasks.service.records import Event, TaskRecord
from mediatasks.service.summary import human_duration


class JobProgress:
    """What the events say about one job so far (reset by a retry's new attempt)."""

    def __init__(self) -> None:
        self.reset()
        self.status = "queued"

    def reset(self) -> None:
        self.counted = counting.Progress()  # frames and chunks planned and done
        self.chunk_fps: dict[int, float] = {}
        self.rate: float | None = None  # smoothed frames per second
        self._last: tuple[float, int] | None = None

    def apply(self, event: Event) -> bool:
        """Take one event in; True when the job changed state."""
        if event.type == "job.queued":
            self.reset()
        if self.counted.feed(event) and event.type.startswith("chunk."):
            index = int(event.data["index"])
            if event.type == "chunk.progress":
                self.chunk_fps[index] = float(event.data.get("fps") or 0.0)
            else:
                self.chunk_fps.pop(index, None)
            self._smooth()
        elif event.type.startswith("job.") and event.type != "job.planned":
            new = event.type.removeprefix("job.")
            if new in LABELS and new != self.status:
                self.status = new
                return True
        return False

    @property
    def frames_total(self) -> int:
        return self.counted.frames or 0

    @property
    def chunks(self) -> int:
        return self.counted.chunks_planned

    @property
    def done(self) -> set[int]:
        return self.counted.finished

    @property
    def frames_done(self) -> int:
        return self.counted.done

    @property
    def fps(self) -> float:
        return sum(self.chunk_fps.values())

    def _smooth(self) -> None:
        """An exponential average of the frame rate between events: one fast chunk (a reused
        one) does not make the ETA jump."""
        now, frames = time.monotonic(), self.frames_done
        if self._last is not None and now > self._last[0] + 0.2:
            rate = max(0.0, (frames - self._last[1]) / (now - self._last[0]))
            self.rate = rate if self.rate is None else 0.8 * self.rate + 0.2 * rate
            self._last = (now, frames)
        elif self._last is None:
            self._last = (now, frames)

    def eta(self) -> str:
        rate = self.rate if self.rate else self.fps
        left = max(0, self.frames_total - self.frames_done)
        if self.status != "encoding" or not rate:
            return "-"
        return human_duration(left / rate)


# What the time between one state event and the next was spent on.
STEP_NAMES: dict[str, str] = {
    "queued": "wait for a worker", "probing": "probe + plan", "planned": "start encodes",
    "approved": "start encodes", "encoding": "encode", "assembling": "concat + mux",
    "verifying": "verify", "publishing": "publish",
}


# The job's steps as its tasks' rows time them, in the order they run (several tasks of one
# step -- the chunks and the audio -- count from the first start).
TASK_STEPS: dict[str, str] = {
    "mediatasks.probe": "probe", "mediatasks.plan": "plan",
    "mediatasks.encode_chunk": "encode", "mediatasks.encode_audio": "encode",
    "mediatasks.concat": "concat", "mediatasks.mux": "mux", "mediatasks.verify": "verify",
    "mediatasks.publish": "publish",
}


class StepTimes:
    """Seconds per step of one job: the local steps the command timed itself (starting the
    cluster, checks, stopping) and the job's own steps, from its tasks' rows (each step from
    its first task's start to the next step's), else from its state events' times."""

    def __init__(self) -> None:
        self.local: dict[str, float] = {}
        self.events: list[tuple[str, float]] = []  # (state, wall time)
        self.by_task: dict[str, float] = {}

    def tasks(self, rows: Sequence[TaskRecord]) -> None:
        """Time the job's steps from its tasks' rows (once the job has ended): each step from
        its first task's start to the next step's start, the plan to its own end (the wait
        for the first encode is 'start encodes'), publish to its end."""
        starts: dict[str, float] = {}
        ends: dict[str, float] = {}
        for row in rows:
            step = TASK_STEPS.get(row.name)
            if step is None or row.started_at is None or row.state != "SUCCESS":
                continue
            at = row.started_at.timestamp()
            starts[step] = min(starts.get(step, at), at)
            if row.finished_at is not None:
                ends[step] = max(ends.get(step, 0.0), row.finished_at.timestamp())
        order = [s for s in dict.fromkeys(TASK_STEPS.values()) if s in starts]
        if not {"probe", "plan", "encode", "publish"} <= set(order) or not ends.get("publish"):
            return  # a job that did not run every step: the state events time it
        queued = next((at for state, at in self.events if state == "queued"), None)
        approved = next((at for state, at in self.events if state == "approved"), 0.0)
        steps: dict[str, float] = {}
        if queued is not None:
            steps["wait for a worker"] = starts["probe"] - queued
        for step, after in zip(order, [*order[1:], None], strict=True):
            if step == "plan" and "plan" in ends:
                steps["plan"] = ends["plan"] - starts["plan"]
                steps["start encodes"] = starts["encode"] - max(ends["plan"], approved)
                continue
            steps[step] = (starts[after] if after is not None else ends[step]) - starts[step]
        self.by_task = {k: max(0.0, v) for k, v in steps.items()}

    def add(self, step: str, seconds: float) -> None:
        self.local[step] = self.local.get(step, 0.0) + seconds

    def event(self, event: Event) -> None:
        if event.type == "job.queued":
            self.events = []
        if event.type.startswith("job."):
            self.events.append((event.type.removeprefix("job."), event.at.timestamp()))

    def job_steps(self) -> dict[str, float]:
        steps: dict[str, float] = {}
        for (state, at), (_, after) in zip(self.events, self.events[1:], strict=False):
            name = STEP_NAMES.get(state)
            if name is not None:
                steps[name] = steps.get(name, 0.0) + max(0.0, after - at)
        return steps

    def as_dict(self) -> dict[str, float]:
        """Step -> seconds, in the order they ran."""
        first = {k: v for k, v in self.local.items() if k != "stop workers"}
        last = {k: v for k, v in self.local.items() if k == "stop workers"}
        job = self.by_task or self.job_steps()
        return {k: round(v, 3) for k, v in {**first, **job, **last}.items()}

    def line(self) -> str:
        return "steps: " + ", ".join(f"{k} {v:.2f}s" for k, v in self.as_dict().items())


class Follower:
    """Renders one job's events for people (nothing with ``enabled`` false)."""

    def __init__(self, console: Console, *, enabled: bool, job_id: str | None = None):
        self.console = console
        self.enabled = enabled
        self.tty = console.is_terminal
        self.job = JobProgress()
        self.progress: Progress | None = None
        self.task: TaskID | None = None
        self._tenth = -1
        self._said = ""
        self.job_id = job_id

    def __enter__(self) -> Follower:
        if self.enabled and self.tty:
            self.progress = Progress(
                TextColumn("[bold]{task.description:<17}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("frames"), TextColumn("{task.fields[fps]:>6.1f} fps"),
                TextColumn("chunks {task.fields[chunks]}"), TextColumn("ETA {task.fields[eta]}"),
                console=self.console, transient=False)
            self.progress.start()
            self.task = self.progress.add_task("starting workers", total=None, fps=0.0,
                                               chunks="-", eta="-")
        return self

    def note(self, text: str) -> None:
        """A step before the job exists (starting workers, probing): on the bar only, so that a
        refusal stays the one line printed."""
        if not self.enabled:
            return
        if self.progress is not None and self.task is not None:
            self.progress.update(self.task, description=text)

    def _say(self, text: str) -> None:
        if text != self._said:
            self._said = text
            self.console.print(text, markup=False, highlight=False)

    def event(self, event: Event) -> None:
        changed = self.job.apply(event)
        if not self.enabled:
            return
        if event.type == "job.awaiting_approval":
            self.console.print(f"job {event.job_id}: awaiting approval: run 'mediatasks approve "
                               f"{event.job_id}' or 'mediatasks reject {event.job_id}'",
                               markup=False, highlight=False)
        if self.progress is not None and self.task is not None:
            j = self.job
            self.progress.update(self.task, description=LABELS.get(j.status, j.status),
                                 total=j.frames_total or None, completed=j.frames_done,
                                 fps=j.fps, chunks=f"{len(j.done)}/{j.chunks or '?'}",
                                 eta=j.eta())
            return
        if changed:
            self._say(LABELS.get(self.job.status, self.job.status))
        if event.type.startswith("chunk.") and self.job.frames_total:
            tenth = min(10, self.job.frames_done * 10 // self.job.frames_total)
            if tenth > self._tenth:
                self._tenth = tenth
                self.console.print(
                    f"encoding: {tenth * 10}% ({self.job.frames_done} of "
                    f"{self.job.frames_total} frames, {len(self.job.done)}/{self.job.chunks} "
                    f"chunks), ETA {self.job.eta()}", markup=False, highlight=False)

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()


class BatchBars:
    """One bar for the batch (files done) and one per file (frames), from the batch's events."""

    def __init__(self, console: Console | None, names: dict[str, str], total: int):
        self.names = names
        self.jobs: dict[str, JobProgress] = {}
        self.progress: Progress | None = None
        self.rows: dict[str, TaskID] = {}
        self.finished: set[str] = set()
        self.skipped = total - len(names)
        if console is not None:
            self.progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                     MofNCompleteColumn(), TextColumn("{task.fields[note]}"),
                                     console=console, transient=False)
            self.progress.start()
            self.all = self.progress.add_task("batch", total=total, note="files",
                                              completed=self.skipped)

    def event(self, event: Event) -> None:
        job = self.jobs.setdefault(event.job_id, JobProgress())
        job.apply(event)
        if event.ends_job:
            self.finished.add(event.job_id)
        if self.progress is None:
            return
        if event.job_id not in self.rows:
            self.rows[event.job_id] = self.progress.add_task(
                short_name(self.names.get(event.job_id, event.job_id)), total=None, note="")
        row = self.rows[event.job_id]
        note = LABELS.get(job.status, job.status)
        if job.status == "encoding" and job.fps:
            note = f"{job.fps:.0f} fps"
        self.progress.update(row, total=job.frames_total or None, completed=job.frames_done,
                             note=note)
        self.progress.update(self.all, completed=self.skipped + len(self.finished))

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def short_name(name: str, width: int = 40) -> str:
    """A long file name keeps its start (the title) and its end (the extension)."""
    if len(name) <= width:
        return name
    return name[: width - 8] + "…" + name[-7:]


def print_events(events: list[Event], console: Console, *, as_json: bool) -> None:
    import json

    for e in events:
        if as_json:
            print(json.dumps(e.model_dump(mode="json")), flush=True)
        else:
            console.print(format_event(e), markup=False, highlight=False)


def format_event(e: Event) -> str:
    data: dict[str, Any] = e.data
    detail = ""
    if e.type == "job.planned":
        detail = f"{data.get('frames')} frames in {data.get('chunks')} chunk(s) on {data.get('queue')}"
    elif e.type == "chunk.progress":
        detail = (f"chunk {data.get('index')}: {data.get('frames')} of {data.get('total')} "
                  f"frames, {data.get('fps')} fps")
    elif e.type == "chunk.finished":
        detail = (f"chunk {data.get('index')}: {data.get('frames')} frames"
                  + (" (reused)" if data.get("reused") else f" in {data.get('seconds')}s"))
    elif data.get("error"):
        detail = str(data["error"])
    elif e.type in {"job.succeeded", "job.kept"}:
        from mediatasks.service.summary import describe

        detail = data.get("note") or describe(data)
    return f"{e.seq:>6}  {e.at:%H:%M:%S}  {e.job_id[:12]}  {e.type:<22} {detail}".rstrip()
