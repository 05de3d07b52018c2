"""Caffe I/O: how loading a full-size AlexNet caffemodel compares with just reading its bytes.

    python benchmarks/caffe_io.py [--runs 5] [--keep DIR]

Writes a random-weights AlexNet (233 MB, V1 with legacy shapes, like the BAIR
binaries) into a temporary directory, then measures in this run:

- time: loading it (``load_net`` with weights, then every weight read once)
  as a ratio to reading the file's bytes (``Path.read_bytes``), both from a
  warm page cache, best of N. Goal: <= 2x.
- memory: peak RSS of a fresh process doing that load, as a ratio to the file
  size (baseline: a fresh process reading the bytes). Goal: <= 1.5x.
- parsing the GoogLeNet train_val prototxt: milliseconds, median of N.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from caffezoo.caffe.caffemodel import read_caffemodel, write_caffemodel
from caffezoo.caffe.net import load_net
from caffezoo.caffe.prototxt import read_prototxt
from caffezoo.zoo import BUNDLED_DIR

DEPLOY = BUNDLED_DIR / "bvlc_alexnet" / "deploy.prototxt"
GOOGLENET = BUNDLED_DIR / "bvlc_googlenet" / "train_val.prototxt"

# Peak RSS from /proc/self/status (VmHWM): getrusage's ru_maxrss survives exec,
# so a child forked from this (large) process would report the parent's peak.
CHILD = """
import re, sys, json
from pathlib import Path
mode, weights, deploy = sys.argv[1:4]
if mode == "read":
    data = Path(weights).read_bytes()
    total = len(data)
else:
    from caffezoo.caffe.net import load_net
    net = load_net(deploy, weights)
    total = sum(float(b.sum(dtype="float64")) != 0.5 for layer in net.layers for b in layer.blobs)
status = Path("/proc/self/status").read_text()
peak = int(re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1)) * 1024
print(json.dumps({"maxrss": peak, "total": total}))
"""


def make_model(directory: Path) -> Path:
    net = load_net(DEPLOY)
    rng = np.random.default_rng(0)

    def weights(layer):
        return [rng.standard_normal(s, np.float32) for s in net[layer.name].param_shapes or []]

    return write_caffemodel(
        directory / "bvlc_alexnet.caffemodel", net.to_proto(), weights, version="V1", legacy_shape=True
    )


def best(runs: int, fn) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def read_bytes(path: Path) -> None:
    path.read_bytes()


def load_and_touch(path: Path) -> None:
    net = load_net(DEPLOY, path)
    for layer in net.layers:
        for blob in layer.blobs:
            blob.sum(dtype=np.float64)  # reads every weight once


def index_only(path: Path) -> None:
    read_caffemodel(path).close()


def peak_rss(mode: str, path: Path) -> int:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(path), str(DEPLOY)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout)["maxrss"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--keep", type=Path, help="write the model here and keep it")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = args.keep or Path(tmp)
        directory.mkdir(parents=True, exist_ok=True)
        path = make_model(directory)
        size = path.stat().st_size
        read_bytes(path)  # warm the page cache for both contenders
        t_read = best(args.runs, lambda: read_bytes(path))
        t_load = best(args.runs, lambda: load_and_touch(path))
        t_index = best(args.runs, lambda: index_only(path))
        rss_read, rss_load = peak_rss("read", path), peak_rss("load", path)
        parse = []
        for _ in range(max(args.runs, 5)):
            start = time.perf_counter()
            read_prototxt(GOOGLENET)
            parse.append(time.perf_counter() - start)

    print(f"caffemodel: {path.name}, {size / 2**20:.1f} MiB (V1, legacy shapes, random weights)")
    print(f"baseline  read the file's bytes:            {t_read * 1000:8.1f} ms")
    print(
        f"load_net with weights + read every weight:  {t_load * 1000:8.1f} ms   "
        f"ratio {t_load / t_read:.2f}x (goal <= 2x)"
    )
    print(
        f"read_caffemodel alone (index, no copy):     {t_index * 1000:8.1f} ms   ratio {t_index / t_read:.3f}x"
    )
    print(
        f"peak RSS, process reading the bytes:        {rss_read / 2**20:8.1f} MiB   ratio {rss_read / size:.2f}x"
    )
    print(
        f"peak RSS, process loading net + weights:    {rss_load / 2**20:8.1f} MiB   "
        f"ratio {rss_load / size:.2f}x (goal <= 1.5x)"
    )
    print(f"parse GoogLeNet train_val.prototxt:         {statistics.median(parse) * 1000:8.1f} ms (median)")


if __name__ == "__main__":
    main()
