"""The one ISO-BMFF (MP4/MOV) edit mediatasks makes itself: the video track's display matrix.

ffmpeg 5.1 writes a track's rotation only when it stream-copies a stream that carries one; our
video comes from the concatenated chunks, which carry none, and the muxer ignores the old
``rotate`` tag. So the source's matrix is written into the output's ``tkhd`` box in place: a
fixed-size field, no change of any size or offset.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

IDENTITY = (65536, 0, 0, 0, 65536, 0, 0, 0, 1 << 30)
_CONTAINERS = {b"moov", b"trak", b"mdia"}


def _boxes(f: BinaryIO, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(type, payload offset, box end) for each box in [start, end)."""
    pos = start
    while pos + 8 <= end:
        f.seek(pos)
        size, kind = struct.unpack(">I4s", f.read(8))
        header = 8
        if size == 1:
            size = struct.unpack(">Q", f.read(8))[0]
            header = 16
        elif size == 0:
            size = end - pos
        if size < header:
            return
        yield kind, pos + header, pos + size
        pos += size


def _find(f: BinaryIO, start: int, end: int, kind: bytes) -> list[tuple[int, int]]:
    return [(p, e) for k, p, e in _boxes(f, start, end) if k == kind]


def _video_tkhd_offsets(f: BinaryIO, size: int) -> list[int]:
    """File offsets of the matrix field of every video track's tkhd."""
    found = []
    for moov_start, moov_end in _find(f, 0, size, b"moov"):
        for trak_start, trak_end in _find(f, moov_start, moov_end, b"trak"):
            is_video = False
            for mdia_start, mdia_end in _find(f, trak_start, trak_end, b"mdia"):
                for hdlr_start, _ in _find(f, mdia_start, mdia_end, b"hdlr"):
                    f.seek(hdlr_start + 8)  # version/flags, pre_defined
                    is_video = is_video or f.read(4) == b"vide"
            if not is_video:
                continue
            for tkhd_start, _ in _find(f, trak_start, trak_end, b"tkhd"):
                f.seek(tkhd_start)
                version = f.read(1)[0]
                # times and ids (20 or 32 bytes), reserved 8, layer/group/volume/reserved 8
                found.append(tkhd_start + 4 + (32 if version == 1 else 20) + 16)
    return found


def set_display_matrix(path: Path, matrix: tuple[int, ...]) -> int:
    """Write ``matrix`` (nine ints, as ffprobe prints them) into every video track; return count."""
    if len(matrix) != 9:
        raise ValueError("a display matrix has nine values")
    packed = struct.pack(">9i", *matrix)
    with open(path, "r+b") as f:
        size = f.seek(0, 2)
        offsets = _video_tkhd_offsets(f, size)
        for off in offsets:
            f.seek(off)
            f.write(packed)
    return len(offsets)


def parse_ffprobe_matrix(text: str) -> tuple[int, ...] | None:
    """ffprobe's 'displaymatrix' text ('00000000: a b c' rows) -> nine ints."""
    values: list[int] = []
    for line in text.strip().splitlines():
        _, _, row = line.partition(":")
        values += [int(x) for x in row.split()]
    return tuple(values) if len(values) == 9 else None
