"""Caffe to ONNX: a zoo model (or any prototxt + caffemodel) as an ONNX file with Caffe's numbers.

>>> to_onnx("bvlc_alexnet", "alexnet.onnx")                              # doctest: +SKIP
PosixPath('alexnet.onnx')
>>> model = to_onnx("deploy.prototxt", weights="net.caffemodel")         # doctest: +SKIP
>>> [i.name for i in model.graph.input], [o.name for o in model.graph.output]   # doctest: +SKIP
(['data'], ['prob'])

What comes out:

- one ONNX node per Caffe layer, named after it (helper nodes ``layer/step``),
  and tensors named after Caffe's blobs; a blob a later layer rewrites in
  place is ``blob@layer`` until its last writer, which gets the plain name;
- graph inputs from the ``Input`` layer (or the legacy ``input`` fields), with
  a symbolic batch axis when no layer depends on the batch size;
- graph outputs: the blobs nothing consumes (Caffe's net outputs), plus any
  asked for with ``outputs=``;
- each weight array stored once, streamed from the ``.caffemodel``.

Before any work, every layer is checked: all unsupported types (and the layers
using them), all unsupported parameter values, then all missing weights are
reported together in one :class:`~caffezoo.errors.ConversionError`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import CaffezooError, ConversionError
from . import detection as _detection  # noqa: F401  (registers converters)
from . import ops as _ops  # noqa: F401
from . import ops_fork as _ops_fork  # noqa: F401
from . import ops_recurrent as _ops_recurrent  # noqa: F401
from . import ops_regions as _ops_regions  # noqa: F401
from ._emit import CHECKS, EMITTERS, SKIPPED, Ctx, StaticBatch
from ._graph import Graph, value_info
from .fill import fill, layer_fillers

if TYPE_CHECKING:
    import onnx

    from ..caffe.net import Layer, Net
    from ..zoo import Located

__all__ = [
    "CONVERTER_VERSION",
    "DEFAULT_OPSET",
    "Converted",
    "convert_net",
    "export",
    "load",
    "locate",
    "to_onnx",
    "unsupported_layers",
]

# Bumped whenever the ONNX written for the same Caffe net changes: cached conversions are redone.
CONVERTER_VERSION = "2"
DEFAULT_OPSET = 17
MIN_OPSET = 13  # Softmax over one axis, Split/Unsqueeze with tensor inputs
INPUT_TYPES = frozenset({"Input", "Data", "ImageData", "HDF5Data", "WindowData", "MemoryData", "DummyData"})


@dataclass
class Converted:
    """An ONNX graph built from a Caffe net, not yet written anywhere."""

    graph: Graph
    inputs: list[onnx.ValueInfoProto]
    outputs: list[onnx.ValueInfoProto]
    net: Net
    dynamic_batch: bool
    static_reason: str | None = None  # why the batch size is fixed, when it is
    metadata: dict[str, str] = field(default_factory=dict)
    path: Path | None = None  # where it was saved

    def summary(self) -> dict[str, Any]:
        """What was written: inputs and outputs with their shapes, counts, size."""

        def dims(v: onnx.ValueInfoProto) -> list:
            if not v.type.tensor_type.HasField("shape"):
                return []
            return [
                d.dim_param or (d.dim_value if d.HasField("dim_value") else None)
                for d in v.type.tensor_type.shape.dim
            ]

        return {
            "path": str(self.path) if self.path else None,
            "bytes": self.path.stat().st_size if self.path else None,
            "opset": self.graph.opset,
            "inputs": {v.name: dims(v) for v in self.inputs},
            "outputs": {v.name: dims(v) for v in self.outputs},
            "nodes": len(self.graph.nodes),
            "initializers": len(self.graph.initializers),
            "parameters": int(sum(a.size for a in self.graph.initializers.values())),
            "dynamic_batch": self.dynamic_batch,
            "static_reason": self.static_reason,
        }

    def proto(self) -> onnx.ModelProto:
        """The whole model in memory (weights copied into it)."""
        return self.graph.model(
            self.inputs,
            self.outputs,
            name=self.net.name or "caffezoo",
            doc=self._doc(),
            metadata=self.metadata,
        )

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the model to ``path`` atomically, weights streamed from the caffemodel.

        A place that cannot be written (no such folder, a folder in the way, a full
        disk) raises :class:`~caffezoo.errors.WriteError` from the shared atomic writer.
        """
        return self.graph.save(
            path,
            self.inputs,
            self.outputs,
            name=self.net.name or "caffezoo",
            doc=self._doc(),
            metadata=self.metadata,
        )

    def _doc(self) -> str:
        source = Path(self.net.path).name if self.net.path else "a Caffe net"
        return f"Converted by caffezoo from {source}"


# ------------------------------------------------------------ entry points


def to_onnx(
    model: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    *,
    weights: str | os.PathLike[str] | None = None,
    opset: int = DEFAULT_OPSET,
    input_shapes: dict[str, Sequence[int]] | None = None,
    outputs: Sequence[str] = (),
    fill_missing: bool = False,
    dynamic_batch: bool = True,
) -> onnx.ModelProto | Path:
    """Convert MODEL to ONNX: write it to ``output`` (returns the path), or return the ModelProto.

    ``model`` is a model directory, a bundled model name, or a ``.prototxt``
    file (then ``weights`` names the ``.caffemodel``). ``input_shapes``
    overrides the deploy net's input shapes, ``outputs`` adds blobs to the
    graph outputs, ``fill_missing`` gives layers the caffemodel lacks the
    values of their constant or bilinear fillers, as Caffe does.
    """
    converted = _convert(
        model, weights, input_shapes, fill_missing, opset=opset, outputs=outputs, dynamic_batch=dynamic_batch
    )
    if output is None:
        return converted.proto()
    return converted.save(output)


def export(
    model: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    *,
    weights: str | os.PathLike[str] | None = None,
    input_shapes: dict[str, Sequence[int]] | None = None,
    fill_missing: bool = False,
    **options: Any,
) -> Converted:
    """What ``caffezoo convert`` does: :func:`to_onnx` into a file (default ``./<model>.onnx``).

    >>> export("bvlc_alexnet").summary()["path"]                          # doctest: +SKIP
    'bvlc_alexnet.onnx'
    """
    converted = _convert(model, weights, input_shapes, fill_missing, **options)
    name = Path(os.fspath(model))
    default = f"{name.stem if name.suffix == '.prototxt' else name.name}.onnx"
    converted.path = converted.save(output or default)
    return converted


def _convert(
    model: str | os.PathLike[str],
    weights: str | os.PathLike[str] | None,
    input_shapes: dict[str, Sequence[int]] | None,
    fill_missing: bool,
    **options: Any,
) -> Converted:
    where = locate(model, weights)
    net = load(where.prototxt, where.weights, input_shapes=input_shapes, fill_missing=fill_missing)
    return convert_net(net, **options)


def locate(model: str | os.PathLike[str], weights: str | os.PathLike[str] | None = None) -> Located:
    """The deploy prototxt and weights of MODEL (a model directory, bundled name or prototxt file)."""
    from ..zoo import locate as find_net  # the one resolver of MODEL arguments

    return find_net(model, weights, need_weights=True)


def load(
    prototxt: str | os.PathLike[str],
    weights: str | os.PathLike[str] | None,
    *,
    input_shapes: dict[str, Sequence[int]] | None = None,
    fill_missing: bool = False,
) -> Net:
    """Load the net for conversion: every problem reported at once, before reading weights."""
    from ..caffe.net import attach_weights, load_net

    net = load_net(prototxt, input_shapes=input_shapes, strict=False)
    check_supported(net)
    broken = [f"{layer.where(net.path)}: {layer.problem}" for layer in net.layers if layer.problem]
    if broken:
        raise ConversionError("the net's shapes do not work out:\n" + "\n".join(broken))
    if weights is not None:
        attach_weights(net, weights)  # NetError naming every layer whose blobs do not fit, as Caffe would
    check_weights(net, fill_missing=fill_missing)
    return net


def check_supported(net: Net) -> None:
    """One error naming every unsupported layer type (with its layers) and parameter value."""
    lines = unsupported_layers(net)
    if lines:
        what = net.path or net.name or "the net"
        raise ConversionError(
            f"{what}: cannot convert to ONNX ({len(lines)} problem{'s' * (len(lines) > 1)}):\n"
            + "\n".join(lines)
        )


def unsupported_layers(net: Net) -> list[str]:
    """What ``caffezoo convert`` cannot do in ``net``, one line each (empty: it converts).

    >>> unsupported_layers(load_net("deploy.prototxt", strict=False))   # doctest: +SKIP
    ["layer type 'Python', used by layer 'proposal'"]
    """
    unsupported: dict[str, list[str]] = {}
    problems: list[str] = []
    for layer in net.layers:
        if layer.type in INPUT_TYPES or layer.type in SKIPPED:
            continue
        if layer.type not in EMITTERS:
            unsupported.setdefault(layer.type or "(no type)", []).append(layer.name)
            continue
        check = CHECKS.get(layer.type)
        why = check(layer) if check else None
        if why:
            problems.append(f"{layer.where(net.path)}: {why}")
    lines = [
        f"layer type {t!r}{_family(t)}, used by {_names(names)}" for t, names in sorted(unsupported.items())
    ]
    return lines + problems


# Layer types that cannot be expressed in ONNX, and the model families on the Caffe wiki that use them.
FAMILIES = {
    "MultiStageMeanfield": "CRF-RNN: mean-field iterations with permutohedral-lattice filtering",
    "Filter": "data-dependent output sizes, used while training",
    "BatchReindex": "training-time batch shuffling",
    "LSTMUnit": "a training-time building block of LSTM",
}


def _family(layer_type: str) -> str:
    family = FAMILIES.get(layer_type)
    return f" ({family})" if family else ""


def _names(names: list[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:8])
    more = f" and {len(names) - 8} more" if len(names) > 8 else ""
    return f"layer{'s' * (len(names) > 1)} {shown}{more}"


def check_weights(net: Net, *, fill_missing: bool) -> None:
    """Every layer must have its weights: from the caffemodel, or (if asked) its deterministic fillers."""
    missing: list[str] = []
    for layer in net.layers:
        expected = layer.param_shapes or []
        if not expected or layer.blobs or layer.type in SKIPPED:
            continue
        if not fill_missing:
            shapes = ", ".join("x".join(map(str, s)) or "scalar" for s in expected)
            missing.append(f"{layer.where(net.path)}: no weights ({len(expected)} blobs: {shapes})")
            continue
        fillers = layer_fillers(layer.type, layer.param)
        arrays = []
        for i, shape in enumerate(expected):
            filler = fillers[i] if i < len(fillers) else None
            try:
                value = fill(filler, shape) if filler is not None else None
            except ValueError as e:  # a filler that cannot fill this blob (Caffe aborts there too)
                missing.append(f"{layer.where(net.path)}: no weights for blob {i}, and {e}")
                break
            if value is None:
                kind = f"the random filler {filler.type!r}" if filler is not None else "no known filler"
                missing.append(
                    f"{layer.where(net.path)}: no weights for blob {i}, and {kind} cannot stand in for them"
                )
                break
            arrays.append(value)
        else:
            layer.blobs = arrays
    if missing:
        source = net.weights_path or "the caffemodel"
        hint = (
            ""
            if fill_missing
            else (
                "\n(Caffe would use the layers' fillers instead: pass --fill-missing "
                "to do the same where they are constant)"
            )
        )
        raise ConversionError(f"{source} lacks weights the net needs:\n" + "\n".join(missing) + hint)


# ------------------------------------------------------------ building


def convert_net(
    net: Net, *, opset: int = DEFAULT_OPSET, outputs: Sequence[str] = (), dynamic_batch: bool = True
) -> Converted:
    """Build the ONNX graph of a loaded, checked net (see :func:`load`)."""
    import onnx

    newest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= newest:
        raise ConversionError(
            f"opset {opset}: caffezoo writes opsets {MIN_OPSET} to {newest} (Softmax over one axis needs 13)"
        )
    reason = None
    if dynamic_batch:
        reason = _batch_mismatch(net)
        if reason is None:
            try:
                return _build(net, opset, outputs, dynamic=True)
            except StaticBatch as e:
                reason = str(e)
    converted = _build(net, opset, outputs, dynamic=False)
    converted.static_reason = reason if dynamic_batch else "a fixed batch size was asked for"
    converted.metadata["caffezoo.static_batch"] = converted.static_reason
    return converted


def _batch_mismatch(net: Net) -> str | None:
    """Why the inputs cannot share one symbolic batch axis, if they cannot."""
    firsts = {shape[0] for shape in net.inputs.values() if shape}
    if len(firsts) > 1:
        return f"the inputs have different batch sizes ({sorted(firsts)})"
    return None


def _build(net: Net, opset: int, wanted: Sequence[str], *, dynamic: bool) -> Converted:
    g = Graph(opset)
    last_writer: dict[str, int] = {}
    for i, layer in enumerate(net.layers):
        for top in layer.tops:
            last_writer[top] = i
    g.names.update(last_writer)  # blob names are reserved: helper tensors never take them
    tensors: dict[str, str] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    inputs = []
    rows = _data_dependent_rows(net)
    for i, layer in enumerate(net.layers):
        if layer.type in INPUT_TYPES:
            inputs.extend(_declare_inputs(net, layer, tensors, shapes, dynamic))
            continue
        if layer.type in SKIPPED:
            continue
        x = []
        for b in layer.bottoms:
            if b not in tensors:
                raise ConversionError(
                    f"{layer.where(net.path)}: its input {b!r} comes from a data layer's "
                    f"label or another blob a deployed net does not have"
                )
            x.append(tensors[b])
        y = [top if last_writer[top] == i else g.unique(f"{top}@{layer.name}") for top in layer.tops]
        ctx = Ctx(
            g,
            layer,
            x,
            [shapes[b] for b in layer.bottoms],
            y,
            list(layer.top_shapes),
            list(layer.blobs),
            dynamic,
            net.path,
            variable_rows=bool(rows.intersection(layer.bottoms)),
        )
        EMITTERS[layer.type](ctx)
        for top, name, shape in zip(layer.tops, y, layer.top_shapes):
            tensors[top] = name
            shapes[top] = shape
    names = list(dict.fromkeys([*_outputs(net, tensors), *wanted]))
    unknown = [b for b in names if b not in tensors]
    if unknown:
        raise ConversionError(
            f"no blob named {', '.join(map(repr, unknown))} in the net (blobs: {', '.join(sorted(tensors))})"
        )
    varying = _batch_varying(net, names) if dynamic else {}
    for b in rows.intersection(names):  # as many rows as proposals survive, whatever the batch
        varying[b] = tuple(sorted({0, *varying.get(b, ())}))
    outputs = [value_info(tensors[b], _output_dims(shapes.get(b), varying.get(b, ()))) for b in names]
    meta = {"caffezoo.converter": CONVERTER_VERSION, "caffezoo.dynamic_batch": str(dynamic).lower()}
    batch = next((shape[0] for shape in net.inputs.values() if shape), 1) or 1
    # Work per image: the runtime runs nets this small on one thread (waking workers costs more).
    meta["caffezoo.macs_per_image"] = str(sum(layer.macs or 0 for layer in net.layers) // batch)
    return Converted(g, inputs, outputs, net, dynamic, metadata=meta)


def _data_dependent_rows(net: Net) -> set[str]:
    """Blobs whose first axis counts what the data says (Faster R-CNN's proposals and all computed from
    them): their declared size is only an upper bound, so the graph leaves it open."""
    rows: set[str] = set()
    for layer in net.layers:
        if layer.type == "Python" or rows.intersection(layer.bottoms):
            rows.update(layer.tops)
    return rows


def _outputs(net: Net, tensors: dict[str, str]) -> list[str]:
    """Caffe's net outputs: blobs no later layer reads, where losses and metrics do not count as readers
    (they are dropped) but Silence does (it exists to hide blobs)."""
    unread: dict[str, bool] = {}
    for layer in net.layers:
        if layer.type not in SKIPPED or layer.type == "Silence":
            for b in layer.bottoms:
                unread[b] = False
        for t in layer.tops:
            if t in tensors:
                unread[t] = True
    return [b for b, free in unread.items() if free]


def _declare_inputs(net: Net, layer: Layer, tensors: dict, shapes: dict, dynamic: bool) -> Iterable:
    """Graph inputs for an Input (or data) layer's tops; a data layer's labels are dropped."""
    tops = layer.tops if layer.type == "Input" else layer.tops[:1]
    for top, shape in zip(tops, layer.top_shapes):
        if shape is None:
            raise ConversionError(
                f"{layer.where(net.path)}: the shape of {top!r} is unknown (it is read "
                f"from a database): give it with input_shapes={{{top!r}: [N, C, H, W]}}"
            )
        tensors[top], shapes[top] = top, shape
        dims: list[Any] = list(shape)
        if dynamic and dims:
            dims[0] = "batch"
        yield value_info(top, dims)


def _output_dims(shape: tuple[int, ...] | None, varying: Iterable[int]) -> list[Any] | None:
    """The declared shape, with the axes that follow the batch size left undeclared."""
    if shape is None:
        return None
    dims: list[Any] = list(shape)
    for axis in varying:
        dims[axis] = None
    return dims


def _batch_varying(net: Net, blobs: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """For each of ``blobs``, the axes that change with the batch size: shapes inferred again with
    one more item per input, on a copy of the layers. Most outputs follow the batch on their first
    axis; some never do (PriorBox's priors are the same for every image)."""
    import copy

    from ..caffe.shapes import infer_shapes

    bigger = {name: (shape[0] + 1, *shape[1:]) for name, shape in net.inputs.items() if shape}
    twin = copy.copy(net)
    twin.layers = [copy.copy(layer) for layer in net.layers]
    try:
        infer_shapes(twin, bigger)
    except CaffezooError:  # the shapes cannot be inferred again: every first axis may vary
        return {b: (0,) for b in blobs}
    before = {t: s for layer in net.layers for t, s in zip(layer.tops, layer.top_shapes)}
    after = {t: s for layer in twin.layers for t, s in zip(layer.tops, layer.top_shapes)}
    out = {}
    for b in blobs:
        x, y = before.get(b), after.get(b)
        if x is None or y is None or len(x) != len(y):
            out[b] = (0,) if x else ()
        else:
            out[b] = tuple(axis for axis, (m, n) in enumerate(zip(x, y)) if m != n)
    return out
