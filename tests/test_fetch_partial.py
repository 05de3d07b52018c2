"""Partial files and their sidecar: what a next run may resume from, and what it must not trust."""

from __future__ import annotations

import hashlib
import json
import os
import random

import pytest

from caffezoo.fetch.partial import Partial, owner

DATA = random.Random(3).randbytes(300_000)
SHA1 = hashlib.sha1(DATA).hexdigest()
URL = "https://zoo.example/w"
GONE = {**owner(), "pid": 0}  # a process that is no more


def killed(p: Partial, **changes) -> None:
    """Leave ``p`` as ``kill -9`` would: the bytes and the sidecar last saved; its owner gone."""
    os.close(p._fd)
    p._fd = -1
    p.hasher.close()
    meta = json.loads(p.meta_path.read_text())
    meta["owner"]["pid"] = 0  # no such process
    meta.update(changes)
    p.meta_path.write_text(json.dumps(meta))


def test_runs_and_validators_survive_and_are_hashed_again(tmp_path):
    p = Partial.claim(tmp_path, SHA1)
    p.total = len(DATA)
    p.validators[URL] = '"v1"'
    p.write_at(200_000, [DATA[200_000:]], URL)  # out of order
    p.write_at(0, [DATA[:100_000]], URL)
    p.save()
    killed(p)
    again = Partial.claim(tmp_path, SHA1)
    try:
        assert again.path != p.path and not p.path.exists()  # adopted under a name of its own
        assert again.runs.spans() == [(0, 100_000, URL), (200_000, 300_000, URL)]
        assert again.validators == {URL: '"v1"'} and again.total == len(DATA) and again.resumed
        again.write_at(100_000, [DATA[100_000:200_000]], "https://other.example/w")
        assert again.digests().sha1 == SHA1  # what the earlier run wrote was read back once
    finally:
        again.discard()


def test_bytes_written_after_the_last_save_do_not_count(tmp_path):
    p = Partial.claim(tmp_path, SHA1)
    p.write_at(0, [DATA[:1000]], URL)
    p.save()
    p.write_at(1000, [DATA[1000:2000]], URL)
    killed(p)
    again = Partial.claim(tmp_path, SHA1)
    try:
        assert again.runs.spans() == [(0, 1000, URL)]
    finally:
        again.discard()


@pytest.mark.parametrize(
    ("sidecar", "why"),
    [
        ("{not json", "does not parse"),
        (json.dumps({"owner": GONE, "total": 10, "sources": [URL], "runs": [[0, 10**9, 0]]}), "out of"),
        (json.dumps({"owner": GONE, "total": "many", "sources": [URL], "runs": []}), "total"),
        (json.dumps({"owner": GONE, "sources": [URL], "runs": [[5, 1, 0]]}), "out of order"),
        (json.dumps({"owner": GONE, "sources": "x", "runs": []}), "sources"),
        (json.dumps({"owner": GONE}), "without a record"),  # bytes, and no word of them
    ],
)
def test_a_sidecar_that_is_not_right_is_never_trusted(tmp_path, sidecar, why):
    part = tmp_path / f"{SHA1}.dead.part"
    part.write_bytes(DATA)
    part.with_suffix(".json").write_text(sidecar)
    p = Partial.claim(tmp_path, SHA1)
    try:
        assert why in p.distrusted
        assert p.size == 0 and p.path.stat().st_size == 0  # thrown away, not resumed
        p.write_at(0, [DATA], URL)
        assert p.digests().sha1 == SHA1
    finally:
        p.discard()


def test_a_partial_from_one_stream_resumes_from_its_size(tmp_path):
    part = tmp_path / f"{SHA1}.old.part"
    part.write_bytes(DATA[:1234])  # as one stream wrote it, before pieces were recorded
    meta = {"owner": GONE, "url": URL, "etag": '"e"', "total": len(DATA)}
    part.with_suffix(".json").write_text(json.dumps(meta))
    p = Partial.claim(tmp_path, SHA1)
    try:
        assert p.runs.spans() == [(0, 1234, URL)] and p.validators == {URL: '"e"'}
    finally:
        p.discard()


def test_an_appending_stream_keeps_what_it_wrote_after_the_last_save(tmp_path):
    p = Partial.claim(tmp_path, SHA1)
    p.append = URL
    p.write_at(0, [DATA[:1000]], URL)
    p.save()
    p.write_at(1000, [DATA[1000:5000]], URL)  # appended after the save, then killed
    killed(p)
    again = Partial.claim(tmp_path, SHA1)
    try:
        assert again.runs.spans() == [(0, 5000, URL)]
    finally:
        again.discard()


def test_appending_is_not_assumed_where_the_runs_have_holes(tmp_path):
    p = Partial.claim(tmp_path, SHA1)
    p.write_at(0, [DATA[:1000]], URL)
    p.write_at(3000, [DATA[3000:5000]], URL)
    p.append = URL  # a stale word: the file was not written by one stream from 0
    p.save()
    killed(p)
    again = Partial.claim(tmp_path, SHA1)
    try:
        assert again.runs.spans() == [(0, 1000, URL), (3000, 5000, URL)]
    finally:
        again.discard()
