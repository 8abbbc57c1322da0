"""Make the small lavfi clips of tests/data and capture what ffprobe says about them.

Each ``tests/data/NAME.json`` holds the three ffprobe outputs ``probe`` reads (the container JSON,
the video's packet CSV lines, the decoded window), trimmed to the fields the parser uses, so
``tests/test_probe_parse.py`` tests the parser without running ffmpeg.

    .venv/bin/python scripts/capture_probe.py [--out tests/data]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from mediatasks.steps.probe_args import container_args, packet_args, window_args

ROOT = Path(__file__).resolve().parents[1]
_STREAM_KEYS = {"index", "codec_type", "codec_name", "tags", "disposition", "channels", "width",
                "height", "pix_fmt", "sample_aspect_ratio", "r_frame_rate", "avg_frame_rate",
                "time_base", "field_order", "side_data_list", "color_range", "color_space",
                "color_transfer", "color_primaries", "start_time"}
_FORMAT_KEYS = {"format_name", "duration", "start_time", "bit_rate", "tags"}
_ITEM_KEYS = {"type", "pts", "flags", "best_effort_timestamp"}
_SRC = ["-f", "lavfi", "-i", "testsrc2=size=96x64:rate=25", "-t", "3"]
_X264 = ["-c:v", "libx264", "-preset", "ultrafast", "-g", "25"]

# name -> the ffmpeg commands that make it (the last one writes {out}; {tmp} is a scratch file).
CASES: dict[str, list[list[str]]] = {
    "plain": [[*_SRC, *_X264, "-bf", "0", "-pix_fmt", "yuv420p", "{out}.mkv"]],
    "bframes": [[*_SRC, *_X264, "-bf", "3", "-pix_fmt", "yuv420p", "{out}.mp4"]],
    "editlist": [[*_SRC, *_X264, "-bf", "3", "-pix_fmt", "yuv420p", "{tmp}.mp4"],
                 ["-ss", "0.5", "-i", "{tmp}.mp4", "-c", "copy", "{out}.mp4"]],
    "rotated": [[*_SRC, *_X264, "-bf", "0", "-pix_fmt", "yuv420p", "{tmp}.mp4"],
                ["-ss", "0.3", "-i", "{tmp}.mp4", "-c", "copy", "-metadata:s:v", "rotate=90",
                 "{out}.mov"]],
    "fullrange": [[*_SRC, *_X264, "-bf", "0", "-pix_fmt", "yuvj420p", "{out}.mp4"]],
}


def _ffmpeg(args: list[str]) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True)


def _json(argv: list[str]) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(subprocess.run(argv, check=True, capture_output=True,
                                                     text=True).stdout)
    return data


def capture(path: Path) -> dict[str, Any]:
    """The three ffprobe outputs for ``path``, trimmed to what the parser reads."""
    info = _json(container_args("ffprobe", path))
    streams = [{k: v for k, v in s.items() if k in _STREAM_KEYS} for s in info["streams"]]
    video = next(s["index"] for s in streams if s["codec_type"] == "video")
    csv = subprocess.run(packet_args("ffprobe", path, video), check=True, capture_output=True,
                         text=True).stdout
    window = _json(window_args("ffprobe", path, video))
    items = [{k: v for k, v in i.items() if k in _ITEM_KEYS}
             for i in window.get("packets_and_frames", [])]
    return {"container": {"format": {k: v for k, v in info["format"].items() if k in _FORMAT_KEYS},
                          "streams": streams, "chapters": info.get("chapters", [])},
            "packets": csv.splitlines(), "window": {"packets_and_frames": items}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "tests" / "data")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name, commands in CASES.items():
            for argv in commands:
                _ffmpeg([x.format(out=f"{tmp}/{name}", tmp=f"{tmp}/{name}-tmp") for x in argv])
            made = next(Path(tmp).glob(f"{name}.*"))
            (a.out / f"{name}.json").write_text(json.dumps(capture(made), indent=1) + "\n",
                                                encoding="utf-8")
            print(f"wrote {a.out / name}.json from {made.name}")


if __name__ == "__main__":
    main()
