"""Where the server keeps weights: one small interface, a local directory or an S3 bucket.

    >>> store = open_store("/srv/caffezoo/blobs")              # or "s3://zoo-bucket/blobs"  # doctest: +SKIP
    >>> info = store.put(sha1, open("net.caffemodel", "rb"))   # ChecksumError if the bytes differ  # doctest: +SKIP
    >>> b"".join(store.get(sha1, 0, 100))                      # the first 100 bytes  # doctest: +SKIP
    >>> store.stat(sha1), [b.sha1 for b in store.list()]      # doctest: +SKIP
    >>> store.delete(sha1)                                     # doctest: +SKIP

Blobs are addressed by SHA-1 and laid out as ``<root>/sha1/<sha1>`` in both
backends, the layout :mod:`caffezoo.fetch` expects of a mirror. Writes go
through :meth:`BlobStore.writer`: bytes are hashed on their way in and the
blob becomes visible under its name only once the SHA-1 matches — a wrong or
half-written blob is never listed, stated or served:

- :class:`LocalStore` writes a partial file of the downloads engine's cache
  and renames it into place (today's behaviour of the server's blob directory);
- :class:`S3Store` buffers a small blob and PUTs it after the check; a large
  one goes up as a multipart upload whose parts are invisible until
  CompleteMultipartUpload, sent only after the check (and aborted otherwise).
  A process killed mid-upload leaves an incomplete multipart upload, which no
  reader sees and :meth:`S3Store.abort_stale_uploads` clears.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol
from urllib.parse import urlsplit

from .._http_status import header_number, range_start, range_total
from ..errors import CaffezooError, ChecksumError, UsageError

__all__ = ["BlobInfo", "BlobStore", "BlobStoreError", "BlobWriter", "LocalStore", "S3Store", "open_store"]

CHUNK = 1 << 20
# Reads from S3 stay under glibc's mmap threshold, which the server pins at 128 KiB
# (run._return_big_frees_to_the_os): each bigger buffer would be a fresh mapping, zeroed
# page by page on first touch. perf on a streamed blob GET: a third of the server's CPU in
# page faults with 2 MiB reads; 120 KiB buffers come from the heap, already mapped.
S3_READ = 120 << 10
# A plain_get's presigned URL is used at once, by this server only; the gateway checks its expiry
# against its own clock, so a short one fails on a replica whose clock lags (boto3's signed
# headers pass within S3's 15 minutes of skew): as long as that.
PLAIN_SECONDS = 900
PLAIN_TIMEOUT = 30.0  # seconds to connect to the store and for its answer's head
PRESENCE_TTL = 5.0  # seconds an S3 listing answers has() before it is taken again


class BlobStoreError(CaffezooError):
    """The blob store failed or refused (unreachable, no such bucket, access denied)."""


@dataclass(frozen=True)
class BlobInfo:
    sha1: str
    size: int
    modified: float | None = None  # seconds since the epoch


class BlobWriter(Protocol):
    """One blob on its way in: ``write`` chunks, then ``commit`` (checks the SHA-1) or ``abort``."""

    sha1: str
    size: int

    def write(self, chunk: bytes) -> None: ...
    def commit(self) -> BlobInfo: ...
    def abort(self) -> None: ...


def _mismatch(sha1: str, got: str, size: int) -> ChecksumError:
    return ChecksumError(f"the uploaded bytes ({size} bytes) have sha1 {got}, not {sha1}: nothing was stored")


class BlobStore:
    """The interface; see the module doc. ``url`` says where the blobs are, for messages."""

    url: str

    def writer(self, sha1: str) -> BlobWriter:
        raise NotImplementedError

    def put(self, sha1: str, data: BinaryIO | Iterable[bytes]) -> BlobInfo:
        """Store ``data`` (a binary file or an iterable of chunks) as blob ``sha1``, verified."""
        chunks = iter(lambda: data.read(CHUNK), b"") if hasattr(data, "read") else data
        w = self.writer(sha1)
        try:
            for chunk in chunks:
                w.write(chunk)
            return w.commit()
        except BaseException:
            w.abort()
            raise

    def get(self, sha1: str, start: int = 0, stop: int | None = None) -> Iterator[bytes]:
        """The bytes ``[start, stop)`` of blob ``sha1``, in chunks; :class:`KeyError` if absent."""
        raise NotImplementedError

    def stat(self, sha1: str) -> BlobInfo | None:
        raise NotImplementedError

    def stream(self, sha1: str) -> tuple[BlobInfo, Iterator[bytes]]:
        """The whole blob, in chunks, with its info; :class:`KeyError` if absent.
        (S3: one GET, whose answer gives the size; no HEAD before it.)"""
        info = self.stat(sha1)
        if info is None:
            raise KeyError(sha1)
        return info, self.get(sha1)

    def has(self, sha1: str | None) -> bool:
        """Whether ``sha1`` is here: cheap enough to ask for every card on a page (S3: may lag
        another process's writes by :data:`PRESENCE_TTL` seconds)."""
        return bool(sha1) and self.stat(sha1) is not None

    def delete(self, sha1: str) -> bool:
        raise NotImplementedError

    def list(self) -> Iterator[BlobInfo]:
        raise NotImplementedError

    def local_path(self, sha1: str) -> Path | None:
        """The blob's file when the store is a local directory (served without copies)."""
        return None

    def presigned_url(self, sha1: str, expires: int, *, internal: bool = False) -> str | None:
        """A URL that serves the blob straight from the store for ``expires`` seconds, if it can
        (``internal``: signed for the store's own endpoint, not the address clients see)."""
        return None

    def refresh(self) -> None:
        """Forget what :meth:`has` remembers."""

    def close(self) -> None:
        pass


def open_store(where: str | os.PathLike[str]) -> BlobStore:
    """``s3://BUCKET[/PREFIX]`` → :class:`S3Store`; a directory path (or ``file://``) → :class:`LocalStore`."""
    text = os.fspath(where)
    if text.startswith("s3://"):
        parts = urlsplit(text)
        if not parts.netloc:
            raise UsageError(f"{text!r}: expected s3://BUCKET or s3://BUCKET/PREFIX")
        if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", parts.netloc):
            raise UsageError(
                f"{text!r}: {parts.netloc!r} is not an S3 bucket name "
                "(3 to 63 lower-case letters, digits, dots and hyphens)"
            )
        return S3Store(parts.netloc, parts.path.strip("/"))
    if "://" in text and not text.startswith("file://"):
        raise UsageError(f"{text!r}: expected a directory, file:///DIR or s3://BUCKET/PREFIX")
    return LocalStore(Path(text.removeprefix("file://")))


# --------------------------------------------------------------------------- local directory


class LocalStore(BlobStore):
    """Blobs in ``root/sha1/<sha1>``: a blob cache of :mod:`caffezoo.fetch`."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)
        self.url = str(self.root)
        self._prefix = os.path.join(str(self.root), "sha1", "")  # has() runs per card: no Path objects

    def cache(self):
        from ..fetch import BlobCache  # the downloads engine

        return BlobCache(self.root)

    def path(self, sha1: str) -> Path:
        return self.root / "sha1" / sha1

    def local_path(self, sha1: str) -> Path | None:
        return self.path(sha1)

    def has(self, sha1: str | None) -> bool:
        return bool(sha1) and os.path.isfile(self._prefix + sha1)

    def writer(self, sha1: str) -> LocalWriter:
        return LocalWriter(self.cache(), sha1)

    def get(self, sha1: str, start: int = 0, stop: int | None = None) -> Iterator[bytes]:
        try:
            f = open(self._prefix + sha1, "rb")  # noqa: SIM115 (closed by the generator)
        except FileNotFoundError:
            raise KeyError(sha1) from None
        return self._read(f, start, stop)

    @staticmethod
    def _read(f: BinaryIO, start: int, stop: int | None) -> Iterator[bytes]:
        with f:
            f.seek(start)
            left = None if stop is None else stop - start
            while left is None or left > 0:
                chunk = f.read(CHUNK if left is None else min(CHUNK, left))
                if not chunk:
                    return
                if left is not None:
                    left -= len(chunk)
                yield chunk

    def stat(self, sha1: str) -> BlobInfo | None:
        try:
            st = os.stat(self._prefix + sha1)
        except FileNotFoundError:
            return None
        return BlobInfo(sha1, st.st_size, st.st_mtime)

    def delete(self, sha1: str) -> bool:
        try:
            os.unlink(self._prefix + sha1)
            return True
        except FileNotFoundError:
            return False

    def list(self) -> Iterator[BlobInfo]:
        try:
            names = sorted(os.listdir(self._prefix))
        except FileNotFoundError:
            return
        for name in names:
            if len(name) == 40 and (info := self.stat(name)) is not None:
                yield info


class LocalWriter:
    """A partial file of the blob cache, hashed as written, renamed into place if the SHA-1 matches."""

    def __init__(self, cache, sha1: str):
        self.cache, self.sha1 = cache, sha1
        self.partial = cache.claim(sha1)
        self.partial.restart()  # a write starts from byte 0, whatever a dead download left
        self.size = 0

    def write(self, chunk: bytes) -> None:
        self.partial.write(chunk)
        self.size += len(chunk)

    def commit(self) -> BlobInfo:
        self.partial.flush()
        digests = self.partial.digests()
        if digests.sha1 != self.sha1:
            self.abort()
            raise _mismatch(self.sha1, digests.sha1, digests.size)
        path = self.cache.commit(self.partial, digests)
        return BlobInfo(self.sha1, digests.size, path.stat().st_mtime)

    def abort(self) -> None:
        self.partial.discard()


# --------------------------------------------------------------------------- S3


def _s3_client(endpoint: str | None, region: str, key: str | None, secret: str | None):
    import boto3  # lazy: only a server with --blobs-url s3://... pays for it
    from botocore.config import Config

    config = Config(
        signature_version="s3v4",
        # Path style: Ceph's gateway, MinIO and most self-hosted stores have no per-bucket DNS names.
        s3={"addressing_style": "path" if endpoint else "auto"},
        # botocore >= 1.36 adds CRC checksums to every request by default; stores that predate
        # them (Ceph 16 among them) reject or mangle such uploads. Content-MD5 is sent instead.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        retries={"max_attempts": 3, "mode": "standard"},  # then the client's own retries take over
        max_pool_connections=32,
        connect_timeout=10,
        read_timeout=60,
    )
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        config=config,
    )


def _code(e: Exception) -> str | None:
    """The S3 error code of a botocore error (``NoSuchKey``, ``404``...), if it has one."""
    response = getattr(e, "response", None)
    return response.get("Error", {}).get("Code") if isinstance(response, dict) else None


class S3Store(BlobStore):
    """Blobs at ``s3://bucket/prefix/sha1/<sha1>`` in an S3-compatible object store.

    Endpoint and credentials come from :func:`caffezoo.config.s3_settings` unless given.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        public_endpoint: str | None = None,
        part_size: int | None = None,
    ):
        from ..config import s3_settings

        s = s3_settings()
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.endpoint = endpoint or s.endpoint
        self.url = f"s3://{bucket}/{self.prefix}".rstrip("/") + (
            f" at {self.endpoint}" if self.endpoint else ""
        )
        args = (
            region or s.region,
            access_key_id or s.access_key_id,
            secret_access_key or s.secret_access_key,
        )
        self.client = _s3_client(self.endpoint, *args)
        public = public_endpoint or s.public_endpoint
        self._presigner = _s3_client(public, *args) if public and public != self.endpoint else self.client
        # S3 wants parts of 5 MiB or more; 16 MiB by default keeps 10,000 parts above 156 GiB.
        self.part_size = max(part_size or s.part_size, 5 << 20)
        self._present: set[str] = set()
        self._listed_at = -PRESENCE_TTL
        self._listing = threading.Lock()

    def key(self, sha1: str) -> str:
        return f"{self.prefix}/sha1/{sha1}" if self.prefix else f"sha1/{sha1}"

    def _fail(self, what: str, e: Exception, sha1: str | None = None) -> BlobStoreError:
        where = f"{self.url}" + (f" (blob {sha1})" if sha1 else "")
        code = _code(e)
        hint = {
            "NoSuchBucket": f": the bucket {self.bucket!r} does not exist; create it first",
            "AccessDenied": ": access denied; check CAFFEZOO_S3_* / AWS_* credentials",
            "403": ": access denied (HTTP 403); check CAFFEZOO_S3_* / AWS_* credentials",
            "InvalidAccessKeyId": ": unknown access key; check CAFFEZOO_S3_* / AWS_* credentials",
            "SignatureDoesNotMatch": ": wrong secret key; check CAFFEZOO_S3_* / AWS_* credentials",
        }.get(code or "", f": {code or type(e).__name__}: {e}")
        return BlobStoreError(f"{what} {where}{hint}")

    def _errors(self):
        from botocore.exceptions import BotoCoreError, ClientError

        return (BotoCoreError, ClientError)

    def check(self) -> None:
        """Fail clearly now (no bucket, no access, no endpoint) rather than on the first request."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except self._errors() as e:
            if _code(e) in ("404", "NoSuchBucket"):
                raise BlobStoreError(
                    f"the bucket {self.bucket!r} does not exist at {self.endpoint or 'AWS'}; create it first"
                ) from None
            raise self._fail("cannot reach", e) from None

    def ensure_bucket(self) -> None:
        """Create the bucket if it is missing (for a development cluster or a migration)."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
            return
        except self._errors():
            pass
        try:
            self.client.create_bucket(Bucket=self.bucket)
        except self._errors() as e:
            raise self._fail("cannot create", e) from None

    def writer(self, sha1: str) -> S3Writer:
        return S3Writer(self, sha1)

    def get(self, sha1: str, start: int = 0, stop: int | None = None) -> Iterator[bytes]:
        body = self.open(sha1, start, stop)
        return self._chunks(body)

    def open(self, sha1: str, start: int = 0, stop: int | None = None):
        """The response body (a stream) of bytes ``[start, stop)``; :class:`KeyError` if absent."""
        return self._get_object(sha1, start, stop)["Body"]

    def _get_object(self, sha1: str, start: int = 0, stop: int | None = None) -> dict:
        args = {"Bucket": self.bucket, "Key": self.key(sha1)}
        if start or stop is not None:
            args["Range"] = f"bytes={start}-" + ("" if stop is None else str(stop - 1))
        try:
            return self.client.get_object(**args)
        except self._errors() as e:
            if _code(e) in ("NoSuchKey", "404"):
                raise KeyError(sha1) from None
            raise self._fail("cannot read", e, sha1) from None

    def stream(self, sha1: str) -> tuple[BlobInfo, Iterator[bytes]]:
        answer = self._get_object(sha1)
        self._present.add(sha1)
        modified = answer.get("LastModified")
        info = BlobInfo(sha1, answer["ContentLength"], modified.timestamp() if modified else None)
        return info, self._chunks(answer["Body"])

    @staticmethod
    def _chunks(body) -> Iterator[bytes]:
        try:
            yield from body.iter_chunks(S3_READ)
        finally:
            body.close()

    def stat(self, sha1: str) -> BlobInfo | None:
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self.key(sha1))
        except self._errors() as e:
            if _code(e) in ("404", "NoSuchKey", "NotFound"):
                self._present.discard(sha1)
                return None
            raise self._fail("cannot stat", e, sha1) from None
        self._present.add(sha1)
        return BlobInfo(sha1, head["ContentLength"], head["LastModified"].timestamp())

    def has(self, sha1: str | None) -> bool:
        if not sha1:
            return False
        if sha1 in self._present:
            return True
        if time.monotonic() - self._listed_at > PRESENCE_TTL and self._listing.acquire(blocking=False):
            try:  # one listing at a time; other threads answer from the last one meanwhile
                self._present = {b.sha1 for b in self.list()}
                self._listed_at = time.monotonic()
            except BlobStoreError:
                self._listed_at = time.monotonic()  # a store that is down is not asked per card
            finally:
                self._listing.release()
        return sha1 in self._present

    def refresh(self) -> None:
        self._listed_at = -PRESENCE_TTL

    def delete(self, sha1: str) -> bool:
        present = self.stat(sha1) is not None
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.key(sha1))
        except self._errors() as e:
            raise self._fail("cannot delete from", e, sha1) from None
        self._present.discard(sha1)
        return present

    def list(self) -> Iterator[BlobInfo]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.key(""))
        try:
            for page in pages:
                for obj in page.get("Contents", ()):
                    name = obj["Key"].rsplit("/", 1)[-1]
                    if len(name) == 40:
                        yield BlobInfo(name, obj["Size"], obj["LastModified"].timestamp())
        except self._errors() as e:
            raise self._fail("cannot list", e) from None

    def presigned_url(self, sha1: str, expires: int, *, internal: bool = False) -> str:
        """A GET URL of the blob valid ``expires`` seconds, signed for the address clients see
        (``public_endpoint``), or with ``internal`` for the endpoint itself (what a proxy beside
        the replicas fetches: the signature covers the Host)."""
        signer = self.client if internal else self._presigner
        return signer.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self.key(sha1)}, ExpiresIn=expires
        )

    def plain_get(
        self, sha1: str, start: int = 0, stop: int | None = None, timeout: float = PLAIN_TIMEOUT
    ) -> tuple[socket.socket, int, bytes] | None:
        """Bytes ``[start, stop)`` of the blob, asked of the store over a socket of our own:
        ``(socket at the body, body length, body bytes read with the head)``, for a
        server to move with :mod:`.splice`. None when the endpoint is not plain ``http://``, or
        a proxy may stand between (:func:`.fetch.wire.plain_target`); :class:`KeyError` if absent.

        >>> sock, length, first = store.plain_get(sha1, 0, 100)  # doctest: +SKIP
        """
        from ..fetch.wire import plain_target, range_header, read_answer

        url = self.presigned_url(sha1, PLAIN_SECONDS, internal=True)
        plain = plain_target(url)
        if plain is None:
            return None
        host, port, target = plain
        wanted = range_header(start, stop)
        ranged = wanted is not None
        lines = [f"GET {target} HTTP/1.1", f"Host: {urlsplit(url).netloc}"]
        lines += ["Accept-Encoding: identity", "Connection: close"]
        if ranged:
            lines.append(f"Range: {wanted}")
        sock = None
        try:
            sock = socket.create_connection((host, port), timeout=timeout)
            sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            status, headers, first = read_answer(sock)
            if status == 404:
                raise KeyError(sha1)
            length = header_number(headers.get("content-length"))
            wrong = (
                status != (206 if ranged else 200)
                or headers.get("transfer-encoding")
                or headers.get("content-encoding", "identity") != "identity"
                or length is None
                # A 206 names the whole blob's size: one that does not is not an S3 answer.
                or (ranged and range_total(headers.get("content-range")) is None)
                or len(first) > length
                or (ranged and range_start(headers.get("content-range")) != start)
                or (stop is not None and length != stop - start)
            )
            if wrong:
                raise ValueError(f"unexpected answer to a GET: HTTP {status} {sorted(headers.items())}")
        except KeyError:
            sock.close()  # type: ignore[union-attr]
            raise
        except (OSError, ValueError) as e:
            if sock is not None:
                sock.close()
            raise self._fail("cannot read", e, sha1) from None
        self._present.add(sha1)
        return sock, length, first  # type: ignore[return-value]

    def abort_stale_uploads(self, older_than: float = 86400) -> int:
        """Abort multipart uploads of blobs begun more than ``older_than`` seconds ago (crashed writers)."""
        n, now = 0, time.time()
        try:
            pages = self.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=self.key("")
            )
            for page in pages:
                for up in page.get("Uploads", ()):
                    if now - up["Initiated"].timestamp() > older_than:
                        self.client.abort_multipart_upload(
                            Bucket=self.bucket, Key=up["Key"], UploadId=up["UploadId"]
                        )
                        n += 1
        except self._errors() as e:
            raise self._fail("cannot clean up uploads in", e) from None
        return n

    def close(self) -> None:
        self.client.close()
        if self._presigner is not self.client:
            self._presigner.close()


class S3Writer:
    """Small blobs: buffered, PUT after the check. Large: multipart, completed after the check."""

    def __init__(self, store: S3Store, sha1: str):
        self.store, self.sha1 = store, sha1
        self.key = store.key(sha1)
        self.size = 0
        self._hash = hashlib.sha1()
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: list[dict] = []

    def write(self, chunk: bytes) -> None:
        self._hash.update(chunk)
        self.size += len(chunk)
        self._buffer += chunk
        while len(self._buffer) >= self.store.part_size:
            part = bytes(self._buffer[: self.store.part_size])
            del self._buffer[: self.store.part_size]
            self._send_part(part)

    def _send_part(self, data: bytes) -> None:
        s, client = self.store, self.store.client
        try:
            if self._upload_id is None:
                self._upload_id = client.create_multipart_upload(Bucket=s.bucket, Key=self.key)["UploadId"]
            number = len(self._parts) + 1
            r = client.upload_part(
                Bucket=s.bucket,
                Key=self.key,
                UploadId=self._upload_id,
                PartNumber=number,
                Body=data,
                ContentMD5=_md5(data),
            )
        except s._errors() as e:
            raise s._fail("cannot upload to", e, self.sha1) from None
        self._parts.append({"PartNumber": number, "ETag": r["ETag"]})

    def commit(self) -> BlobInfo:
        s = self.store
        got = self._hash.hexdigest()
        if got != self.sha1:
            self.abort()
            raise _mismatch(self.sha1, got, self.size)
        try:
            if self._upload_id is None:
                data = bytes(self._buffer)
                s.client.put_object(Bucket=s.bucket, Key=self.key, Body=data, ContentMD5=_md5(data))
            else:
                if self._buffer:
                    self._send_part(bytes(self._buffer))
                s.client.complete_multipart_upload(
                    Bucket=s.bucket,
                    Key=self.key,
                    UploadId=self._upload_id,
                    MultipartUpload={"Parts": self._parts},
                )
                self._upload_id = None
        except s._errors() as e:
            self.abort()
            raise s._fail("cannot store", e, self.sha1) from None
        self._buffer = bytearray()
        s._present.add(self.sha1)
        return BlobInfo(self.sha1, self.size, time.time())

    def abort(self) -> None:
        self._buffer = bytearray()
        if self._upload_id is not None:
            upload_id, self._upload_id = self._upload_id, None
            try:
                self.store.client.abort_multipart_upload(
                    Bucket=self.store.bucket, Key=self.key, UploadId=upload_id
                )
            except self.store._errors():
                pass  # left for abort_stale_uploads; never visible either way


def _md5(data: bytes) -> str:
    # Content-MD5 makes the store refuse bytes damaged between here and its disk.
    return base64.b64encode(hashlib.md5(data).digest()).decode()
