"""Hashing and verified records."""

from __future__ import annotations

import hashlib
import os

import pytest

from caffezoo.errors import UsageError
from caffezoo.fetch import Digests, Expected, hash_file
from caffezoo.fetch.records import Records

DATA = os.urandom(3 * (1 << 20) + 123)


def test_hash_file_reads_in_buffers_and_reports_progress(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(DATA)
    seen = []
    d = hash_file(p, sha256=True, progress=seen.append)
    assert d == Digests(hashlib.sha1(DATA).hexdigest(), hashlib.sha256(DATA).hexdigest(), len(DATA))
    assert seen[-1] == len(DATA) and len(seen) == 4


def test_expected_values_are_checked_and_normalised():
    e = Expected("A" * 40, "B" * 64, 3)
    assert (e.sha1, e.sha256) == ("a" * 40, "b" * 64)
    assert e.mismatch(Digests("a" * 40, "b" * 64, 3)) is None
    assert e.mismatch(Digests("a" * 40, "c" * 64, 3)) == f"sha256: expected {'b' * 64}, got {'c' * 64}"
    with pytest.raises(UsageError, match="sha1: expected 40 hexadecimal digits"):
        Expected("xyz")
    with pytest.raises(UsageError, match="size"):
        Expected("a" * 40, size=-1)


def test_records_follow_identity_not_names(tmp_path):
    f = tmp_path / "w"
    f.write_bytes(b"weights")
    digest = hashlib.sha1(b"weights").hexdigest()
    r = Records(tmp_path / "rec")
    assert not r.is_verified(f, digest)
    r.add(digest, [f], size=7)
    assert r.is_verified(f, digest)
    link = tmp_path / "link"
    os.link(f, link)
    assert r.is_verified(link, digest)  # a hard link shares the inode, so the record
    assert not r.is_verified(f, digest, sha256="0" * 64)  # a sha256 never recorded is not vouched for
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    assert not r.is_verified(f, digest)  # touched: hash again
    r.add(digest, [f], size=7)
    replacement = tmp_path / "new"
    replacement.write_bytes(b"weights")
    os.utime(replacement, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns))
    os.replace(replacement, f)
    assert not r.is_verified(f, digest)  # same size and mtime, another inode
    (tmp_path / "rec" / f"{digest}.json").write_text("{not json")
    assert not r.is_verified(f, digest)  # a broken record only costs a re-hash
