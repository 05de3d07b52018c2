"""The cost of the Gist API's input checks, as a ratio to parsing the same body plainly.

    python benchmarks/gist_limits.py [--runs 7]

Measures in this run, best of N:

- a 25 MB create body with 1,000 files: ``api.parse_body`` (UTF-8, JSON with
  unique keys, depth and container limits) as a ratio to ``json.loads`` alone.
  Goal: <= 1.5x.
- the file-name rule over those 1,000 names: milliseconds.
- a body of a million empty arrays (what the container limit refuses): how long
  the refusal takes, in milliseconds (it runs in the thread pool, never on the
  event loop).
"""

from __future__ import annotations

import argparse
import json
import time

from caffezoo.gist.rules import check_files
from caffezoo.server.api import parse_body
from caffezoo.server.errors import ApiError


def best(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    files = {f"f{i}.prototxt": {"content": "x" * 25_000} for i in range(1000)}
    body = json.dumps({"description": "d", "files": files}).encode()
    plain = best(lambda: json.loads(body.decode()), args.runs)
    checked = best(lambda: parse_body(body), args.runs)
    names = best(lambda: check_files(files), args.runs)
    wide = b'{"files": {}, "x": [' + b",".join([b"[]"] * 1_000_000) + b"]}"

    def refuse() -> None:
        try:
            parse_body(wide)
        except ApiError:
            return
        raise AssertionError("a million arrays were accepted")

    refusal = best(refuse, max(1, args.runs // 3))
    print(f"create body {len(body) / 1e6:.0f} MB, 1000 files:")
    print(f"  json.loads            {plain * 1e3:8.1f} ms")
    print(f"  parse_body (checked)  {checked * 1e3:8.1f} ms   ratio {checked / plain:.2f}x (goal <= 1.5x)")
    print(f"  file-name rule x1000  {names * 1e3:8.2f} ms")
    print(f"refusing 1,000,000 arrays ({len(wide) / 1e6:.0f} MB): {refusal * 1e3:.0f} ms")


if __name__ == "__main__":
    main()
