"""The bookkeeping of a download in pieces: runs written, holes, pieces handed out and split."""

from __future__ import annotations

import pytest

from caffezoo.fetch.segments import Plan, Runs

MiB = 1 << 20


def test_runs_merge_replace_and_leave_holes():
    r = Runs()
    r.add(0, 10, "a")
    r.add(10, 20, "a")  # joins
    r.add(30, 40, "b")
    r.add(15, 35, "c")  # written again by another source: replaces what it covers
    assert r.spans() == [(0, 15, "a"), (15, 35, "c"), (35, 40, "b")]
    assert (r.covered, r.prefix()) == (40, 40)
    assert r.holes(50) == [(40, 50)] and r.holes(None) == [(40, None)]
    r.remove(5, 20)
    assert r.holes(40) == [(5, 20)] and r.covered == 25 and r.prefix() == 5
    assert r.drop("c") == [(20, 35)]
    assert r.by_key() == {"a": 5, "b": 5} and r.of("b") == [(35, 40)]


def test_runs_round_trip_through_json():
    r = Runs()
    r.add(0, 100, "https://a/w")
    r.add(200, 300, "https://b/w")
    keys = ["https://a/w", "https://b/w"]
    back = Runs.from_json(r.to_json(keys), keys, limit=300)
    assert back.spans() == r.spans()


@pytest.mark.parametrize(
    "data",
    [
        "runs",  # not a list
        [[0, 10]],  # not a triple
        [[0, 10, 0.5]],  # not an int
        [[10, 5, 0]],  # backwards
        [[0, 10, 0], [5, 20, 0]],  # overlapping
        [[20, 30, 0], [0, 10, 0]],  # out of order
        [[0, 101, 0]],  # past the end of the file
        [[0, 10, 3]],  # no such source
        [[-5, 10, 0]],
        [[0, 10, True]],  # a bool is not an index
    ],
)
def test_runs_from_a_sidecar_are_checked_before_they_count(data):
    with pytest.raises(ValueError):
        Runs.from_json(data, ["https://a/w"], limit=100)


def test_pieces_are_handed_out_lowest_first_and_never_twice():
    plan = Plan(Runs(), 10 * MiB)
    a = plan.take(MiB, now=0)
    b = plan.take(MiB, now=0)
    assert (a.start, a.end, b.start, b.end) == (0, MiB, MiB, 2 * MiB)
    plan.runs.add(0, MiB // 2, "s")  # a's first half is written
    a.wrote(MiB // 2, now=1)
    assert plan.free() == [(2 * MiB, 10 * MiB)]
    plan.release(a)  # its connection failed: the rest of it is free again
    assert plan.free() == [(MiB // 2, MiB), (2 * MiB, 10 * MiB)]
    c = plan.take(4 * MiB, now=2)
    assert (c.start, c.end) == (MiB // 2, MiB)  # the lowest hole first, whatever its size
    d = plan.take(3 * MiB, now=2)
    assert (d.start, d.end) == (2 * MiB, 5 * MiB)
    e = plan.take(3 * MiB, now=2)
    assert (e.start, e.end) == (5 * MiB, 10 * MiB)  # less than two pieces left: all of it


def test_an_unknown_length_is_one_open_piece():
    plan = Plan(Runs())
    p = plan.take(MiB, now=0)
    assert (p.start, p.end) == (0, None) and plan.free() == []
    assert plan.steal(100, min_size=MiB, stall=5) is None  # nothing to split before the length is known


def test_the_slowest_piece_is_split_by_speed_so_both_end_together():
    plan = Plan(Runs(), 100 * MiB)
    slow = plan.take(100 * MiB, now=0)
    plan.runs.add(0, 2 * MiB, "s")
    slow.wrote(MiB, now=1)
    slow.wrote(MiB, now=2)  # 1 MiB/s
    thief = plan.steal(2, min_size=MiB, stall=5, speed=3 * MiB)  # three times as fast
    left = 98 * MiB
    assert slow.end == slow.pos + left // 4 and (thief.start, thief.end) == (slow.end, 100 * MiB)
    assert plan.free() == []


def test_a_silent_piece_is_taken_whole_a_fresh_one_is_not_judged():
    plan = Plan(Runs(), 10 * MiB)
    fresh = plan.take(10 * MiB, now=0)
    assert plan.steal(1, min_size=MiB, stall=5) is None  # no byte yet, but not silent for long
    fresh.wrote(MiB, now=1)
    taken = plan.steal(7, min_size=MiB, stall=5)  # nothing for 6 s
    assert (taken.start, taken.end) == (MiB, 10 * MiB) and fresh.left == 0


def test_pieces_too_small_to_share_are_left_alone():
    plan = Plan(Runs(), 3 * MiB)
    p = plan.take(3 * MiB, now=0)
    plan.runs.add(0, 2 * MiB, "s")
    p.wrote(MiB, now=1)
    p.wrote(MiB, now=2)
    assert plan.steal(2.5, min_size=MiB, stall=5) is None  # half of the 1 MiB left: not worth a request
    tail = plan.steal(2.5, min_size=MiB // 4, stall=5, speed=9 * MiB)  # a thief nine times as fast
    assert (tail.start, tail.end) == (2 * MiB + MiB // 10, 3 * MiB) and p.end == tail.start
