"""A small client of the Gist REST API, on GitHub or on a caffezoo server.

>>> with GistClient("http://127.0.0.1:8000") as c:                     # doctest: +SKIP
...     c.get("0123456789abcdef0123").files.keys()

The API base is ``CAFFEZOO_GIST_API`` (GitHub, GitHub Enterprise
``https://HOST/api/v3``, or ``caffezoo serve``); the token comes from
``CAFFEZOO_TOKEN``, ``GITHUB_TOKEN`` or ``~/.gist`` and is only ever sent to
that API's origin. Rate limits are honoured (short waits are waited out,
long ones fail with the reset time) and 5xx answers are retried with backoff.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from .. import _http
from .._http_status import header_number
from ..config import settings
from ..errors import GistError, OfflineError, UsageError
from .rules import LOGIN_RE, MAX_FILE_BYTES

__all__ = ["API_VERSION", "NO_TOKEN", "Gist", "GistClient", "GistFile"]

API_VERSION = "2022-11-28"
NO_TOKEN = (
    "this needs an API token: set CAFFEZOO_TOKEN or GITHUB_TOKEN, or put the token "
    "in ~/.gist (for a caffezoo server: `caffezoo serve token create USER`)"
)


# --------------------------------------------------------------------------- the API client


@dataclass
class GistFile:
    filename: str
    size: int | None = None
    raw_url: str | None = None
    content: str | None = None
    truncated: bool = False
    encoding: str = "utf-8"

    def data(self) -> bytes | None:
        """The content as bytes when the API gave all of it, else None (fetch ``raw_url``)."""
        if self.content is None or self.truncated:
            return None
        if self.encoding == "base64":
            return base64.b64decode(self.content)
        return self.content.encode("utf-8")


@dataclass
class Gist:
    """The fields of a gist that caffezoo uses; missing fields are tolerated."""

    id: str
    description: str | None = None
    public: bool = False
    html_url: str | None = None
    git_pull_url: str | None = None
    owner: str | None = None
    updated_at: str | None = None
    files: dict[str, GistFile] = field(default_factory=dict)
    truncated: bool = False
    versions: list[str] = field(default_factory=list)

    @classmethod
    def from_json(cls, data: Any) -> Gist:
        if not isinstance(data, dict) or not isinstance(data.get("id"), (str, int)):
            raise GistError(f"the API answered something that is not a gist: {str(data)[:200]!r}")
        gist_id = str(data["id"])
        files: dict[str, GistFile] = {}
        for key, f in _typed(data, "files", dict, gist_id, {}).items():
            if not isinstance(f, dict):
                continue
            name = _typed(f, "filename", str, gist_id) or key
            if name in files:  # the last would silently replace the first
                raise GistError(
                    f"the API answered a malformed gist {gist_id}: two entries are named {name!r}"
                )
            files[name] = GistFile(
                filename=name,
                size=_typed(f, "size", int, gist_id),
                raw_url=_typed(f, "raw_url", str, gist_id),
                content=_typed(f, "content", str, gist_id),
                truncated=bool(f.get("truncated")),
                encoding=_typed(f, "encoding", str, gist_id) or "utf-8",
            )
        owner = data.get("owner")
        return cls(
            id=gist_id,
            description=_typed(data, "description", str, gist_id),
            public=bool(data.get("public")),
            html_url=_typed(data, "html_url", str, gist_id),
            git_pull_url=_typed(data, "git_pull_url", str, gist_id),
            owner=_typed(owner, "login", str, gist_id) if isinstance(owner, dict) else None,
            updated_at=_typed(data, "updated_at", str, gist_id),
            files=files,
            truncated=bool(data.get("truncated")),
            versions=[h.get("version") for h in data.get("history") or [] if isinstance(h, dict)],
        )


def _typed(data: dict, key: str, kind: type, gist_id: str, default: Any = None) -> Any:
    """``data[key]`` when it is missing, null or a ``kind``; a :class:`GistError` otherwise."""
    value = data.get(key)
    if value is None:
        return default
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        expected = {dict: "an object", str: "a string", int: "an integer"}[kind]
        raise GistError(
            f"the API answered a malformed gist {gist_id}: {key!r} is {repr(value)[:100]}, "
            f"expected {expected}"
        )
    return value


_FROM_SETTINGS = object()  # GistClient(token=...) not given: use settings().token


def _origin(url: httpx.URL | str) -> tuple[str, str, int | None]:
    u = httpx.URL(str(url))
    return u.scheme, u.host, u.port


class _TokenAuth(httpx.Auth):
    """Adds the token to requests for the API's own origin, and to nothing else."""

    def __init__(self, token: str, api: str):
        self._token, self._origin = token, _origin(api)

    def __repr__(self) -> str:
        return "_TokenAuth(<hidden>)"

    def auth_flow(self, request: httpx.Request):
        if _origin(request.url) == self._origin:
            request.headers["Authorization"] = f"Bearer {self._token}"
        yield request


class GistClient:
    """A small client of the Gist REST API.

    >>> GistClient("http://127.0.0.1:8000").get("0123456789abcdef0123")   # doctest: +SKIP
    """

    def __init__(
        self,
        api: str | None = None,
        token: str | None | object = _FROM_SETTINGS,
        *,
        max_wait: float = 60.0,
        retries: int = 4,
        backoff: float = 1.0,
        timeout: float = 30.0,
        policy: _http.Policy | None = None,
    ):
        s = settings()
        self.api = (api or s.gist_api).rstrip("/")
        if s.offline:
            raise OfflineError(f"CAFFEZOO_OFFLINE is set: not contacting {self.api}")
        secret = s.token if token is _FROM_SETTINGS else token
        self.has_token = bool(secret)
        self.max_wait, self.retries, self.backoff = max_wait, retries, backoff
        # policy: a server-side caller's outbound-URL policy; the API itself is the operator's choice.
        self._http = _http.client(
            timeout=timeout,
            auth=_TokenAuth(secret, self.api) if secret else None,
            headers={"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": API_VERSION},
            policy=policy.with_trusted(self.api) if policy else None,
        )

    def __enter__(self) -> GistClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # ---------------------------------------------------------------- transport

    def _rate_wait(self, r: httpx.Response) -> float | None:
        """Seconds to wait before retrying a rate-limited answer; None if it is not one."""
        if r.status_code not in (403, 429):
            return None
        h = r.headers
        if "retry-after" in h:
            wait = _http.retry_after(h["retry-after"])
            return 60.0 if wait is None else wait
        if h.get("x-ratelimit-remaining") == "0":
            try:
                return max(0.0, float(h["x-ratelimit-reset"]) - time.time())
            except (KeyError, ValueError):
                return 60.0
        return 60.0 if r.status_code == 429 else None

    def request(
        self, method: str, url: str, *, max_bytes: int | None = None, **kwargs: Any
    ) -> httpx.Response:
        """Send with retries: rate limits (when the wait is short) and 5xx (idempotent methods).

        ``max_bytes``: a body longer than that (once decoded) is a :class:`GistError`, found
        while reading, not after."""
        full = url if "://" in url else f"{self.api}{url}"
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                if max_bytes is None:
                    r = self._http.request(method, full, **kwargs)
                else:
                    r = self._read_at_most(self._http.build_request(method, full, **kwargs), max_bytes)
            except _http.Refused:  # a server-side caller's policy: no second try changes it
                raise GistError(f"{method} {full}: {_http.REFUSED}") from None
            except httpx.TransportError as e:
                if last or method == "POST":
                    raise GistError(f"{method} {full}: {type(e).__name__}: {e or 'no answer'}") from None
                time.sleep(_http.backoff(attempt + 1, base=self.backoff))
                continue
            wait = self._rate_wait(r)
            if wait is not None:
                if wait <= self.max_wait and not last:
                    time.sleep(wait)
                    continue
                when = _reset_time(r.headers.get("x-ratelimit-reset")) or f"in {wait:.0f} s"
                raise GistError(
                    f"{method} {full}: rate limit exceeded ({r.status_code}); it resets at "
                    f"{when} — try again then, or use a token for a higher limit"
                )
            if r.status_code >= 500 and method != "POST" and not last:
                time.sleep(_http.backoff(attempt + 1, base=self.backoff))
                continue
            return r
        raise AssertionError("unreachable")  # pragma: no cover

    def _read_at_most(self, request: httpx.Request, max_bytes: int) -> httpx.Response:
        """Send ``request`` and read its body, refusing it once past ``max_bytes``."""
        r = self._http.send(request, stream=True)
        try:
            body = bytearray()
            for chunk in r.iter_bytes():  # decoded: a gzip bomb counts at its unpacked size
                body += chunk
                if len(body) > max_bytes:
                    raise GistError(f"{request.method} {request.url}: more than {max_bytes} bytes")
        finally:
            r.close()
        # The body is already decoded: the copy must not say it is still compressed.
        headers = [
            (k, v)
            for k, v in r.headers.multi_items()
            if k.lower() not in ("content-encoding", "content-length")
        ]
        out = httpx.Response(r.status_code, headers=headers, content=bytes(body), request=request)
        out.read()
        return out

    def _json(self, method: str, url: str, what: str, **kwargs: Any) -> Any:
        r = self.request(method, url, **kwargs)
        if r.status_code >= 400:
            raise self._error(r, method, what)
        return None if r.status_code == 204 else _decode(r, method)

    def _error(self, r: httpx.Response, method: str, what: str) -> GistError:
        try:
            body = r.json()
        except ValueError:
            body = {}
        message = body.get("message") if isinstance(body, dict) else None
        details = (
            [
                e.get("message") or f"{e.get('field')}: {e.get('code')}"
                for e in (body.get("errors") or [])
                if isinstance(e, dict)
            ]
            if isinstance(body, dict)
            else []
        )
        host = httpx.URL(self.api).host
        if r.status_code == 401:
            return GistError(
                f"{method} {r.url}: {message or 'unauthorized'} (401): the token from "
                "CAFFEZOO_TOKEN / GITHUB_TOKEN / ~/.gist was refused by " + host
                if self.has_token
                else f"{method} {r.url}: 401: {NO_TOKEN}"
            )
        if r.status_code == 404:
            return GistError(
                f"{what}: not found on {host} (404)"
                + ("; it may belong to another account" if method != "GET" else "")
            )
        text = f"{method} {r.url}: {r.status_code} {message or r.reason_phrase}"
        return GistError(text + "".join(f"\n  {d}" for d in details))

    # ---------------------------------------------------------------- endpoints

    def get(self, gist_id: str) -> Gist:
        return Gist.from_json(self._json("GET", f"/gists/{gist_id}", f"gist {gist_id}"))

    def create(self, description: str | None, public: bool, files: dict[str, str]) -> Gist:
        self._need_token()
        body = {
            "description": description,
            "public": public,
            "files": {n: {"content": c} for n, c in files.items()},
        }
        return Gist.from_json(self._json("POST", "/gists", "new gist", json=body))

    def update(self, gist_id: str, files: dict[str, Any], description: str | None = None) -> Gist:
        """PATCH: ``files`` maps current names to ``{"content"?, "filename"?}`` or None (delete)."""
        self._need_token()
        body: dict[str, Any] = {"files": files}
        if description is not None:
            body["description"] = description
        return Gist.from_json(self._json("PATCH", f"/gists/{gist_id}", f"gist {gist_id}", json=body))

    def delete(self, gist_id: str) -> None:
        self._need_token()
        self._json("DELETE", f"/gists/{gist_id}", f"gist {gist_id}")

    def list(self, user: str | None = None, limit: int = 100) -> list[Gist]:
        """A user's public gists, or (no user) the token owner's; following ``Link: rel=next``."""
        if user is None:
            self._need_token()
        elif not LOGIN_RE.fullmatch(user):  # it goes into the URL's path
            raise UsageError(f"{user!r} is not a user name: expected letters, digits and single '-'")
        url: str | None = f"/users/{user}/gists" if user else "/gists"
        out: list[Gist] = []
        params: dict[str, Any] | None = {"per_page": min(100, max(1, limit))}
        while url and len(out) < limit:
            r = self.request("GET", url, params=params)
            if r.status_code >= 400:
                raise self._error(r, "GET", f"gists of {user}" if user else "your gists")
            page = _decode(r, "GET")
            if not isinstance(page, list):
                raise GistError(f"GET {r.url}: expected a list of gists, got {str(page)[:200]!r}")
            out += [Gist.from_json(g) for g in page]
            url, params = r.links.get("next", {}).get("url"), None
        return out[:limit]

    def raw(self, url: str, expected_size: int | None = None) -> bytes:
        """A truncated file's whole text from its ``raw_url``: at most ``expected_size`` bytes
        (else :data:`~.rules.MAX_FILE_BYTES`), read as they come, so a hostile URL that sends
        more (or an endless body) is cut off instead of filling memory."""
        limit = MAX_FILE_BYTES if expected_size is None else min(expected_size, MAX_FILE_BYTES)
        r = self.request("GET", url, max_bytes=limit)
        if r.status_code >= 400:
            raise GistError(f"GET {url}: {r.status_code} {r.reason_phrase}")
        if expected_size is not None and len(r.content) != expected_size:
            raise GistError(f"GET {url}: got {len(r.content)} bytes, the gist says {expected_size}")
        return r.content

    def _need_token(self) -> None:
        if not self.has_token:
            raise GistError(NO_TOKEN)


def _decode(r: httpx.Response, method: str) -> Any:
    try:
        return r.json()
    except ValueError:
        raise GistError(f"{method} {r.url}: expected JSON, got {r.headers.get('content-type')!r}") from None


def _reset_time(reset: str | None) -> str | None:
    """GitHub's ``X-RateLimit-Reset`` (seconds since the epoch) as a UTC time; None when it is not
    a number, or past any date this platform can write."""
    seconds = header_number(reset)
    if seconds is None:
        return None
    try:
        return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, OSError, ValueError):
        return None
