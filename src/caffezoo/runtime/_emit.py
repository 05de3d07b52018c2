"""What a layer's converter sees, and the table of converters by Caffe type.

A converter is a function ``(ctx: Ctx) -> None`` registered with
:func:`emits`. It reads the layer (``ctx.layer.param``, ``ctx.blobs``), its
inputs (``ctx.x`` tensor names, ``ctx.shapes`` their shapes at the declared
batch size) and must write every top into ``ctx.y[i]``. Optionally, a
``check`` function registered alongside says, before any conversion starts,
why a particular use of the layer cannot be converted (a parameter value
caffezoo does not support), so that every problem is reported at once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConversionError
from ._graph import Graph

if TYPE_CHECKING:
    from ..caffe.net import Layer

Shape = tuple[int, ...]
Emitter = Callable[["Ctx"], None]
Check = Callable[["Layer"], "str | None"]

EMITTERS: dict[str, Emitter] = {}
CHECKS: dict[str, Check] = {}
# Types that need nothing in the graph (their tops, if any, are never used by a deploy net).
SKIPPED = frozenset(
    {
        "Silence",
        "Accuracy",
        "SoftmaxWithLoss",
        "EuclideanLoss",
        "HingeLoss",
        "InfogainLoss",
        "MultinomialLogisticLoss",
        "SigmoidCrossEntropyLoss",
        "ContrastiveLoss",
        "HDF5Output",
    }
)

FLT_MAX = float(np.finfo(np.float32).max)


def emits(*types: str, check: Check | None = None) -> Callable[[Emitter], Emitter]:
    """Register the decorated function as the converter of ``types``."""

    def register(fn: Emitter) -> Emitter:
        for t in types:
            EMITTERS[t] = fn
            if check is not None:
                CHECKS[t] = check
        return fn

    return register


class StaticBatch(Exception):
    """Raised in dynamic-batch mode by a layer whose result depends on the batch size."""


@dataclass
class Ctx:
    """One layer being converted."""

    g: Graph
    layer: Layer
    x: list[str]  # tensor names of the bottoms
    shapes: list[Shape]  # their shapes (batch as declared)
    y: list[str]  # tensor names the tops must get
    out_shapes: list[Shape | None]
    blobs: list[np.ndarray] = field(default_factory=list)
    dynamic: bool = False  # the graph's batch axis is symbolic
    path: str | None = None  # the prototxt, for messages
    # An input's first axis counts what the data says (Faster R-CNN's proposals): sized like a batch.
    variable_rows: bool = False

    @property
    def name(self) -> str:
        return self.layer.name

    @property
    def p(self) -> Any:
        """The layer's parameter message (``convolution_param`` for a Convolution...)."""
        return self.layer.type_param

    def node(
        self,
        op: str,
        inputs: Sequence[str],
        outputs: Sequence[str] | int = 1,
        *,
        step: str | None = None,
        **attrs: Any,
    ) -> list[str]:
        """A node named after the layer (``conv1``, or ``conv1/step`` for helper nodes)."""
        name = self.name if step is None else f"{self.name}/{step}"
        return self.g.node(op, inputs, outputs, name=name, **attrs)

    def op(self, op: str, *inputs: str, step: str, **attrs: Any) -> str:
        """A one-output helper node; returns its output's name."""
        return self.node(op, inputs, 1, step=step, **attrs)[0]

    def weight(self, i: int, role: str, array: Any = None) -> str:
        """Blob ``i`` (or ``array`` derived from it) as an initializer named ``layer.role``.

        Blobs that layers share by ``param { name: ... }`` become one initializer.
        """
        specs = self.layer.param.param
        shared = specs[i].name if i < len(specs) and specs[i].name else None
        if shared is not None:
            shared = f"{shared}/{role}"  # the same blob may be used in several forms (BatchNorm)
        return self.g.initializer(
            f"{self.name}.{role}", self.blobs[i] if array is None else array, shared=shared
        )

    def const(self, step: str, values: Any, dtype: Any = np.int64) -> str:
        return self.g.const(f"{self.name}/{step}", values, dtype)

    def scalar(self, step: str, value: float) -> str:
        return self.g.const(f"{self.name}/{step}", np.float32(value), np.float32)

    def batch_dependent(self, why: str) -> None:
        """This layer mixes the batch axis with others: the graph needs a fixed batch size."""
        if self.dynamic:
            raise StaticBatch(f"layer {self.name!r} ({self.layer.type}): {why}")

    def reshape(
        self,
        x: str,
        shape: Sequence[int],
        out: str | None = None,
        *,
        step: str = "reshape",
        batch: str = "copy",
    ) -> str:
        """Reshape to a fully computed ``shape``, keeping a symbolic batch axis symbolic.

        ``batch`` says what axis 0 of ``shape`` is when the batch is symbolic:
        ``"copy"`` the input's axis 0, ``"infer"`` whatever is left (-1, for a
        batch that an earlier node folded into axis 0), ``"fixed"`` not the batch
        at all (then the graph needs a fixed batch size).
        """
        target = [int(d) for d in shape]
        if (self.dynamic or (self.variable_rows and batch != "fixed")) and target:
            if batch == "copy":
                target[0] = 0  # ONNX: 0 copies the input's dimension
            elif batch == "infer":
                target[0] = -1
            else:
                self.batch_dependent("reshapes across the batch axis")
        outputs = [out] if out else 1
        return self.node(
            "Reshape", [x, self.const(f"{step}_shape", target)], outputs, step=None if out else step
        )[0]

    def fail(self, message: str) -> ConversionError:
        return ConversionError(f"{self.layer.where(self.path)}: {message}")


def axis_index(axis: int, ndim: int) -> int:
    """Caffe's CanonicalAxisIndex (negative axes count from the end)."""
    return axis + ndim if axis < 0 else axis
