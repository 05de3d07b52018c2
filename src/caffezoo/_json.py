"""The one way a result becomes JSON: :func:`jsonable`.

>>> from pathlib import Path
>>> jsonable({"path": Path("a/b"), "sizes": (1, 2)})
{'path': 'a/b', 'sizes': [1, 2]}

A result type that wants a shape of its own defines ``to_json()`` returning
plain data; other dataclasses and named tuples become a dict of their fields;
anything else (paths, exceptions, dates) becomes its text. The CLI's ``--json`` prints what this
returns, so a library caller gets the same data as ``caffezoo ... --json``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

__all__ = ["jsonable"]


def jsonable(value: Any) -> Any:
    """``value`` as str, int, float, bool, None, list and dict only (keys as str)."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    to_json = getattr(value, "to_json", None)
    if callable(to_json) and not isinstance(value, type):
        return jsonable(to_json())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple) and hasattr(value, "_asdict"):  # a NamedTuple
        return {k: jsonable(v) for k, v in value._asdict().items()}
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [jsonable(v) for v in value]
        return sorted(items, key=repr) if isinstance(value, (set, frozenset)) else items
    if hasattr(value, "tolist"):  # numpy arrays and scalars, without importing numpy
        return jsonable(value.tolist())
    return str(value)  # paths, exceptions, dates...: their text
