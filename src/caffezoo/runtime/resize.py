"""Decoded pixels to a net's input size the way Caffe's data layer and OpenCV's ``blobFromImage`` do it.

>>> bilinear(np.zeros((480, 640, 3), np.uint8), (300, 300)).shape
(3, 300, 300)

Caffe resized its training images with ``cv::resize(..., INTER_LINEAR)``: plain bilinear between the two
nearest pixels each way, pixel centres aligned (ONNX's ``half_pixel``), the edge pixels repeated past the
border, no smoothing when shrinking. A net learned on those pixels; resizing the same way here gives it
the same pixels (within one level of 255: OpenCV rounds its weights to 11 bits). The resize runs as a
tiny ONNX graph in onnxruntime, already a dependency, which does it in one fast pass over the uint8
pixels instead of Pillow's antialiasing filter that reads 2-3x as many pixels per output pixel.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

__all__ = ["bilinear"]


def bilinear(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``pixels`` (H x W x C uint8) resized to ``size`` (h, w): C x h x w float32 in [0, 1]."""
    channels = pixels.shape[2]
    session = _session(channels, int(size[0]), int(size[1]))
    return session.run(None, {"pixels": pixels[None]})[0][0]


@lru_cache(maxsize=16)
def _session(channels: int, height: int, width: int) -> Any:
    """One small session per output shape, on one thread: images are resized one at a time on the decode
    thread while the net runs on the others."""
    from .session import make_session

    return make_session(_model(channels, height, width).SerializeToString(), threads=1)


def _model(channels: int, height: int, width: int) -> Any:
    """1 x H x W x C uint8 of any H, W in, 1 x C x h x w floats out (an ``onnx.ModelProto``)."""
    from onnx import TensorProto, helper

    from ._graph import Graph

    g = Graph(opset=13)
    sizes = g.const("sizes", [1, height, width, channels])
    unit = g.const("unit", 1 / 255, np.float32)
    # Resize the uint8 pixels where they lie (H x W x C), then move the small image's channels first and
    # cast it: the order onnxruntime's optimiser turns a Transpose-first graph into (measured: 1 ms for
    # 12 megapixels to 224 x 224; the Transpose-first graph run as written, 15 ms).
    g.node(
        "Resize",
        ["pixels", "", "", sizes],
        ["resized"],
        name="resized",
        mode="linear",
        coordinate_transformation_mode="half_pixel",
    )
    g.node("Transpose", ["resized"], ["planes"], name="planes", perm=[0, 3, 1, 2])
    g.node("Cast", ["planes"], ["levels"], name="levels", to=TensorProto.FLOAT)
    g.node("Mul", ["levels", unit], ["x"], name="x")
    return g.model(
        [helper.make_tensor_value_info("pixels", TensorProto.UINT8, [1, "H", "W", channels])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, height, width])],
        name="caffezoo_resize",
    )
