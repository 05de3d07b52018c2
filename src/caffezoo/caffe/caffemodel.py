"""Read and write ``.caffemodel`` files (binary NetParameter) of any size.

>>> model = read_caffemodel("bvlc_alexnet.caffemodel")       # doctest: +SKIP
>>> model.version, len(model.layers)                          # doctest: +SKIP
('V1', 25)
>>> fc6 = model["fc6"]                                        # doctest: +SKIP
>>> fc6.type, [b.shape for b in fc6.blobs]                    # doctest: +SKIP
('InnerProduct', [(1, 1, 4096, 9216), (1, 1, 1, 4096)])
>>> fc6.blobs[0].data.dtype, fc6.blobs[0].data.base is not None   # doctest: +SKIP
(dtype('float32'), True)

The file is memory-mapped and walked field by field (:mod:`.wire`), so there
is no 64 MB protobuf limit and no copy: every blob's ``data`` is a read-only
numpy array *viewing the file's bytes*. Keep the :class:`Caffemodel` (or the
arrays) alive while you use them; ``close()`` it, or use ``with``, when done.

From the binary only a layer's ``name``, ``type``, ``bottom``/``top`` and
``blobs`` are taken. Forks reuse parameter field numbers for other things
(SSD, PSPNet, OpenCV), so hyper-parameters come from the prototxt, by name
(:func:`caffezoo.caffe.net.load_net` joins the two). Every era is read:

- V2 ``layer`` (string types), V1 ``layers`` (enum types, turned into V2
  names), V0 (nested ``layer``, lower-case types);
- blob shapes as N-D ``shape`` or legacy ``num/channels/height/width``
  (:attr:`Blob.legacy`), weights as packed or unpacked ``float``, ``double``
  (``double_data``) or OpenCV's ``raw_data`` in fp16/fp32/fp64;
- unknown fields are skipped; a blob with gradients (``diff``) but no
  ``data`` is kept with ``data=None`` and a :attr:`Blob.note` saying so.

Anything malformed (truncated, garbage, a text file) raises
:class:`~caffezoo.errors.CaffemodelError` naming the file, byte offset and layer.

:func:`write_caffemodel` streams a net and its weights to disk; tests use it to
make models of any size.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from ..errors import CaffemodelError
from . import wire as w
from ._files import atomic_open, looks_binary, open_error
from .layertypes import V0_TYPES, V1_ENUM, V1_TYPES

if TYPE_CHECKING:
    import numpy as np

    from . import caffe_pb2

__all__ = [
    "Blob",
    "Caffemodel",
    "MAX_BLOB_AXES",
    "ModelLayer",
    "Weights",
    "blob_from_proto",
    "blob_to_proto",
    "iter_blob_records",
    "read_caffemodel",
    "to_v1",
    "write_caffemodel",
]


# NetParameter, LayerParameter (V2), V1LayerParameter and V0LayerParameter field numbers.
_NET_NAME, _NET_LAYERS_V1, _NET_LAYER = 1, 2, 100
_V2_NAME, _V2_TYPE, _V2_BOTTOM, _V2_TOP, _V2_BLOBS = 1, 2, 3, 4, 7
_V1_V0, _V1_BOTTOM, _V1_TOP, _V1_NAME, _V1_TYPE, _V1_BLOBS = 1, 2, 3, 4, 5, 6
_V0_NAME, _V0_TYPE, _V0_BLOBS = 1, 2, 50
# BlobProto
_B_NUM, _B_CHANNELS, _B_HEIGHT, _B_WIDTH = 1, 2, 3, 4
_B_DATA, _B_DIFF, _B_SHAPE, _B_DOUBLE, _B_DOUBLE_DIFF, _B_RAW_TYPE, _B_RAW = 5, 6, 7, 8, 9, 10, 12
_RAW_DTYPES = {0: "<f8", 1: "<f4", 2: "<f2", 3: "<i4", 4: "<u4"}

# Bigger than any net; guards against garbage that declares absurd shapes.
MAX_BLOB_AXES = 32


@dataclass
class Blob:
    """One parameter array of a layer, as stored."""

    shape: tuple[int, ...]
    data: np.ndarray | None  # shaped ``shape``; read-only view of the file (None: no data)
    legacy: bool = False  # the shape came from num/channels/height/width
    encoding: str = "float32"  # float32, float64 (double_data), or raw_data's type
    note: str | None = None  # why ``data`` is missing or odd

    @property
    def count(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass
class ModelLayer:
    """A layer of a ``.caffemodel``: what the binary can be trusted for."""

    name: str
    type: str  # V2 string, upgraded from V1 enums and V0 names
    bottoms: list[str]
    tops: list[str]
    blobs: list[Blob]
    version: str  # "V2", "V1" or "V0"
    index: int  # position in the file
    span: tuple[int, int]  # byte range of the layer message
    blob_spans: list[tuple[int, int]] = field(default_factory=list)  # BlobProto messages
    v1_type: int | None = None


class Caffemodel:
    """A memory-mapped ``.caffemodel``; layers in file order."""

    def __init__(self, path: Path, buf: Any, mm: mmap.mmap | None, size: int):
        self.path, self._buf, self._mm, self.size = path, buf, mm, size
        self.name = ""
        self.layers: list[ModelLayer] = []
        self.version = "V2"
        self.inputs: list[str] = []
        self._net_fields: list[tuple[int, int]] = []  # spans of non-layer NetParameter fields

    def __getitem__(self, name: str) -> ModelLayer:
        """The first layer called ``name`` (Caffe copies weights to the first match too)."""
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    def __contains__(self, name: object) -> bool:
        return any(layer.name == name for layer in self.layers)

    def __enter__(self) -> Caffemodel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Unmap the file. Arrays still viewing it keep the mapping alive until they go."""
        self.layers = []
        self._buf = None
        if self._mm is not None:
            try:
                self._mm.close()
            except BufferError:  # numpy views still export the buffer: they keep it open
                pass
            self._mm = None

    @property
    def params(self) -> int:
        """Number of weights stored (data only)."""
        return sum(b.count for layer in self.layers for b in layer.blobs if b.data is not None)

    def raw(self, start: int, end: int) -> memoryview:
        """The file's bytes ``start:end`` (no copy)."""
        return memoryview(self._buf)[start:end]

    def net_header(self) -> caffe_pb2.NetParameter:
        """The file as a NetParameter *without* weights: names, types and every parameter.

        Parameters come through protobuf, so a fork that reused a field number
        may show up wrong here; they are taken from binaries only to upgrade
        them (`caffezoo upgrade`), never to run a net.
        """
        from google.protobuf.message import DecodeError

        from . import caffe_pb2

        net = caffe_pb2.NetParameter()
        header = b"".join(bytes(self.raw(a, b)) for a, b in self._net_fields)
        try:
            net.MergeFromString(header)
        except DecodeError:
            net.name = self.name
        for layer in self.layers:
            a, b = layer.span
            if layer.version == "V2":
                msg = net.layer.add()
                drop, nested = frozenset({_V2_BLOBS}), None
            else:
                msg = net.layers.add()
                drop, nested = frozenset({_V1_BLOBS}), {_V1_V0: frozenset({_V0_BLOBS})}
            try:
                msg.MergeFromString(w.strip(self._buf, a, b, drop, nested))
            except (DecodeError, w.WireError):
                # A fork's parameters do not fit BVLC's schema: keep what the reader trusts.
                msg.Clear()
                msg.name = layer.name
                msg.bottom.extend(layer.bottoms)
                msg.top.extend(layer.tops)
                if layer.version == "V2":
                    msg.type = layer.type
                elif layer.v1_type is not None and layer.v1_type in V1_TYPES:
                    msg.type = layer.v1_type
        return net


def read_caffemodel(path: str | os.PathLike[str]) -> Caffemodel:
    """Map the ``.caffemodel`` at ``path`` and index its layers and blobs (no weights are copied)."""
    p = Path(path)
    try:
        f = open(p, "rb")
    except OSError as e:
        raise open_error(CaffemodelError, p, e, "a .caffemodel file") from None
    with f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise CaffemodelError(f"{p}: the file is empty (an interrupted download?)")
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    model = Caffemodel(p, mm, mm, size)
    try:
        _index(model)
    except CaffemodelError:
        model.close()
        raise
    return model


def _index(model: Caffemodel) -> None:
    buf, size, p = model._buf, model.size, model.path
    head = bytes(buf[:4096])
    if not looks_binary(head) and _looks_like_prototxt(head):
        raise CaffemodelError(
            f"{p}: is a text file (a prototxt?), not a binary .caffemodel; "
            f"pass it as the net definition, and the weights with --weights"
        )
    seen_v1 = seen_v2 = seen_v0 = False
    try:
        for f in w.iter_fields(buf, 0, size):
            if f.number == _NET_LAYER and f.wire_type == w.BYTES:
                seen_v2 = True
                model.layers.append(_read_layer(model, f, len(model.layers), "V2"))
            elif f.number == _NET_LAYERS_V1 and f.wire_type == w.BYTES:
                seen_v1 = True
                layer = _read_layer(model, f, len(model.layers), "V1")
                seen_v0 |= layer.version == "V0"
                model.layers.append(layer)
            else:
                model._net_fields.append((f.record_start, f.end))
                if f.number == _NET_NAME and f.wire_type == w.BYTES:
                    model.name = _text(buf, f, p, "net name")
                elif f.number == 3 and f.wire_type == w.BYTES:
                    model.inputs.append(_text(buf, f, p, "input"))
    except w.WireError as e:
        where = f" (after layer {model.layers[-1].name!r})" if model.layers else ""
        raise CaffemodelError(
            f"{p}: malformed at byte {e.offset}{where}: {e}; the file is damaged "
            f"or not a .caffemodel (check its size and SHA-1)"
        ) from None
    if not model.layers:
        raise CaffemodelError(
            f"{p}: no layers found: not a Caffe net (a .binaryproto mean file or another protobuf?)"
        )
    if seen_v1 and seen_v2:
        raise CaffemodelError(
            f"{p}: has both V1 `layers` and V2 `layer` entries; Caffe refuses such files too"
        )
    model.version = "V0" if seen_v0 else "V1" if seen_v1 else "V2"


def _looks_like_prototxt(head: bytes) -> bool:
    text = head.decode("utf-8", "replace")
    return any(k in text for k in ("layer", "name:", "input", "net:", "base_lr", "{"))


def _text(buf, f: w.Field, path: Path, what: str) -> str:
    try:
        return bytes(buf[f.start : f.end]).decode("utf-8")
    except UnicodeDecodeError:
        raise CaffemodelError(f"{path}: {what} at byte {f.start} is not UTF-8 text") from None


# Field number -> what it holds, in a V2 LayerParameter, a V1LayerParameter and a
# nested V0LayerParameter. Everything else in a layer is a parameter: skipped.
_ROLES = {
    "V2": {_V2_NAME: "name", _V2_TYPE: "type", _V2_BOTTOM: "bottom", _V2_TOP: "top", _V2_BLOBS: "blob"},
    "V1": {_V1_NAME: "name", _V1_BOTTOM: "bottom", _V1_TOP: "top", _V1_BLOBS: "blob", _V1_V0: "v0"},
    "V0": {_V0_NAME: "name", _V0_TYPE: "v0_type", _V0_BLOBS: "blob"},
}


def _read_layer(model: Caffemodel, record: w.Field, index: int, version: str) -> ModelLayer:
    layer = ModelLayer("", "", [], [], [], version, index, (record.start, record.end))
    blob_fields: list[w.Field] = []
    _read_fields(model, layer, record, version, blob_fields)
    _add_blobs(model, layer, blob_fields)
    return layer


def _read_fields(
    model: Caffemodel, layer: ModelLayer, record: w.Field, version: str, blob_fields: list[w.Field]
) -> None:
    buf, p, roles = model._buf, model.path, _ROLES[version]
    for f in w.iter_fields(buf, record.start, record.end):
        if version == "V1" and f.number == _V1_TYPE and f.wire_type == w.VARINT:
            layer.v1_type = f.value
            layer.type = V1_TYPES.get(f.value, f"V1_TYPE_{f.value}")
            continue
        role = roles.get(f.number)
        if role is None or f.wire_type != w.BYTES:
            continue  # a parameter, or a fork's field of another kind: not ours to read
        if role == "blob":
            blob_fields.append(f)
        elif role == "v0":
            layer.version = "V0"
            _read_fields(model, layer, f, "V0", blob_fields)
        elif role in ("bottom", "top"):
            getattr(layer, role + "s").append(_text(buf, f, p, f"a {role} name"))
        else:
            text = _text(buf, f, p, f"a layer {role.removeprefix('v0_')}")
            if role == "v0_type":
                layer.type = V0_TYPES.get(text, text)
            else:
                setattr(layer, role, text)


def _add_blobs(model: Caffemodel, layer: ModelLayer, fields: list[w.Field]) -> None:
    for i, f in enumerate(fields):
        try:
            layer.blobs.append(_blob(model._buf, f.start, f.end))
        except (w.WireError, ValueError) as e:
            raise CaffemodelError(
                f"{model.path}: layer {layer.name!r} (#{layer.index}), blob {i}: {e}"
            ) from None
        layer.blob_spans.append((f.start, f.end))


def _blob(buf, start: int, end: int) -> Blob:
    import numpy as np

    legacy = [None, None, None, None]
    dims: list[int] = []
    runs: dict[int, list[np.ndarray]] = {}
    raw_type = 1
    raw: tuple[int, int] | None = None
    pos = start
    while pos < end:
        f = w.next_field(buf, pos, end)
        pos = f.end
        n, wt = f.number, f.wire_type
        if n in (_B_NUM, _B_CHANNELS, _B_HEIGHT, _B_WIDTH) and wt == w.VARINT:
            legacy[n - 1] = w.signed64(f.value)
        elif n == _B_SHAPE and wt == w.BYTES:
            for g in w.iter_fields(buf, f.start, f.end):
                if g.number != 1:
                    continue
                if g.wire_type == w.VARINT:
                    dims.append(w.signed64(g.value))
                elif g.wire_type == w.BYTES:  # packed
                    q = g.start
                    while q < g.end:
                        v, q = w.read_varint(buf, q, g.end)
                        dims.append(w.signed64(v))
                if len(dims) > MAX_BLOB_AXES:
                    raise ValueError(f"shape has more than {MAX_BLOB_AXES} axes")
        elif n in (_B_DATA, _B_DIFF, _B_DOUBLE, _B_DOUBLE_DIFF):
            dtype = "<f8" if n in (_B_DOUBLE, _B_DOUBLE_DIFF) else "<f4"
            item = 8 if dtype == "<f8" else 4
            if wt == w.BYTES:
                if (f.end - f.start) % item:
                    raise ValueError(
                        f"packed field {n} has {f.end - f.start} bytes, not a multiple of {item}"
                    )
                runs.setdefault(n, []).append(np.frombuffer(buf, dtype, (f.end - f.start) // item, f.start))
            elif wt == (w.FIXED64 if item == 8 else w.FIXED32):
                values, pos = _unpacked_run(buf, f.record_start, end, n, wt, dtype, item)
                runs.setdefault(n, []).append(values)
        elif n == _B_RAW_TYPE and wt == w.VARINT:
            raw_type = f.value
        elif n == _B_RAW and wt == w.BYTES:
            raw = (f.start, f.end)

    legacy_given = any(v is not None for v in legacy)
    if legacy_given:  # Caffe: any legacy field present means a 4-D shape (absent ones are 0)
        shape = tuple(v or 0 for v in legacy)
    else:
        shape = tuple(dims)
    if any(d < 0 for d in shape):
        raise ValueError(f"negative dimension in shape {shape}")

    def joined(n: int) -> np.ndarray | None:
        chunks = runs.get(n)
        if not chunks:
            return None
        return chunks[0] if len(chunks) == 1 else np.concatenate(chunks)  # several chunks: one copy

    data, encoding, note = joined(_B_DOUBLE), "float64", None
    if data is None:
        data, encoding = joined(_B_DATA), "float32"
    if data is None and raw is not None:
        dtype = _RAW_DTYPES.get(raw_type)
        if dtype is None:
            raise ValueError(f"raw_data_type {raw_type} is not one of {sorted(_RAW_DTYPES)}")
        size = np.dtype(dtype).itemsize
        if (raw[1] - raw[0]) % size:
            raise ValueError(f"raw_data has {raw[1] - raw[0]} bytes, not a multiple of {size} ({dtype})")
        data = np.frombuffer(buf, dtype, (raw[1] - raw[0]) // size, raw[0])
        encoding = {"<f8": "float64", "<f4": "float32", "<f2": "float16", "<i4": "int32", "<u4": "uint32"}[
            dtype
        ]
    if data is None:
        if runs.get(_B_DIFF) or runs.get(_B_DOUBLE_DIFF):
            note = "holds only `diff` (gradients), no `data`: these weights were never saved"
            return Blob(shape, None, legacy_given, encoding, note)
        count = 1
        for d in shape:
            count *= d
        if count and shape:
            note = f"declares shape {shape} but holds no values"
            return Blob(shape, None, legacy_given, encoding, note)
        data = np.zeros(0, np.float32)
    if not shape and data.size > 1:
        # Caffe would refuse this (no dims means a 0-axis blob of one value); other
        # writers leave dims out of 1-D blobs, so read the values as a vector.
        shape = (data.size,)
    count = 1
    for d in shape:
        count *= d
    if count != data.size:
        raise ValueError(f"shape {shape} needs {count} values but {data.size} are stored")
    return Blob(shape, data.reshape(shape), legacy_given, encoding, note)


def blob_from_proto(proto: caffe_pb2.BlobProto) -> Blob:
    """Decode an in-memory BlobProto message the same way as a blob of a file."""
    data = proto.SerializeToString()
    try:
        return _blob(data, 0, len(data))
    except (w.WireError, ValueError) as e:
        raise CaffemodelError(f"blob: {e}") from None


def blob_to_proto(array) -> caffe_pb2.BlobProto:
    """A BlobProto holding ``array`` (float64 as double_data, anything else as float32)."""
    import numpy as np

    from . import caffe_pb2

    a = np.asarray(array)
    proto = caffe_pb2.BlobProto(shape=caffe_pb2.BlobShape(dim=a.shape))
    if a.dtype == np.float64:
        proto.double_data.extend(a.ravel().tolist())
    else:
        proto.data.extend(a.astype(np.float32).ravel().tolist())
    return proto


def _unpacked_run(buf, record: int, end: int, number: int, wire_type: int, dtype: str, item: int):
    """Decode consecutive unpacked records of one float field at once (numpy, not a Python loop)."""
    import numpy as np

    key = w.tag(number, wire_type)
    stride = len(key) + item
    count = (end - record) // stride
    raw = np.frombuffer(buf, np.uint8, count * stride, record).reshape(count, stride)
    same = np.all(raw[:, : len(key)] == np.frombuffer(key, np.uint8), axis=1)
    n = int(np.argmin(same)) if not same.all() else count
    values = raw[:n, len(key) :].copy().view(dtype).reshape(n)
    return values, record + n * stride


# ------------------------------------------------------------------ writing

Weights = (
    Mapping[str, Sequence["np.ndarray"]]
    | Callable[["caffe_pb2.LayerParameter"], "Sequence[np.ndarray] | None"]
)


def write_caffemodel(
    path: str | os.PathLike[str],
    net: caffe_pb2.NetParameter,
    weights: Weights | None = None,
    *,
    version: str = "V2",
    encoding: str = "float32",
    legacy_shape: bool = False,
    packed: bool = True,
) -> Path:
    """Write ``net`` with ``weights`` as a ``.caffemodel`` at ``path`` (atomically, streamed).

    >>> write_caffemodel("tiny.caffemodel", net, {"conv1": [w, b]})   # doctest: +SKIP

    ``net`` is a V2 NetParameter; each layer's blobs come from ``weights``
    (a mapping by layer name, or a function of the layer called once per
    layer, which lets a test stream a model bigger than memory would like),
    else from the layer's own ``blobs``. Options make the older variants
    Caffe and its forks wrote, so readers can be tested on them:
    ``version="V1"`` (enum types, ``layers``), ``legacy_shape=True``
    (num/channels/height/width), ``encoding`` ``"float64"`` (double_data) or
    ``"float16"`` (OpenCV's raw_data), ``packed=False`` (one record per value).
    """
    if version not in ("V1", "V2"):
        raise ValueError(f"version must be 'V1' or 'V2', not {version!r}")
    if encoding not in ("float32", "float64", "float16"):
        raise ValueError(f"encoding must be float32, float64 or float16, not {encoding!r}")
    p = Path(path)
    head, layers = _net_header(net, version, legacy_shape)
    with atomic_open(p) as out:
        out.write(head)
        for layer in layers:
            blobs = _weights_for(layer, weights)
            _write_layer(out, layer, blobs, version, encoding, legacy_shape, packed)
    return p


def _net_header(net: caffe_pb2.NetParameter, version: str, legacy: bool) -> tuple[bytes, list]:
    """The net's own fields, serialized, and the layers to write after them.

    V1 files had no Input layer: its tops and shapes go back to the net's
    ``input`` and ``input_dim`` (legacy) or ``input_shape`` fields.
    """
    head = type(net)()
    head.CopyFrom(net)
    head.ClearField("layer")
    head.ClearField("layers")
    layers = list(net.layer)
    if version == "V1":
        for layer in [x for x in layers if x.type == "Input"]:
            layers.remove(layer)
            shapes = list(layer.input_param.shape)
            for i, top in enumerate(layer.top):
                head.input.append(top)
                shape = shapes[i] if i < len(shapes) else shapes[0]
                if legacy:
                    head.input_dim.extend(shape.dim)
                else:
                    head.input_shape.add().CopyFrom(shape)
    return head.SerializeToString(), layers


def _weights_for(layer, weights: Weights | None) -> list:
    if callable(weights):
        got = weights(layer)
    elif weights is not None:
        got = weights.get(layer.name)
    else:
        got = None
    if got is not None:
        return list(got)
    return [blob_from_proto(b).data for b in layer.blobs]


def _write_layer(
    out: BinaryIO, layer, blobs: list, version: str, encoding: str, legacy: bool, packed: bool
) -> None:
    from . import caffe_pb2

    head = caffe_pb2.LayerParameter()
    head.CopyFrom(layer)
    head.ClearField("blobs")
    if version == "V1":
        head_bytes = to_v1(head).SerializeToString()
        layer_field, blob_field = _NET_LAYERS_V1, _V1_BLOBS
    else:
        head_bytes = head.SerializeToString()
        layer_field, blob_field = _NET_LAYER, _V2_BLOBS
    encoded = [_encode_blob(a, encoding, legacy, packed) for a in blobs]
    blob_records = [
        (w.tag(blob_field, w.BYTES) + w.encode_varint(len(h) + _nbytes(d)), h, d) for h, d in encoded
    ]
    total = len(head_bytes) + sum(len(t) + len(h) + _nbytes(d) for t, h, d in blob_records)
    out.write(w.tag(layer_field, w.BYTES) + w.encode_varint(total) + head_bytes)
    for t, h, d in blob_records:
        out.write(t)
        out.write(h)
        for chunk in d:
            out.write(chunk)


def _nbytes(chunks: Iterable) -> int:
    return sum(memoryview(c).nbytes for c in chunks)


def _encode_blob(array, encoding: str, legacy: bool, packed: bool) -> tuple[bytes, list]:
    """(BlobProto bytes before the values, the value chunks) for one array."""
    import numpy as np

    a = np.asarray(array)
    head = bytearray()
    if legacy:
        if a.ndim > 4:
            raise ValueError(f"legacy 4-D shapes cannot hold a {a.ndim}-D blob")
        dims = (1,) * (4 - a.ndim) + tuple(a.shape)
        for number, d in zip((_B_NUM, _B_CHANNELS, _B_HEIGHT, _B_WIDTH), dims):
            head += w.tag(number, w.VARINT) + w.encode_varint(d)
    else:
        dims_bytes = b"".join(w.encode_varint(d) for d in a.shape)
        shape = w.length_delimited(1, dims_bytes) if a.shape else b""
        head += w.length_delimited(_B_SHAPE, shape)
    if encoding == "float16":
        values = np.ascontiguousarray(a, dtype="<f2")
        head += w.tag(_B_RAW_TYPE, w.VARINT) + w.encode_varint(2)
        head += w.tag(_B_RAW, w.BYTES) + w.encode_varint(values.nbytes)
        return bytes(head), [memoryview(values).cast("B")]
    dtype, number, fixed = (
        ("<f8", _B_DOUBLE, w.FIXED64) if encoding == "float64" else ("<f4", _B_DATA, w.FIXED32)
    )
    values = np.ascontiguousarray(a, dtype=dtype).reshape(-1)
    if packed:
        if values.size:
            head += w.tag(number, w.BYTES) + w.encode_varint(values.nbytes)
        return bytes(head), [memoryview(values).cast("B")]
    key = np.frombuffer(w.tag(number, fixed), np.uint8)
    records = np.empty((values.size, len(key) + values.itemsize), np.uint8)
    records[:, : len(key)] = key
    records[:, len(key) :] = values.view(np.uint8).reshape(values.size, values.itemsize)
    return bytes(head), [memoryview(records).cast("B")]


def to_v1(layer: caffe_pb2.LayerParameter) -> caffe_pb2.V1LayerParameter:
    """The V1 (2014) form of a V2 layer: enum type, ``blobs_lr``/``weight_decay`` from ``param``.

    The inverse of the V1->V2 upgrade, for writing files the way old Caffe did.
    """
    from . import caffe_pb2

    if layer.type not in V1_ENUM:
        raise ValueError(f"layer {layer.name!r}: type {layer.type!r} did not exist in V1 files")
    v1 = caffe_pb2.V1LayerParameter(name=layer.name, type=V1_ENUM[layer.type])
    v1.bottom.extend(layer.bottom)
    v1.top.extend(layer.top)
    v1.include.extend(layer.include)
    v1.exclude.extend(layer.exclude)
    v1.loss_weight.extend(layer.loss_weight)
    for spec in layer.param:
        if spec.HasField("name"):
            v1.param.append(spec.name)
        if spec.HasField("lr_mult"):
            v1.blobs_lr.append(spec.lr_mult)
        if spec.HasField("decay_mult"):
            v1.weight_decay.append(spec.decay_mult)
    v1_fields = v1.DESCRIPTOR.fields_by_name
    for fd, value in layer.ListFields():
        if fd.name.endswith("_param") and fd.name in v1_fields:
            getattr(v1, fd.name).CopyFrom(value)
    v1.blobs.extend(layer.blobs)
    return v1


def iter_blob_records(model: Caffemodel, layer: ModelLayer) -> Iterator[memoryview]:
    """The raw BlobProto bytes of each of ``layer``'s blobs (views of the file)."""
    for a, b in layer.blob_spans:
        yield model.raw(a, b)
