"""Break a real cluster on purpose and write docs/reliability.md with what it survived.

Each trial submits a 12 s job (six 2 s chunks at a slow preset) to a private redis-server with
persistence, then does one thing to it while chunks encode: kill -9 a whole worker with its ffmpeg
(another worker is started after the kill), kill -9 one pool process, restart redis-server, kill -9
redis-server and start it again on its append-only file, or FLUSHALL it (the job must be found
stalled and sent again); on RabbitMQ (a vhost of the trial's own, guest on 127.0.0.1:5672), kill -9
a whole worker. A trial is survived when the job ends succeeded with every frame. Recovery time is
from the fault to the job's end. The corpus totals are measured by running the corpus (or a sample
of it: 16 files spread evenly by default, since the whole takes over 20 min on two cores)
through scripts/compatibility.py's check.

    .venv/bin/python scripts/reliability.py [--kills 3] [--pool-kills 2] [--restarts 4]
        [--crashes 2] [--stalls 2] [--rabbitmq-kills 2] [--corpus-sample 16 (0: all)]
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "scripts"))

from compatibility import check, corpus_files  # noqa: E402
from rig import RabbitMQUnavailable, RabbitRig, Rig, make_source  # noqa: E402

SLOW = ("--preset", "veryslow", "--chunk-seconds", "2")
FRAMES = 300
# Small enough that a trial's stalled job is found within seconds of its last live task.
STALL_ENV = {"MEDIATASKS_STALL_AFTER": "4", "MEDIATASKS_UPKEEP_INTERVAL": "1"}
NAMES = {"worker": "worker killed (kill -9 of the worker, its pool and ffmpeg)",
         "pool": "one pool process killed (kill -9)",
         "broker": "redis-server restarted (append-only file on), at once or after 5 s",
         "broker-crash": "redis-server killed (kill -9, `--appendfsync always`), started again",
         "stalled": "broker flushed (FLUSHALL): job found `stalled` and sent again",
         "rabbitmq-kill": "RabbitMQ broker: worker killed (kill -9), visibility timeout {rabbit} s"}


def _rig(kind: str, root: Path, visibility: int, rabbit_visibility: int) -> Rig:
    if kind == "rabbitmq-kill":
        return RabbitRig(root, visibility_timeout=rabbit_visibility)
    if kind == "stalled":
        return Rig(root, visibility_timeout=visibility, **STALL_ENV)
    return Rig(root, visibility_timeout=visibility)


def trial(kind: str, source: Path, root: Path, visibility: int, outage: float = 0,
          rabbit_visibility: int = 3600) -> dict[str, object]:
    stalled = True
    with _rig(kind, root, visibility, rabbit_visibility) as rig:
        rig.start_worker("first")
        job_id = rig.submit(source, root / "out.mkv", *SLOW)
        rig.wait_for_chunk_encodes(job_id, count=2)
        started = time.monotonic()
        if kind in {"worker", "rabbitmq-kill"}:
            rig.kill_worker("first")
            rig.start_worker("second")
        elif kind == "pool":
            _, pool_pid, _ = rig.running_chunk_encodes(job_id)[0]
            os.kill(pool_pid, signal.SIGKILL)
        elif kind == "broker-crash":
            rig.crash_redis()
            rig.start_redis()
        elif kind == "stalled":
            rig.flush_redis()
        else:
            rig.stop_redis()
            time.sleep(outage)
            rig.start_redis()
        try:
            record = rig.wait_job(job_id, timeout=600)
        except TimeoutError:
            record = {"status": "still running after 600 s"}
        seconds = time.monotonic() - started
        if kind == "stalled":
            stalled = "job.stalled" in rig.events(job_id)
        restarts = rig.restarts
    ok = (stalled and record["status"] == "succeeded"
          and record.get("frames_in") == record.get("frames_out") == FRAMES)
    return {"kind": kind, "survived": ok, "seconds": seconds, "status": record["status"],
            "restarts": restarts}


def sample(files: list[Path], n: int) -> list[Path]:
    """``n`` files spread evenly over the sorted corpus (every directory gets its share); 0:
    all of them."""
    if n <= 0 or n >= len(files):
        return files
    return [files[i * len(files) // n] for i in range(n)]


def measure_corpus(corpus: Path, n: int) -> dict[str, object]:
    files = corpus_files(corpus)
    chosen = sample(files, n)
    started = time.monotonic()
    results: dict[str, int] = {}
    other: list[str] = []
    with tempfile.TemporaryDirectory(prefix="mediatasks-corpus-") as tmp:
        for f in chosen:
            result = str(check(f, Path(tmp))["result"])
            results[result] = results.get(result, 0) + 1
            if result not in {"frame-exact", "refused"}:
                other.append(f"`{f.relative_to(corpus)}` ({result})")
            print(f"{result:<12} {f.relative_to(corpus)}", flush=True)
    return {"files": len(chosen), "of": len(files), "seconds": time.monotonic() - started,
            "exact": results.get("frame-exact", 0), "refused": results.get("refused", 0),
            "other": other}


def _corpus_line(c: dict[str, object]) -> str:
    files, of, other = int(str(c["files"])), int(str(c["of"])), c["other"]
    assert isinstance(other, list)
    which = (f"the whole corpus ({of} files)" if files == of else
             f"a sample of {files} of its {of} files, spread evenly over it (`--corpus-sample "
             f"{files}`)")
    line = (f"**Corpus, measured by this run: {files} files: {c['exact']} frame-exact, "
            f"{c['refused']} refused, {len(other)} other.**")
    note = (f"Each file through `mediatasks run --video-codec ffv1 --chunk-seconds 1` with "
            f"`scripts/compatibility.py`'s check; this run took {which} in "
            f"{float(str(c['seconds'])) / 60:.1f} min. docs/compatibility.md has every file.")
    return "\n\n".join([line, note + (f" Other: {', '.join(other)}." if other else "")])


def render(results: list[dict[str, object]], visibility: int, rabbit_visibility: int,
           corpus: dict[str, object]) -> str:
    lines = ["# Reliability: faults survived", "",
             "Generated by `scripts/reliability.py` (do not edit by hand). Each trial is a 12 s "
             "640x360 job in six chunks at `--preset veryslow`, broken while two chunks encode; "
             f"`MEDIATASKS_VISIBILITY_TIMEOUT={visibility}` (on RabbitMQ {rabbit_visibility}). "
             "A trial is survived when the job "
             f"ends `succeeded` with all {FRAMES} frames (a flushed broker's job must also have "
             "been found `stalled`). Recovery: seconds from the fault to the "
             "job's end (it includes encoding the chunks that were lost).", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python "
             f"{platform.python_version()}.", "",
             "| fault | survived | recovery (median) | recovery (max) | worker restarts |",
             "|---|---|---|---|---|"]
    total = survived = 0
    for kind, label in NAMES.items():
        rows = [r for r in results if r["kind"] == kind]
        if not rows:
            continue
        ok = [r for r in rows if r["survived"]]
        secs = [float(str(r["seconds"])) for r in rows]
        total += len(rows)
        survived += len(ok)
        restarts = sum(int(str(r["restarts"])) for r in rows)
        lines.append(f"| {label.format(rabbit=rabbit_visibility)} | {len(ok)} of {len(rows)} | "
                     f"{statistics.median(secs):.0f} s | {max(secs):.0f} s | {restarts} |")
    lines += ["", f"**Faults survived: {survived} of {total}.**", "",
              _corpus_line(corpus), "",
              "Workers run under a supervisor (the test rig's, like Compose's `restart: "
              "unless-stopped`): *worker restarts* counts workers that exited on their own "
              "during the trials and were started again (kombu can crash a worker while it "
              "reconnects to a restarted broker; see docs/decisions.md).", "",
              "A killed worker's chunks are redelivered once their delivery is older than the "
              "visibility timeout; workers look for such deliveries every third of the timeout "
              "(at most every 30 s), so the wait is between one and one and a third timeouts. "
              "On RabbitMQ they come back as soon as the dead worker's connection drops: the "
              "visibility timeout there is far longer than any recovery in the table. "
              "A pool process that dies alone is re-sent at once (`task_retry_on_worker_lost`, "
              "after `MEDIATASKS_RETRY_BACKOFF` seconds). A redis-server killed with `kill -9` "
              "loses nothing it acknowledged with `--appendfsync always`. A flushed broker "
              "loses the job's tasks: the job is found `stalled` once no task of it is alive "
              f"and it has been quiet for `MEDIATASKS_STALL_AFTER` "
              f"({STALL_ENV['MEDIATASKS_STALL_AFTER']} s here, "
              f"`MEDIATASKS_UPKEEP_INTERVAL={STALL_ENV['MEDIATASKS_UPKEEP_INTERVAL']}`), and is "
              "sent again, reusing its verified chunks. See docs/operations.md for sizing the "
              "timeouts.", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=3)
    ap.add_argument("--pool-kills", type=int, default=2)
    ap.add_argument("--restarts", type=int, default=4)
    ap.add_argument("--crashes", type=int, default=2, help="kill -9 of redis-server")
    ap.add_argument("--stalls", type=int, default=2, help="FLUSHALL of redis-server")
    ap.add_argument("--rabbitmq-kills", type=int, default=2,
                    help="kill -9 of a worker on RabbitMQ (needs rabbitmqctl and 127.0.0.1:5672)")
    ap.add_argument("--visibility-timeout", type=int, default=30)
    ap.add_argument("--rabbitmq-visibility-timeout", type=int, default=3600)
    ap.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "corpus")
    # The whole corpus takes over 20 min on a loaded 2-core machine (21-25 s a file): a sample
    # by default keeps the run under half an hour.
    ap.add_argument("--corpus-sample", type=int, default=16, metavar="N",
                    help="run N files of the corpus, spread evenly (default 16; 0: every file)")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "reliability.md")
    args = ap.parse_args()
    results = []
    # RabbitMQ first: if it cannot be reached, say so before the long trials.
    plan = (["rabbitmq-kill"] * args.rabbitmq_kills + ["worker"] * args.kills
            + ["pool"] * args.pool_kills + ["broker"] * args.restarts
            + ["broker-crash"] * args.crashes + ["stalled"] * args.stalls)
    roots = os.environ.get("MEDIATASKS_ROOTS")
    with tempfile.TemporaryDirectory(prefix="mediatasks-reliability-") as tmp:
        # The source sits beside the trials' roots: every rig's workers may read all of tmp
        # (and only for the trials: `mediatasks run` on the corpus sets its own roots).
        os.environ["MEDIATASKS_ROOTS"] = str(Path(tmp).resolve())
        try:
            source = make_source(Path(tmp) / "source.mkv", seconds=12)
            for n, kind in enumerate(plan):
                # Broker restarts alternate between at once and after a 5 s outage.
                outage = 5 * (plan[:n].count("broker") % 2) if kind == "broker" else 0
                try:
                    r = trial(kind, source, Path(tmp) / f"trial-{n}", args.visibility_timeout,
                              outage, args.rabbitmq_visibility_timeout)
                except RabbitMQUnavailable as exc:
                    sys.exit(f"{exc}; or pass --rabbitmq-kills 0")
                print(f"{kind:>13}: "
                      f"{'survived' if r['survived'] else 'LOST ' + str(r['status'])} in "
                      f"{float(str(r['seconds'])):.0f}s, {r['restarts']} restart(s)", flush=True)
                results.append(r)
        finally:
            if roots is None:
                os.environ.pop("MEDIATASKS_ROOTS", None)
            else:
                os.environ["MEDIATASKS_ROOTS"] = roots
    corpus = measure_corpus(args.corpus, args.corpus_sample)
    args.out.write_text(render(results, args.visibility_timeout,
                               args.rabbitmq_visibility_timeout, corpus))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
