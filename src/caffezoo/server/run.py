"""What the ``caffezoo serve`` commands call: run uvicorn, make tokens."""

from __future__ import annotations

import errno
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from ..config import settings
from ..errors import UsageError
from ..gist.rules import Invalid, check_login
from .storage import Storage
from .work import Limits

__all__ = [
    "check_links",
    "create_token",
    "default_base_url",
    "mirror_sync",
    "open_storage",
    "outbound_policy",
    "run",
    "seed",
    "tune_server_process",
]


def _url(url: str | None) -> str:
    return url or settings().server_database_url


@contextmanager
def open_storage(database_url: str | None = None) -> Iterator[Storage]:
    """The server's storage for a command run beside (or instead of) the server."""
    store = Storage(_url(database_url))
    try:
        yield store
    finally:
        store.close()


def create_token(user: str, url: str | None = None) -> str:
    """A new token for ``user`` (created if new) in the server's database."""
    try:
        check_login(user)  # before the database is opened, or made
    except Invalid as e:
        raise UsageError(str(e)) from None
    with open_storage(url) as store:
        return store.create_token(user)


def _blobs_dir(blobs_dir: str | os.PathLike[str] | None) -> Path:
    return Path(blobs_dir) if blobs_dir else settings().server_blobs_dir


def blobs_location(blobs_dir: str | os.PathLike[str] | None = None, blobs_url: str | None = None) -> str:
    """Where the server's weights are: ``--blobs-url`` or ``--blobs-dir`` (not both), else the default dir."""
    if blobs_dir and blobs_url:
        raise UsageError("give --blobs-dir or --blobs-url, not both")
    return blobs_url or str(_blobs_dir(blobs_dir))


def open_blobs(location: str, *, check: bool = True):
    """The blob store at ``location``; an S3 one is asked once now, so a wrong bucket or key fails here."""
    from .blobstore import BlobStoreError, S3Store, open_store

    store = open_store(location)
    if check and isinstance(store, S3Store):
        try:
            store.check()
        except BlobStoreError as e:
            raise UsageError(f"--blobs-url {location}: {e}") from None
    return store


def seed(database_url: str | None = None) -> list:
    """Create or refresh the bundled models' gists (idempotent)."""
    from .seed import seed_bundled

    with open_storage(database_url) as store:
        return seed_bundled(store)


def outbound_policy(allow_private: bool = False, networks: Sequence[str] = ()):
    """The outbound-URL policy of ``--allow-private-urls`` and ``--allow-network CIDR``."""
    from .._http import Policy

    try:
        return Policy(allow_private=allow_private, networks=tuple(networks))
    except ValueError as e:
        raise UsageError(str(e)) from None


def check_links(
    database_url: str | None = None,
    *,
    all_urls: bool = False,
    rate: float = 1.0,
    timeout: float = 10.0,
    on_result=None,
    policy=None,
) -> list:
    """Probe the weights URLs that are due (or all of them); record and return what was seen."""
    from .jobs import Leases
    from .links import check_links as check

    with open_storage(database_url) as store:
        leases = Leases(store)  # a URL a running server is probing right now is left to it
        leases.start_heartbeat()
        try:
            return check(
                store,
                all_urls=all_urls,
                rate=rate,
                timeout=timeout,
                on_result=on_result,
                leases=leases,
                policy=policy,
            )
        finally:
            leases.stop()


def mirror_sync(
    database_url: str | None = None,
    blobs_dir: str | os.PathLike[str] | None = None,
    on_result=None,
    *,
    blobs_url: str | None = None,
    options=None,
    everything: bool = False,
) -> list:
    """One mirror round: fetch the listed models' weights that the server's store lacks."""
    from .jobs import Leases
    from .mirror import Mirror

    blobs = open_blobs(blobs_location(blobs_dir, blobs_url))
    try:
        with open_storage(database_url) as store:
            leases = Leases(store)  # a blob a running server is fetching right now is left to it
            leases.start_heartbeat()  # a fetch may outlast one lease
            try:
                return Mirror(blobs, options).sync(
                    store, on_result=on_result, everything=everything, leases=leases
                )
            finally:
                leases.stop()
    finally:
        blobs.close()


class BackgroundJobs:
    """The link checker and the mirror, each a daemon thread, claiming their jobs through
    the database (:mod:`.jobs`) so that replicas do each once."""

    def __init__(self, store: Storage, leases, threads: list):
        self.store, self.leases, self.threads = store, leases, threads

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the loops, let a job in progress finish (up to ``timeout`` s; its result is
        recorded), then release every lease still held so another replica takes over at once."""
        import time

        for t in self.threads:
            t.stop()
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
        self.leases.stop()
        self.store.close()


def start_background(
    url: str,
    *,
    blobs_dir: Path | str,
    mirror_every: float | None,
    check_every: float | None,
    link_rate: float,
    recheck_after: float | None = None,
    lease_ttl: float | None = None,
    policy=None,
    mirror_options=None,
) -> BackgroundJobs:
    """The server's helpers: the link checker and the mirror, each in a daemon thread."""
    from datetime import timedelta

    from .jobs import DEFAULT_TTL, Leases
    from .links import OK_EVERY, Background
    from .links import check_links as check
    from .mirror import Mirror

    store = Storage(url)
    leases = Leases(store, ttl=lease_ttl or DEFAULT_TTL)
    ok_every = timedelta(seconds=recheck_after) if recheck_after else OK_EVERY
    threads = []
    if check_every:
        threads.append(
            Background(
                "link-checker",
                lambda stop: check(
                    store, rate=link_rate, stop=stop, ok_every=ok_every, leases=leases, policy=policy
                ),
                check_every,
            )
        )
    if mirror_every:
        mirror = Mirror(open_blobs(str(blobs_dir)), mirror_options)
        threads.append(
            Background(
                "mirror",
                lambda stop: mirror.sync(store, stop=stop, leases=leases, retry_after=mirror_every),
                mirror_every,
            )
        )
    if threads:
        leases.start_heartbeat()
    for t in threads:
        t.start()
    return BackgroundJobs(store, leases, threads)


def _check_free(host: str, port: int) -> None:
    """Refuse a host:port that cannot be bound, with a message that says what to do."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise UsageError(f"--host {host!r}: cannot resolve it ({e.strerror})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            sock.bind(address)
        except OSError as e:
            hint = "choose another --port" if e.errno == errno.EADDRINUSE else "check --host and --port"
            raise UsageError(f"cannot listen on {host}:{port}: {e.strerror}; {hint}") from None


ROLES = ("all", "web", "worker")


def _exit_cleanly(signum, frame) -> None:
    raise SystemExit(0)  # unwinds through run()'s finally: jobs stop, leases are released


def tune_server_process() -> None:
    """What a serving process sets for itself (never on import: only :func:`run`, and
    :func:`~.app.app_from_env` in each ``--workers`` process, which starts afresh).

    Render threads are CPU-bound Python: by default the event loop may wait 5 ms for the
    GIL at each of a request's many I/O points; 1 ms keeps cheap requests quick meanwhile.
    And big transient answers go back to the OS (:func:`_return_big_frees_to_the_os`).
    """
    sys.setswitchinterval(0.001)
    _return_big_frees_to_the_os()


def _return_big_frees_to_the_os() -> None:
    """Keep glibc's mmap threshold at its initial 128 KiB: by default it rises (up to 32 MB)
    after each big free, after which a big answer's transient buffers (a 100 MB gist's JSON
    is built from 1 MB pieces) stay in the threads' heaps for good. Measured with
    benchmarks/hardening.py: RSS +240 MB after a few such answers, +48 MB with this.
    Setting it also fixes the trim threshold, set here as well."""
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD, its initial value
        # M_TRIM_THRESHOLD: keep up to 4 MiB free at the top of each heap (default 128 KiB). A
        # streamed blob allocates and frees ~1 MiB of 120 KiB chunks per step; trimmed each
        # time, every chunk was fresh pages to fault in and zero: with this, 25-30% less CPU
        # per streamed byte (benchmarks/cluster.py --only blobs; RSS: benchmarks/hardening.py).
        libc.mallopt(-1, 4 << 20)
    except (OSError, AttributeError):  # not glibc: its allocator has its own policy
        pass


def default_base_url(host: str, port: int) -> str | None:
    """``http://HOST:PORT`` for the address served; None for a wildcard address (then each
    connection's own local address is used: still never the request's ``Host``)."""
    if host in ("", "0.0.0.0", "::", "[::]"):
        return None
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def run(
    host: str = "127.0.0.1",
    port: int = 8000,
    database_url: str | None = None,
    workers: int = 1,
    log_level: str = "info",
    *,
    seed_bundled: bool = False,
    blobs_dir: str | os.PathLike[str] | None = None,
    mirror_every: float | None = None,
    check_every: float | None = 600.0,
    link_rate: float = 1.0,
    role: str = "all",
    recheck_after: float | None = None,
    lease_ttl: float | None = None,
    graceful_timeout: float = 30.0,
    blobs_url: str | None = None,
    blobs_redirect: bool = False,
    blobs_accel: str | None = None,
    base_url: str | None = None,
    limits: Limits | None = None,
    policy=None,
    mirror_options=None,
) -> None:
    """Serve until interrupted, with uvicorn's fastest loop and parser when installed.

    ``blobs_url`` (``s3://BUCKET/PREFIX``) keeps the weights in an S3-compatible store
    instead of ``blobs_dir``; ``blobs_redirect`` answers blob GETs with presigned URLs;
    ``blobs_accel`` (``/_s3/``) answers them with an ``X-Accel-Redirect`` for nginx to follow;
    ``seed_bundled`` first creates or refreshes the bundled models' gists;
    ``check_every`` (seconds; None: never) runs the link checker over the URLs
    that are due; ``mirror_every`` (None: no mirroring) fetches missing weights.
    ``role``: ``all`` serves and runs those jobs, ``web`` only serves, ``worker`` only
    runs the jobs (listening for ``/healthz`` and ``/readyz`` alone). On SIGTERM or
    SIGINT, no new connection is taken, requests in flight get ``graceful_timeout``
    seconds to finish, the job in progress finishes and held leases are released.
    ``base_url`` is the public URL links start with (default ``http://HOST:PORT``);
    ``limits`` bounds render and drawing work and the caches' bytes.
    ``policy`` (a :class:`caffezoo._http.Policy`) says where both may fetch from
    (default: public addresses only); ``mirror_options`` bound the mirror's rounds.
    """
    import json

    import uvicorn

    from .._json import jsonable
    from .app import check_base_url, create_app
    from .logs import log_config
    from .protocols import connection_options

    if role not in ROLES:
        raise UsageError(f"--role {role!r}: expected one of {', '.join(ROLES)}")

    try:
        base_url = check_base_url(base_url) if base_url else default_base_url(host, port)
    except ValueError as e:
        raise UsageError(f"--base-url: {e}") from None
    limits = limits or Limits()
    tune_server_process()
    url = _url(database_url)
    blobs = blobs_location(blobs_dir, blobs_url)
    if blobs_redirect and not blobs.startswith("s3://"):
        raise UsageError(
            "--blobs-redirect needs --blobs-url s3://...: a local directory has no URLs to hand out"
        )
    if blobs_accel is not None:
        from ..config import s3_settings
        from .blobs import accel_prefix

        if not blobs.startswith("s3://"):
            raise UsageError("--blobs-accel needs --blobs-url s3://...: a local directory is served directly")
        if blobs_redirect:
            raise UsageError("--blobs-accel and --blobs-redirect: choose one way to hand out weights")
        if not s3_settings().endpoint:
            # Without one, boto3 names the bucket in the host of its URLs (AWS's virtual hosts):
            # the redirect nginx gets carries the path only, so every download would be a 502.
            raise UsageError(
                "--blobs-accel needs the store's address in CAFFEZOO_S3_ENDPOINT (or AWS_ENDPOINT_URL): "
                "nginx's internal location proxies to it"
            )
        try:
            blobs_accel = accel_prefix(blobs_accel)
        except ValueError as e:
            raise UsageError(f"--blobs-accel: {e}") from None
    _check_free(host, port)  # before seeding or threads: a taken port should fail at once, clearly
    open_blobs(blobs).close()  # a wrong bucket or credentials fail now, not on the first download
    if seed_bundled:
        seed(url)
    options = dict(
        host=host,
        port=port,
        log_level=log_level,
        proxy_headers=False,
        log_config=log_config(log_level),
        access_log=False,  # caffezoo's own request log has the request id (.logs)
        timeout_graceful_shutdown=graceful_timeout,
    )
    try:
        import uvloop  # noqa: F401

        options["loop"] = "uvloop"
    except ImportError:
        pass
    options.update(connection_options())  # httptools when installed; header and keep-alive deadlines
    # uvicorn ends a SIGTERM'd server by raising the signal again once it has drained: with
    # the default action that would kill the process before the jobs below release their leases.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    jobs = None
    if role != "web":
        jobs = start_background(
            url,
            blobs_dir=blobs,
            mirror_every=mirror_every,
            check_every=check_every,
            link_rate=link_rate,
            recheck_after=recheck_after,
            lease_ttl=lease_ttl,
            policy=policy,
            mirror_options=mirror_options,
        )
    try:
        if role == "worker":
            from .health import health_app

            worker_blobs = open_blobs(blobs)
            try:
                uvicorn.run(health_app(jobs.store, worker_blobs), **options)
            finally:
                worker_blobs.close()
        elif workers > 1:
            os.environ["CAFFEZOO_DATABASE_URL"] = url  # the workers build their app from the environment
            os.environ["CAFFEZOO_SERVER_BLOBS"] = blobs
            os.environ["CAFFEZOO_SERVER_BLOBS_REDIRECT"] = "1" if blobs_redirect else ""
            os.environ["CAFFEZOO_SERVER_BLOBS_ACCEL"] = blobs_accel or ""
            os.environ["CAFFEZOO_BASE_URL"] = base_url or ""
            os.environ["CAFFEZOO_SERVER_LIMITS"] = json.dumps(jsonable(limits))
            Storage(url).close()  # create the tables once, before the workers race to
            uvicorn.run("caffezoo.server.app:app_from_env", factory=True, workers=workers, **options)
        else:
            app = create_app(
                url,
                blobs_url=blobs,
                blobs_redirect=blobs_redirect,
                blobs_accel=blobs_accel,
                base_url=base_url,
                limits=limits,
            )
            uvicorn.run(app, **options)
    finally:
        if jobs is not None:
            jobs.stop(graceful_timeout)
