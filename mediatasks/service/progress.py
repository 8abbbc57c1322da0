"""How far a job is, as its events tell: the one reckoning the API, the webhooks and the
followers share."""

from __future__ import annotations

import math

from pydantic import BaseModel, Field

from mediatasks.service.records import Event


class Progress(BaseModel):
    """The current attempt of a job: the frames and chunks its plan counted, the frames done per
    chunk (never going back: a chunk retried from its start keeps what it had shown) and the
    chunks finished. A ``job.queued`` (a retry, a job sent again) starts it afresh."""

    frames: int | None = None
    chunks_planned: int = 0
    chunks: dict[int, int] = Field(default_factory=dict)
    finished: set[int] = Field(default_factory=set)

    def feed(self, event: Event) -> bool:
        """Take one event in; True when it may change the percent."""
        data = event.data
        if event.type == "job.queued":
            self.frames, self.chunks_planned, self.chunks, self.finished = None, 0, {}, set()
            return False
        if event.type == "job.planned":
            self.frames = int(data.get("frames") or 0)
            self.chunks_planned = int(data.get("chunks") or 0)
            self.chunks, self.finished = {}, set()
            return True
        if event.type in {"chunk.progress", "chunk.finished"}:
            index = int(data.get("index", -1))
            frames = int(data.get("frames") or 0)
            if event.type == "chunk.finished":
                self.finished.add(index)
            self.chunks[index] = max(self.chunks.get(index, 0), frames)
            return True
        return False

    @property
    def done(self) -> int:
        return sum(self.chunks.values())

    @property
    def percent(self) -> int | None:
        """Whole percent of the planned frames done (rounded down); None before the plan."""
        if not self.frames:
            return None
        return min(100, math.floor(100 * self.done / self.frames))

    def as_dict(self) -> dict[str, float | int]:
        """The API's view: the percent to a tenth, frames and chunks done and planned."""
        exact = min(100.0, math.floor(1000 * self.done / self.frames) / 10) if self.frames else 0.0
        return {"percent": exact, "frames_done": self.done, "frames_total": self.frames or 0,
                "chunks_done": len(self.finished), "chunks_total": self.chunks_planned}


def progress_of(events: list[Event]) -> Progress:
    """The progress the events of a job add up to."""
    progress = Progress()
    for event in events:
        progress.feed(event)
    return progress
