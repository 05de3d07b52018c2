"""Define Caffe nets in Python, in the spirit of pycaffe's NetSpec.

>>> n = NetBuilder("tiny")
>>> data = n.Input("data", shape=dict(dim=[1, 3, 32, 32]))
>>> x = n.Convolution("conv1", data, num_output=16, kernel_size=3, pad=1)
>>> x = n.ReLU("relu1", x, in_place=True)
>>> x = n.Pooling("pool1", x, pool="MAX", kernel_size=2, stride=2)
>>> n.to_proto().layer[1].convolution_param.num_output
16
>>> [layer.name for layer in n.to_proto().layer]
['data', 'conv1', 'relu1', 'pool1']

``n.<Type>(name, *bottoms, **params)`` adds a layer of that type (any type
string works, forks' too). Keyword arguments go, by name, to the
LayerParameter itself (``param``, ``include``, ``loss_weight``...) or else to
the layer type's own parameter message (``num_output`` goes to
``convolution_param`` for a Convolution); ``convolution_param=dict(...)`` also
works. Values follow the message: dicts for sub-messages, lists (or one value)
for repeated fields, names for enums (``pool="MAX"``, ``phase="TEST"``).

The call returns the layer's top (a :class:`Top`, which is a ``str``), or a
tuple for several. The top is named after the layer unless ``tops=[...]`` says
otherwise; ``in_place=True`` writes the result back into the bottom.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from google.protobuf.message import Message

from . import caffe_pb2
from .layertypes import param_field
from .prototxt import is_repeated, to_text

__all__ = ["NetBuilder", "Top", "fill"]


_LAYER_FIELDS = caffe_pb2.LayerParameter.DESCRIPTOR.fields_by_name


class Top(str):
    """A blob produced by a layer; usable wherever a blob name is."""


def fill(message: Message, values: Mapping[str, Any]) -> Message:
    """Set ``message``'s fields from plain Python values (see the module docstring)."""
    for key, value in values.items():
        fd = message.DESCRIPTOR.fields_by_name.get(key)
        if fd is None:
            raise TypeError(
                f"{message.DESCRIPTOR.name} has no field {key!r} "
                f"(fields: {', '.join(sorted(message.DESCRIPTOR.fields_by_name))})"
            )
        items = list(value) if isinstance(value, list | tuple) else [value]
        if not is_repeated(fd) and len(items) != 1:
            raise TypeError(f"{message.DESCRIPTOR.name}.{key} takes one value, not {len(items)}")
        for item in items:
            if fd.message_type is not None:
                target = getattr(message, key).add() if is_repeated(fd) else getattr(message, key)
                if isinstance(item, Message):
                    target.CopyFrom(item)
                else:
                    fill(target, item)
                continue
            if fd.enum_type is not None and isinstance(item, str):
                if item not in fd.enum_type.values_by_name:
                    raise TypeError(
                        f"{message.DESCRIPTOR.name}.{key}: {item!r} is not one of "
                        f"{', '.join(fd.enum_type.values_by_name)}"
                    )
                item = fd.enum_type.values_by_name[item].number
            if is_repeated(fd):
                getattr(message, key).append(item)
            else:
                setattr(message, key, item)
    return message


class NetBuilder:
    """A net under construction; layers are kept in the order they are added."""

    def __init__(self, name: str = ""):
        self.net = caffe_pb2.NetParameter(name=name)

    def layer(
        self,
        type: str,
        name: str,
        *bottoms: str | Sequence[str],
        tops: Sequence[str] | None = None,
        in_place: bool = False,
        **params: Any,
    ) -> Top | tuple[Top, ...]:
        """Add a layer; see the module docstring for ``params``."""
        flat = [b for item in bottoms for b in ([item] if isinstance(item, str) else item)]
        if in_place:
            tops = flat
        elif tops is None:
            tops = [name]
        layer = self.net.layer.add(name=name, type=type, bottom=flat, top=list(tops))
        own = param_field(type)
        layer_values, type_values = {}, {}
        for key, value in params.items():
            if key in _LAYER_FIELDS:
                layer_values[key] = value
            elif own is not None:
                type_values[key] = value
            else:
                raise TypeError(
                    f"layer {name!r}: {type} layers take no {key!r} (and have no *_param message)"
                )
        fill(layer, layer_values)
        if type_values:
            fill(getattr(layer, own), type_values)
        made = tuple(Top(t) for t in tops)
        return made[0] if len(made) == 1 else made

    def __getattr__(self, type: str) -> Callable[..., Any]:
        if not type[:1].isupper():
            raise AttributeError(type)
        return lambda name, *bottoms, **params: self.layer(type, name, *bottoms, **params)

    def to_proto(self) -> caffe_pb2.NetParameter:
        copy = caffe_pb2.NetParameter()
        copy.CopyFrom(self.net)
        return copy

    def to_text(self) -> str:
        return to_text(self.net)
