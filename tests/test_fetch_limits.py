"""Politeness: the shared rate limit, on a clock the test controls, and the per-host cap."""

from __future__ import annotations

import pytest

from caffezoo.errors import UsageError
from caffezoo.fetch.limits import HostSlots, RateLimit, parse_rate


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("10M", 10 << 20),
        ("500k", 500 << 10),
        ("1.5G", 3 << 29),
        ("2000", 2000),
        ("10MiB/s", 10 << 20),
        (64, 64),
    ],
)
def test_rates_read_like_curls(text, rate):
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["", "fast", "10X", "-5M", "0", "1e6"])
def test_a_bad_rate_says_what_is_expected(text):
    with pytest.raises(UsageError, match="--limit-rate: expected"):
        parse_rate(text)


class Clock:
    def __init__(self):
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_the_rate_is_kept_over_all_connections_after_a_short_burst():
    clock = Clock()
    limit = RateLimit(1000, burst=0.1, clock=clock, sleep=clock.sleep)
    limit.take(100)  # the burst: no wait
    assert clock.slept == []
    for _ in range(10):  # two connections' reads, interleaved: one budget between them
        limit.take(500)
    assert clock.now - 100.0 == pytest.approx(5.0, abs=0.11)  # 5100 bytes at 1000/s, less the burst
    clock.now += 60  # idle for a minute: no credit piles up beyond the burst
    limit.take(1000)
    assert clock.slept[-1] == pytest.approx(0.9)


def test_host_slots_are_counted_across_downloads():
    slots = HostSlots()
    assert [slots.acquire("a:443", cap=2) for _ in range(3)] == [True, True, False]
    assert slots.acquire("b:443", cap=2)
    slots.release("a:443")
    assert slots.acquire("a:443", cap=2)
