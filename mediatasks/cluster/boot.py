"""``python -m mediatasks.cluster.boot``: a celery worker started without celery's command line,
for the private cluster of `mediatasks run`. The command line loads the commands of every
installed plugin first (flower's web app, a REPL: a third of a second, on the path of every
local job); this starts the same worker the same way, with the flags a local run gives it.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mediatasks.cluster.boot")
    ap.add_argument("-Q", dest="queues", required=True, help="queues, comma-separated")
    ap.add_argument("-c", dest="concurrency", type=int, required=True)
    ap.add_argument("-n", dest="name", required=True, help="node name (%%h: this host)")
    ap.add_argument("--loglevel", default="WARNING")
    args = ap.parse_args(argv)

    from celery.utils.nodenames import default_nodename, host_format

    from mediatasks.cluster.app import app

    worker = app.Worker(
        hostname=host_format(default_nodename(args.name)), queues=args.queues.split(","),
        concurrency=args.concurrency, pool_cls="prefork", loglevel=args.loglevel,
        task_events=True, without_gossip=True, without_mingle=True, without_heartbeat=True,
        optimization="fair", quiet=True)
    worker.start()
    return int(worker.exitcode or 0)


if __name__ == "__main__":
    sys.exit(main())
