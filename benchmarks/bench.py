"""mediatasks against one plain ffmpeg: fixed cost, encoders by core count, memory; writes
docs/performance.md (from benchmarks/performance.md.in) and docs/performance.png.

    .venv/bin/python benchmarks/bench.py [--quick] [--baseline-rev REV] [--rounds N]
                                         [--budget-minutes M] [--no-docs]

Every source is generated once with ffmpeg's lavfi test pattern and cached in benchmarks/out/.
Each measurement runs the contestants one after another in alternating order: `mediatasks run`
of this checkout, `mediatasks run` of ``--baseline-rev`` (checked out with `git worktree add`
into benchmarks/out/, run from this venv with PYTHONPATH pointing at it) and one plain
`ffmpeg` with the same encoder settings and its own threading. Fewer cores than the machine has
are given with sched_setaffinity (what `taskset` does) to every contestant alike; core counts
above the machine's are skipped with a line saying so. Peak RSS per process kind (the CLI, the
celery workers, ffmpeg) is sampled from /proc while a command runs (VmHWM).

Timings are only as good as the machine is quiet: run it on an idle machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import string
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from overhead import cpu_model  # the machine's CPU, as the older overhead benchmark reads it

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "out"
DOCS = ROOT / "docs"
TEMPLATE = ROOT / "benchmarks" / "performance.md.in"
FFMPEG = os.environ.get("MEDIATASKS_FFMPEG", "ffmpeg")
RATE = "30"
CORE_COUNTS = (1, 2, 4, 8, 16)
MACHINE_CORES = len(os.sched_getaffinity(0))
ENTRY = "import sys; from mediatasks.cli import main; sys.argv[0] = 'mediatasks'; sys.exit(main())"

# Encoder settings as the issue measured them: (preset, crf, extra options).
ENCODERS: dict[str, tuple[str | None, str, tuple[tuple[str, str], ...]]] = {
    "libx264": ("medium", "23", ()),
    "libx265": ("medium", "28", ()),
    "libaom-av1": (None, "32", (("cpu-used", "6"), ("row-mt", "1"))),
    "libvpx-vp9": (None, "32", (("deadline", "good"), ("cpu-used", "4"), ("row-mt", "1"),
                                ("b", "0"))),
    "libsvtav1": ("8", "35", ()),
}


class BenchError(Exception):
    """A command failed; the message is printed and the script exits 1."""


# -- running and measuring ------------------------------------------------------------------

def _tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _kind(pid: int, root: int) -> str | None:
    if pid == root:
        return "cli"
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return None
    name = os.path.basename(argv[0].decode(errors="replace")) if argv else ""
    if b"celery" in argv or b"mediatasks.cluster.boot" in argv:
        return "worker"
    if argv and b"redis-server" in argv[0]:
        return "redis"
    if name.startswith(("ffmpeg", "ffprobe", "redis")):
        return name.split("-")[0]
    return None


def _hwm_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


@dataclass
class Timed:
    seconds: float
    returncode: int
    stdout: str
    stderr: str
    peak_kb: dict[str, int] = field(default_factory=dict)  # kind -> largest single process


def run(argv: list[str], *, cores: int | None = None, env: dict[str, str] | None = None,
        sample: bool = False) -> Timed:
    cpus = set(sorted(os.sched_getaffinity(0))[:cores]) if cores else None
    peaks: dict[str, int] = {}
    out_path, err_path = OUT / ".stdout", OUT / ".stderr"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        started = time.perf_counter()
        # Run from benchmarks/out: a checkout in the working directory would shadow the one on
        # PYTHONPATH (python -c puts '' first on sys.path).
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env,
                                cwd=OUT,
                                preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)
        stop = threading.Event()

        def poll() -> None:
            while not stop.is_set():
                for pid in _tree(proc.pid):
                    kind = _kind(pid, proc.pid)
                    if kind is not None:
                        peaks[kind] = max(peaks.get(kind, 0), _hwm_kb(pid))
                stop.wait(0.1)

        sampler = threading.Thread(target=poll, daemon=True)
        if sample:
            sampler.start()
        proc.wait()
        seconds = time.perf_counter() - started
        stop.set()
        if sample:
            sampler.join()
    return Timed(seconds, proc.returncode, out_path.read_text(errors="replace"),
                 err_path.read_text(errors="replace"), peaks)


def check(t: Timed, what: str) -> Timed:
    if t.returncode != 0:
        tail = "\n".join((t.stderr or t.stdout).strip().splitlines()[-8:])
        raise BenchError(f"{what} exited with {t.returncode}:\n{tail}")
    return t


def ffmpeg_version() -> str:
    done = subprocess.run([FFMPEG, "-version"], capture_output=True, text=True, check=False)
    first = done.stdout.splitlines()[0] if done.stdout else "unknown"
    return " ".join(first.split()[:3])


def encoders_available() -> set[str]:
    done = subprocess.run([FFMPEG, "-hide_banner", "-encoders"], capture_output=True, text=True,
                          check=False)
    return {line.split()[1] for line in done.stdout.splitlines()
            if len(line.split()) > 1 and line.split()[1] in ENCODERS}


# -- sources --------------------------------------------------------------------------------

def clip(seconds: float, size: str) -> Path:
    """testsrc2 + a sine tone, x264 veryfast + AAC in MKV, generated once."""
    path = OUT / f"clip-{seconds:g}s-{size}.mkv"
    if not path.exists():
        tmp = path.with_name(path.stem + ".partial.mkv")
        print(f"generating {path.name}", flush=True)
        check(run([FFMPEG, "-nostdin", "-v", "error", "-y",
                   "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={RATE}",
                   "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
                   "-map", "0:v", "-map", "1:a", "-t", f"{seconds:g}", "-c:v", "libx264",
                   "-preset", "veryfast", "-g", "60", "-pix_fmt", "yuv420p", "-c:a", "aac",
                   str(tmp)]), "generating a clip")
        tmp.replace(path)
    return path


def long_source(hours: float, size: str = "320x240") -> Path:
    """A long source made fast: a 60 s clip looped with -c copy (no encode)."""
    path = OUT / f"long-{round(hours * 60)}min-{size}.mkv"
    if not path.exists():
        piece = clip(60, size)
        loops = max(0, round(hours * 60) - 1)
        tmp = path.with_name(path.stem + ".partial.mkv")
        print(f"generating {path.name} ({loops + 1} copies of {piece.name})", flush=True)
        check(run([FFMPEG, "-nostdin", "-v", "error", "-y", "-stream_loop", str(loops),
                   "-i", str(piece), "-map", "0", "-c", "copy", str(tmp)]), "looping a clip")
        tmp.replace(path)
    return path


# -- contestants ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Code:
    """A checkout of mediatasks to time: its tree goes first on PYTHONPATH."""

    label: str
    tree: Path


def mediatasks_env(code: Code) -> dict[str, str]:
    env = dict(os.environ)
    # Each contestant its own work folder and history: schemas and cached checks differ.
    env.update(PYTHONPATH=str(code.tree), MEDIATASKS_WORK_DIR=str(OUT / f"work-{code.label}"),
               MEDIATASKS_DATABASE_URL=f"sqlite:///{OUT / f'history-{code.label}.db'}")
    env.pop("MEDIATASKS_CHUNK_SECONDS", None)
    return env


def encode_flags(encoder: str) -> list[str]:
    preset, crf, opts = ENCODERS[encoder]
    flags = ["--video-codec", encoder, "--crf", crf, "--audio-codec", "copy"]
    if preset:
        flags += ["--preset", preset]
    for key, value in opts:
        flags += ["--video-opt", f"{key}={value}"]
    return flags


def ffmpeg_flags(encoder: str) -> list[str]:
    preset, crf, opts = ENCODERS[encoder]
    flags = ["-c:v", encoder, "-crf", crf]
    if preset:
        flags += ["-preset", preset]
    for key, value in opts:
        flags += [f"-{key}:v", value]
    return flags


def last_json(stdout: str) -> dict[str, Any]:
    for line in reversed(stdout.strip().splitlines()):
        try:
            data = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(data, dict):
            return data
    return {}


@dataclass
class Result:
    seconds: float
    size: int
    peak_kb: dict[str, int]
    steps: dict[str, float] = field(default_factory=dict)
    schedule: dict[str, Any] = field(default_factory=dict)
    chunks: int | None = None


def time_mediatasks(code: Code, src: Path, encoder: str, *, cores: int | None,
                    sample: bool = False) -> Result:
    out = OUT / f"mt-{code.label}.mkv"
    t = run([sys.executable, "-c", ENTRY, "run", str(src), "-o", str(out), *encode_flags(encoder),
             "--overwrite", "--json"], cores=cores, env=mediatasks_env(code), sample=sample)
    data = last_json(t.stdout)
    if t.returncode != 0 or data.get("status") != "succeeded":
        raise BenchError(f"mediatasks run ({code.label}) on {src.name}: "
                         f"{data.get('error') or t.stderr.strip()[-400:]}")
    return Result(t.seconds, out.stat().st_size, t.peak_kb, data.get("steps") or {},
                  data.get("schedule") or {}, data.get("chunks"))


def time_ffmpeg(src: Path, encoder: str, *, cores: int | None) -> Result:
    out = OUT / "ffmpeg.mkv"
    t = check(run([FFMPEG, "-nostdin", "-v", "error", "-y", "-i", str(src), "-map", "0:v",
                   "-map", "0:a?", *ffmpeg_flags(encoder), "-c:a", "copy", str(out)],
                  cores=cores, sample=True), f"ffmpeg {encoder}")
    return Result(t.seconds, out.stat().st_size, t.peak_kb)


def compare(codes: list[Code], src: Path, encoder: str, *, cores: int | None, rounds: int
            ) -> dict[str, Any]:
    """Median over ``rounds`` of each contestant, the order turning each round."""
    names = ["ffmpeg", *(c.label for c in codes)]
    got: dict[str, list[Result]] = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            if name == "ffmpeg":
                got[name].append(time_ffmpeg(src, encoder, cores=cores))
            else:
                code = next(c for c in codes if c.label == name)
                got[name].append(time_mediatasks(code, src, encoder, cores=cores, sample=True))
    row: dict[str, Any] = {"source": src.name, "encoder": encoder, "cores": cores or MACHINE_CORES,
                           "rounds": rounds}
    ff = statistics.median(x.seconds for x in got["ffmpeg"])
    row["ffmpeg_s"] = round(ff, 3)
    row["ffmpeg_bytes"] = got["ffmpeg"][-1].size
    for c in codes:
        res = got[c.label]
        med = statistics.median(x.seconds for x in res)
        row[c.label] = {
            "seconds": round(med, 3), "ratio": round(med / ff, 3),
            "size_ratio": round(res[-1].size / row["ffmpeg_bytes"], 4),
            "chunks": res[-1].chunks, "schedule": res[-1].schedule, "steps": res[-1].steps,
            "peak_kb": {k: max(x.peak_kb.get(k, 0) for x in res)
                        for k in {k for x in res for k in x.peak_kb}},
        }
    return row


# -- the parts --------------------------------------------------------------------------------

@dataclass
class Plan:
    """What to measure (sizes bounded so that the whole run fits its time)."""

    fixed_rounds: int
    rounds: int
    small: tuple[float, str]
    long_x264: tuple[float, str]
    slow: tuple[float, str]
    hours: float
    core_counts: tuple[int, ...] = tuple(n for n in CORE_COUNTS if n <= MACHINE_CORES)


def make_plan(args: argparse.Namespace) -> Plan:
    if args.quick:
        return Plan(fixed_rounds=1, rounds=1, small=(4, "320x240"), long_x264=(8, "640x360"),
                    slow=(2, "320x240"), hours=1 / 6, core_counts=(MACHINE_CORES,))
    many = MACHINE_CORES >= 8
    return Plan(fixed_rounds=args.rounds + 1, rounds=args.rounds, small=(12, "640x360"),
                long_x264=(120, "1920x1080") if many else (60, "1280x720"),
                slow=(20, "1280x720") if many else (8, "640x360"), hours=2.0)


class Budget:
    def __init__(self, minutes: float):
        self.deadline = time.monotonic() + minutes * 60
        self.skipped: list[str] = []

    def allows(self, what: str) -> bool:
        if time.monotonic() < self.deadline:
            return True
        self.skipped.append(f"{what}: skipped, the time budget (--budget-minutes) was spent")
        print(f"skipped: {what} (time budget spent)", flush=True)
        return False


def fixed_cost(codes: list[Code], plan: Plan) -> dict[str, Any]:
    print("\n== fixed cost: a 2 s 320x240 clip, libx264", flush=True)
    row = compare(codes, clip(2, "320x240"), "libx264", cores=None, rounds=plan.fixed_rounds)
    for c in codes:
        row[c.label]["over_ffmpeg_s"] = round(row[c.label]["seconds"] - row["ffmpeg_s"], 3)
        print(f"  {c.label}: {row[c.label]['seconds']:.2f}s "
              f"(+{row[c.label]['over_ffmpeg_s']:.2f}s over ffmpeg's {row['ffmpeg_s']:.2f}s)")
    return row


def encoder_grid(codes: list[Code], plan: Plan, available: set[str], budget: Budget
                 ) -> tuple[list[dict[str, Any]], list[str]]:
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    counts = list(plan.core_counts)
    for n in CORE_COUNTS:
        if n not in counts and n > MACHINE_CORES:
            notes.append(f"{n} cores: skipped, this machine has {MACHINE_CORES}")
            print(f"skipped: {n} cores (this machine has {MACHINE_CORES})")
    for encoder in ENCODERS:
        if encoder not in available:
            notes.append(f"{encoder}: skipped, this ffmpeg has no such encoder")
            continue
        seconds, size = plan.small if encoder in {"libx264", "libx265"} else plan.slow
        src = clip(seconds, size)
        for n in counts:
            what = f"{encoder}, {src.name}, {n} core(s)"
            if not budget.allows(what):
                continue
            print(f"\n== {what}", flush=True)
            row = compare(codes, src, encoder, cores=n, rounds=plan.rounds)
            rows.append(row)
            print("  " + ", ".join(f"{c.label} {row[c.label]['ratio']:.2f}x size "
                                   f"{row[c.label]['size_ratio']:.3f}" for c in codes)
                  + f" (ffmpeg {row['ffmpeg_s']:.2f}s)")
    return rows, notes


def long_x264(codes: list[Code], plan: Plan, budget: Budget) -> list[dict[str, Any]]:
    """The longest libx264 medium encode, on every core of the machine."""
    seconds, size = plan.long_x264
    what = f"libx264, {seconds:g}s {size}, {MACHINE_CORES} core(s)"
    if not budget.allows(what):
        return []
    print(f"\n== {what}", flush=True)
    row = compare(codes, clip(seconds, size), "libx264", cores=None, rounds=plan.rounds)
    row["long"] = True
    print("  " + ", ".join(f"{c.label} {row[c.label]['ratio']:.2f}x" for c in codes))
    return [row]


def memory(code: Code, plan: Plan, budget: Budget) -> dict[str, Any]:
    """A long low-resolution source: `cat` once, `mediatasks plan`, `mediatasks run` (x264
    ultrafast), peak RSS of the CLI and of the workers."""
    src = long_source(plan.hours)
    result: dict[str, Any] = {"source": src.name, "bytes": src.stat().st_size}
    print(f"\n== memory and plan time: {src.name} ({src.stat().st_size / 2**20:.0f} MiB)",
          flush=True)
    run(["cat", str(src)])  # into the page cache
    cat = min(run(["sh", "-c", f"cat '{src}' >/dev/null"]).seconds for _ in range(2))
    t = check(run([sys.executable, "-c", ENTRY, "plan", str(src), "--json"],
                  env=mediatasks_env(code), sample=True), "mediatasks plan")
    data = last_json(t.stdout)
    result.update(cat_s=round(cat, 3), plan_s=round(t.seconds, 3),
                  plan_limit_s=round(1.5 * cat + 2, 3), plan_peak_kb=t.peak_kb.get("cli", 0),
                  frames=data.get("frames"), chunks=len(data.get("chunks") or []))
    print(f"  cat {cat:.2f}s, plan {t.seconds:.2f}s (limit {1.5 * cat + 2:.2f}s), "
          f"CLI peak {t.peak_kb.get('cli', 0) / 1024:.0f} MiB, {data.get('frames')} frames")
    if budget.allows(f"mediatasks run of {src.name}"):
        out = OUT / "long-out.mkv"
        t = run([sys.executable, "-c", ENTRY, "run", str(src), "-o", str(out), "--video-codec",
                 "libx264", "--preset", "ultrafast", "--overwrite", "--json"],
                env=mediatasks_env(code), sample=True)
        data = last_json(t.stdout)
        if data.get("status") != "succeeded":
            raise BenchError(f"mediatasks run of {src.name}: {data.get('error') or t.stderr[-400:]}")
        result.update(run_s=round(t.seconds, 3), run_peak_kb=t.peak_kb, run_steps=data.get("steps"))
        print(f"  run {t.seconds:.1f}s, peak RSS " + ", ".join(
            f"{k} {v / 1024:.0f} MiB" for k, v in sorted(t.peak_kb.items())))
    return result


def running_cluster(code: Code, jobs: int) -> dict[str, Any] | None:
    """benchmarks/cluster_latency.py on the 2 s clip, with ``code`` first on PYTHONPATH."""
    print("\n== a job on an idle, running cluster", flush=True)
    t = run([sys.executable, str(ROOT / "benchmarks" / "cluster_latency.py"),
             str(clip(2, "320x240")), str(OUT / "cluster"), "--jobs", str(jobs)],
            env=mediatasks_env(code))
    data = last_json(t.stdout)
    if t.returncode != 0 or "first_encode_s" not in data:
        print(f"  failed: {(t.stderr or t.stdout).strip()[-400:]}", flush=True)
        return None
    print(f"  first encode {data['first_encode_s']:.2f}s after submit, non-encode steps "
          f"{data['non_encode_s']:.2f}s")
    return data


def cluster_table(data: dict[str, Any] | None) -> str:
    if not data:
        return "(not measured)"
    jobs = data["jobs"]
    middle = sorted(jobs, key=lambda j: j["first_encode_s"])[len(jobs) // 2]
    lines = ["| measure | seconds |", "|---|---|",
             f"| submit to first encode (median of {len(jobs)}) | {data['first_encode_s']:.2f} |",
             f"| non-encode steps (median) | {data['non_encode_s']:.2f} |"]
    lines += [f"| {k} | {v:.2f} |" for k, v in middle.items()
              if k not in {"first_encode_s", "non_encode_s", "chunks"}]
    return "\n".join(lines)


# -- the report -----------------------------------------------------------------------------

def _fmt(x: float | None, spec: str = ".2f") -> str:
    return "-" if x is None else format(x, spec)


def encoder_tables(rows: list[dict[str, Any]], codes: list[Code]) -> str:
    parts = []
    for encoder in ENCODERS:
        mine = [r for r in rows if r["encoder"] == encoder]
        if not mine:
            continue
        head = "| source | cores | plain ffmpeg s | " + " | ".join(
            f"{c.label} s | {c.label} ratio | {c.label} size vs ffmpeg" for c in codes) + \
            f" | {codes[0].label} schedule |"
        sep = "|" + "---|" * (4 + 3 * len(codes))
        lines = [f"### {encoder}", "", head, sep]
        for r in mine:
            s = r[codes[0].label].get("schedule") or {}
            sched = (f"{s.get('chunks')} chunk(s) of {s.get('chunk_seconds')}s, "
                     f"{s.get('workers')} at once, {s.get('threads') or 'own'} thread(s)"
                     if s else "-")
            lines.append(f"| {r['source']} | {r['cores']} | {r['ffmpeg_s']:.2f} | " + " | ".join(
                f"{r[c.label]['seconds']:.2f} | {r[c.label]['ratio']:.2f} | "
                f"{r[c.label]['size_ratio']:.3f}" for c in codes) + f" | {sched} |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def steps_table(row: dict[str, Any], code: Code) -> str:
    steps = row[code.label].get("steps") or {}
    if not steps:
        return "(this code prints no step times)"
    lines = ["| step | seconds |", "|---|---|"]
    lines += [f"| {k} | {v:.2f} |" for k, v in steps.items()]
    return "\n".join(lines)


NON_ENCODE = ("probe", "plan", "concat", "mux", "verify", "publish")


def goals(fixed: dict[str, Any], rows: list[dict[str, Any]], mem: dict[str, Any] | None,
          code: Code, cluster: dict[str, Any] | None = None) -> str:
    lines = ["| goal | target | measured | met |", "|---|---|---|---|"]

    def add(goal: str, target: str, value: float | None, ok: bool | None, unit: str = "") -> None:
        met = "-" if ok is None else ("yes" if ok else "**no**")
        lines.append(f"| {goal} | {target} | {_fmt(value)}{unit} | {met} |")

    over = fixed[code.label]["over_ffmpeg_s"]
    add("1. fixed cost, 2 s clip", "at most 1.5 s over ffmpeg", over, over <= 1.5, " s")
    if cluster:
        first = cluster["first_encode_s"]
        add("1. first encode of a job submitted to an idle, running cluster", "at most 0.3 s",
            first, first <= 0.3, " s")
        limit = 1 + 0.02 * cluster["chunks"]
        add(f"1. non-encode steps on a running cluster ({cluster['chunks']:.0f} chunk(s))",
            f"at most {limit:.2f} s", cluster["non_encode_s"], cluster["non_encode_s"] <= limit,
            " s")
    longest = next((r for r in rows if r.get("long")), None)
    if longest is not None:
        st = longest[code.label].get("steps") or {}
        chunks = longest[code.label].get("chunks") or 1
        non = sum(st.get(k, 0.0) for k in NON_ENCODE)
        add(f"1. non-encode steps, {longest['source']} ({chunks} chunks)",
            f"at most {1 + 0.02 * chunks:.2f} s", non if st else None,
            (non <= 1 + 0.02 * chunks) if st else None, " s")
        limit = 1.03
        add(f"3. libx264 {longest['source']}, {longest['cores']} cores", f"at most {limit}x",
            longest[code.label]["ratio"], longest[code.label]["ratio"] <= limit, "x")
    for r in rows:
        if r.get("long") or r["cores"] != max(x["cores"] for x in rows):
            continue
        mine = r[code.label]
        if r["encoder"] == "libx265":
            add(f"3. libx265 {r['source']}, {r['cores']} cores", "at most 1.0x", mine["ratio"],
                mine["ratio"] <= 1.0, "x")
        elif r["encoder"] == "libx264" and r["cores"] <= 2:
            add(f"3. libx264 {r['source']}, {r['cores']} cores", "at most 1.5x", mine["ratio"],
                mine["ratio"] <= 1.5, "x")
        elif r["encoder"] not in {"libx264", "libx265"}:
            ok = mine["ratio"] <= 0.25 if r["cores"] >= 16 else None
            add(f"3. {r['encoder']} {r['source']}, {r['cores']} cores",
                "at least 4x faster on 16 cores", 1 / mine["ratio"], ok, "x faster")
        add(f"2. size, {r['encoder']} {r['source']}", "within 2 % of ffmpeg",
            100 * (mine["size_ratio"] - 1), abs(mine["size_ratio"] - 1) <= 0.02, " %")
    if mem:
        add(f"5. probe + plan of {mem['source']}", f"at most 1.5 x cat + 2 s = "
            f"{mem['plan_limit_s']:.2f} s", mem["plan_s"], mem["plan_s"] <= mem["plan_limit_s"],
            " s")
        add("5. CLI peak RSS, plan", "flat as the file grows", mem["plan_peak_kb"] / 1024, None,
            " MiB")
        short = fixed[code.label].get("peak_kb", {})
        for kind in ("cli", "worker"):
            if "run_peak_kb" in mem and short.get(kind):
                # Flat: the long source's peak within a quarter of the 2 s clip's.
                long_kb, short_kb = mem["run_peak_kb"].get(kind, 0), short[kind]
                add(f"5. {kind} peak RSS, run of {mem['source']}",
                    f"flat as the file grows: within 25 % of the 2 s clip's "
                    f"{short_kb / 1024:.0f} MiB", long_kb / 1024, long_kb <= 1.25 * short_kb,
                    " MiB")
    return "\n".join(lines)


def chart(rows: list[dict[str, Any]], codes: list[Code], path: Path, title: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[dev]'): no chart", file=sys.stderr)
        return False
    grid = [r for r in rows if not r.get("long")]
    encoders = [e for e in ENCODERS if any(r["encoder"] == e for r in grid)]
    fig, axes = plt.subplots(1, max(1, len(encoders)), figsize=(3.2 * max(1, len(encoders)), 3.4),
                             sharey=True, squeeze=False)
    for ax, encoder in zip(axes[0], encoders, strict=False):
        mine = [r for r in grid if r["encoder"] == encoder]
        cores = [r["cores"] for r in mine]
        for c in codes:
            ax.plot(cores, [r[c.label]["ratio"] for r in mine], marker="o", label=c.label)
        ax.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
        ax.set_xscale("log", base=2)
        ax.set_xticks(cores, [str(n) for n in cores])
        ax.set_title(encoder, fontsize=9)
        ax.set_xlabel("cores")
    axes[0][0].set_ylabel("wall time / plain ffmpeg")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_docs(report: dict[str, Any], codes: list[Code], png: bool) -> None:
    fixed, rows, mem = report["fixed"], report["encoders"], report.get("memory")
    m = report["machine"]
    fixed_lines = ["| contestant | wall s | over plain ffmpeg s | peak RSS CLI MiB | "
                   "peak RSS worker MiB |", "|---|---|---|---|---|",
                   f"| plain ffmpeg | {fixed['ffmpeg_s']:.2f} | - | - | - |"]
    for c in codes:
        x = fixed[c.label]
        fixed_lines.append(f"| mediatasks ({c.label}) | {x['seconds']:.2f} | "
                           f"{x['over_ffmpeg_s']:.2f} | {x['peak_kb'].get('cli', 0) / 1024:.0f} | "
                           f"{x['peak_kb'].get('worker', 0) / 1024:.0f} |")
    longest = next((r for r in rows if r.get("long")), None)
    mem_lines = "(not measured)"
    if mem:
        mem_lines = "\n".join([
            "| measure | value |", "|---|---|",
            f"| source | {mem['source']}, {mem['bytes'] / 2**20:.0f} MiB, {mem['frames']} frames |",
            f"| `cat` once (page cache) | {mem['cat_s']:.2f} s |",
            f"| `mediatasks plan` (probe + every frame's timestamp + plan) | {mem['plan_s']:.2f} s"
            f" (goal: at most {mem['plan_limit_s']:.2f} s) |",
            f"| CLI peak RSS, plan | {mem['plan_peak_kb'] / 1024:.0f} MiB |",
            *([f"| `mediatasks run` (x264 ultrafast) | {mem['run_s']:.1f} s |"]
              + [f"| peak RSS, run: {k} | {v / 1024:.0f} MiB |"
                 for k, v in sorted(mem["run_peak_kb"].items())] if "run_s" in mem else []),
        ])
    values = {
        "date": report["date"], "machine": f"{m['cpu']}, {m['cores']} cores ({m['python']})",
        "ffmpeg": m["ffmpeg"], "command": report["command"],
        "contestants": ", ".join(f"`{c.label}` ({report['revs'][c.label]})" for c in codes),
        "fixed_table": "\n".join(fixed_lines),
        "fixed_steps": steps_table(fixed, codes[0]),
        "long_steps": steps_table(longest, codes[0]) if longest else "(not measured)",
        "long_source": longest["source"] if longest else "-",
        "encoder_tables": encoder_tables(rows, codes) or "(not measured)",
        "memory_table": mem_lines,
        "goals_table": goals(fixed, rows, mem, codes[0], report.get("cluster")),
        "cluster_table": cluster_table(report.get("cluster")),
        "chart": "![wall time over plain ffmpeg by encoder and cores](performance.png)" if png
                 else "(no chart: matplotlib is not installed)",
        "skipped": "\n".join(f"- {s}" for s in report["skipped"]) or "- nothing",
        "seconds": f"{report['seconds'] / 60:.1f}",
    }
    text = string.Template(TEMPLATE.read_text(encoding="utf-8")).substitute(values)
    (DOCS / "performance.md").write_text(text, encoding="utf-8")
    print(f"wrote {DOCS / 'performance.md'}")


# -- main -----------------------------------------------------------------------------------

def baseline(rev: str) -> Code:
    """``rev`` checked out (once) into benchmarks/out/baseline-<rev>."""
    sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", f"{rev}^{{commit}}"],
                         capture_output=True, text=True, check=False).stdout.strip()
    if not sha:
        raise BenchError(f"--baseline-rev {rev}: not a commit of this repository")
    tree = OUT / f"baseline-{sha}"
    if not (tree / "mediatasks").is_dir():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "prune"], check=False)
        check(run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), sha]),
              "git worktree add")
    return Code(label="baseline", tree=tree)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a 2-3 minute smoke run (small clips)")
    ap.add_argument("--baseline-rev", help="also time this git revision (e.g. the commit before "
                                           "a change)")
    ap.add_argument("--rounds", type=int, default=1, help="rounds per encoder measurement "
                                                          "(default 1; the fixed cost gets one more)")
    ap.add_argument("--budget-minutes", type=float, default=None,
                    help="skip what is left after this long (default 11, --quick 3)")
    ap.add_argument("--render", action="store_true",
                    help="measure nothing: write docs/performance.md again from "
                         "benchmarks/out/bench.json (after editing the template)")
    ap.add_argument("--no-docs", action="store_true",
                    help="write benchmarks/out/bench.json only, not docs/performance.md")
    args = ap.parse_args(argv)
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    if args.budget_minutes is None:
        args.budget_minutes = 3.0 if args.quick else 11.0
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render:
        report = json.loads((OUT / "bench.json").read_text(encoding="utf-8"))
        codes = [Code(label=label, tree=ROOT) for label in report["revs"]]
        write_docs(report, codes, (DOCS / "performance.png").exists())
        return 0
    started = time.monotonic()
    if shutil.which(FFMPEG) is None or shutil.which("redis-server") is None:
        print("error: needs ffmpeg and redis-server on PATH (make system)", file=sys.stderr)
        return 1
    OUT.mkdir(parents=True, exist_ok=True)
    budget = Budget(args.budget_minutes)
    try:
        codes = [Code(label="this", tree=ROOT)]
        if args.baseline_rev:
            codes.append(baseline(args.baseline_rev))
        head = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
                              capture_output=True, text=True, check=False).stdout.strip()
        revs = {"this": head or "working tree",
                **({"baseline": codes[1].tree.name.removeprefix("baseline-")}
                   if len(codes) > 1 else {})}
        plan = make_plan(args)
        print(f"{MACHINE_CORES} cores, {ffmpeg_version()}; contestants: "
              + ", ".join(f"{k} ({v})" for k, v in revs.items()), flush=True)
        # The most telling parts first: what the time budget cuts is the end of the grid.
        fixed = fixed_cost(codes, plan)
        cluster = running_cluster(codes[0], 1 if args.quick else 3)
        longest = long_x264(codes, plan, budget)
        mem = memory(codes[0], plan, budget) if budget.allows("memory and plan time") else None
        rows, notes = encoder_grid(codes, plan, encoders_available(), budget)
        rows += longest
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    report = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python benchmarks/bench.py " + " ".join(argv if argv is not None
                                                             else sys.argv[1:]),
        "machine": {"cpu": cpu_model(), "cores": MACHINE_CORES, "ffmpeg": ffmpeg_version(),
                    "python": f"Python {platform.python_version()}"},
        "revs": revs, "fixed": fixed, "cluster": cluster, "encoders": rows, "memory": mem,
        "skipped": notes + budget.skipped, "seconds": round(time.monotonic() - started, 1),
    }
    (OUT / "bench.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {OUT / 'bench.json'} after {report['seconds'] / 60:.1f} min")
    if not args.no_docs:
        png = chart(rows, codes, DOCS / "performance.png",
                    f"{report['machine']['cpu']}, {MACHINE_CORES} cores, "
                    f"{report['machine']['ffmpeg']}, {report['date']}")
        write_docs(report, codes, png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
