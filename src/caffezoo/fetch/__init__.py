"""Downloads that can be relied on: verified, resumable, atomic, cached, concurrency-safe.

This package knows nothing of Caffe: it fetches a blob named by its SHA-1
from URLs, mirrors or local files into a content-addressed cache, and
installs it where it is wanted.

>>> from caffezoo.fetch import fetch_blob, fetch_to                        # doctest: +SKIP
>>> fetch_to("w.caffemodel", ["https://host/w.caffemodel"], sha1="9116...").status  # doctest: +SKIP
'downloaded'

Modules: ``core`` (fetch_blob, fetch_to, install), ``cache`` (the blob
cache), ``partial`` (resumable partial files and their sidecar), ``records``
(what was verified), ``hashing``, ``urls`` (sources, Dropbox/Google Drive
links, mirrors), ``transfer`` (one download over several connections and
sources), ``segments`` (which bytes are written, which are being fetched),
``ordered_hash`` (the SHA-1 of a file written out of order), ``limits``
(rate limit, per-host cap), ``retry``, ``events``, ``http`` and ``local``
(one request for a range, over each transport).
"""

from .cache import BlobCache, BlobInfo, PruneReport, VerifyResult
from .core import Event, Fetched, Progress, fetch_blob, fetch_to, install
from .hashing import Digests, Expected, hash_file
from .urls import Source, mirror_url, normalize, origin, plan

__all__ = [
    "BlobCache",
    "BlobInfo",
    "Digests",
    "Event",
    "Expected",
    "Fetched",
    "Progress",
    "PruneReport",
    "Source",
    "VerifyResult",
    "fetch_blob",
    "fetch_to",
    "hash_file",
    "install",
    "mirror_url",
    "normalize",
    "origin",
    "plan",
]
