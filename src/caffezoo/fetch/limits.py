"""Politeness: a byte rate shared by connections, and a cap on connections to one host.

>>> parse_rate("10M"), parse_rate("500k"), parse_rate("1.5G"), parse_rate("2000")
(10485760, 512000, 1610612736, 2000)
>>> slots = HostSlots()
>>> slots.acquire("zoo.example:443", cap=1), slots.acquire("zoo.example:443", cap=1)
(True, False)

Suffixes are binary, as curl's ``--limit-rate`` and aria2's ``--max-download-limit``
read them: ``10M`` is 10 MiB a second.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from collections.abc import Callable

from ..errors import UsageError

__all__ = ["HOSTS", "HostSlots", "RateLimit", "parse_rate"]

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def parse_rate(text: str | int | float) -> int:
    """Bytes a second from ``10M``, ``500k``, ``1.5G`` or a plain number; UsageError otherwise."""
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgG]?)(?:i?B)?(?:/s)?\s*", text)
        if not m:
            raise UsageError(f"--limit-rate: expected bytes a second such as 10M, 500k or 2000, got {text!r}")
        value = float(m.group(1)) * _UNITS[m.group(2).lower()]
    if not 1 <= value < float("inf"):  # (also NaN, which compares false with anything)
        raise UsageError(f"--limit-rate: expected at least 1 byte a second, got {text!r}")
    return int(value)


class RateLimit:
    """At most ``rate`` bytes a second in all, whichever connections take them (thread-safe).

    >>> limit = RateLimit(1 << 20)
    >>> limit.take(1000)   # within the first burst: no wait
    """

    def __init__(
        self,
        rate: float,
        burst: float = 0.1,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.rate = float(rate)
        self._burst = burst  # seconds' worth of bytes that may come at once
        self._clock, self._sleep = clock, sleep
        self._due = clock()  # when the bytes taken so far are paid for
        self._lock = threading.Lock()

    def take(self, n: int) -> None:
        """Account for ``n`` bytes received; sleep as long as needed to stay within the rate.

        A connection that sleeps stops reading, and TCP slows the sender down to match.
        """
        with self._lock:
            now = self._clock()
            self._due = max(self._due, now) + n / self.rate
            wait = self._due - self._burst - now
        if wait > 0:
            self._sleep(wait)


class HostSlots:
    """Connections open to each host, in this process, whichever download opened them."""

    def __init__(self) -> None:
        self._open: Counter[str] = Counter()
        self._lock = threading.Lock()

    def acquire(self, host: str, cap: int) -> bool:
        """Take a slot for ``host`` unless ``cap`` are open already."""
        with self._lock:
            if self._open[host] >= cap:
                return False
            self._open[host] += 1
            return True

    def release(self, host: str) -> None:
        with self._lock:
            self._open[host] -= 1
            if self._open[host] <= 0:
                del self._open[host]


HOSTS = HostSlots()
