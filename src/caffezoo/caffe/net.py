"""A Caffe net as Caffe itself builds it, with its weights: the API converters build on.

>>> net = load_net("deploy.prototxt", weights="bvlc_alexnet.caffemodel")   # doctest: +SKIP
>>> conv1 = net["conv1"]                                                   # doctest: +SKIP
>>> conv1.type, conv1.bottoms, conv1.tops, conv1.top_shapes               # doctest: +SKIP
('Convolution', ['data'], ['conv1'], [(10, 96, 55, 55)])
>>> conv1.type_param.num_output, [b.shape for b in conv1.blobs]           # doctest: +SKIP
(96, [(96, 3, 11, 11), (96,)])
>>> net.inputs, net.outputs                                               # doctest: +SKIP
({'data': (10, 3, 227, 227)}, ['prob'])

:func:`load_net` does what Caffe's ``Net::Init`` and ``CopyTrainedLayersFrom``
do, in the same order:

1. read the prototxt (or take a NetParameter) and upgrade it (:mod:`.upgrade`);
2. keep the layers whose ``include``/``exclude`` rules match the state
   (phase TEST by default, as for deployment; ``level``, ``stages``);
3. check the wiring: every bottom produced by an earlier layer; a top name
   reused only in place (``top[i] == bottom[i]``), else Caffe's "produced by
   multiple sources" error;
4. optionally insert Caffe's ``Split`` layers where a blob feeds several layers
   (``splits=True``; names as Caffe makes them, e.g. ``data_input_0_split_1``);
5. infer every blob's shape, each layer's parameter shapes, parameter count
   and multiply-accumulates (:mod:`.shapes`);
6. with ``weights``: give each layer the blobs of the *first* caffemodel layer
   of the same name, checking blob count and shape (legacy 4-D shapes match as
   Caffe matches them) and reshaping them to what the layer expects.

Each :class:`Layer` holds the full upgraded ``LayerParameter`` (``param``), its
typed parameter message (``type_param``, e.g. the ConvolutionParameter) and
its weights as numpy arrays viewing the caffemodel's bytes (dtype as stored:
float32, float64 or float16).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import NetError
from . import caffe_pb2
from .layertypes import param_field
from .upgrade import upgrade_net

if TYPE_CHECKING:
    import numpy as np

    from .caffemodel import Blob, Caffemodel
    from .prototxt import Prototxt

__all__ = [
    "Layer",
    "Net",
    "PHASES",
    "Shape",
    "WeightProblem",
    "assemble",
    "attach_weights",
    "check_wiring",
    "describe_shape",
    "insert_splits",
    "load_net",
    "match_weights",
    "shape_fits",
    "wiring_problems",
]


Shape = tuple[int, ...]
PHASES = {"TRAIN": caffe_pb2.TRAIN, "TEST": caffe_pb2.TEST}


@dataclass
class Layer:
    """One layer after upgrade and phase filtering."""

    name: str
    type: str
    bottoms: list[str]
    tops: list[str]
    param: caffe_pb2.LayerParameter
    line: int | None = None  # where the layer starts in its prototxt
    blobs: list[np.ndarray] = field(default_factory=list)  # weights, once loaded
    # Filled by shape inference (None where unknown):
    top_shapes: list[Shape | None] = field(default_factory=list)
    param_shapes: list[Shape] | None = None  # the blobs this layer expects
    params: int | None = None  # number of weights
    macs: int | None = None  # multiply-accumulates for the whole batch
    problem: str | None = None  # why shapes could not be inferred

    @property
    def type_param(self) -> Any:
        """The layer's own parameter message (``convolution_param`` for Convolution...), or None."""
        name = param_field(self.type)
        return getattr(self.param, name) if name else None

    @property
    def in_place(self) -> list[bool]:
        """For each top: is it computed in place (Caffe's rule: same name as the bottom at its index)?"""
        return [i < len(self.bottoms) and top == self.bottoms[i] for i, top in enumerate(self.tops)]

    def where(self, path: str | None) -> str:
        """``path:line: layer 'name'`` for messages."""
        at = f"{path}:{self.line}: " if path and self.line else f"{path}: " if path else ""
        return f"{at}layer {self.name!r} ({self.type})"


@dataclass
class WeightProblem:
    """A mismatch between a net and a caffemodel, as Caffe would meet it."""

    layer: str
    message: str
    fatal: bool  # would Caffe abort loading (blob count/shape), or just carry on?

    def __str__(self) -> str:
        return f"layer {self.layer!r}: {self.message}"


@dataclass
class Net:
    """A loaded net: layers in execution order, plus what the whole net needs."""

    name: str
    layers: list[Layer]
    phase: str = "TEST"
    path: str | None = None
    weights_path: str | None = None
    upgrade_steps: list[str] = field(default_factory=list)
    weight_problems: list[WeightProblem] = field(default_factory=list)
    source: caffe_pb2.NetParameter | None = None  # the upgraded, unfiltered net

    def __getitem__(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    def __iter__(self):
        return iter(self.layers)

    @property
    def inputs(self) -> dict[str, Shape | None]:
        """Blobs no layer of the net computes: the tops of Input and data layers."""
        return {
            top: shape
            for layer in self.layers
            if not layer.bottoms
            for top, shape in zip(layer.tops, layer.top_shapes or [None] * len(layer.tops))
        }

    @property
    def outputs(self) -> list[str]:
        """Blobs computed but never consumed afterwards (Caffe's net outputs)."""
        consumed_last: dict[str, bool] = {}
        order: list[str] = []
        for layer in self.layers:
            for b in layer.bottoms:
                consumed_last[b] = True
            for t in layer.tops:
                if t not in consumed_last:
                    order.append(t)
                consumed_last[t] = False
        return [b for b in order if not consumed_last[b]]

    @property
    def params(self) -> int | None:
        counts = [x.params for x in self.layers]
        return None if any(c is None for c in counts) else sum(counts)  # type: ignore[misc]

    @property
    def macs(self) -> int | None:
        counts = [x.macs for x in self.layers]
        return None if any(c is None for c in counts) else sum(counts)  # type: ignore[misc]

    def to_proto(self, with_weights: bool = False) -> caffe_pb2.NetParameter:
        """These layers as a V2 NetParameter (e.g. to write the filtered deploy net)."""
        from .caffemodel import blob_to_proto

        net = caffe_pb2.NetParameter(name=self.name)
        for layer in self.layers:
            msg = net.layer.add()
            msg.CopyFrom(layer.param)
            msg.ClearField("blobs")
            if with_weights:
                for array in layer.blobs:
                    msg.blobs.add().CopyFrom(blob_to_proto(array))
        return net


# ------------------------------------------------------------------ loading


def load_net(
    prototxt: str | os.PathLike[str] | caffe_pb2.NetParameter | Prototxt,
    weights: str | os.PathLike[str] | Caffemodel | None = None,
    *,
    phase: str = "TEST",
    level: int = 0,
    stages: Sequence[str] = (),
    input_shapes: dict[str, Sequence[int]] | None = None,
    skip_unknown: bool = False,
    splits: bool = False,
    strict: bool = True,
) -> Net:
    """Build the net at ``prototxt`` for ``phase``, with ``weights`` if given.

    ``prototxt`` is a path, a NetParameter, or a file already read with
    :func:`~caffezoo.caffe.prototxt.load_prototxt` (whose lines then name layers in errors).
    ``input_shapes`` overrides the shapes of input blobs (e.g. a batch of 1).
    With ``strict`` (the default), what would stop Caffe raises
    :class:`~caffezoo.errors.NetError`: shapes that cannot be computed,
    weights of the wrong count or shape. ``strict=False`` records problems on
    the layers (:attr:`Layer.problem`) and in :attr:`Net.weight_problems`
    instead, which is what ``caffezoo inspect`` wants.
    """
    from .prototxt import Prototxt, load_prototxt
    from .shapes import infer_shapes

    if phase not in PHASES:
        raise NetError(f"phase must be TRAIN or TEST, not {phase!r}")
    if isinstance(prototxt, caffe_pb2.NetParameter):
        path, message, lines = None, prototxt, {}
    else:
        parsed = (
            prototxt if isinstance(prototxt, Prototxt) else load_prototxt(prototxt, skip_unknown=skip_unknown)
        )
        path, message, lines = parsed.path, parsed.message, parsed.lines
    net = assemble(message, path, lines, phase=phase, level=level, stages=stages)
    check_wiring(net)
    if splits:
        net.layers = insert_splits(net.layers)
    infer_shapes(net, input_shapes)
    if strict:
        broken = [x for x in net.layers if x.problem]
        if broken:
            raise NetError(f"{broken[0].where(path)}: {broken[0].problem}")
    if weights is not None:
        attach_weights(net, weights, strict=strict)
    return net


def assemble(
    message: caffe_pb2.NetParameter,
    path: str | None = None,
    lines: dict[str, list[int]] | None = None,
    *,
    phase: str = "TEST",
    level: int = 0,
    stages: Sequence[str] = (),
) -> Net:
    """Upgrade ``message`` and keep the layers of ``phase``: steps 1-2 of :func:`load_net`, no checks."""
    result = upgrade_net(message, path or message.name or "net")
    layer_lines = _lines(message, lines or {}, result.origin)
    state = caffe_pb2.NetState(phase=PHASES[phase], level=level, stage=list(stages))
    layers = [
        Layer(p.name, p.type, list(p.bottom), list(p.top), p, line)
        for p, line in zip(result.net.layer, layer_lines)
        if _included(p, state, path, line)
    ]
    return Net(result.net.name, layers, phase, path, upgrade_steps=result.steps, source=result.net)


def _lines(message: caffe_pb2.NetParameter, lines: dict[str, list[int]], origin: list[int | None]) -> list:
    source = lines.get("layer" if message.layer else "layers", [])
    first_input = (lines.get("input") or [None])[0]
    return [first_input if i is None else (source[i] if i < len(source) else None) for i in origin]


def _included(
    layer: caffe_pb2.LayerParameter, state: caffe_pb2.NetState, path: str | None, line: int | None
) -> bool:
    """Caffe's FilterNet: include rules select, exclude rules reject; no rules, kept."""
    if layer.include and layer.exclude:
        where = f"{path}:{line}: " if path and line else ""
        raise NetError(f"{where}layer {layer.name!r}: give include rules or exclude rules, not both")
    if layer.include:
        return any(_meets(state, rule) for rule in layer.include)
    return not any(_meets(state, rule) for rule in layer.exclude)


def _meets(state: caffe_pb2.NetState, rule: caffe_pb2.NetStateRule) -> bool:
    if rule.HasField("phase") and rule.phase != state.phase:
        return False
    if rule.HasField("min_level") and state.level < rule.min_level:
        return False
    if rule.HasField("max_level") and state.level > rule.max_level:
        return False
    return all(s in state.stage for s in rule.stage) and not any(s in state.stage for s in rule.not_stage)


def check_wiring(net: Net) -> None:
    """Raise NetError where Caffe's Net::Init would abort on the wiring."""
    for layer, problem in wiring_problems(net.layers):
        raise NetError(f"{layer.where(net.path)}: {problem}")


def wiring_problems(layers: Iterable[Layer]) -> list[tuple[Layer, str]]:
    """Bottoms nobody produced, and tops produced twice other than in place."""
    produced: set[str] = set()
    problems = []
    for layer in layers:
        for j, bottom in enumerate(layer.bottoms):
            if bottom not in produced:
                problems.append(
                    (layer, f"bottom {bottom!r} (index {j}) is not produced by any earlier layer")
                )
        for i, (top, in_place) in enumerate(zip(layer.tops, layer.in_place)):
            if top in produced and not in_place:
                problems.append(
                    (
                        layer,
                        f"top {top!r} is already produced by an earlier layer "
                        f"(only in-place reuse, top[{i}] == bottom[{i}], is allowed)",
                    )
                )
            produced.add(top)
    return problems


def insert_splits(layers: list[Layer]) -> list[Layer]:
    """Caffe's InsertSplits: a ``Split`` layer after each top read by several layers.

    Names follow Caffe (``<blob>_<layer>_<index>_split`` and its tops
    ``..._split_<k>``), as they appear in caffemodels saved by Caffe.
    """
    last_writer: dict[str, tuple[int, int]] = {}
    source_of: dict[tuple[int, int], tuple[int, int]] = {}
    readers: dict[tuple[int, int], int] = {}
    loss_weight: dict[tuple[int, int], float] = {}
    for i, layer in enumerate(layers):
        for j, bottom in enumerate(layer.bottoms):
            top = last_writer[bottom]
            source_of[(i, j)] = top
            readers[top] = readers.get(top, 0) + 1
        for j, top in enumerate(layer.tops):
            last_writer[top] = (i, j)
        for j, weight in enumerate(list(layer.param.loss_weight)[: len(layer.tops)]):
            top = last_writer[layer.tops[j]]
            loss_weight[top] = weight
            if weight:
                readers[top] = readers.get(top, 0) + 1
    out: list[Layer] = []
    next_split: dict[tuple[int, int], int] = {}
    for i, layer in enumerate(layers):
        bottoms = list(layer.bottoms)
        for j, bottom in enumerate(bottoms):
            top = source_of[(i, j)]
            if readers.get(top, 0) > 1:
                k = next_split.get(top, 0)
                next_split[top] = k + 1
                bottoms[j] = _split_blob(layers[top[0]].name, bottom, top[1], k)
        param = caffe_pb2.LayerParameter()
        param.CopyFrom(layer.param)
        del param.bottom[:]
        param.bottom.extend(bottoms)
        copy = Layer(layer.name, layer.type, bottoms, list(layer.tops), param, layer.line)
        out.append(copy)
        for j, top in enumerate(layer.tops):
            count = readers.get((i, j), 0)
            if count > 1:
                weight = loss_weight.get((i, j), 0.0)
                name = f"{top}_{layer.name}_{j}_split"
                tops = [_split_blob(layer.name, top, j, k) for k in range(count)]
                split = caffe_pb2.LayerParameter(name=name, type="Split", bottom=[top], top=tops)
                if weight:
                    split.loss_weight.extend([weight] + [0.0] * (count - 1))
                    param.ClearField("loss_weight")
                    next_split[(i, j)] = next_split.get((i, j), 0) + 1
                out.append(Layer(name, "Split", [top], tops, split, layer.line))
    return out


def _split_blob(layer: str, blob: str, index: int, k: int) -> str:
    return f"{blob}_{layer}_{index}_split_{k}"


# ------------------------------------------------------------------ weights


def attach_weights(net: Net, weights: str | os.PathLike[str] | Caffemodel, *, strict: bool = True) -> None:
    """Give each layer its blobs from ``weights``, as Caffe's CopyTrainedLayersFrom does.

    Every mismatch is recorded in ``net.weight_problems``; with ``strict``,
    those Caffe would abort on raise NetError (all of them, one per line).
    """
    from .caffemodel import Caffemodel, read_caffemodel

    model = weights if isinstance(weights, Caffemodel) else read_caffemodel(weights)
    net.weights_path = str(model.path)
    net.weight_problems = problems = match_weights(net, model)
    fatal = [p for p in problems if p.fatal]
    if strict and fatal:
        raise NetError(f"{model.path} does not fit {net.path or net.name}:\n" + "\n".join(map(str, fatal)))


def match_weights(net: Net, model: Caffemodel) -> list[WeightProblem]:
    """Attach blobs by layer name; return every mismatch (see :class:`WeightProblem`)."""
    problems: list[WeightProblem] = []
    targets: dict[str, Layer] = {}
    for layer in net.layers:
        targets.setdefault(layer.name, layer)
    matched: set[str] = set()
    for source in model.layers:
        target = targets.get(source.name)
        if target is None:
            if source.blobs:
                problems.append(
                    WeightProblem(
                        source.name,
                        f"in the caffemodel ({len(source.blobs)} blobs, "
                        f"{source.type}) but not in the net: ignored",
                        False,
                    )
                )
            continue
        matched.add(target.name)
        problems.extend(_fit(target, source.blobs, source.type))
    for layer in net.layers:
        if layer.param_shapes and layer.name not in matched:
            problems.append(
                WeightProblem(
                    layer.name,
                    f"no weights in the caffemodel for this {layer.type} layer "
                    f"({len(layer.param_shapes)} blobs expected); Caffe would use the "
                    f"layer's fillers",
                    False,
                )
            )
    return problems


def _fit(layer: Layer, blobs: list[Blob], source_type: str) -> list[WeightProblem]:
    problems = []
    expected = layer.param_shapes
    if blobs and source_type and source_type != layer.type:
        problems.append(
            WeightProblem(
                layer.name, f"is a {source_type} layer in the caffemodel but a {layer.type} in the net", False
            )
        )
    if expected is not None and len(blobs) != len(expected):
        problems.append(
            WeightProblem(
                layer.name,
                f"the caffemodel has {len(blobs)} blobs, the net expects "
                f"{len(expected)} ({_shapes(expected)})",
                True,
            )
        )
        return problems
    arrays = []
    for i, blob in enumerate(blobs):
        if blob.data is None:
            problems.append(WeightProblem(layer.name, f"blob {i}: {blob.note}", True))
            continue
        want = expected[i] if expected is not None else None
        if want is not None and not shape_fits(blob, want):
            problems.append(
                WeightProblem(
                    layer.name,
                    f"blob {i} is {describe_shape(blob.shape)} in the caffemodel but "
                    f"the net expects {describe_shape(want)}",
                    True,
                )
            )
            continue
        arrays.append(blob.data.reshape(want) if want is not None else blob.data)
    if len(arrays) == len(blobs):
        layer.blobs = arrays
        if layer.params is None:
            layer.params = sum(a.size for a in arrays)
    return problems


def shape_fits(blob: Blob, shape: Shape) -> bool:
    """Caffe's Blob::ShapeEquals: legacy 4-D dims match the target right-aligned, padded with 1s."""
    if blob.legacy:
        if len(shape) > 4:
            return False
        padded = (1,) * (4 - len(shape)) + tuple(shape)
        return tuple(blob.shape) == padded
    return tuple(blob.shape) == tuple(shape)


def describe_shape(shape: Sequence[int] | None) -> str:
    """``10x3x227x227``; ``?`` when unknown; ``scalar`` for 0-D."""
    return "?" if shape is None else "x".join(map(str, shape)) or "scalar"


def _shapes(shapes: Sequence[Sequence[int]]) -> str:
    return ", ".join(describe_shape(s) for s in shapes)
