"""Generate a test clip with ffmpeg's lavfi sources: video, two audio tracks, subtitles, chapters.

    python scripts/make_clip.py OUT.mkv [--seconds 20] [--size 1280x720] [--rate 30000/1001]
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
from pathlib import Path


def make_clip(out: Path, *, seconds: float, size: str, rate: str, codec: str = "libx264") -> None:
    with tempfile.TemporaryDirectory() as tmp:
        srt = Path(tmp) / "subs.srt"
        srt.write_text("".join(
            f"{i + 1}\n00:00:{i * 2:02d},000 --> 00:00:{i * 2 + 1:02d},500\nLine {i + 1}\n\n"
            for i in range(min(int(seconds // 2), 29))), encoding="utf-8")
        meta = Path(tmp) / "chapters.txt"
        half = int(seconds * 500)
        meta.write_text(";FFMETADATA1\ntitle=mediatasks demo\n"
                        f"[CHAPTER]\nTIMEBASE=1/1000\nSTART=0\nEND={half}\ntitle=One\n"
                        f"[CHAPTER]\nTIMEBASE=1/1000\nSTART={half}\nEND={int(seconds * 1000)}\n"
                        "title=Two\n", encoding="utf-8")
        argv = ["ffmpeg", "-nostdin", "-v", "error", "-y",
                "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}",
                "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
                "-f", "lavfi", "-i", "sine=frequency=660:sample_rate=48000",
                "-i", str(srt), "-i", str(meta),
                "-map", "0:v", "-map", "1:a", "-map", "2:a", "-map", "3:s",
                "-map_metadata", "4", "-map_chapters", "4",
                "-t", str(seconds), "-c:v", codec, "-preset", "veryfast", "-g", "48",
                "-pix_fmt", "yuv420p", "-c:a", "aac", "-c:s", "srt",
                "-metadata:s:a:0", "language=eng", "-metadata:s:a:1", "language=fra",
                "-metadata:s:s:0", "language=eng", str(out)]
        subprocess.run(argv, check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--size", default="1280x720")
    ap.add_argument("--rate", default="30000/1001")
    a = ap.parse_args()
    make_clip(a.out, seconds=a.seconds, size=a.size, rate=a.rate)


if __name__ == "__main__":
    main()
