"""The video stream's packets as ffprobe lists them, read as they stream: which are frames shown
(``shown_packets``), and an index of their timestamps and keyframes kept as compact arrays
(``PacketScanner`` builds a ``PacketIndex``), so memory stays flat as the file grows."""

from __future__ import annotations

import heapq
import itertools
from array import array
from bisect import bisect_left
from collections import Counter
from collections.abc import Sequence
from typing import Any

from mediatasks.models import Keyframe


def to_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def shown_packets(packets: Sequence[tuple[int | None, str]]) -> list[str]:
    """For each packet (decode order): ``"shown"``, ``"hidden"`` or ``"undecodable"``.

    What ffmpeg presents: a packet an edit list discards (flag D) is decoded, since later frames
    may refer to it, but never shown. Packets before the first keyframe and that keyframe's
    leading frames (pts before it) are undecodable: a recording that starts mid-GOP (broadcast
    captures usually do) begins with frames whose references are not in the file, and decoders
    drop them. The first keyframe counts whether hidden or not: a file cut with
    ``-ss ... -c copy`` keeps the keyframe before the cut and hides it, and the frames after it
    are decodable.
    """
    first_key = next((i for i, (_, flags) in enumerate(packets) if "K" in flags), None)
    key_pts = packets[first_key][0] if first_key is not None else None
    out = []
    for i, (pts, flags) in enumerate(packets):
        if "D" in flags:
            out.append("hidden")
        elif first_key is not None and (i < first_key or (
                i > first_key and pts is not None and key_pts is not None and pts < key_pts)):
            out.append("undecodable")
        else:
            out.append("shown")
    return out


# B-frames put a packet at most a few places before its presentation order: a window of this
# many packets sorts the timestamps as they come. A stream reordered deeper is sorted whole.
_REORDER = 64


class _Sorted:
    """Timestamps in decode order in, sorted into an ``array('q')`` (8 bytes a frame) with a
    small heap: the listing of a long file is never held as text or as Python ints."""

    def __init__(self) -> None:
        self.out = array("q")
        self.heap: list[int] = []
        self.deep = False  # reordered deeper than the window: sort at the end

    def push(self, value: int) -> None:
        if self.deep:
            self.out.append(value)
            return
        heapq.heappush(self.heap, value)
        if len(self.heap) > _REORDER:
            self._release(heapq.heappop(self.heap))

    def _release(self, value: int) -> None:
        if self.out and value < self.out[-1]:
            self.deep = True
        self.out.append(value)

    def done(self) -> array[int]:
        while self.heap:
            self._release(heapq.heappop(self.heap))
        if self.deep:
            self.out = array("q", sorted(self.out))
        return self.out


class PacketScanner:
    """Reads a demux-only packet listing (``pts,duration,flags`` CSV lines in decode order) one
    line at a time and keeps only what the probe and the plan need; ``index()`` says what it
    found. Which packets are frames is decided as ``shown_packets`` does for a whole list."""

    def __init__(self) -> None:
        self.position = 0
        self.before_key: list[tuple[int | None, str, int | None]] = []
        self.key_pts: int | None = None
        self.key_seen = False
        self.sorted = _Sorted()
        self.keys: set[int] = set()
        self.durations: Counter[int] = Counter()
        self.missing = self.skipped = self.discarded = 0
        self.lead: int | None = None

    def line(self, text: str) -> None:
        fields = text.strip().split(",")
        if len(fields) >= 3:
            self.packet(to_int(fields[0]), fields[2], to_int(fields[1]))

    def packet(self, pts: int | None, flags: str, duration: int | None) -> None:
        if not self.key_seen:
            if "K" not in flags:
                self.before_key.append((pts, flags, duration))
                return
            # Everything before the first keyframe is undecodable (unless an edit hides it).
            self.key_seen, self.key_pts = True, pts
            for _, f, _ in self.before_key:
                self._count("hidden" if "D" in f else "undecodable", None, f, None)
            self.before_key = []
            self._count("hidden" if "D" in flags else "shown", pts, flags, duration)
            return
        if "D" in flags:
            kind = "hidden"
        elif pts is not None and self.key_pts is not None and pts < self.key_pts:
            kind = "undecodable"  # a leading frame of the first keyframe
        else:
            kind = "shown"
        self._count(kind, pts, flags, duration)

    def _count(self, kind: str, pts: int | None, flags: str, duration: int | None) -> None:
        here = self.position
        self.position += 1
        if kind == "hidden":
            self.discarded += 1
            return
        if kind == "undecodable":
            self.skipped += 1
            return
        if self.lead is None:
            self.lead = here
        if pts is None:
            self.missing += 1
            return
        self.sorted.push(pts)
        if duration:
            self.durations[duration] += 1
        if "K" in flags:
            self.keys.add(pts)

    def index(self) -> PacketIndex:
        if not self.key_seen:  # no keyframe at all: every packet not hidden is shown
            for pts, flags, duration in self.before_key:
                self._count("hidden" if "D" in flags else "shown", pts, flags, duration)
            self.before_key = []
        return PacketIndex(self.sorted.done(), sorted(self.keys), self.durations, self.missing,
                           skipped=self.skipped, discarded=self.discarded,
                           lead=self.position if self.lead is None else self.lead)


def _median(counts: Counter[int]) -> int:
    """``int(statistics.median(values))`` of values given as value -> how often."""
    n = sum(counts.values())
    wanted = {(n - 1) // 2, n // 2}
    found: list[int] = []
    seen = 0
    for value in sorted(counts):
        found += [value] * sum(1 for w in wanted if seen <= w < seen + counts[value])
        seen += counts[value]
    return int(sum(found) / len(found))


class PacketIndex:
    """Presentation timestamps and keyframes of the video stream, from a demux-only pass."""

    def __init__(self, pts: array[int], keyframe_pts: list[int], durations: Counter[int],
                 missing_pts: int, skipped: int = 0, discarded: int = 0, lead: int = 0):
        self.pts = pts  # sorted
        self.keyframe_pts = keyframe_pts  # sorted, distinct
        self.durations = durations
        self.missing_pts = missing_pts
        self.skipped = skipped
        self.discarded = discarded
        self.lead = lead  # packets (decode order) before the first one shown
        self.deltas: Counter[int] = Counter(b - a for a, b in itertools.pairwise(pts))

    @classmethod
    def parse(cls, csv_text: str) -> PacketIndex:
        scanner = PacketScanner()
        for line in csv_text.splitlines():
            scanner.line(line)
        return scanner.index()

    def frame_step(self) -> int | None:
        """The typical frame duration in time-base ticks."""
        if self.durations:
            return _median(self.durations)
        steps = Counter({d: n for d, n in self.deltas.items() if d > 0})
        return _median(steps) if steps else None

    def is_vfr(self) -> bool:
        return bool(self.deltas) and max(self.deltas) - min(self.deltas) > 1

    def keyframes(self) -> tuple[Keyframe, ...]:
        out = []
        for kp in self.keyframe_pts:
            i = bisect_left(self.pts, kp)
            if i < len(self.pts) and self.pts[i] == kp:
                out.append(Keyframe(index=i, pts=kp))
        return tuple(out)

    def blocker(self) -> str | None:
        if not self.pts:
            return "the video packets carry no timestamps"
        if self.missing_pts:
            return f"{self.missing_pts} video packets have no timestamp"
        if self.deltas.get(0):
            return "several video packets share a timestamp"
        return None
