"""How long does `POST /v1/jobs` take? The API's own overhead, no workers.

    .venv/bin/python benchmarks/api_submit.py [-n 200] [--warmup 10]

Starts a private redis-server on a free port, `mediatasks api` (uvicorn, one process) over it and
a temporary SQLite history, creates a submit key, then sends N submits of a small generated clip
one after another (each to its own output) and prints the median, p95 and max latency as the
client sees it. Submitting only records the job and sends it to be analysed: the probe, the plan
and the test encode run on the workers, so none is needed here.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

MEDIATASKS = str(Path(sys.executable).parent / "mediatasks")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    for _ in range(300):
        if proc.poll() is not None:
            sys.exit(f"api_submit: the server exited:\n{log.read_text()[-2000:]}")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    sys.exit(f"api_submit: no answer from {url}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=200, help="submits to time")
    ap.add_argument("--warmup", type=int, default=10, help="submits before timing")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="mt-bench-api-") as tmp_name:
        tmp = Path(tmp_name)
        inbox, outbox = tmp / "in", tmp / "out"
        inbox.mkdir()
        outbox.mkdir()
        clip = inbox / "clip.mkv"
        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i",
                        "testsrc2=size=128x72:rate=25", "-t", "1", "-c:v", "libx264", "-preset",
                        "ultrafast", str(clip)], check=True)
        redis_port, api_port = free_port(), free_port()
        redis = subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
                                  "--save", "", "--appendonly", "no", "--dir", str(tmp)],
                                 stdout=subprocess.DEVNULL)
        broker = f"redis://127.0.0.1:{redis_port}/0"
        env = dict(os.environ, MEDIATASKS_BROKER_URL=broker, MEDIATASKS_RESULT_BACKEND=broker,
                   MEDIATASKS_DATABASE_URL=f"sqlite:///{tmp / 'history.sqlite'}",
                   MEDIATASKS_ROOTS=f"{inbox}:{outbox}", MEDIATASKS_WORK_DIR=str(tmp / "work"),
                   MEDIATASKS_API_RATE_LIMIT="1000000/minute")
        log = tmp / "api.log"
        with open(log, "wb") as sink:
            api = subprocess.Popen([MEDIATASKS, "api", "--port", str(api_port)], env=env,
                                   stdout=sink, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{api_port}"
            wait_for(url + "/healthz", api, log)
            key = subprocess.run([MEDIATASKS, "keys", "create", "--name", "bench", "--scope",
                                  "submit"], env=env, capture_output=True, text=True,
                                 check=True).stdout.strip()
            times = []
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"},
                              timeout=30) as client:
                for i in range(args.warmup + args.n):
                    body = {"input": str(clip), "output": str(outbox / f"out{i}.mkv"),
                            "crf": 24}
                    start = time.perf_counter()
                    r = client.post("/v1/jobs", json=body)
                    elapsed = time.perf_counter() - start
                    if r.status_code != 202:
                        sys.exit(f"api_submit: submit {i} answered {r.status_code}: {r.text}")
                    if i >= args.warmup:
                        times.append(elapsed * 1000)
        finally:
            api.terminate()
            api.wait(10)
            redis.terminate()
            redis.wait(10)
    times.sort()
    p95 = times[min(len(times) - 1, round(0.95 * len(times)) - 1)]
    print(f"POST /v1/jobs, {len(times)} submits (SQLite history, redis broker, no workers): "
          f"median {statistics.median(times):.1f} ms, p95 {p95:.1f} ms, max {times[-1]:.1f} ms")


if __name__ == "__main__":
    main()
