"""How much does mediatasks cost over one plain ffmpeg doing the same encode?

    .venv/bin/python benchmarks/overhead.py [--seconds 60] [--size 1280x720] [--rounds 2]
                                            [--chunk-seconds S]

Times `mediatasks run` (private redis-server, local Celery workers, chunked encode, concat, mux,
verify, publish) against one `ffmpeg` with the same encoder settings, on a generated clip cached
under benchmarks/out/. Prints a table per round, the median wall-time ratio, the time spent
outside ffmpeg per chunk and peak memory; writes everything to benchmarks/out/overhead.json.

Memory: mediatasks workers hold no frames. Every chunk is one ffmpeg process that streams from
the source file on disk to a chunk file on disk; Python only passes paths and small JSON
messages. The peak RSS printed here is that of the largest single process in each command's
process tree (os.wait4's ru_maxrss, like RUSAGE_CHILDREN: a maximum, not a sum), so it is
normally one ffmpeg encoder, not the Python side.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

OUT_DIR = Path(__file__).resolve().parent / "out"
RATE = "30000/1001"
ENCODE = {"codec": "libx264", "preset": "medium", "crf": "23", "audio": "copy"}
FFMPEG = os.environ.get("MEDIATASKS_FFMPEG", "ffmpeg")
MEDIATASKS = Path(sys.executable).parent / "mediatasks"


class BenchError(Exception):
    """A step failed; the message is printed and the script exits 1."""


@dataclass(frozen=True)
class Timed:
    """One finished command: wall seconds, exit code, output, peak RSS (KiB) of its tree."""

    seconds: float
    returncode: int
    stdout: str
    stderr: str
    maxrss_kb: int


@dataclass(frozen=True)
class Round:
    index: int
    order: tuple[str, ...]
    mediatasks_s: float
    ffmpeg_s: float
    mediatasks_maxrss_kb: int
    ffmpeg_maxrss_kb: int

    @property
    def ratio(self) -> float:
        return self.mediatasks_s / self.ffmpeg_s


def run_timed(argv: list[str]) -> Timed:
    """Run argv (no shell), wall-clock it and read the peak RSS of the child and its reaped
    descendants from os.wait4, so earlier commands (clip generation, the other contestant) do
    not leak into the figure the way a process-wide getrusage(RUSAGE_CHILDREN) would."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Timed(seconds=seconds, returncode=proc.returncode,
                     stdout=out.read().decode(errors="replace"),
                     stderr=err.read().decode(errors="replace"), maxrss_kb=usage.ru_maxrss)


def check(timed: Timed, what: str) -> Timed:
    if timed.returncode != 0:
        tail = "\n".join(timed.stderr.strip().splitlines()[-10:])
        raise BenchError(f"{what} exited with {timed.returncode}:\n{tail}")
    return timed


def make_clip(seconds: float, size: str) -> Path:
    """The test clip (testsrc2 + sine, x264 veryfast + AAC in MKV), generated once."""
    clip = OUT_DIR / f"clip-{seconds:g}s-{size}.mkv"
    if clip.exists():
        return clip
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    partial = clip.with_name(f"{clip.stem}.partial.mkv")
    print(f"generating {clip.name} ...", flush=True)
    check(run_timed([
        FFMPEG, "-nostdin", "-v", "error", "-y",
        "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={RATE}",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
        "-map", "0:v", "-map", "1:a", "-t", f"{seconds:g}",
        "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
        "-c:a", "aac", str(partial)]), "clip generation")
    partial.replace(clip)
    return clip


def encode_opts(chunk_seconds: float | None) -> list[str]:
    opts = ["--video-codec", ENCODE["codec"], "--preset", ENCODE["preset"],
            "--crf", ENCODE["crf"], "--audio-codec", ENCODE["audio"]]
    if chunk_seconds is not None:
        opts += ["--chunk-seconds", f"{chunk_seconds:g}"]
    return opts


def last_json(stdout: str, what: str) -> dict[str, Any]:
    lines = [line for line in stdout.splitlines() if line.strip()]
    try:
        data = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        raise BenchError(f"{what} printed no JSON: {stdout.strip()[-500:]!r}") from None
    if not isinstance(data, dict):
        raise BenchError(f"{what} printed JSON that is not an object")
    return data


def chunk_count(src: Path, out: Path, chunk_seconds: float | None) -> int:
    argv = [str(MEDIATASKS), "plan", str(src), "-o", str(out), *encode_opts(chunk_seconds),
            "--json"]
    plan = last_json(check(run_timed(argv), "mediatasks plan").stdout, "mediatasks plan")
    return len(plan["chunks"])


def time_mediatasks(src: Path, out: Path, chunk_seconds: float | None) -> Timed:
    argv = [str(MEDIATASKS), "run", str(src), "-o", str(out), *encode_opts(chunk_seconds),
            "--overwrite", "--json"]
    timed = run_timed(argv)
    try:
        result = last_json(timed.stdout, "mediatasks run")
    except BenchError:
        check(timed, "mediatasks run")
        raise
    if result.get("status") != "succeeded":
        raise BenchError(f"mediatasks run {result.get('status')}: {result.get('error')}")
    return timed


def time_ffmpeg(src: Path, out: Path) -> Timed:
    argv = [FFMPEG, "-nostdin", "-v", "error", "-y", "-i", str(src), "-map", "0",
            "-c:v", ENCODE["codec"], "-preset", ENCODE["preset"], "-crf", ENCODE["crf"],
            "-c:a", ENCODE["audio"], str(out)]
    return check(run_timed(argv), "ffmpeg")


def run_round(index: int, src: Path, chunk_seconds: float | None) -> Round:
    """Round 1 runs mediatasks first, round 2 ffmpeg first, and so on (cache warmth evens out)."""
    order = ("mediatasks", "ffmpeg") if index % 2 == 1 else ("ffmpeg", "mediatasks")
    timed: dict[str, Timed] = {}
    for name in order:
        if name == "mediatasks":
            timed[name] = time_mediatasks(src, OUT_DIR / "mediatasks.mkv", chunk_seconds)
        else:
            timed[name] = time_ffmpeg(src, OUT_DIR / "ffmpeg.mkv")
    mt, ff = timed["mediatasks"], timed["ffmpeg"]
    return Round(index=index, order=order, mediatasks_s=mt.seconds, ffmpeg_s=ff.seconds,
                 mediatasks_maxrss_kb=mt.maxrss_kb, ffmpeg_maxrss_kb=ff.maxrss_kb)


def print_round(r: Round) -> None:
    print(f"\nround {r.index} (order: {' then '.join(r.order)})")
    print(f"  {'command':<12}{'wall s':>10}{'peak RSS MiB':>15}")
    print(f"  {'mediatasks':<12}{r.mediatasks_s:>10.2f}{r.mediatasks_maxrss_kb / 1024:>15.1f}")
    print(f"  {'ffmpeg':<12}{r.ffmpeg_s:>10.2f}{r.ffmpeg_maxrss_kb / 1024:>15.1f}")
    print(f"  ratio {r.ratio:.2f}")


def round_json(r: Round) -> dict[str, Any]:
    data = asdict(r)
    data.update(mediatasks_s=round(r.mediatasks_s, 3), ffmpeg_s=round(r.ffmpeg_s, 3),
                ratio=round(r.ratio, 4))
    return data


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    version = subprocess.run([FFMPEG, "-version"], capture_output=True, text=True, check=False)
    first = version.stdout.splitlines()[0] if version.stdout else "unknown"
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "ffmpeg": first,
            "python": platform.python_version()}


def summarize(rounds: list[Round], chunks: int) -> dict[str, Any]:
    mt = statistics.median(r.mediatasks_s for r in rounds)
    ff = statistics.median(r.ffmpeg_s for r in rounds)
    return {
        "median_mediatasks_s": round(mt, 2),
        "median_ffmpeg_s": round(ff, 2),
        "median_ratio": round(statistics.median(r.ratio for r in rounds), 4),
        "chunks": chunks,
        # Net of the parallel speed-up, so it can be negative on a machine with many cores.
        "outside_ffmpeg_per_chunk_s": round(statistics.median(
            (r.mediatasks_s - r.ffmpeg_s) / chunks for r in rounds), 3),
        "mediatasks_peak_rss_kb": max(r.mediatasks_maxrss_kb for r in rounds),
        "ffmpeg_peak_rss_kb": max(r.ffmpeg_maxrss_kb for r in rounds),
    }


def print_summary(s: dict[str, Any], m: dict[str, Any]) -> None:
    print(f"\nratio (mediatasks / ffmpeg): {s['median_ratio']:.2f}")
    print(f"  median of rounds; median walls {s['median_mediatasks_s']:.2f}s (mediatasks) vs "
          f"{s['median_ffmpeg_s']:.2f}s (ffmpeg)")
    print(f"time outside ffmpeg per chunk: {s['outside_ffmpeg_per_chunk_s']:.2f}s "
          f"over {s['chunks']} chunk(s)")
    print("  an estimate of broker/scheduling/concat/mux/verify overhead per chunk: "
          "(mediatasks wall - ffmpeg wall) / chunks, net of any parallel speed-up")
    print(f"peak RSS (largest single process): mediatasks tree "
          f"{s['mediatasks_peak_rss_kb'] / 1024:.1f} MiB, "
          f"ffmpeg {s['ffmpeg_peak_rss_kb'] / 1024:.1f} MiB")
    print(f"machine: {m['cpu']}, {m['cores']} cores; {m['ffmpeg']}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60, help="clip length (default 60)")
    ap.add_argument("--size", default="1280x720", help="clip size WxH (default 1280x720)")
    ap.add_argument("--rounds", type=int, default=2, help="timed rounds (default 2)")
    ap.add_argument("--chunk-seconds", type=float, default=None,
                    help="passed to mediatasks (default: its own)")
    args = ap.parse_args(argv)
    if args.seconds <= 0 or args.rounds < 1:
        ap.error("--seconds must be > 0 and --rounds >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which(FFMPEG) is None or not MEDIATASKS.exists():
        print(f"error: needs {FFMPEG} on PATH and {MEDIATASKS} (run `make venv`)", file=sys.stderr)
        return 1
    try:
        src = make_clip(args.seconds, args.size)
        chunks = chunk_count(src, OUT_DIR / "mediatasks.mkv", args.chunk_seconds)
        print(f"source {src.name}: {args.seconds:g}s {args.size} @ {RATE}, "
              f"{chunks} chunk(s); x264 preset {ENCODE['preset']} crf {ENCODE['crf']}")
        rounds = []
        for i in range(1, args.rounds + 1):
            rounds.append(run_round(i, src, args.chunk_seconds))
            print_round(rounds[-1])
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    summary, mach = summarize(rounds, chunks), machine()
    print_summary(summary, mach)
    report = {"config": {"seconds": args.seconds, "size": args.size, "rate": RATE,
                         "rounds": args.rounds, "chunk_seconds": args.chunk_seconds, **ENCODE},
              "machine": mach, "summary": summary,
              "rounds": [round_json(r) for r in rounds]}
    (OUT_DIR / "overhead.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {OUT_DIR / 'overhead.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
