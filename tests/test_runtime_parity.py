"""Every supported layer type, with its parameter variants, against OpenCV's Caffe importer or numpy.

Each case is a tiny net: Input layer(s), the layer under test (named ``out``),
random weights written with caffezoo's own caffemodel writer. caffezoo's ONNX
on onnxruntime must agree with OpenCV 4.x to 1e-4 (relative above 1). Where
OpenCV lacks the layer, or departs from Caffe (noted per case), the reference
is a numpy transcription of Caffe's ``Forward_cpu`` written here.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pytest
from runtime_helpers import assert_close, random_weights, run_caffezoo, run_opencv, write_net

from caffezoo.caffe.builder import NetBuilder

Numpy = Callable[..., np.ndarray]


@dataclass
class Case:
    id: str
    build: Callable  # (NetBuilder, *input tops) -> None; the layer under test is named "out"
    shapes: list = field(default_factory=lambda: [(2, 3, 10, 10)])
    numpy: Numpy | None = None  # (inputs..., weights=list) -> expected "out"; None: OpenCV is the reference
    positive: bool = False  # inputs > 0 (Log, Power with fractional exponent)
    tops: list[str] = field(default_factory=lambda: ["out"])
    ties: bool = False  # inputs drawn from a few values, so ties happen


def pool_ref(x, k, s, p, mode="max", floor=False):
    """Caffe's PoolingLayer::Forward_cpu, literally."""
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw) = k, s, p
    rnd = math.floor if floor else math.ceil
    oh, ow = rnd((h + 2 * ph - kh) / sh) + 1, rnd((w + 2 * pw - kw) / sw) + 1
    if ph or pw:
        oh -= (oh - 1) * sh >= h + ph
        ow -= (ow - 1) * sw >= w + pw
    y = np.zeros((n, c, oh, ow), np.float32)
    mask = np.zeros_like(y)
    for i in range(oh):
        for j in range(ow):
            hs, ws = i * sh - ph, j * sw - pw
            if mode == "max":
                he, we = min(hs + kh, h), min(ws + kw, w)
                hs, ws = max(hs, 0), max(ws, 0)
                window = x[:, :, hs:he, ws:we].reshape(n, c, -1)
                if window.shape[-1] == 0:
                    y[:, :, i, j] = -np.finfo(np.float32).max
                    continue
                y[:, :, i, j] = window.max(-1)
                arg = window.argmax(-1)
                mask[:, :, i, j] = (hs + arg // (we - ws)) * w + ws + arg % (we - ws)
            else:
                he, we = min(hs + kh, h + ph), min(ws + kw, w + pw)
                size = (he - hs) * (we - ws)
                hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
                y[:, :, i, j] = x[:, :, hs:he, ws:we].sum((2, 3)) / size
    return y, mask


def lrn_ref(x, size, alpha, beta, k, within=False):
    if within:
        pad = (size - 1) // 2
        sq = np.pad(x**2, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
        acc = np.zeros_like(x)
        for i in range(size):
            for j in range(size):
                acc += sq[:, :, i : i + x.shape[2], j : j + x.shape[3]]
        return x * (1 + alpha / size**2 * acc) ** -beta
    pad = (size - 1) // 2
    sq = np.pad(x**2, ((0, 0), (pad, pad), (0, 0), (0, 0)))
    acc = sum(sq[:, i : i + x.shape[1]] for i in range(size))
    return x * (k + alpha / size * acc) ** -beta


def argmax_ref(x, top_k=1, out_max_val=False, axis=None):
    """Caffe's ArgMaxLayer: partial_sort of (value, index) pairs, descending: ties -> higher index first."""
    if axis is None:
        flat = x.reshape(x.shape[0], -1)
        rows = []
        for row in flat:
            order = sorted(range(row.size), key=lambda i: (row[i], i), reverse=True)[:top_k]
            idx = np.array(order, np.float32)
            rows.append(np.stack([idx, row[order]]) if out_max_val else idx[None])
        return np.stack(rows)
    moved = np.moveaxis(x, axis, -1)
    out = np.zeros(moved.shape[:-1] + (top_k,), np.float32)
    for pos in np.ndindex(moved.shape[:-1]):
        row = moved[pos]
        order = sorted(range(row.size), key=lambda i: (row[i], i), reverse=True)[:top_k]
        out[pos] = row[order] if out_max_val else order
    return np.moveaxis(out, -1, axis)


def deconv_ref(x, weight, bias, stride, pad, dilation):
    """Caffe's DeconvolutionLayer (col2im of W^T x), one group, square geometry."""
    n, c, h, w = x.shape
    _, out, k, _ = weight.shape
    full = stride * (h - 1) + dilation * (k - 1) + 1
    y = np.zeros((n, out, full, full), np.float32)
    for i in range(h):
        for j in range(w):
            for a in range(k):
                for b in range(k):
                    y[:, :, i * stride + a * dilation, j * stride + b * dilation] += (
                        x[:, :, i, j] @ weight[:, :, a, b]
                    )
    y = y[:, :, pad : full - pad, pad : full - pad]
    return y + bias.reshape(1, -1, 1, 1)


def interp_ref(x, out_h, out_w, pad_beg=0, pad_end=0):
    """PSPNet's caffe_cpu_interp2: bilinear with corners aligned, after cropping -pad_beg/-pad_end."""
    n, c, h, w = x.shape
    x = x[:, :, -pad_beg : h + pad_end, -pad_beg : w + pad_end]
    h, w = x.shape[2:]

    def taps(size_in, size_out):
        r = (size_in - 1) / (size_out - 1) if size_out > 1 else 0.0
        pos = r * np.arange(size_out)
        lo = np.floor(pos).astype(int)
        hi = np.minimum(lo + 1, size_in - 1)
        return lo, hi, (pos - lo).astype(np.float32)

    (h0, h1, lh), (w0, w1, lw) = taps(h, out_h), taps(w, out_w)
    rows = x[:, :, h0] * (1 - lh)[:, None] + x[:, :, h1] * lh[:, None]
    return rows[:, :, :, w0] * (1 - lw) + rows[:, :, :, w1] * lw


def unpool_ref(x, k):
    """SegNet's Upsample after a MAX pooling with a mask: each value back where its maximum was."""
    y, mask = pool_ref(x, (k, k), (k, k), (0, 0))
    out = np.zeros_like(x)
    for i, j in np.ndindex(x.shape[:2]):
        out[i, j].flat[mask[i, j].astype(int).ravel()] = y[i, j].ravel()
    return out


def unpool(n, x, k, **kw):
    pooled, mask = n.Pooling("pool", x, tops=["pool", "mask"], pool="MAX", kernel_size=k, stride=k)
    n.Upsample("out", pooled, mask, **kw)


def conv(n, x, **kw):
    n.Convolution("out", x, **kw)


def pool(n, x, **kw):
    n.Pooling("out", x, **kw)


CASES = [
    # ---- Convolution / Deconvolution
    Case("conv", lambda n, x: conv(n, x, num_output=4, kernel_size=3)),
    Case("conv-pad-stride", lambda n, x: conv(n, x, num_output=4, kernel_size=3, pad=1, stride=2)),
    Case(
        "conv-hw",
        lambda n, x: conv(
            n, x, num_output=5, kernel_h=3, kernel_w=5, stride_h=2, stride_w=1, pad_h=1, pad_w=2
        ),
    ),
    Case("conv-group", lambda n, x: conv(n, x, num_output=6, kernel_size=3, group=2), shapes=[(2, 4, 9, 9)]),
    Case(
        "conv-depthwise",
        lambda n, x: conv(n, x, num_output=4, kernel_size=3, group=4, pad=1),
        shapes=[(2, 4, 9, 9)],
    ),
    Case("conv-dilation", lambda n, x: conv(n, x, num_output=4, kernel_size=3, dilation=2, pad=2)),
    Case("conv-no-bias", lambda n, x: conv(n, x, num_output=4, kernel_size=1, bias_term=False)),
    Case(
        "conv-depthwise-type",
        lambda n, x: n.ConvolutionDepthwise(
            "out", x, convolution_param=dict(num_output=4, kernel_size=3, group=4)
        ),
        shapes=[(1, 4, 8, 8)],
    ),
    Case(
        "deconv",
        lambda n, x: n.Deconvolution(
            "out", x, convolution_param=dict(num_output=4, kernel_size=4, stride=2, pad=1)
        ),
    ),
    Case(
        "deconv-group-nobias",
        lambda n, x: n.Deconvolution(
            "out", x, convolution_param=dict(num_output=6, kernel_size=3, stride=2, group=2, bias_term=False)
        ),
        shapes=[(2, 4, 5, 5)],
    ),
    Case(
        "deconv-dilation",
        lambda n, x: n.Deconvolution(
            "out", x, convolution_param=dict(num_output=3, kernel_size=3, stride=2, pad=1, dilation=2)
        ),
        shapes=[(1, 2, 6, 6)],
        numpy=lambda x, w: deconv_ref(x, w[0], w[1], 2, 1, 2),
    ),  # OpenCV ignores a deconvolution's dilation
    # ---- Pooling: ceil rounding, the clipping rule, the AVE divisor
    Case("max-ceil", lambda n, x: pool(n, x, pool="MAX", kernel_size=3, stride=2)),
    Case("max-ceil-pad", lambda n, x: pool(n, x, pool="MAX", kernel_size=3, stride=2, pad=1)),
    Case(
        "max-ceil-overhang",
        lambda n, x: pool(n, x, pool="MAX", kernel_size=2, stride=2),
        shapes=[(2, 3, 9, 7)],
    ),
    Case(
        "max-clip-rule",
        lambda n, x: pool(n, x, pool="MAX", kernel_size=3, stride=3, pad=1),
        shapes=[(1, 2, 6, 6)],
    ),
    Case(
        "max-hw",
        lambda n, x: pool(n, x, pool="MAX", kernel_h=3, kernel_w=2, stride_h=2, stride_w=1, pad_h=1, pad_w=0),
        shapes=[(2, 3, 9, 8)],
    ),
    Case("max-global", lambda n, x: pool(n, x, pool="MAX", global_pooling=True)),
    # kernel_size and a lone kernel_h: Caffe takes kernel_size (kernel_h counts only with kernel_w)
    Case(
        "max-kernel-size-wins",
        lambda n, x: pool(n, x, pool="MAX", kernel_size=3, kernel_h=2, stride=2),
        numpy=lambda x, w: pool_ref(x, (3, 3), (2, 2), (0, 0))[0],
    ),
    Case("ave-ceil", lambda n, x: pool(n, x, pool="AVE", kernel_size=3, stride=2)),
    Case("ave-pad", lambda n, x: pool(n, x, pool="AVE", kernel_size=3, stride=1, pad=1)),
    Case(
        "ave-pad-ceil",
        lambda n, x: pool(n, x, pool="AVE", kernel_size=3, stride=2, pad=1),
        numpy=lambda x, w: pool_ref(x, (3, 3), (2, 2), (1, 1), "ave")[0],
    ),
    Case("ave-pad-ceil-opencv", lambda n, x: pool(n, x, pool="AVE", kernel_size=3, stride=2, pad=1)),
    Case(
        "ave-hw",
        lambda n, x: pool(n, x, pool="AVE", kernel_h=2, kernel_w=3, stride_h=2, stride_w=2, pad_h=1, pad_w=1),
        shapes=[(2, 3, 9, 10)],
        numpy=lambda x, w: pool_ref(x, (2, 3), (2, 2), (1, 1), "ave")[0],
    ),
    Case("ave-global", lambda n, x: pool(n, x, pool="AVE", global_pooling=True)),
    Case(
        "max-floor",
        lambda n, x: pool(n, x, pool="MAX", kernel_size=3, stride=2, round_mode="FLOOR"),
        numpy=lambda x, w: pool_ref(x, (3, 3), (2, 2), (0, 0), floor=True)[0],
    ),  # OpenCV's proto lacks round_mode
    Case(
        "ave-floor",
        lambda n, x: pool(n, x, pool="AVE", kernel_size=3, stride=2, pad=1, round_mode="FLOOR"),
        numpy=lambda x, w: pool_ref(x, (3, 3), (2, 2), (1, 1), "ave", floor=True)[0],
    ),
    Case(
        "max-empty-window",
        lambda n, x: pool(n, x, pool="MAX", kernel_size=2, stride=3),
        shapes=[(1, 2, 6, 6)],
        numpy=lambda x, w: pool_ref(x, (2, 2), (3, 3), (0, 0))[0],
    ),  # Caffe: -FLT_MAX past the input
    Case(
        "max-mask",
        lambda n, x: n.Pooling("out", x, tops=["out", "mask"], pool="MAX", kernel_size=3, stride=2, pad=1),
        tops=["mask"],
        numpy=lambda x, w: pool_ref(x, (3, 3), (2, 2), (1, 1))[1],
    ),
    # ---- normalisation
    Case("lrn", lambda n, x: n.LRN("out", x, local_size=5, alpha=0.1, beta=0.75), shapes=[(2, 7, 5, 5)]),
    Case(
        "lrn-k",
        lambda n, x: n.LRN("out", x, local_size=3, alpha=0.2, beta=0.6, k=2.5),
        shapes=[(2, 6, 4, 4)],
        numpy=lambda x, w: lrn_ref(x, 3, 0.2, 0.6, 2.5),
    ),  # OpenCV ignores k (it reads "bias")
    Case(
        "lrn-within",
        lambda n, x: n.LRN("out", x, local_size=3, alpha=0.3, beta=0.75, norm_region="WITHIN_CHANNEL", k=5.0),
        shapes=[(2, 3, 6, 6)],
        numpy=lambda x, w: lrn_ref(x, 3, 0.3, 0.75, 5.0, within=True),
    ),
    Case("lrn-beta1", lambda n, x: n.LRN("out", x, local_size=3, alpha=0.5, beta=1.0), shapes=[(2, 5, 4, 4)]),
    Case(
        "lrn-within-beta-half",
        lambda n, x: n.LRN("out", x, local_size=5, alpha=0.4, beta=0.5, norm_region="WITHIN_CHANNEL"),
        shapes=[(1, 2, 7, 6)],
        numpy=lambda x, w: lrn_ref(x, 5, 0.4, 0.5, 1.0, within=True),
    ),
    Case(
        "lrn-within-opencv",
        lambda n, x: n.LRN("out", x, local_size=3, alpha=0.3, beta=0.75, norm_region="WITHIN_CHANNEL"),
        shapes=[(2, 3, 6, 6)],
    ),
    Case("batchnorm", lambda n, x: n.BatchNorm("out", x)),
    Case(
        "batchnorm-eps", lambda n, x: n.BatchNorm("out", x, use_global_stats=True, eps=1e-3), shapes=[(3, 5)]
    ),
    Case(
        "batchnorm-batch-stats",
        lambda n, x: n.BatchNorm("out", x, use_global_stats=False),
        numpy=lambda x, w: (
            (x - x.mean((0, 2, 3), keepdims=True)) / np.sqrt(x.var((0, 2, 3), keepdims=True) + 1e-5)
        ),
    ),
    Case("mvn", lambda n, x: n.MVN("out", x)),
    Case(
        "mvn-across",
        lambda n, x: n.MVN("out", x, across_channels=True, eps=1e-3),
        numpy=lambda x, w: (x - x.mean((1, 2, 3), keepdims=True)) / (x.std((1, 2, 3), keepdims=True) + 1e-3),
    ),
    Case("mvn-mean-only", lambda n, x: n.MVN("out", x, normalize_variance=False)),
    Case("scale", lambda n, x: n.Scale("out", x)),
    Case("scale-bias", lambda n, x: n.Scale("out", x, bias_term=True)),
    Case(
        "scale-axes",
        lambda n, x: n.Scale("out", x, axis=1, num_axes=2, bias_term=True),
        numpy=lambda x, w: x * w[0][None, :, :, None] + w[1][None, :, :, None],
    ),
    Case("scale-scalar", lambda n, x: n.Scale("out", x, num_axes=0), numpy=lambda x, w: x * w[0]),
    Case(
        "scale-two-bottoms",
        lambda n, x, s: n.Scale("out", x, s, axis=0),
        shapes=[(2, 3, 4, 4), (2, 3)],
        numpy=lambda x, s, w: x * s[:, :, None, None],
    ),
    Case("bias", lambda n, x: n.Bias("out", x), numpy=lambda x, w: x + w[0][None, :, None, None]),
    Case(
        "bias-two-bottoms",
        lambda n, x, b: n.Bias("out", x, b, axis=2),
        shapes=[(2, 3, 4, 5), (4, 5)],
        numpy=lambda x, b, w: x + b,
    ),
    # ---- dense
    Case("innerproduct", lambda n, x: n.InnerProduct("out", x, num_output=7)),
    Case(
        "innerproduct-2d",
        lambda n, x: n.InnerProduct("out", x, num_output=3, bias_term=False),
        shapes=[(4, 6)],
    ),
    Case(
        "innerproduct-axis2",
        lambda n, x: n.InnerProduct("out", x, num_output=5, axis=2),
        numpy=lambda x, w: x.reshape(2, 3, -1) @ w[0].T + w[1],
    ),
    Case(
        "innerproduct-transpose",
        lambda n, x: n.InnerProduct("out", x, num_output=4, transpose=True),
        numpy=lambda x, w: x.reshape(2, -1) @ w[0] + w[1],
    ),
    # ---- activations
    Case("relu", lambda n, x: n.ReLU("out", x)),
    Case("relu-leaky", lambda n, x: n.ReLU("out", x, negative_slope=0.1)),
    Case("prelu", lambda n, x: n.PReLU("out", x)),
    Case(
        "prelu-shared",
        lambda n, x: n.PReLU("out", x, channel_shared=True),  # a 0-axis blob: OpenCV fails
        numpy=lambda x, w: np.maximum(x, 0) + w[0] * np.minimum(x, 0),
    ),
    Case("prelu-2d", lambda n, x: n.PReLU("out", x), shapes=[(4, 5)]),
    Case("sigmoid", lambda n, x: n.Sigmoid("out", x)),
    Case("tanh", lambda n, x: n.TanH("out", x)),
    Case("absval", lambda n, x: n.AbsVal("out", x)),
    Case("bnll", lambda n, x: n.BNLL("out", x)),
    Case("elu", lambda n, x: n.ELU("out", x, alpha=0.5)),
    Case("swish", lambda n, x: n.Swish("out", x)),
    Case("swish-beta", lambda n, x: n.Swish("out", x, beta=2.0), numpy=lambda x, w: x / (1 + np.exp(-2 * x))),
    Case(
        "threshold",
        lambda n, x: n.Threshold("out", x, threshold=0.2),
        ties=True,
        numpy=lambda x, w: (x > 0.2).astype(np.float32),
    ),
    Case("clip", lambda n, x: n.Clip("out", x, min=-0.5, max=0.7), numpy=lambda x, w: np.clip(x, -0.5, 0.7)),
    Case("relu6", lambda n, x: n.ReLU6("out", x)),
    Case("power", lambda n, x: n.Power("out", x, power=2.0, scale=0.5, shift=1.0)),
    Case("power-fractional", lambda n, x: n.Power("out", x, power=0.5, scale=2.0), positive=True),
    Case(
        "power-constant",
        lambda n, x: n.Power("out", x, power=3.0, scale=0.0, shift=2.0),
        numpy=lambda x, w: np.full_like(x, 8.0),
    ),
    Case("exp", lambda n, x: n.Exp("out", x)),
    Case("exp-base", lambda n, x: n.Exp("out", x, base=2.0, scale=0.5, shift=1.0)),
    Case("log", lambda n, x: n.Log("out", x), positive=True),
    Case(
        "log-base",
        lambda n, x: n.Log("out", x, base=10.0, scale=2.0, shift=3.0),
        positive=True,
        numpy=lambda x, w: np.log(2 * x + 3) / np.log(10),
    ),  # OpenCV ignores base, scale and shift
    Case("dropout", lambda n, x: n.Dropout("out", x, dropout_ratio=0.3)),
    Case("softmax", lambda n, x: n.Softmax("out", x)),
    Case("softmax-axis2", lambda n, x: n.Softmax("out", x, axis=2)),
    Case("softmax-axis-last", lambda n, x: n.Softmax("out", x, axis=-1)),
    # ---- several blobs
    Case("eltwise-sum", lambda n, a, b: n.Eltwise("out", a, b), shapes=[(2, 3, 5, 5)] * 2),
    Case(
        "eltwise-coeff",
        lambda n, a, b, c: n.Eltwise("out", a, b, c, operation="SUM", coeff=[1, -1, 0.5]),
        shapes=[(2, 3, 5, 5)] * 3,
    ),
    Case(
        "eltwise-prod",
        lambda n, a, b, c: n.Eltwise("out", a, b, c, operation="PROD"),
        shapes=[(2, 3, 5, 5)] * 3,
    ),
    Case("eltwise-max", lambda n, a, b: n.Eltwise("out", a, b, operation="MAX"), shapes=[(2, 3, 5, 5)] * 2),
    Case("concat", lambda n, a, b: n.Concat("out", a, b), shapes=[(2, 3, 4, 4), (2, 5, 4, 4)]),
    Case("concat-axis2", lambda n, a, b: n.Concat("out", a, b, axis=2), shapes=[(2, 3, 4, 4), (2, 3, 2, 4)]),
    Case(
        "concat-dim", lambda n, a, b: n.Concat("out", a, b, concat_dim=1), shapes=[(2, 3, 4, 4), (2, 1, 4, 4)]
    ),
    Case(
        "slice",
        lambda n, x: n.Slice("out", x, tops=["out", "b", "c"], slice_point=[1, 4]),
        shapes=[(2, 6, 3, 3)],
        tops=["out", "b", "c"],
    ),
    Case(
        "slice-even-axis2",
        lambda n, x: n.Slice("out", x, tops=["out", "b"], axis=2),
        shapes=[(2, 3, 6, 3)],
        tops=["out", "b"],
        numpy=lambda x, w: [x[:, :, :3], x[:, :, 3:]],
    ),  # OpenCV refuses even slicing
    Case(
        "split",
        lambda n, x: n.Split("out", x, tops=["out", "b"]),
        tops=["out", "b"],
        numpy=lambda x, w: [x, x],
    ),
    Case("flatten", lambda n, x: n.Flatten("out", x)),
    Case(
        "flatten-axes",
        lambda n, x: n.Flatten("out", x, axis=2, end_axis=3),
        shapes=[(2, 3, 4, 5, 2)],
        numpy=lambda x, w: x.reshape(2, 3, 20, 2),
    ),
    Case("reshape", lambda n, x: n.Reshape("out", x, shape=dict(dim=[0, -1, 5])), shapes=[(2, 3, 5, 4)]),
    Case(
        "reshape-axis",
        lambda n, x: n.Reshape("out", x, shape=dict(dim=[2, -1]), axis=2, num_axes=1),
        shapes=[(2, 3, 6, 4)],
        numpy=lambda x, w: x.reshape(2, 3, 2, 3, 4),
    ),
    Case(
        "reshape-append",
        lambda n, x: n.Reshape("out", x, shape=dict(dim=[1, 1]), axis=-1),
        shapes=[(2, 3, 4)],
        numpy=lambda x, w: x.reshape(2, 3, 4, 1, 1),
    ),
    Case("crop", lambda n, a, b: n.Crop("out", a, b, offset=[2]), shapes=[(2, 3, 10, 10), (2, 3, 6, 5)]),
    Case(
        "crop-axis1",
        lambda n, a, b: n.Crop("out", a, b, axis=1, offset=[1, 2, 3]),
        shapes=[(2, 5, 10, 10), (2, 3, 6, 5)],
    ),
    Case(
        "tile", lambda n, x: n.Tile("out", x, axis=2, tiles=3), numpy=lambda x, w: np.tile(x, (1, 1, 3, 1))
    ),  # OpenCV's importer cannot read Tile's parameters
    Case("argmax", lambda n, x: n.ArgMax("out", x), ties=True, numpy=lambda x, w: argmax_ref(x)),
    Case(
        "argmax-topk-val",
        lambda n, x: n.ArgMax("out", x, top_k=3, out_max_val=True),
        ties=True,
        numpy=lambda x, w: argmax_ref(x, 3, True),
    ),
    Case(
        "argmax-axis",
        lambda n, x: n.ArgMax("out", x, axis=1),
        ties=True,
        numpy=lambda x, w: argmax_ref(x, axis=1),
    ),
    Case(
        "argmax-axis-topk",
        lambda n, x: n.ArgMax("out", x, axis=2, top_k=2),
        ties=True,
        numpy=lambda x, w: argmax_ref(x, 2, axis=2),
    ),
    Case(
        "argmax-axis-val",
        lambda n, x: n.ArgMax("out", x, axis=3, top_k=2, out_max_val=True),
        ties=True,
        numpy=lambda x, w: argmax_ref(x, 2, True, axis=3),
    ),
    Case(
        "reduction-sum",
        lambda n, x: n.Reduction("out", x, axis=1),
        numpy=lambda x, w: x.reshape(2, -1).sum(1),
    ),
    Case(
        "reduction-asum",
        lambda n, x: n.Reduction("out", x, operation="ASUM", axis=2, coeff=0.5),
        numpy=lambda x, w: 0.5 * np.abs(x).reshape(2, 3, -1).sum(2),
    ),
    Case(
        "reduction-sumsq",
        lambda n, x: n.Reduction("out", x, operation="SUMSQ", axis=-1),
        numpy=lambda x, w: (x**2).sum(3),
    ),
    Case(
        "reduction-mean-all",
        lambda n, x: n.Reduction("out", x, operation="MEAN", axis=0, coeff=2.0),
        numpy=lambda x, w: np.float32(2 * x.mean()),
    ),
    Case("parameter", lambda n, x: n.Parameter("out", shape=dict(dim=[2, 3])), numpy=lambda x, w: w[0]),
    # ---- fork layers
    Case("permute", lambda n, x: n.Permute("out", x, order=[0, 2, 3, 1])),
    Case("normalize", lambda n, x: n.Normalize("out", x, across_spatial=False, channel_shared=False)),
    Case("normalize-across", lambda n, x: n.Normalize("out", x, across_spatial=True, channel_shared=True)),
    Case("interp-zoom", lambda n, x: n.Interp("out", x, zoom_factor=2)),
    Case("interp-size", lambda n, x: n.Interp("out", x, height=7, width=13)),
    # OpenCV has neither shrink_factor nor the pad_beg/pad_end crop
    Case(
        "interp-shrink",
        lambda n, x: n.Interp("out", x, shrink_factor=3),
        shapes=[(1, 3, 13, 10)],
        numpy=lambda x, w: interp_ref(x, 5, 4),
    ),
    Case(
        "interp-crop",
        lambda n, x: n.Interp("out", x, zoom_factor=3, pad_beg=-1, pad_end=-2),
        shapes=[(1, 2, 9, 8)],
        numpy=lambda x, w: interp_ref(x, 16, 13, -1, -2),
    ),
    Case(
        "interp-shrink-zoom",
        lambda n, x: n.Interp("out", x, shrink_factor=2, zoom_factor=3),
        shapes=[(1, 2, 9, 8)],
        numpy=lambda x, w: interp_ref(x, 13, 10),
    ),
    Case(
        "upsample-segnet",
        lambda n, x: unpool(n, x, 2, scale=2),
        shapes=[(2, 3, 8, 8)],
        numpy=lambda x, w: unpool_ref(x, 2),
    ),
    Case(
        "upsample-segnet-odd",
        lambda n, x: unpool(n, x, 2, upsample_h=9, upsample_w=7),
        shapes=[(1, 2, 9, 7)],
        numpy=lambda x, w: unpool_ref(x, 2),
    ),
    Case(
        "upsample-nearest",
        lambda n, x: n.Upsample("out", x, scale=2),
        numpy=lambda x, w: x.repeat(2, axis=2).repeat(2, axis=3),
    ),
    Case("shuffle", lambda n, x: n.ShuffleChannel("out", x, group=2), shapes=[(2, 6, 3, 3)]),
    Case(
        "axpy",
        lambda n, a, x, y: n.Axpy("out", a, x, y),
        shapes=[(2, 3, 1, 1), (2, 3, 4, 4), (2, 3, 4, 4)],
        numpy=lambda a, x, y, w: a * x + y,
    ),  # OpenCV's Axpy fails on these shapes
    Case(
        "bn-pspnet",
        lambda n, x: n.BN("out", x, eps=1e-4),
        numpy=lambda x, w: (x - w[2]) / np.sqrt(w[3] + 1e-4) * w[0] + w[1],
    ),
    Case("bn-segnet", lambda n, x: n.BN("out", x, bn_mode="INFERENCE"), numpy=lambda x, w: x * w[0] + w[1]),
]


def _inputs(case: Case, rng: np.random.Generator) -> list[np.ndarray]:
    out = []
    for shape in case.shapes:
        if case.ties:
            x = rng.integers(-2, 3, shape).astype(np.float32) / 2
        else:
            x = rng.standard_normal(shape).astype(np.float32)
        out.append(np.abs(x) + 0.1 if case.positive else x)
    return out


def _net(case: Case) -> NetBuilder:
    n = NetBuilder(case.id)
    tops = [n.Input(f"in{i}" if i else "data", shape=dict(dim=list(s))) for i, s in enumerate(case.shapes)]
    case.build(n, *tops)
    return n


def _weights(case: Case, net, rng: np.random.Generator) -> dict:
    weights = random_weights(net)
    if case.id.startswith("bn-"):  # BN's blobs are not checked by shape inference: give them here
        count = 4 if case.id == "bn-pspnet" else 2
        weights["out"] = [
            rng.uniform(0.5, 1.5, (1, case.shapes[0][1], 1, 1)).astype(np.float32) for _ in range(count)
        ]
    return weights


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_layer_matches_reference(case: Case, tmp_path):
    rng = np.random.default_rng(zlib.crc32(case.id.encode()))  # not hash(): the same inputs on every run
    net = _net(case).to_proto()
    weights = _weights(case, net, rng)
    prototxt, caffemodel = write_net(tmp_path, net, weights)
    names = [layer.top[0] for layer in net.layer if layer.type == "Input"]
    inputs = dict(zip(names, _inputs(case, rng)))
    ours = run_caffezoo(prototxt, caffemodel, inputs, case.tops)
    if case.numpy is not None:
        expected = case.numpy(*inputs.values(), w=weights.get("out", []))
        expected = expected if isinstance(expected, list) else [expected]
        assert len(expected) == len(case.tops), f"{case.id}: the reference gives {len(expected)} tops"
        for top, value in zip(case.tops, expected):
            assert_close(ours[top], np.asarray(value, np.float32), f"{case.id}: {top}")
        return
    # OpenCV answers for a layer's first top only: other tops are copied out by Power layers.
    names = ["out"] + [f"{top}_copy" for top in case.tops[1:]]
    if len(names) > 1:
        for top in case.tops[1:]:
            net.layer.add(name=f"{top}_copy", type="Power", bottom=[top], top=[f"{top}_copy"])
        prototxt, caffemodel = write_net(tmp_path, net, weights)
    reference = run_opencv(prototxt, caffemodel, inputs, names)
    for top, name in zip(case.tops, names):
        assert_close(ours[top], reference[name], f"{case.id}: {top}")


# Cases whose result depends on the batch as a whole: they keep the declared batch size.
FIXED_BATCH = {"batchnorm-batch-stats", "reduction-mean-all", "scale-two-bottoms", "bias-two-bottoms"}
# Cases whose output has no batch axis: the same whatever the batch.
NOT_BATCHED = {"parameter"}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_layer_runs_at_any_batch_size(case: Case, tmp_path):
    """The batch axis stays symbolic: a batch of 2N gives the two batches of N, side by side."""
    import onnxruntime as ort

    from caffezoo.runtime import to_onnx

    rng = np.random.default_rng(1)
    net = _net(case).to_proto()
    weights = _weights(case, net, rng)
    prototxt, caffemodel = write_net(tmp_path, net, weights)
    model = to_onnx(prototxt, weights=caffemodel, outputs=case.tops)
    batch = model.graph.input[0].type.tensor_type.shape.dim[0]
    meta = {p.key: p.value for p in model.metadata_props}
    if case.id in FIXED_BATCH:
        assert batch.dim_value == case.shapes[0][0] and meta["caffezoo.static_batch"]
        return
    assert batch.dim_param == "batch", meta.get("caffezoo.static_batch")
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [i.name for i in model.graph.input]
    first, second = (dict(zip(names, _inputs(case, rng))) for _ in range(2))
    both = {k: np.concatenate([first[k], second[k]]) for k in names}
    a, b, ab = (session.run(case.tops, feed) for feed in (first, second, both))
    for top, x, y, xy in zip(case.tops, a, b, ab):
        if case.id in NOT_BATCHED:
            assert_close(xy, x, f"{case.id}: {top}")
        else:  # an output that ignored the second batch would fail here, on its shape or its values
            assert_close(xy, np.concatenate([x, y]), f"{case.id}: {top}")
