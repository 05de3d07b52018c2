"""One HTTP layer: client construction, timeouts, User-Agent, retry policy, outbound-URL policy.

>>> c = client(timeout=10)                                              # doctest: +SKIP
>>> guarded = client(policy=Policy())      # a server-side fetch: public addresses only  # doctest: +SKIP
>>> with budget(seconds=60, min_rate=16_384):                           # doctest: +SKIP
...     guarded.get("https://dl.example.org/net.caffemodel")
>>> retry_after("120"), is_retryable_status(503), is_retryable_status(404)
(120.0, True, False)

The outbound-URL policy is enforced where the socket is opened (a network
backend under httpx), so it holds for every redirect hop, and the address
checked is the address connected to: a name is resolved once, each address
checked, and the connection made to a checked address, leaving no window for
a DNS answer that changes in between. A refusal raises :class:`Refused`,
whose message is only "refused by policy".

Only the standard library and httpx/httpcore are imported here; importing
httpx costs start-up time, so modules that may not need the network import
this module lazily.
"""

from __future__ import annotations

import contextlib
import contextvars
import ipaddress
import random
import socket
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ._http_status import is_retryable_status, retry_after


def _import_httpx():
    """Import httpx without its command-line module, which loads click, rich.syntax and pygments.

    That module is a fifth of a download's start-up time, and httpx itself replaces it by a
    stub when it cannot be imported. Should a future httpx need it, import it normally.
    """
    if "httpx" in sys.modules:
        return sys.modules["httpx"]
    blocked = "httpx._main" not in sys.modules
    if blocked:
        sys.modules["httpx._main"] = None  # type: ignore[assignment]
    try:
        import httpx
    except ImportError:
        sys.modules.pop("httpx._main", None)
        import httpx
    finally:
        if blocked and sys.modules.get("httpx._main", 0) is None:
            del sys.modules["httpx._main"]
    return httpx


httpx = _import_httpx()
import httpcore  # noqa: E402  (after httpx, which the function above imports lightly)

__all__ = [
    "MAX_RETRY_AFTER",
    "LimitExceeded",
    "Policy",
    "Refused",
    "backoff",
    "budget",
    "client",
    "is_retryable_status",
    "not_public",
    "public_error",
    "retry_after",
    "user_agent",
]

# -- User-Agent ---------------------------------------------------------------------------


def user_agent() -> str:
    """``caffezoo/<version> httpx/<version>``: who is asking, for the other side's logs."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"caffezoo/{version('caffezoo')} httpx/{httpx.__version__}"
    except PackageNotFoundError:  # running from a source tree that is not installed
        return f"caffezoo httpx/{httpx.__version__}"


# -- retry policy -------------------------------------------------------------------------

# Longest Retry-After we sit through; a server asking for more is treated as down for now.
MAX_RETRY_AFTER = 120.0
BACKOFF_BASE = 0.5
BACKOFF_CAP = 30.0


def backoff(attempt: int, base: float = BACKOFF_BASE, cap: float = BACKOFF_CAP) -> float:
    """Seconds to wait before retry number ``attempt`` (1, 2...): exponential, with jitter.

    Half the delay is fixed and half random ("equal jitter"), so clients that
    failed together do not come back together.

    >>> 0.25 <= backoff(1) <= 0.5 and 4.0 <= backoff(5) <= 8.0
    True
    """
    delay = min(cap, base * 2 ** (attempt - 1))
    return delay / 2 + random.uniform(0, delay / 2)


# -- outbound-URL policy ------------------------------------------------------------------

REFUSED = "refused by policy"
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_IETF = ipaddress.ip_network("192.0.0.0/24")  # protocol assignments; 192.0.0.192 is Oracle's metadata
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class Refused(httpx.TransportError):
    """The outbound-URL policy refused this URL or address; the message says only that."""

    def __init__(self, why: str = "") -> None:
        super().__init__(REFUSED)
        self.why = why  # for the operator's logs, never for a page


class LimitExceeded(httpx.TransportError):
    """A fetch ran past its :func:`budget`: its deadline, or its minimum rate."""


def not_public(ip: Address) -> str | None:
    """Why ``ip`` is not a public unicast address (None when it is one).

    IPv6 forms that carry an IPv4 address (mapped, 6to4, Teredo, NAT64) are
    judged by that address.

    >>> [not_public(ipaddress.ip_address(a)) for a in ("8.8.8.8", "127.0.0.1", "::ffff:10.0.0.1")]
    [None, 'loopback', 'private']
    """
    if ip.version == 6:
        inner: ipaddress.IPv4Address | None = ip.ipv4_mapped or ip.sixtofour
        if ip.teredo:
            inner = ip.teredo[1]
        if ip in _NAT64 or ip in _NAT64_LOCAL:
            inner = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if inner is not None:
            return not_public(inner)
    for why, bad in (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),  # 169.254.169.254: the cloud's metadata service
        ("multicast", ip.is_multicast),
        ("shared (CGNAT)", ip.version == 4 and ip in _CGNAT),
        ("special-purpose", ip.version == 4 and ip in _IETF),
        ("reserved", ip.is_reserved),
        ("private", ip.is_private),
        ("not global", not ip.is_global),
    ):
        if bad:
            return why
    return None


@dataclass(frozen=True)
class Policy:
    """Where a server-side fetch may go: http(s) to public addresses, unless opted in.

    ``allow_private`` lifts the address checks (a lab on its own network);
    ``networks`` allows these CIDR blocks only; ``trusted`` are ``(host, port)``
    pairs the operator configured herself (e.g. the Gist API a wiki import
    reads), reached without checks.

    >>> Policy(networks=("10.1.0.0/16",)).check_ip("10.1.2.3") is None
    True
    """

    allow_private: bool = False
    networks: tuple[str, ...] = ()
    trusted: frozenset[tuple[str, int]] = frozenset()
    _nets: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = field(
        init=False, repr=False, compare=False, default=()
    )

    def __post_init__(self) -> None:
        nets = []
        for cidr in self.networks:
            try:
                nets.append(ipaddress.ip_network(cidr.strip(), strict=False))
            except ValueError:
                raise ValueError(f"--allow-network {cidr!r}: expected a network such as 10.0.0.0/8") from None
        object.__setattr__(self, "_nets", tuple(nets))

    def with_trusted(self, url: str) -> Policy:
        """This policy, also trusting ``url``'s host and port (configured by the operator)."""
        u = httpx.URL(url)
        port = u.port or {"http": 80, "https": 443}.get(u.scheme, 0)
        return Policy(self.allow_private, self.networks, self.trusted | {(u.host.lower(), port)})

    def check_ip(self, address: str) -> None:
        """Raise :class:`Refused` unless a fetch may connect to ``address``."""
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            raise Refused(f"{address!r} is not an IP address") from None
        if self.allow_private:
            return
        forms = [ip, ip.ipv4_mapped] if ip.version == 6 and ip.ipv4_mapped else [ip]
        if any(f in net for f in forms for net in self._nets if net.version == f.version):
            return
        why = not_public(ip)
        if why:
            raise Refused(f"{ip} is {why}")

    def check_url(self, url: str) -> None:
        """Raise :class:`Refused` unless ``url`` is http(s) with a host (addresses are checked on connect)."""
        try:
            u = httpx.URL(url)
        except (httpx.InvalidURL, TypeError, ValueError):
            raise Refused("not a URL") from None
        if u.scheme not in ("http", "https") or not u.host:
            raise Refused(f"scheme {u.scheme!r}")

    def trusts(self, host: str, port: int) -> bool:
        return (host.lower(), port) in self.trusted


# -- per-fetch budget ---------------------------------------------------------------------


@dataclass
class _Budget:
    deadline: float | None
    min_rate: float | None
    grace: float
    seconds: float | None
    max_bytes: int | None = None
    start: float = field(default_factory=time.monotonic)
    received: int = 0

    def cutoff(self) -> float | None:
        """When the fetch must have made progress by, or be cut off (monotonic seconds)."""
        times = []
        if self.deadline is not None:
            times.append(self.deadline)
        if self.min_rate:
            times.append(self.start + self.grace + self.received / self.min_rate)
        return min(times) if times else None

    def exceeded(self) -> LimitExceeded:
        if self.deadline is not None and time.monotonic() >= self.deadline:
            return LimitExceeded(f"took longer than the {self.seconds:g} s allowed for one fetch")
        return LimitExceeded(f"slower than the {self.min_rate / 1024:g} KiB/s a fetch must keep up")


_budget: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar("caffezoo_http_budget", default=None)


@contextlib.contextmanager
def budget(
    seconds: float | None = None,
    *,
    min_rate: float | None = None,
    grace: float = 10.0,
    max_bytes: int | None = None,
) -> Iterator[None]:
    """Bound the requests made inside: all of them end ``seconds`` from now, and after
    ``grace`` seconds bytes must have come at ``min_rate`` bytes/s on average; else
    :class:`LimitExceeded` is raised from the read (or connect) that would wait past it.
    ``max_bytes`` bounds what all of them may receive (headers included).

    A source that trickles a byte every few seconds never trips a read timeout;
    this cuts it off. Applies to clients made by :func:`client` in this thread.
    """
    deadline = None if seconds is None else time.monotonic() + seconds
    token = _budget.set(_Budget(deadline, min_rate, grace, seconds, max_bytes))
    try:
        yield
    finally:
        _budget.reset(token)


def _limited(timeout: float | None) -> tuple[float | None, _Budget | None, float | None]:
    b = _budget.get()
    cutoff = b.cutoff() if b else None
    if cutoff is None:
        return timeout, b, None
    left = cutoff - time.monotonic()
    if left <= 0:
        raise b.exceeded()  # type: ignore[union-attr]
    return (left if timeout is None else min(timeout, left)), b, cutoff


# -- the network backend: where both are enforced ----------------------------------------


class _Stream(httpcore.NetworkStream):
    """A socket stream that reads ``read_size`` at a time and keeps within the budget."""

    def __init__(self, inner: httpcore.NetworkStream, read_size: int) -> None:
        self._inner, self._read_size = inner, read_size

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        wait, b, cutoff = _limited(timeout)
        try:
            # More than httpcore asks for is fine: h11 buffers what it is given. Fewer, larger
            # reads cut the per-read Python work that dominates at LAN speeds.
            data = self._inner.read(max(max_bytes, self._read_size), wait)
        except httpcore.ReadTimeout:
            if b is not None and cutoff is not None and time.monotonic() >= cutoff - 0.001:
                raise b.exceeded() from None
            raise
        if b is not None:
            b.received += len(data)
            if b.max_bytes is not None and b.received > b.max_bytes:
                raise LimitExceeded(f"more than the {b.max_bytes} bytes allowed")
        return data

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        wait, b, cutoff = _limited(timeout)
        try:
            self._inner.write(buffer, wait)
        except httpcore.WriteTimeout:
            if b is not None and cutoff is not None and time.monotonic() >= cutoff - 0.001:
                raise b.exceeded() from None
            raise

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context, server_hostname: str | None = None, timeout: float | None = None):
        wait, _, _ = _limited(timeout)
        return _Stream(self._inner.start_tls(ssl_context, server_hostname, wait), self._read_size)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _Backend(httpcore.NetworkBackend):
    """httpcore's sync backend, with the policy checked on the addresses actually connected to."""

    def __init__(self, policy: Policy | None, read_size: int) -> None:
        self._inner = httpcore.SyncBackend()
        self.policy, self.read_size = policy, read_size

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        wait, _, _ = _limited(timeout)
        if self.policy is None or self.policy.trusts(host, port):
            return _Stream(
                self._inner.connect_tcp(host, port, wait, local_address, socket_options), self.read_size
            )
        # Resolve once, check every answer, connect to a checked address: no rebinding window.
        # glibc reads 127.1, 2130706433 and 0x7f000001 as 127.0.0.1 here, so every spelling
        # of an address meets the same check.
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as e:
            raise httpcore.ConnectError(str(e)) from e
        except UnicodeError as e:
            raise httpcore.ConnectError(f"bad host name: {e}") from e
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        for address in addresses:
            self.policy.check_ip(address)  # one bad answer refuses the name: it may be rebinding
        last: Exception | None = None
        for address in addresses:
            try:
                stream = self._inner.connect_tcp(address, port, wait, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as e:
                last = e
                continue
            sock = stream.get_extra_info("socket")
            try:
                self.policy.check_ip(sock.getpeername()[0])  # the peer we really reached
            except BaseException:
                stream.close()
                raise
            return _Stream(stream, self.read_size)
        assert last is not None
        raise last

    def connect_unix_socket(self, path: str, timeout: float | None = None, socket_options=None):
        raise Refused("unix sockets")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


DEFAULT_READ = 64 << 10


def client(
    *,
    timeout: float | httpx.Timeout = 30.0,
    policy: Policy | None = None,
    headers: Mapping[str, str] | None = None,
    follow_redirects: bool = True,
    max_redirects: int = 10,
    auth: httpx.Auth | None = None,
    max_connections: int = 32,
    max_keepalive: int = 8,
    read_size: int = DEFAULT_READ,
) -> httpx.Client:
    """An httpx client with the project's User-Agent, timeouts and (given ``policy``) URL policy.

    ``max_keepalive``: idle connections kept open for reuse (a download over N connections
    wants N). ``read_size``: bytes asked of the socket per read (httpcore asks 64 KiB); downloads ask
    more, which at loopback or LAN speeds cuts httpcore's per-read Python work. With a policy,
    proxies from the environment are ignored: a proxy would reach what the policy refuses.
    """
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_keepalive)
    transport = httpx.HTTPTransport(limits=limits, trust_env=policy is None)
    pool = transport._pool
    if not hasattr(pool, "_network_backend"):  # a newer httpcore: refuse to run without the checks
        raise RuntimeError("httpcore's connection pool changed: the outbound-URL policy cannot be applied")
    pool._network_backend = _Backend(policy, read_size)
    # httpx reads proxies from the environment only when it makes the transport itself: given
    # ours, it went straight past http_proxy/all_proxy. Mounted here, as httpx would (NO_PROXY too).
    mounts: dict[str, httpx.BaseTransport | None] = {}
    if policy is None:
        from httpx._utils import get_environment_proxies

        for pattern, proxy in get_environment_proxies().items():
            mounts[pattern] = None if proxy is None else httpx.HTTPTransport(limits=limits, proxy=proxy)
    merged = {"User-Agent": user_agent(), **(headers or {})}
    hooks: dict[str, list[Any]] = {}
    if policy is not None:
        # httpx inflates gzip/brotli whole reads at once: a byte cap on the wire would let a
        # 1 MB bomb become a gigabyte in memory. A guarded fetch asks for, and takes, identity.
        merged.setdefault("Accept-Encoding", "identity")
        hooks["response"] = [_refuse_encoded]
    return httpx.Client(
        transport=transport,
        mounts=mounts,
        timeout=timeout,
        headers=merged,
        follow_redirects=follow_redirects,
        max_redirects=max_redirects,
        auth=auth,
        trust_env=policy is None,
        event_hooks=hooks,
    )


def _refuse_encoded(response: httpx.Response) -> None:
    coding = response.headers.get("content-encoding", "").strip().lower()
    if coding not in ("", "identity") and response.request.method != "HEAD":  # HEAD has no body
        response.close()
        raise LimitExceeded(f"a compressed answer ({coding[:20]}), which a guarded fetch does not inflate")


# -- what may be published ----------------------------------------------------------------


def public_error(e: BaseException) -> str:
    """A failure in words safe to show anyone: no socket errors, no addresses, no remote text.

    >>> public_error(Refused("127.0.0.1 is loopback"))
    'refused by policy'
    """
    if isinstance(e, Refused):
        return REFUSED
    if isinstance(e, (LimitExceeded, httpx.TimeoutException)):
        return "no answer in time"
    if isinstance(e, httpx.TooManyRedirects):
        return "too many redirects"
    if isinstance(e, httpx.InvalidURL):
        return "not a valid URL"
    if isinstance(e, httpx.UnsupportedProtocol):
        return "not an http(s) URL"
    if isinstance(e, httpx.ConnectError):
        return "cannot connect"
    return "connection failed"
