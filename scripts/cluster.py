#!/usr/bin/env python3
"""A zoo cluster on 127.0.0.1: PostgreSQL, single-node Ceph with its S3 gateway, N replicas
of `caffezoo serve`, nginx in front. For trying the topology, not for keeping data (Ceph's
OSD keeps everything in RAM).

    python scripts/cluster.py start [--dir .cluster] [--replicas 2] [--redirect | --stream] [-- SERVE-ARGS...]
    python scripts/cluster.py status [--dir .cluster]
    python scripts/cluster.py stop [--dir .cluster]

`make cluster` and `make cluster-stop` call it. `stop` ends exactly the processes
`start` recorded in DIR's pid files, nothing else.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from caffezoo.server.devcluster import EngineError, start_cluster, stop_cluster


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("action", choices=["start", "stop", "status"])
    p.add_argument("--dir", type=Path, default=Path(".cluster"), help="state, logs and pid files")
    p.add_argument("--replicas", type=int, default=2)
    p.add_argument("--redirect", action="store_true", help="replicas answer blob GETs with presigned URLs")
    p.add_argument(
        "--stream",
        action="store_true",
        help="replicas stream blob bodies themselves (default: nginx does, X-Accel-Redirect)",
    )
    p.add_argument("--no-seed", action="store_true", help="do not add the bundled models")
    argv = sys.argv[1:] if argv is None else argv
    serve_args = argv[argv.index("--") + 1 :] if "--" in argv else []  # for `caffezoo serve`
    a = p.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    try:
        if a.action == "start":
            state = start_cluster(
                a.dir,
                replicas=a.replicas,
                redirect=a.redirect,
                accel=not a.stream,
                seed=not a.no_seed,
                serve_args=serve_args,
            )
            print(f"zoo:        {state['url']}  (nginx over {', '.join(state['replicas'])})")
            print(f"database:   {state['database_url']}")
            print(f"blobs:      {state['blobs_url']} at {state['s3']['AWS_ENDPOINT_URL']}")
            print(f"logs:       {a.dir.resolve()}/*/*.log")
            print("stop with:  make cluster-stop")
        elif a.action == "stop":
            stopped = stop_cluster(a.dir)
            print("stopped: " + ", ".join(stopped) if stopped else f"no cluster running from {a.dir}")
        else:
            state_file = a.dir / "cluster.json"
            if not state_file.exists():
                print(f"no cluster running from {a.dir}")
                return 1
            print(json.dumps(json.loads(state_file.read_text()), indent=2))
    except EngineError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
