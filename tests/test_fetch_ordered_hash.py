"""The hasher that follows a file written out of order: right digests, bounded memory, one pass."""

from __future__ import annotations

import hashlib
import os
import random

import pytest

from caffezoo.fetch.ordered_hash import BLOCK, OrderedHasher

DATA = random.Random(1).randbytes(5 * BLOCK + 12345)


def written(tmp_path, data=DATA):
    path = tmp_path / "part"
    path.write_bytes(data)  # the connections have written every byte before handing it over
    return path


def pieces(size: int, data=DATA) -> list[tuple[int, bytes]]:
    return [(o, data[o : o + size]) for o in range(0, len(data), size)]


def test_pieces_in_any_order_hash_like_the_whole_file_each_byte_once(tmp_path):
    todo = pieces(300_000)
    random.Random(2).shuffle(todo)
    h = OrderedHasher(written(tmp_path), sha256=True)
    try:
        for offset, data in todo:
            h.add(offset, [data[:1000], data[1000:]])  # a batch of chunks, as a connection hands it
        got = h.result(len(DATA))
        assert got.sha1 == hashlib.sha1(DATA).hexdigest()
        assert got.sha256 == hashlib.sha256(DATA).hexdigest() and got.size == len(DATA)
        assert h.read_back == 0  # all of it fitted: nothing was read from the file
    finally:
        h.close()


def test_memory_stays_within_the_budget_and_the_rest_is_read_back(tmp_path):
    todo = pieces(BLOCK // 4)
    first, rest = todo[0], todo[1:]
    h = OrderedHasher(written(tmp_path), budget=2 * BLOCK)
    try:
        for offset, data in reversed(rest):  # everything lands before the prefix does
            h.add(offset, [data])
        assert h.hashed == 0
        h.add(*first[:1], [first[1]])
        assert h.result(len(DATA)).sha1 == hashlib.sha1(DATA).hexdigest()
        assert h.peak_buffered <= 2 * BLOCK
        assert 0 < h.read_back <= len(DATA)  # what did not fit came back from the file, once
    finally:
        h.close()


def test_a_connections_next_bytes_join_its_blocks(tmp_path):
    h = OrderedHasher(written(tmp_path), budget=2 * BLOCK)
    try:
        for offset, data in pieces(BLOCK // 8)[8:16]:  # one connection's piece, batch by batch
            h.add(offset, [data])
        assert h.peak_buffered == BLOCK and h.read_back == 0  # eight batches in one block
        for offset, data in pieces(BLOCK // 8)[:8]:
            h.add(offset, [data])
        h.add_written(2 * BLOCK, len(DATA) - 2 * BLOCK)
        assert h.result(len(DATA)).sha1 == hashlib.sha1(DATA).hexdigest()
    finally:
        h.close()


def test_bytes_already_in_the_file_are_read_back_in_their_turn(tmp_path):
    h = OrderedHasher(written(tmp_path))
    try:
        h.add_written(0, 1000)  # a resumed download: what an earlier run wrote
        h.add_written(3000, len(DATA) - 3000)
        h.add(1000, [DATA[1000:3000]])
        assert h.result(len(DATA)).sha1 == hashlib.sha1(DATA).hexdigest()
        assert h.read_back == len(DATA) - 2000
    finally:
        h.close()


def test_reset_starts_over(tmp_path):
    h = OrderedHasher(written(tmp_path))
    try:
        h.add(0, [b"not the file"])
        h.add(BLOCK, [DATA[BLOCK : 2 * BLOCK]])
        h.reset()
        h.add_written(0, len(DATA))
        assert h.result(len(DATA)).sha1 == hashlib.sha1(DATA).hexdigest()
    finally:
        h.close()


def test_a_hole_or_a_short_file_is_an_error_not_a_hang(tmp_path):
    h = OrderedHasher(written(tmp_path, b"abc"))
    try:
        h.add(0, [b"a"])
        h.add(2, [b"c"])
        with pytest.raises(RuntimeError, match="bytes from 1 were never written"):
            h.result(3)
        h.reset()
        h.add_written(0, 10)  # the file is shorter than that
        with pytest.raises(OSError, match="shorter than"):
            h.result(10)
    finally:
        h.close()
    os.unlink(tmp_path / "part")
