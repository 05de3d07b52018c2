"""The server's memory caches: one LRU bounded by bytes, shared by every kind of entry.

>>> cache = ByteCache(64 * 1024 * 1024)
>>> pages = cache.part("page")
>>> pages.put(("model", "abc", 7), "<html>...</html>")
'<html>...</html>'
>>> pages.get(("model", "abc", 7))
'<html>...</html>'

Entries are sized by what they hold (the length of a string or bytes, or the
size the caller gives), so ``--cache-bytes`` bounds the server's cached pages,
gist JSON, highlighted files and pictures together, however many or few there
are. An entry larger than an eighth of the budget is not kept at all: one huge
page must not evict everything else. Keys say what the value is a function of
(a gist's serial, the catalog's generation, the configured base URL), never
what a request merely claims (its ``Host``).
"""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from typing import Any

__all__ = ["ByteCache", "CachePart", "size_of"]

DEFAULT_BYTES = 64 * 1024 * 1024
ENTRY_OVERHEAD = 200  # the key, the dict slot, the object header: a rough, honest floor


def size_of(value: Any) -> int:
    """Bytes a cached value holds: exact for text and bytes, shallow-summed for tuples and lists,
    ``__cache_size__`` where a value says, else the object's own size."""
    if isinstance(value, (str, bytes, bytearray)):
        return sys.getsizeof(value)
    if isinstance(value, (tuple, list)):
        return sys.getsizeof(value) + sum(size_of(v) for v in value)
    own = getattr(value, "__cache_size__", None)
    if own is not None:
        return int(own() if callable(own) else own)
    return sys.getsizeof(value)


class ByteCache:
    """A thread-safe LRU holding at most ``max_bytes`` (as :func:`size_of` counts them)."""

    def __init__(self, max_bytes: int = DEFAULT_BYTES):
        self.max_bytes = max(0, int(max_bytes))
        self.bytes = 0
        self._data: OrderedDict[Any, tuple[Any, int]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._data)

    def keys(self) -> list:
        with self._lock:
            return list(self._data)

    def get(self, key: Any) -> Any:
        with self._lock:
            found = self._data.get(key)
            if found is None:
                return None
            self._data.move_to_end(key)
            return found[0]

    def put(self, key: Any, value: Any, size: int | None = None) -> Any:
        """Keep ``value`` under ``key`` (evicting the least recently used); return ``value``."""
        size = (size_of(value) if size is None else size) + ENTRY_OVERHEAD
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None:
                self.bytes -= old[1]
            if size > self.max_bytes // 8:
                return value  # too big to keep: answered, not remembered
            self._data[key] = (value, size)
            self.bytes += size
            while self.bytes > self.max_bytes and self._data:
                _, (_, dropped) = self._data.popitem(last=False)
                self.bytes -= dropped
        return value

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self.bytes = 0

    def part(self, name: str) -> CachePart:
        """A view whose keys live in their own namespace, within the same byte budget."""
        return CachePart(self, name)


class CachePart:
    """One kind of entry in a :class:`ByteCache` (``get``/``put`` as the cache's own)."""

    def __init__(self, cache: ByteCache, name: str):
        self.cache, self.name = cache, name

    def get(self, key: Any) -> Any:
        return self.cache.get((self.name, key))

    def put(self, key: Any, value: Any, size: int | None = None) -> Any:
        return self.cache.put((self.name, key), value, size)

    def keys(self) -> list:
        return [k[1] for k in self.cache.keys() if k[0] == self.name]

    def __len__(self) -> int:
        return len(self.keys())
