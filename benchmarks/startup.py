"""Start-up cost of the CLI, as ratios to a bare interpreter measured in the same run.

    python benchmarks/startup.py [--runs 21]

Baseline: `python -c pass` with the same interpreter. Goals (issue 13):

- `caffezoo --help`                      <= 6x the baseline;
- `caffezoo validate <bundled model>`    <= 10x the baseline, warm (the records of files that
  passed before, see caffezoo/_known_clean.py, are there) and cold (each run in a CAFFEZOO_HOME
  whose cache is empty, as on a first run: protobuf, parsing and the checks are paid);
- `caffezoo download DIR` of weights already there and verified: <= 0.25 s, whole process.

The re-download case uses a model directory made here whose weights come from
a file:// URL (hence --allow-local): the first run installs them, every timed run finds them present.

Each command runs interleaved with the others; the goals are judged on the
fastest run of each (the one least disturbed by other processes on a shared
machine), and the median is printed beside it. CPU time (user + system, of the fastest run
by that measure) is printed too: it is less disturbed by other processes than wall time.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HELP_GOAL = 6.0  # x the baseline
VALIDATE_GOAL = 10.0  # x the baseline
REDOWNLOAD_GOAL = 0.25  # seconds, whole process
BASELINE = "python -c pass (baseline)"


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(
    cmd: list[str], env: dict[str, str], runs: int, before: Callable[[], None] | None = None
) -> list[tuple[float, float]]:
    """(wall, CPU) times of ``cmd`` over ``runs`` runs (after one warm-up); ``before`` runs,
    untimed, before each."""
    if before is not None:
        before()
    subprocess.run(cmd, env=env, capture_output=True, check=True)
    times = []
    for _ in range(runs):
        if before is not None:
            before()
        c0, t0 = _children_cpu(), time.perf_counter()
        subprocess.run(cmd, env=env, capture_output=True, check=False)
        times.append((time.perf_counter() - t0, _children_cpu() - c0))
    return times


def downloaded_model(root: Path) -> Path:
    """A model directory whose 1 MiB of weights come from a file:// URL."""
    blob = root / "served" / "net.caffemodel"
    blob.parent.mkdir(parents=True)
    data = os.urandom(1 << 20)
    blob.write_bytes(data)
    model = root / "net"
    model.mkdir()
    (model / "readme.md").write_text(
        "---\nname: Bench net\ncaffemodel: net.caffemodel\n"
        f"caffemodel_url: {blob.as_uri()}\nsha1: {hashlib.sha1(data).hexdigest()}\n"
        "license: unrestricted\ncaffe_version: '1.0'\n---\n\nA model for the start-up benchmark.\n",
        encoding="utf-8",
    )
    return model


def main() -> int:
    root = Path(tempfile.mkdtemp(prefix="caffezoo-bench-"))
    try:
        return run(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run(root: Path) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=21)
    args = parser.parse_args()
    env = dict(os.environ, CAFFEZOO_HOME=str(root / "home"))
    # As installed: with bytecode cached (the warm-up run writes it), not compiled on every start.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    py = sys.executable
    model = downloaded_model(root)
    subprocess.run(
        [py, "-m", "caffezoo", "download", "--allow-local", str(model)],
        env=env,
        capture_output=True,
        check=True,
    )
    validate = [py, "-m", "caffezoo", "validate", "bvlc_alexnet"]
    cold_env = dict(env, CAFFEZOO_HOME=str(root / "cold-home"))

    def empty_cache() -> None:
        shutil.rmtree(root / "cold-home" / "cache", ignore_errors=True)

    # Interleave so that machine noise hits every command alike.
    cases: dict[str, tuple[list[str], dict[str, str], Callable[[], None] | None]] = {
        BASELINE: ([py, "-c", "pass"], env, None),
        "caffezoo --help": ([py, "-m", "caffezoo", "--help"], env, None),
        "caffezoo validate bvlc_alexnet": (validate, env, None),
        "  ... cold (empty cache)": (validate, cold_env, empty_cache),
        "caffezoo download (verified)": (
            [py, "-m", "caffezoo", "download", "--allow-local", str(model)],
            env,
            None,
        ),
    }
    results: dict[str, list[tuple[float, float]]] = {k: [] for k in cases}
    for _ in range(3):
        for name, (cmd, case_env, before) in cases.items():
            results[name].extend(timed(cmd, case_env, max(1, args.runs // 3), before))
    best = {k: min(w for w, _ in v) for k, v in results.items()}
    med = {k: statistics.median(w for w, _ in v) for k, v in results.items()}
    cpu = {k: min(c for _, c in v) for k, v in results.items()}
    base = best[BASELINE]

    def validate_goal(t: float) -> tuple[bool, str]:
        return t / base <= VALIDATE_GOAL, f"<= {VALIDATE_GOAL:.0f}x"

    goals = {
        "caffezoo --help": lambda t: (t / base <= HELP_GOAL, f"<= {HELP_GOAL:.0f}x"),
        "caffezoo validate bvlc_alexnet": validate_goal,
        "  ... cold (empty cache)": validate_goal,
        "caffezoo download (verified)": lambda t: (
            t <= REDOWNLOAD_GOAL,
            f"<= {REDOWNLOAD_GOAL * 1000:.0f}ms",
        ),
    }
    print(
        f"{'command':32} {'fastest':>9} {'ratio':>7} {'median':>9} {'ratio':>7} {'CPU':>9} {'ratio':>7}"
        "  goal (on the fastest)"
    )
    for name, t in best.items():
        goal = ""
        if name in goals:
            ok, text = goals[name](t)
            goal = f"{text} {'ok' if ok else 'MISSED'}"
        m, mbase = med[name], med[BASELINE]
        print(
            f"{name:32} {t * 1000:7.1f}ms {t / base:6.2f}x {m * 1000:7.1f}ms {m / mbase:6.2f}x "
            f"{cpu[name] * 1000:7.1f}ms {cpu[name] / cpu[BASELINE]:6.2f}x  {goal}"
        )
    print(f"load average: {Path('/proc/loadavg').read_text().strip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
