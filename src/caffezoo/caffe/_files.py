"""File helpers shared by the Caffe readers and writers."""

from __future__ import annotations

from pathlib import Path


def open_error(kind: type[Exception], path: Path, error: OSError, expected: str) -> Exception:
    """A ``kind`` error saying why ``path`` could not be opened, in words."""
    if isinstance(error, IsADirectoryError):
        return kind(f"{path}: is a directory, expected {expected}")
    if isinstance(error, FileNotFoundError):
        return kind(f"{path}: no such file")
    return kind(f"{path}: cannot read: {error.strerror}")


_CONTROLS = bytes([*range(9), *range(14, 32)])  # control bytes but tab, newlines, form feed


def looks_binary(head: bytes) -> bool:
    """True for bytes no text editor wrote: NUL bytes or control characters."""
    if b"\0" in head:
        return True
    controls = len(head) - len(head.translate(None, _CONTROLS))  # counted in C, not byte by byte
    return controls > max(2, len(head) // 100)
