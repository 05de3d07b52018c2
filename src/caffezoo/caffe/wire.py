"""The protobuf wire format, read and written by hand.

Why not protobuf's own parser for ``.caffemodel`` files: it builds every
weight as a Python-visible float (or refuses messages over 64 MB, depending on
the backend), which costs several times the file's size in memory. This
module walks the bytes of a memory-mapped file instead; the weights stay where
they are and numpy views them.

Only what the Caffe reader needs: field iteration with bounds checks, varints,
skipping of every wire type (groups included, without recursion), and the
encoders the writer uses. Every malformed input raises :class:`WireError`
with the byte offset; nothing here can loop forever or recurse.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

__all__ = [
    "BYTES",
    "END_GROUP",
    "FIXED32",
    "FIXED64",
    "Field",
    "START_GROUP",
    "VARINT",
    "WireError",
    "encode_varint",
    "iter_fields",
    "length_delimited",
    "next_field",
    "read_varint",
    "signed64",
    "strip",
    "tag",
]


VARINT, FIXED64, BYTES, START_GROUP, END_GROUP, FIXED32 = 0, 1, 2, 3, 4, 5


class WireError(Exception):
    """Malformed protobuf bytes at ``offset``."""

    def __init__(self, offset: int, message: str):
        self.offset = offset
        super().__init__(message)


class Field(NamedTuple):
    """One field record: for VARINT ``value`` is the number; else ``start:end`` is the payload."""

    number: int
    wire_type: int
    value: int
    start: int
    end: int
    record_start: int  # where the tag begins, to copy or drop the whole record


def read_varint(buf, pos: int, end: int) -> tuple[int, int]:
    """Decode the varint at ``pos``; return (value, position after it)."""
    result = shift = 0
    start = pos
    while True:
        if pos >= end:
            raise WireError(start, "truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise WireError(start, "varint longer than 10 bytes")


def signed64(value: int) -> int:
    """Reinterpret a decoded varint as int64 (negative int32/int64 are 10-byte varints)."""
    return value - (1 << 64) if value >= 1 << 63 else value


def iter_fields(buf, start: int, end: int) -> Iterator[Field]:
    """Every field record of the message in ``buf[start:end]``, in order."""
    pos = start
    while pos < end:
        f = next_field(buf, pos, end)
        yield f
        pos = f.end


def next_field(buf, pos: int, end: int) -> Field:
    """The field record starting at ``pos`` (its ``end`` is where the next one starts)."""
    record = pos
    key, pos = read_varint(buf, pos, end)
    number, wire_type = key >> 3, key & 7
    if number == 0:
        raise WireError(record, "field number 0")
    if wire_type == VARINT:
        value, pos = read_varint(buf, pos, end)
        return Field(number, wire_type, value, pos, pos, record)
    if wire_type == BYTES:
        length, pos = read_varint(buf, pos, end)
        payload = pos
        pos += length
    elif wire_type == FIXED32:
        payload, pos = pos, pos + 4
    elif wire_type == FIXED64:
        payload, pos = pos, pos + 8
    elif wire_type == START_GROUP:
        payload = pos
        pos = _skip_group(buf, pos, end, number)
    else:
        raise WireError(record, f"invalid wire type {wire_type} for field {number}")
    if pos > end:
        raise WireError(
            record, f"field {number} needs {pos - payload} bytes but only {end - payload} remain (truncated?)"
        )
    return Field(number, wire_type, 0, payload, pos, record)


def _skip_group(buf, pos: int, end: int, number: int) -> int:
    """Position after the END_GROUP matching a START_GROUP of ``number`` (iterative)."""
    open_groups = [number]
    while open_groups:
        if pos >= end:
            raise WireError(pos, f"group {number} is never closed (truncated?)")
        record = pos
        key, pos = read_varint(buf, pos, end)
        n, wt = key >> 3, key & 7
        if wt == VARINT:
            _, pos = read_varint(buf, pos, end)
        elif wt == BYTES:
            length, pos = read_varint(buf, pos, end)
            pos += length
        elif wt == FIXED32:
            pos += 4
        elif wt == FIXED64:
            pos += 8
        elif wt == START_GROUP:
            open_groups.append(n)
        elif wt == END_GROUP:
            if n != open_groups.pop():
                raise WireError(record, f"group end {n} does not match its start")
        else:
            raise WireError(record, f"invalid wire type {wt}")
    if pos > end:
        raise WireError(end, "group runs past the end of its message")
    return pos


def strip(
    buf, start: int, end: int, drop: frozenset[int], nested: dict[int, frozenset[int]] | None = None
) -> bytes:
    """The message ``buf[start:end]`` without the fields numbered in ``drop``.

    ``nested`` maps a field number to the fields to drop inside that
    sub-message (whose length prefix is re-encoded). Used to take the small
    part of a layer (name, type, parameters) apart from its weights.
    """
    out = bytearray()
    for f in iter_fields(buf, start, end):
        if f.number in drop:
            continue
        if nested and f.number in nested and f.wire_type == BYTES:
            inner = strip(buf, f.start, f.end, nested[f.number])
            out += tag(f.number, BYTES) + encode_varint(len(inner)) + inner
        else:
            out += buf[f.record_start : f.end]
    return bytes(out)


# ------------------------------------------------------------------ writing


def encode_varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def tag(number: int, wire_type: int) -> bytes:
    return encode_varint(number << 3 | wire_type)


def length_delimited(number: int, payload: bytes) -> bytes:
    return tag(number, BYTES) + encode_varint(len(payload)) + payload
