"""An ONNX graph under construction, and how it reaches the disk without copying weights.

>>> g = Graph(opset=17)
>>> w = g.initializer("conv1.weight", np.ones((4, 3, 3, 3), np.float32))
>>> _ = g.node("Conv", ["data", w], ["conv1"], name="conv1", kernel_shape=[3, 3])
>>> g.save("net.onnx", inputs=[...], outputs=[...])                  # doctest: +SKIP

Initializers stay numpy arrays (often read-only views of the mapped
``.caffemodel``) until the end. :meth:`Graph.save` then writes the model the
way protobuf would, but streams each array's bytes straight from its buffer
into ``raw_data``: the nodes go first in one ``graph`` record, the weights in
a second ``graph`` record, which protobuf readers merge into one message. A
233 MB AlexNet is converted without holding a second copy of its weights.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper

from ..atomic import atomic_open
from ..caffe import wire as w

# ModelProto.graph and GraphProto.initializer, TensorProto.raw_data field numbers (onnx.proto).
_MODEL_GRAPH, _GRAPH_INITIALIZER, _TENSOR_RAW_DATA = 7, 5, 9

# Constants smaller than this are de-duplicated by value (shapes, axes, scalars).
_SMALL = 256

DTYPES = {
    np.dtype(np.float32): TensorProto.FLOAT,
    np.dtype(np.int64): TensorProto.INT64,
    np.dtype(np.bool_): TensorProto.BOOL,
    np.dtype(np.int32): TensorProto.INT32,
    np.dtype(np.float64): TensorProto.DOUBLE,
}


class Graph:
    """Nodes and initializers, with unique names and each weight stored once."""

    def __init__(self, opset: int):
        self.opset = opset
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: dict[str, np.ndarray] = {}
        self.names: set[str] = set()  # every tensor name used so far
        self.node_names: set[str] = set()
        self._by_buffer: dict[tuple, str] = {}
        self._by_value: dict[tuple, str] = {}

    def unique(self, hint: str, taken: set[str] | None = None) -> str:
        """``hint``, or ``hint_2``, ``hint_3``... whichever is still free (tensor names by default)."""
        taken = self.names if taken is None else taken
        name, k = hint, 1
        while name in taken:
            k += 1
            name = f"{hint}_{k}"
        taken.add(name)
        return name

    def initializer(
        self, hint: str, array: Any, dtype: Any = np.float32, *, shared: str | None = None
    ) -> str:
        """Add ``array`` as an initializer (converted to ``dtype``); return its name.

        The same buffer, or the same small value, given twice is stored once;
        so is every array given under the same ``shared`` key (Caffe's named
        ``param`` blobs, which each layer sharing them saves again).
        """
        if shared is not None and ("shared", shared) in self._by_value:
            return self._by_value[("shared", shared)]
        a = np.asarray(array)
        if a.dtype != np.dtype(dtype):
            a = a.astype(dtype)
        if not a.flags.c_contiguous:
            a = np.ascontiguousarray(a)
        if a.size <= _SMALL:
            key: tuple = (a.dtype.str, a.shape, a.tobytes())
            table = self._by_value
        else:
            key = (a.dtype.str, a.shape, a.__array_interface__["data"][0])
            table = self._by_buffer
        name = table.get(key)
        if name is None:
            name = table[key] = self.unique(hint)
            self.initializers[name] = a
        if shared is not None:
            self._by_value[("shared", shared)] = name
        return name

    def const(self, hint: str, values: Any, dtype: Any = np.int64) -> str:
        """A small constant (a shape, axes, a scalar) as an initializer."""
        return self.initializer(hint, np.asarray(values, dtype=dtype), dtype)

    def node(
        self, op: str, inputs: Sequence[str], outputs: Sequence[str] | int = 1, *, name: str, **attrs: Any
    ) -> list[str]:
        """Append a node; ``outputs`` are names, or a count of fresh names derived from ``name``."""
        if isinstance(outputs, int):
            outputs = [self.unique(f"{name}:{i}" if outputs > 1 else name) for i in range(outputs)]
        else:
            self.names.update(outputs)
        attrs = {k: v for k, v in attrs.items() if v is not None}
        node_name = self.unique(name, self.node_names)
        self.nodes.append(helper.make_node(op, list(inputs), list(outputs), name=node_name, **attrs))
        return list(outputs)

    # ------------------------------------------------------------ output

    def model(
        self,
        inputs: list[onnx.ValueInfoProto],
        outputs: list[onnx.ValueInfoProto],
        *,
        name: str = "caffezoo",
        doc: str = "",
        with_weights: bool = True,
        metadata: dict[str, str] | None = None,
    ) -> onnx.ModelProto:
        """The ModelProto (initializers included unless ``with_weights=False``)."""
        graph = helper.make_graph(self.nodes, name, inputs, outputs)
        if with_weights:
            graph.initializer.extend(tensor_proto(n, a) for n, a in self.initializers.items())
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", self.opset)],
            producer_name="caffezoo",
            doc_string=doc,
        )
        # The oldest IR version that carries this opset: older runtimes can read the file.
        model.ir_version = _ir_version(self.opset)
        for key, value in (metadata or {}).items():
            model.metadata_props.add(key=key, value=value)
        return model

    def save(
        self,
        path: str | os.PathLike[str],
        inputs: list[onnx.ValueInfoProto],
        outputs: list[onnx.ValueInfoProto],
        **kwargs: Any,
    ) -> Path:
        """Write the model to ``path`` atomically, streaming weights from their buffers."""
        head = self.model(inputs, outputs, with_weights=False, **kwargs).SerializeToString()
        records = [_initializer_record(n, a) for n, a in self.initializers.items()]
        graph_len = sum(len(h) + a.nbytes for h, a in records)
        p = Path(path)
        with atomic_open(p) as out:
            out.write(head)
            out.write(w.tag(_MODEL_GRAPH, w.BYTES) + w.encode_varint(graph_len))
            for header, array in records:
                out.write(header)
                out.write(memoryview(array).cast("B") if array.size else b"")
        return p


def _ir_version(opset: int) -> int:
    for ir, ops in ((7, 13), (8, 17), (9, 19), (10, 22), (11, 24)):
        if opset <= ops:
            return ir
    return onnx.IR_VERSION


def tensor_proto(name: str, array: np.ndarray) -> TensorProto:
    """An in-memory TensorProto (raw little-endian bytes)."""
    t = TensorProto(name=name, data_type=DTYPES[array.dtype], dims=array.shape)
    t.raw_data = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
    return t


def _initializer_record(name: str, array: np.ndarray) -> tuple[bytes, np.ndarray]:
    """The bytes of ``initializer { ... raw_data: <len> }`` before the values, and the values."""
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    head = TensorProto(name=name, data_type=DTYPES[array.dtype], dims=array.shape).SerializeToString()
    head += w.tag(_TENSOR_RAW_DATA, w.BYTES) + w.encode_varint(array.nbytes)
    record = w.tag(_GRAPH_INITIALIZER, w.BYTES) + w.encode_varint(len(head) + array.nbytes) + head
    return record, array


def value_info(
    name: str, shape: Iterable[int | str | None] | None, elem: int = TensorProto.FLOAT
) -> onnx.ValueInfoProto:
    """A typed graph input or output; a ``str`` dimension is symbolic (e.g. ``"batch"``), None unknown."""
    return helper.make_tensor_value_info(name, elem, None if shape is None else list(shape))
