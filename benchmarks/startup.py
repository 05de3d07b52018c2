"""Start-up cost of the CLI, as a ratio to a bare interpreter measured in the same run.

    python benchmarks/startup.py [--runs 21]

Baseline: `python -c pass` with the same interpreter. Goal: <= 8x for
`caffezoo --help` and `caffezoo validate <bundled model>`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

GOAL = 8.0


def wall(cmd: list[str], env: dict[str, str], runs: int) -> float:
    """Median wall time of ``cmd`` over ``runs`` runs (after one warm-up)."""
    subprocess.run(cmd, env=env, capture_output=True, check=True)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, env=env, capture_output=True, check=False)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=21)
    args = parser.parse_args()
    env = dict(os.environ, CAFFEZOO_HOME=tempfile.mkdtemp(prefix="caffezoo-bench-"))
    py = sys.executable
    # Interleave so that machine noise hits every command alike.
    cases = {
        "python -c pass (baseline)": [py, "-c", "pass"],
        "caffezoo --help": [py, "-m", "caffezoo", "--help"],
        "caffezoo validate bvlc_alexnet": [py, "-m", "caffezoo", "validate", "bvlc_alexnet"],
    }
    results: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(3):
        for name, cmd in cases.items():
            results[name].append(wall(cmd, env, max(1, args.runs // 3)))
    med = {k: statistics.median(v) for k, v in results.items()}
    base = med["python -c pass (baseline)"]
    print(f"{'command':34} {'median':>9} {'ratio':>7}  goal")
    for name, t in med.items():
        ratio = t / base
        goal = "" if "baseline" in name else f"<= {GOAL:.0f}x {'ok' if ratio <= GOAL else 'MISSED'}"
        print(f"{name:34} {t * 1000:7.1f}ms {ratio:6.2f}x  {goal}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
