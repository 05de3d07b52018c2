"""What a download reports while it runs: :class:`Event`\\ s, for a progress display.

>>> Event("bytes", done=1 << 20, total=4 << 20, source="https://zoo.example/w").kind
'bytes'
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Event", "Progress"]


@dataclass(frozen=True)
class Event:
    """Something a progress display may show.

    ``kind`` is one of ``check`` (hashing a file already there), ``start`` (a
    source answered; ``total`` may be known), ``bytes`` (``done`` of ``total``),
    ``retry`` and ``fail`` (``message`` says why; a failed source is not asked
    again), ``wait`` (another process is downloading the same blob; ``done`` is
    its progress), ``warning`` (e.g. a source that sent wrong bytes, by name).
    """

    kind: str
    done: int = 0
    total: int | None = None
    source: str | None = None
    message: str = ""


Progress = Callable[[Event], None]
