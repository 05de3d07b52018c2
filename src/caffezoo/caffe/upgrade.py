"""Bring any Caffe net up to today's format, by Caffe's own rules.

>>> result = upgrade_net(read_prototxt("VGG_ILSVRC_16_layers_deploy.prototxt"))  # doctest: +SKIP
>>> result.steps                                                                 # doctest: +SKIP
['V1 layers -> V2 layers (16 layers)', "input fields -> Input layer 'input'"]
>>> upgrade_file("old.caffemodel", "new.caffemodel")                             # doctest: +SKIP

The steps and their order are those of Caffe's ``UpgradeNetAsNeeded``
(``src/caffe/util/upgrade_proto.cpp``), which runs on every net Caffe reads:

1. V0 -> V1: "padding" layers fold into the conv/pool layer they feed; each
   nested V0 field moves into its V1 parameter message;
2. data-transformation fields (scale, mean_file, crop_size, mirror) of data
   layers move into ``transform_param``;
3. V1 -> V2: enum types become strings; ``blobs_lr``/``weight_decay``/``param``
   become ``param { lr_mult decay_mult name }``;
4. net ``input`` + ``input_dim``/``input_shape`` become an ``Input`` layer named
   "input" at the top (without shapes, as in old caffemodels, they are dropped);
5. BatchNorm layers declaring three ``param`` get ``lr_mult: 0 decay_mult: 0``.

What Caffe aborts on raises :class:`~caffezoo.errors.NetError`; what Caffe
logs as "not fully compatible" lands in :attr:`Upgrade.warnings`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf.message import Message

from ..errors import NetError, PrototxtError
from . import caffe_pb2
from . import wire as w
from ._files import atomic_open, looks_binary, open_error
from .layertypes import V0_TYPES, V1_ENUM, V1_TYPES
from .prototxt import is_repeated

__all__ = ["Upgrade", "needs_upgrade", "upgrade_file", "upgrade_net"]


_V1 = caffe_pb2.V1LayerParameter


@dataclass
class Upgrade:
    """The upgraded V2 net, what was done, and where each layer came from."""

    net: caffe_pb2.NetParameter
    steps: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # origin[i]: index of net.layer[i] in the input's layers (None for the
    # inserted Input layer); lets weights and line numbers follow their layer.
    origin: list[int | None] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.steps)


def needs_upgrade(net: caffe_pb2.NetParameter) -> bool:
    """Would :func:`upgrade_net` change anything?"""
    return (
        bool(net.layers)
        or bool(net.input)
        or bool(net.input_shape)
        or bool(net.input_dim)
        or any(layer.type == "BatchNorm" and len(layer.param) == 3 for layer in net.layer)
    )


def upgrade_net(source: caffe_pb2.NetParameter, name: str = "net") -> Upgrade:
    """A V2 copy of ``source`` (which is left as it was); ``name`` labels errors."""
    net = caffe_pb2.NetParameter()
    net.CopyFrom(source)
    result = Upgrade(net, origin=list(range(len(net.layer) or len(net.layers))))
    if any(layer.HasField("layer") for layer in net.layers):
        _v0_to_v1(result, name)
    if _needs_data_upgrade(net):
        _data_transformation(net)
        result.steps.append("data-layer transformation fields -> transform_param")
    if net.layers:
        _v1_to_v2(result, name)
    if net.input or net.input_shape or net.input_dim:
        _input_fields(result, name)
    fixed = _batch_norm(net)
    if fixed:
        result.steps.append(f"BatchNorm param lr_mult/decay_mult -> 0 ({fixed} layers)")
    return result


# --------------------------------------------------------------- V0 -> V1

# V0 field -> {V0 type: "param_message.field"}; "*" applies to every type.
_V0_FIELDS: dict[str, dict[str, str]] = {
    "num_output": {"conv": "convolution_param.num_output", "innerproduct": "inner_product_param.num_output"},
    "biasterm": {"conv": "convolution_param.bias_term", "innerproduct": "inner_product_param.bias_term"},
    "weight_filler": {
        "conv": "convolution_param.weight_filler",
        "innerproduct": "inner_product_param.weight_filler",
    },
    "bias_filler": {
        "conv": "convolution_param.bias_filler",
        "innerproduct": "inner_product_param.bias_filler",
    },
    "pad": {"conv": "convolution_param.pad", "pool": "pooling_param.pad"},
    "kernelsize": {"conv": "convolution_param.kernel_size", "pool": "pooling_param.kernel_size"},
    "group": {"conv": "convolution_param.group"},
    "stride": {"conv": "convolution_param.stride", "pool": "pooling_param.stride"},
    "pool": {"pool": "pooling_param.pool"},
    "dropout_ratio": {"dropout": "dropout_param.dropout_ratio"},
    "local_size": {"lrn": "lrn_param.local_size"},
    "alpha": {"lrn": "lrn_param.alpha"},
    "beta": {"lrn": "lrn_param.beta"},
    "k": {"lrn": "lrn_param.k"},
    "source": {
        "data": "data_param.source",
        "hdf5_data": "hdf5_data_param.source",
        "images": "image_data_param.source",
        "window_data": "window_data_param.source",
        "infogain_loss": "infogain_loss_param.source",
    },
    "scale": {"*": "transform_param.scale"},
    "meanfile": {"*": "transform_param.mean_file"},
    "batchsize": {
        "data": "data_param.batch_size",
        "hdf5_data": "hdf5_data_param.batch_size",
        "images": "image_data_param.batch_size",
        "window_data": "window_data_param.batch_size",
    },
    "cropsize": {"*": "transform_param.crop_size"},
    "mirror": {"*": "transform_param.mirror"},
    "rand_skip": {"data": "data_param.rand_skip", "images": "image_data_param.rand_skip"},
    "shuffle_images": {"images": "image_data_param.shuffle"},
    "new_height": {"images": "image_data_param.new_height"},
    "new_width": {"images": "image_data_param.new_width"},
    "concat_dim": {"concat": "concat_param.concat_dim"},
    "det_fg_threshold": {"window_data": "window_data_param.fg_threshold"},
    "det_bg_threshold": {"window_data": "window_data_param.bg_threshold"},
    "det_fg_fraction": {"window_data": "window_data_param.fg_fraction"},
    "det_context_pad": {"window_data": "window_data_param.context_pad"},
    "det_crop_mode": {"window_data": "window_data_param.crop_mode"},
    "hdf5_output_param": {"hdf5_output": "hdf5_output_param"},
}


def _assign(message: Message, path: str, value) -> None:
    """Set ``message.<path>`` to ``value``: append to repeated fields, copy messages."""
    *parents, leaf = path.split(".")
    for name in parents:
        message = getattr(message, name)
    fd = message.DESCRIPTOR.fields_by_name[leaf]
    if is_repeated(fd):
        getattr(message, leaf).append(value)
    elif fd.message_type is not None:
        getattr(message, leaf).CopyFrom(value)
    else:
        setattr(message, leaf, value)


def _v0_to_v1(result: Upgrade, name: str) -> None:
    net = result.net
    kept = _fold_padding(net, name)
    folded = len(kept) != len(net.layers)
    layers = [net.layers[i] for i in kept]
    upgraded = []
    for layer in layers:
        v1 = _V1()
        v1.bottom.extend(layer.bottom)
        v1.top.extend(layer.top)
        if layer.HasField("layer"):
            v0 = layer.layer
            kind = v0.type
            if v0.HasField("name"):
                v1.name = v0.name
            if v0.HasField("type"):
                if kind not in V0_TYPES:
                    raise NetError(
                        f"{name}: layer {v0.name!r}: unknown V0 layer type {kind!r} "
                        f"(known: {', '.join(sorted(V0_TYPES))})"
                    )
                v1.type = V1_ENUM[V0_TYPES[kind]]
            v1.blobs.extend(v0.blobs)  # the weights live in the nested message (field 50)
            v1.blobs_lr.extend(v0.blobs_lr)
            v1.weight_decay.extend(v0.weight_decay)
            for fd, value in v0.ListFields():
                if fd.name in ("name", "type", "blobs", "blobs_lr", "weight_decay"):
                    continue
                targets = _V0_FIELDS.get(fd.name, {})
                target = targets.get(kind) or targets.get("*")
                if target is None:
                    result.warnings.append(
                        f"layer {v0.name!r}: V0 field {fd.name!r} means nothing for type {kind!r}; dropped"
                    )
                    continue
                _assign(v1, target, value)
        upgraded.append(v1)
    del net.layers[:]
    net.layers.extend(upgraded)
    # Caffe's UpgradeV0Net keeps only these net-level fields.
    keep = caffe_pb2.NetParameter(name=net.name, force_backward=net.force_backward)
    if not net.HasField("force_backward"):
        keep.ClearField("force_backward")
    if not net.HasField("name"):
        keep.ClearField("name")
    keep.input.extend(net.input)
    keep.input_dim.extend(net.input_dim)
    keep.layers.extend(net.layers)
    net.CopyFrom(keep)
    result.origin = [result.origin[i] for i in kept]
    result.steps.append(
        f"V0 layers -> V1 layers ({len(kept)} layers{', padding layers folded' if folded else ''})"
    )


def _fold_padding(net: caffe_pb2.NetParameter, name: str) -> list[int]:
    """Fold V0 "padding" layers into their consumer (in place); the indices kept."""
    last_top = {blob: -1 for blob in net.input}
    kept = []
    for i, layer in enumerate(net.layers):
        v0 = layer.layer
        if v0.type != "padding":
            kept.append(i)
        for j, blob in enumerate(layer.bottom):
            if blob not in last_top:
                raise NetError(f"{name}: layer {v0.name!r}: unknown bottom blob {blob!r} (bottom {j})")
            source_index = last_top[blob]
            if source_index < 0:
                continue
            source = net.layers[source_index]
            if source.layer.type != "padding":
                continue
            if v0.type not in ("conv", "pool"):
                raise NetError(
                    f"{name}: padding layer {source.layer.name!r} feeds layer {v0.name!r} "
                    f"of type {v0.type!r}; only conv and pool layers can take padding"
                )
            if len(layer.bottom) != 1 or len(source.bottom) != 1 or len(source.top) != 1:
                raise NetError(
                    f"{name}: padding layer {source.layer.name!r} and its consumer "
                    f"{v0.name!r} must each have a single input and output"
                )
            layer.layer.pad = source.layer.pad
            layer.bottom[j] = source.bottom[0]
        for blob in layer.top:
            last_top[blob] = i
    return kept


# ------------------------------------------------ data transformation fields

_DATA_PARAMS = {
    V1_ENUM["Data"]: "data_param",
    V1_ENUM["ImageData"]: "image_data_param",
    V1_ENUM["WindowData"]: "window_data_param",
}
_TRANSFORM_FIELDS = ("scale", "mean_file", "crop_size", "mirror")


def _needs_data_upgrade(net: caffe_pb2.NetParameter) -> bool:
    return any(
        layer.type in _DATA_PARAMS
        and any(getattr(layer, _DATA_PARAMS[layer.type]).HasField(f) for f in _TRANSFORM_FIELDS)
        for layer in net.layers
    )


def _data_transformation(net: caffe_pb2.NetParameter) -> None:
    for layer in net.layers:
        if layer.type not in _DATA_PARAMS:
            continue
        param = getattr(layer, _DATA_PARAMS[layer.type])
        for f in _TRANSFORM_FIELDS:
            if param.HasField(f):
                setattr(layer.transform_param, f, getattr(param, f))
                param.ClearField(f)


# --------------------------------------------------------------- V1 -> V2


def _v1_to_v2(result: Upgrade, name: str) -> None:
    net = result.net
    if net.layer:
        raise NetError(
            f"{name}: has both `layer` (V2) and `layers` (V1) entries; Caffe refuses to "
            f'upgrade such a net: write every layer as `layer {{ type: "..." }}`'
        )
    upgraded = [_v1_layer(v1, name, result.warnings) for v1 in net.layers]
    del net.layers[:]
    net.layer.extend(upgraded)
    result.steps.append(f"V1 layers -> V2 layers ({len(upgraded)} layers)")


def _v1_layer(v1: caffe_pb2.V1LayerParameter, name: str, warnings: list[str]) -> caffe_pb2.LayerParameter:
    layer = caffe_pb2.LayerParameter()
    layer.bottom.extend(v1.bottom)
    layer.top.extend(v1.top)
    if v1.HasField("name"):
        layer.name = v1.name
    layer.include.extend(v1.include)
    layer.exclude.extend(v1.exclude)
    if v1.HasField("type"):
        if v1.type not in V1_TYPES:
            raise NetError(f"{name}: layer {v1.name!r}: unknown V1 layer type {v1.type}")
        layer.type = V1_TYPES[v1.type]
    layer.blobs.extend(v1.blobs)

    def spec(i: int) -> caffe_pb2.ParamSpec:
        while len(layer.param) <= i:
            layer.param.add()
        return layer.param[i]

    for i, param_name in enumerate(v1.param):
        spec(i).name = param_name
    for i, mode in enumerate(v1.blob_share_mode):
        spec(i).share_mode = mode  # STRICT and PERMISSIVE have the same numbers in both enums
    for i, lr in enumerate(v1.blobs_lr):
        spec(i).lr_mult = lr
    for i, decay in enumerate(v1.weight_decay):
        spec(i).decay_mult = decay
    layer.loss_weight.extend(v1.loss_weight)
    for fd, value in v1.ListFields():
        if fd.name.endswith("_param"):
            getattr(layer, fd.name).CopyFrom(value)  # same names in V2, other numbers
    if v1.HasField("layer"):
        warnings.append(f"layer {v1.name!r}: has a nested V0 layer besides V1 fields; the V0 part is ignored")
    return layer


# ---------------------------------------------------------- inputs, BatchNorm


def _input_fields(result: Upgrade, name: str) -> None:
    net = result.net
    inputs, shapes, dims = list(net.input), list(net.input_shape), list(net.input_dim)
    if shapes or dims:
        layer = caffe_pb2.LayerParameter(name="input", type="Input")
        for i, blob in enumerate(inputs):
            layer.top.append(blob)
            if shapes:
                if i >= len(shapes):
                    raise NetError(
                        f"{name}: input {blob!r} has no input_shape ({len(inputs)} inputs, "
                        f"{len(shapes)} shapes)"
                    )
                layer.input_param.shape.add().CopyFrom(shapes[i])
            else:
                four = dims[4 * i : 4 * i + 4]
                if len(four) != 4:
                    raise NetError(
                        f"{name}: input {blob!r} needs four input_dim values (N, C, H, W); "
                        f"{len(dims)} given for {len(inputs)} inputs"
                    )
                layer.input_param.shape.add().dim.extend(four)
        layers = [layer, *net.layer]
        del net.layer[:]
        net.layer.extend(layers)
        result.origin = [None, *result.origin]
        result.steps.append(f"input fields -> Input layer 'input' ({', '.join(inputs)})")
    else:
        result.steps.append("input fields without shapes dropped (as Caffe does for old caffemodels)")
    for f in ("input", "input_shape", "input_dim"):
        net.ClearField(f)


def _batch_norm(net: caffe_pb2.NetParameter) -> int:
    fixed = 0
    for layer in net.layer:
        if layer.type == "BatchNorm" and len(layer.param) == 3:
            for spec in layer.param:
                spec.lr_mult = 0
                spec.decay_mult = 0
            fixed += 1
    return fixed


# -------------------------------------------------------------------- files


def upgrade_file(
    source: str | os.PathLike[str], target: str | os.PathLike[str], *, skip_unknown: bool = False
) -> Upgrade:
    """Upgrade a prototxt or a ``.caffemodel`` (told apart by content) into ``target``.

    The equivalent of Caffe's ``upgrade_net_proto_text`` and
    ``upgrade_net_proto_binary`` (and ``upgrade_solver_proto_text`` for solver
    files). ``target`` is written atomically; weights are copied byte for byte.
    """
    from .prototxt import load_prototxt, upgrade_solver, write_prototxt

    src, dst = Path(source), Path(target)
    try:
        with open(src, "rb") as f:
            head = f.read(4096)
    except OSError as e:
        raise open_error(NetError, src, e, "a prototxt or .caffemodel file") from None
    if src.resolve() == dst.resolve():
        raise NetError(f"{dst}: the output must be another file than the input")
    if looks_binary(head):
        return _upgrade_binary(src, dst)
    try:
        parsed = load_prototxt(src, skip_unknown=skip_unknown)
    except PrototxtError as net_error:
        try:  # a solver file?
            solver = load_prototxt(src, caffe_pb2.SolverParameter, skip_unknown=skip_unknown).message
        except PrototxtError:
            raise net_error from None
        had_type = solver.HasField("solver_type")
        upgrade_solver(solver, str(src))
        write_prototxt(dst, solver)
        return Upgrade(caffe_pb2.NetParameter(), ["solver_type -> type"] if had_type else [])
    result = upgrade_net(parsed.message, str(src))
    write_prototxt(dst, result.net)
    return result


def _upgrade_binary(src: Path, dst: Path) -> Upgrade:
    from .caffemodel import iter_blob_records, read_caffemodel

    with read_caffemodel(src) as model:
        result = upgrade_net(model.net_header(), str(src))
        head = caffe_pb2.NetParameter()
        head.CopyFrom(result.net)
        head.ClearField("layer")
        with atomic_open(dst) as out:
            out.write(head.SerializeToString())
            for layer, origin in zip(result.net.layer, result.origin):
                blobs = list(iter_blob_records(model, model.layers[origin])) if origin is not None else []
                header = layer.SerializeToString()
                total = len(header) + sum(len(_blob_key(b)) + b.nbytes for b in blobs)
                out.write(w.tag(100, w.BYTES) + w.encode_varint(total) + header)
                for b in blobs:
                    out.write(_blob_key(b))
                    out.write(b)
    return result


def _blob_key(payload: memoryview) -> bytes:
    return w.tag(7, w.BYTES) + w.encode_varint(payload.nbytes)
