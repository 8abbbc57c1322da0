"""A job submitted to an idle, running cluster: how soon its first encode starts, and what its
non-encode steps cost, read from the job's event log and its tasks' rows.

    python benchmarks/cluster_latency.py SOURCE OUT_DIR [--jobs N]

Starts a LocalCluster (redis-server and workers, as `mediatasks run` does, but for the whole
measurement), runs one job to warm it up, then submits ``--jobs`` jobs one after another through
the job service as `mediatasks submit` does (no probe in the submitter). Prints one JSON line:
per job, seconds from ``job.queued`` to the first encode's start, and each step's seconds.
bench.py runs it with the code under test first on PYTHONPATH.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import uuid
from pathlib import Path

from mediatasks.cli.common import local_service
from mediatasks.cli.follow import StepTimes
from mediatasks.cluster.local import LocalCluster
from mediatasks.models import EncodeOptions
from mediatasks.service.prepare import check_job
from mediatasks.service.runs import run_job
from mediatasks.settings import get_settings

NON_ENCODE = ("probe", "plan", "concat", "mux", "verify", "publish")


def one_job(service: object, cluster: LocalCluster, source: Path, out: Path) -> dict[str, float]:
    settings = get_settings()
    spec = check_job(source, out, EncodeOptions(video_codec="libx264", crf=23),
                     overwrite=True, settings=settings, job_id=uuid.uuid4().hex)
    steps = StepTimes()
    result = run_job(service, spec, watch=cluster.check_alive,  # type: ignore[arg-type]
                     on_event=steps.event)
    if result.status != "succeeded":
        raise SystemExit(f"job {spec.job_id}: {result.error}")
    record = service.get(spec.job_id)  # type: ignore[attr-defined]
    steps.tasks(record.tasks)
    times = steps.as_dict()
    queued = next(at for state, at in steps.events if state == "queued")
    first = min(t.started_at.timestamp() for t in record.tasks
                if t.name == "mediatasks.encode_chunk" and t.started_at is not None)
    return {"first_encode_s": round(first - queued, 3),
            "non_encode_s": round(sum(times.get(k, 0.0) for k in NON_ENCODE), 3),
            "chunks": float(record.chunks or 0), **times}


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("source", type=Path)
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--jobs", type=int, default=3)
    args = ap.parse_args()
    source, out_dir = args.source.resolve(), args.out_dir.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = get_settings()
    with LocalCluster(settings, workers=1, work_dir=out_dir / "cluster-work",
                      hardware=False, roots=(source.parent, out_dir)) as cluster:
        service = local_service(cluster.broker_url)
        one_job(service, cluster, source, out_dir / "warm-up.mkv")  # the workers are booted
        jobs = [one_job(service, cluster, source, out_dir / f"job-{i}.mkv")
                for i in range(args.jobs)]
    print(json.dumps({"jobs": jobs,
                      "first_encode_s": statistics.median(j["first_encode_s"] for j in jobs),
                      "non_encode_s": statistics.median(j["non_encode_s"] for j in jobs),
                      "chunks": jobs[-1]["chunks"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
