"""Run every file of the corpus, and files made here the ways phones and editors write them
(edit lists, B-frames, rotation, full range, colour tags), through `mediatasks run` with a
lossless codec and write the results to docs/compatibility.md: frame-exact (the output's displayed
frames hash like ffmpeg's own decode of the source) or refused with the one-line reason.

    .venv/bin/python scripts/compatibility.py [--corpus ../shared/corpus] [--out docs/compatibility.md]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MEDIATASKS = Path(sys.executable).with_name("mediatasks")


# name -> ffmpeg commands that make it from lavfi ({out}: the file, {tmp}: a scratch name).
_SRC = ["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-t", "6"]
_H264 = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-g", "50", "-bf", "3"]
_HEVC = ["-c:v", "libx265", "-preset", "ultrafast", "-g", "50",
         "-x265-params", "log-level=error:bframes=3"]
GENERATED: dict[str, list[list[str]]] = {
    "bframes-h264.mp4": [[*_SRC, *_H264, "{out}"]],
    "editlist-cut-h264.mp4": [[*_SRC, *_H264, "{tmp}.mp4"],
                              ["-ss", "1.3", "-i", "{tmp}.mp4", "-c", "copy", "{out}"]],
    "editlist-cut-hevc.mov": [[*_SRC, *_HEVC, "-pix_fmt", "yuv420p", "{tmp}.mov"],
                              ["-ss", "1.3", "-i", "{tmp}.mov", "-c", "copy", "{out}"]],
    "editlist-late.mp4": [[*_SRC, *_H264, "{tmp}.mp4"],
                          ["-i", "{tmp}.mp4", "-c", "copy", "-output_ts_offset", "0.5", "{out}"]],
    "editlist-negative-start.mp4": [[*_SRC, *_H264, "{tmp}.mp4"],
                                    ["-itsoffset", "-0.4", "-i", "{tmp}.mp4", "-c", "copy",
                                     "{out}"]],
    "phone-hevc10-hlg-rotated-editlist.mov": [
        [*_SRC, *_HEVC, "-pix_fmt", "yuv420p10le", "-color_primaries", "bt2020", "-color_trc",
         "arib-std-b67", "-colorspace", "bt2020nc", "{tmp}.mov"],
        ["-ss", "0.7", "-i", "{tmp}.mov", "-c", "copy", "-metadata:s:v", "rotate=90", "{out}"]],
    **{f"rotated-{deg}.mp4": [[*_SRC, *_H264, "{tmp}.mp4"],
                              ["-i", "{tmp}.mp4", "-c", "copy", "-metadata:s:v", f"rotate={deg}",
                               "{out}"]] for deg in (90, 180, 270)},
    "fullrange-yuvj420p.mp4": [[*_SRC, *_H264[:4], "-pix_fmt", "yuvj420p", "{out}"]],
    "fullrange-pc.mkv": [[*_SRC, "-c:v", "ffv1", "-pix_fmt", "yuv420p", "-color_range", "pc",
                          "{out}"]],
    "colour-bt470bg.mpg": [[*_SRC, "-c:v", "mpeg2video", "-g", "12", "-color_primaries",
                            "bt470bg", "-color_trc", "gamma28", "-colorspace", "bt470bg",
                            "{out}"]],
}
_YUV_TWIN = {"yuvj420p": "yuv420p", "yuvj422p": "yuv422p", "yuvj444p": "yuv444p",
             "yuvj440p": "yuv440p", "yuvj411p": "yuv411p"}


def generate(directory: Path) -> list[Path]:
    """Make the GENERATED files in ``directory``."""
    made = []
    for name, commands in GENERATED.items():
        out = directory / name
        for argv in commands:
            subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y",
                            *(a.format(out=out, tmp=directory / f"tmp-{name}") for a in argv)],
                           check=True)
        made.append(out)
    return made


def hashes(path: Path, stream: str, pix_fmt: str | None) -> list[str]:
    """The displayed frames (ffmpeg's default autorotation applied)."""
    argv = ["ffmpeg", "-nostdin", "-v", "quiet", "-i", str(path), "-map",
            f"0:{stream}", "-fps_mode", "passthrough"]
    if pix_fmt:
        argv += ["-pix_fmt", pix_fmt]
    out = subprocess.run([*argv, "-f", "framemd5", "-"], capture_output=True, text=True).stdout
    return [line.rsplit(",", 1)[1].strip() for line in out.splitlines()
            if line and not line.startswith("#")]


def video_index(path: Path) -> str:
    out = subprocess.run([str(MEDIATASKS), "probe", str(path), "--json"], capture_output=True,
                         text=True)
    return str(json.loads(out.stdout)["video"]["index"]) if out.returncode == 0 else "v:0"


def pix_fmt(path: Path) -> str:
    # JSON, not CSV: a stream with side data (a rotation) adds fields to a CSV line.
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                          "stream=pix_fmt", "-of", "json", str(path)], capture_output=True,
                         text=True).stdout
    streams = json.loads(out or "{}").get("streams") or [{}]
    return str(streams[0].get("pix_fmt", ""))


def corpus_files(corpus: Path) -> list[Path]:
    return sorted(p for p in corpus.rglob("*") if p.is_file() and p.name != "README.md")


def check(src: Path, tmp: Path) -> dict[str, object]:
    out = tmp / "out.mkv"
    started = time.monotonic()
    done = subprocess.run([str(MEDIATASKS), "run", str(src), "-o", str(out), "--video-codec",
                           "ffv1", "--chunk-seconds", "1", "--overwrite", "--json"],
                          capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
    seconds = round(time.monotonic() - started, 1)

    def short(message: str) -> str:  # the table names the file already
        return message.removeprefix("mediatasks: error: ").replace(f"{src}: ", "")

    if done.returncode != 0 and not done.stdout.strip():
        reason = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "?"
        return {"result": "refused", "reason": short(reason), "seconds": seconds}
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if result["status"] != "succeeded":
        return {"result": "refused", "reason": short(str(result["error"])), "seconds": seconds}
    # A yuvj* source is encoded as its yuv* twin, full range: the same planes, no conversion.
    want = pix_fmt(out)
    convert = None if want in {pix_fmt(src), _YUV_TWIN.get(pix_fmt(src))} else want
    exact = hashes(out, "0", None) == hashes(src, video_index(src), convert)
    return {"result": "frame-exact" if exact else "MISMATCH", "frames": result["frames_out"],
            "chunks": result["chunks"], "seconds": seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "corpus")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "compatibility.md")
    a = ap.parse_args()
    files = corpus_files(a.corpus)
    sections: list[tuple[str, list[tuple[str, dict[str, object]]]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        made = Path(tmp) / "generated"
        made.mkdir()
        for title, group, base in (("Generated files", generate(made), made),
                                   ("The corpus", files, a.corpus)):
            rows = []
            for f in group:
                r = check(f, Path(tmp))
                rows.append((str(f.relative_to(base)), r))
                print(f"{r['result']:<12} {f.relative_to(base)}", flush=True)
            sections.append((title, rows))
    lines = ["# Compatibility: the corpus through `mediatasks run`", "",
             "Generated by `scripts/compatibility.py` (do not edit by hand): every file of the "
             "corpus, and files the script makes with ffmpeg the ways phones and editors write "
             "them (edit lists, B-frames, rotation, full range, colour tags; the commands are in "
             "the script), through `mediatasks run --video-codec ffv1 --chunk-seconds 1`. "
             "*frame-exact*: the output's displayed frames hash like ffmpeg's own decode of the "
             "source; *refused*: one-line error, no output."]
    failed = False
    for title, rows in sections:
        exact = sum(1 for _, r in rows if r["result"] == "frame-exact")
        refused = sum(1 for _, r in rows if r["result"] == "refused")
        failed |= exact + refused != len(rows)
        lines += ["", f"## {title}", "",
                  f"**{len(rows)} files: {exact} frame-exact, {refused} refused, "
                  f"{len(rows) - exact - refused} other.**", "",
                  "| file | result | frames | chunks | seconds | reason |",
                  "|---|---|---|---|---|---|"]
        for name, r in rows:
            lines.append(f"| `{name}` | {r['result']} | {r.get('frames', '')} | "
                         f"{r.get('chunks', '')} | {r['seconds']} | "
                         f"{str(r.get('reason', '')).replace('|', '/')} |")
        print(f"{title}: {exact} frame-exact, {refused} refused of {len(rows)}")
    a.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {a.out}")
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
