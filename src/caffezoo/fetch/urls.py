"""Where bytes come from: URLs and local paths, normalised into :class:`Source`.

>>> normalize("https://www.dropbox.com/s/abc/net.caffemodel?dl=0").url
'https://www.dropbox.com/s/abc/net.caffemodel?dl=1'
>>> normalize("https://drive.google.com/file/d/1AbC_xyz/view?usp=sharing").url
'https://drive.google.com/uc?export=download&id=1AbC_xyz'
>>> mirror_url("https://zoo.example.org/", "9116a64c0fbe4459d18f4bb6b56d647b63920377")
'https://zoo.example.org/blobs/sha1/9116a64c0fbe4459d18f4bb6b56d647b63920377'

Dropbox share links serve a web page unless ``dl=1`` is set; Google Drive
share links (``/file/d/ID/view``, ``open?id=ID``, ``uc?id=ID``) become
``uc?export=download&id=ID``, whose "can't scan for viruses" page for large
files is answered by :mod:`caffezoo.fetch.http`'s confirm step.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = ["Source", "mirror_url", "normalize", "origin", "plan", "redact"]


_DRIVE_HOSTS = {"drive.google.com", "docs.google.com", "drive.usercontent.google.com"}
_DRIVE_ID = re.compile(r"/file/d/([0-9A-Za-z_-]+)")


@dataclass(frozen=True)
class Source:
    """One place to fetch a blob from.

    ``drive`` marks Google Drive links, whose answer may be a confirm page
    instead of the file. ``role`` says where the URL came from (``mirror``,
    ``url``...) for messages.
    """

    url: str
    drive: bool = False
    role: str = "url"

    @property
    def is_local(self) -> bool:
        """A ``file://`` URL: readable without the network, even offline."""
        return self.url.startswith("file:")

    @property
    def host(self) -> str:
        """``host[:port]`` for messages, or ``local file`` for file:// URLs."""
        return "local file" if self.is_local else urlsplit(self.url).netloc.rpartition("@")[2]

    def __str__(self) -> str:
        return redact(self.url)


# scheme://user:password@ — matched as text, so that even a URL that does not parse is redacted.
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/?#]*@")


def redact(url: str) -> str:
    """The URL without any ``user:password@`` part, safe to print."""
    return _USERINFO.sub(r"\1***@", url)


def origin(url: str) -> str:
    """``scheme://host:port`` of ``url``, the unit credentials are scoped to.

    Raises ``ValueError`` for a URL whose host or port does not parse: such a URL
    has no origin, so no credentials may go to it.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or {"http": 80, "https": 443}.get(scheme)
    return f"{scheme}://{(parts.hostname or '').lower()}:{port}"


def _with_query(parts, **changes: str) -> str:
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in changes]
    query += list(changes.items())
    return urlunsplit(parts._replace(query=urlencode(query)))


def normalize(url_or_path: str | os.PathLike[str] | Source, role: str = "url") -> Source:
    """Turn a URL or a local path into a :class:`Source` that fetches the file itself."""
    if isinstance(url_or_path, Source):
        return url_or_path
    text = os.fspath(url_or_path).strip()
    if not re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", text):
        return Source(Path(text).expanduser().resolve().as_uri(), role=role)
    try:
        parts = urlsplit(text)
        host = (parts.hostname or "").lower()
    except ValueError:  # e.g. "http://[::1/x": refused when tried, as a failure of this source
        return Source(text, role=role)
    if host in ("dropbox.com", "www.dropbox.com"):
        return Source(_with_query(parts, dl="1"), role=role)
    if host in _DRIVE_HOSTS:
        found = _DRIVE_ID.search(parts.path)
        file_id = found.group(1) if found else dict(parse_qsl(parts.query)).get("id")
        if file_id and host != "drive.usercontent.google.com":
            text = f"https://drive.google.com/uc?export=download&id={file_id}"
        return Source(text, drive=True, role=role)
    return Source(text, role=role)


def mirror_url(base: str, sha1: str) -> str:
    """Where a mirror (a caffezoo server, or a copy of a blob cache) keeps a blob."""
    return f"{base.rstrip('/')}/blobs/sha1/{sha1}"


def plan(sha1: str, urls: Iterable[str | Source], mirrors: Sequence[str] = ()) -> list[Source]:
    """The sources to try, in order: each mirror base, then ``urls`` as given; no duplicates.

    Mirrors come first because the user chose them (a lab's zoo server, a
    shared cache); the sources the model's author named follow.
    """
    out: list[Source] = []
    seen: set[str] = set()
    candidates = [Source(mirror_url(b, sha1), role="mirror") for b in mirrors] + [normalize(u) for u in urls]
    for source in candidates:
        if source.url not in seen:
            seen.add(source.url)
            out.append(source)
    return out
