"""benchmarks/cluster.py's own arithmetic, against real processes."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

from download_helpers import wait_for

ROOT = Path(__file__).resolve().parent.parent

# A thread that burns the CPU (hashlib lets go of the GIL) until told to end; its id on stdout.
BURNER = """
import hashlib, sys, threading
data, stop = bytes(1 << 20), threading.Event()
def burn():
    while not stop.is_set():
        hashlib.sha256(data).digest()
t = threading.Thread(target=burn)
t.start()
print(t.native_id, flush=True)
sys.stdin.readline()
stop.set()
t.join()
print("ended", flush=True)
sys.stdin.readline()
"""


def _cluster():
    spec = importlib.util.spec_from_file_location("cluster", ROOT / "benchmarks" / "cluster.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_thread_that_ends_mid_run_takes_away_none_of_the_preemptions_counted():
    # The replicas' thread pool retires workers idle for 10 s: one that ended during a wrk run
    # took its whole past count with it, and preempted/req came out low, or below zero.
    cluster = _cluster()
    cpu = {min(os.sched_getaffinity(0))}
    with (
        subprocess.Popen([sys.executable, "-c", "while True: pass"]) as rival,
        subprocess.Popen(
            [sys.executable, "-c", BURNER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        ) as p,
    ):
        try:
            for pid in (rival.pid, p.pid):  # one core for both: the burner is preempted, surely
                os.sched_setaffinity(pid, cpu)
            tid = int(p.stdout.readline())
            wait_for(
                lambda: cluster.preemptions([p.pid]).get(tid, 0) >= 50,
                what="the burning thread preempted 50 times",
            )
            before = cluster.preemptions([p.pid])
            assert cluster.preempted_since({}, [p.pid]) >= 50  # threads born during the run count too
            p.stdin.write("\n")
            p.stdin.flush()
            assert p.stdout.readline() == "ended\n"
            assert cluster.preempted_since(before, [p.pid]) >= 0
        finally:
            p.kill()
            rival.kill()
