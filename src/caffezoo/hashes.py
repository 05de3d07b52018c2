"""Hexadecimal digests (SHA-1, SHA-256, revision versions): the one place they are recognized.

>>> is_sha1("9116A64C0FBE4459D18F4BB6B56D647B63920377"), is_sha1("9116", lowercase=True)
(True, False)
>>> normalize_hex(" 9116A64C0FBE4459D18F4BB6B56D647B63920377 ", 40)
'9116a64c0fbe4459d18f4bb6b56d647b63920377'
"""

from __future__ import annotations

import re

__all__ = ["SHA1_DIGITS", "SHA256_DIGITS", "digest", "is_hex", "is_sha1", "normalize_hex"]

SHA1_DIGITS = 40
SHA256_DIGITS = 64
_HEX = re.compile(r"[0-9a-fA-F]+")
_LOWER_HEX = re.compile(r"[0-9a-f]+")


def is_hex(value: object, digits: int | tuple[int, int], *, lowercase: bool = False) -> bool:
    """Whether ``value`` is a string of hex digits, ``digits`` long (or within ``(least, most)``)."""
    if not isinstance(value, str):
        return False
    least, most = digits if isinstance(digits, tuple) else (digits, digits)
    pattern = _LOWER_HEX if lowercase else _HEX
    return least <= len(value) <= most and pattern.fullmatch(value) is not None


def is_sha1(value: object, *, lowercase: bool = False) -> bool:
    """A SHA-1 as 40 hex digits (only lower-case ones with ``lowercase``: the stores' file names)."""
    return is_hex(value, SHA1_DIGITS, lowercase=lowercase)


def normalize_hex(value: object, digits: int) -> str | None:
    """``value`` stripped and lower-cased when it is ``digits`` hex digits, else None."""
    text = str(value).strip().lower()
    return text if is_hex(text, digits, lowercase=True) else None


def digest(value: object, name: str) -> str:
    """``value`` as a ``name`` digest ("sha1" or "sha256"): normalized, or ValueError saying what was expected.

    >>> digest("abc", "sha1")
    Traceback (most recent call last):
    ValueError: expected 40 hexadecimal digits (the output of `sha1sum`), found 'abc'
    """
    digits = {"sha1": SHA1_DIGITS, "sha256": SHA256_DIGITS}[name]
    text = normalize_hex(value, digits)
    if text is None:
        raise ValueError(f"expected {digits} hexadecimal digits (the output of `{name}sum`), found {value!r}")
    return text
