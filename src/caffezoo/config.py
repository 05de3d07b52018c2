"""Configuration, read from the environment in this one place.

>>> s = settings()
>>> s.blobs_dir.name
'blobs'

Variables:

``CAFFEZOO_HOME``
    Root for the cache and data. Default: the platform's user cache and data
    directories (``~/.cache/caffezoo`` and ``~/.local/share/caffezoo`` on Linux).
``CAFFEZOO_OFFLINE``
    ``1``/``true``/``yes``: never touch the network; use what is cached.
``CAFFEZOO_GIST_API``
    Base URL of the gist API (default ``https://api.github.com``); a caffezoo
    server or GitHub Enterprise (``https://HOST/api/v3``) work too.
``CAFFEZOO_TOKEN``, ``GITHUB_TOKEN``
    API token, in that order of preference; then the file ``~/.gist``.
``CAFFEZOO_MIRRORS``
    Whitespace- or comma-separated base URLs serving ``<base>/blobs/sha1/<sha1>``.
``CAFFEZOO_DATABASE_URL``
    The zoo server's SQLAlchemy URL (default: SQLite under the data directory).
``CAFFEZOO_TIMEOUT``
    Seconds a download may wait for a connection or for the next bytes (default 30, at most 86400).
``CAFFEZOO_RETRIES``
    Attempts per download source without progress before it is given up (default 5).
``CAFFEZOO_S3_ENDPOINT`` (else ``AWS_ENDPOINT_URL_S3``, ``AWS_ENDPOINT_URL``), ``CAFFEZOO_S3_REGION``
(else ``AWS_REGION``, ``AWS_DEFAULT_REGION``), ``CAFFEZOO_S3_ACCESS_KEY_ID`` and
``CAFFEZOO_S3_SECRET_ACCESS_KEY`` (else the AWS SDK's own chain: ``AWS_ACCESS_KEY_ID`` ...)
    The S3-compatible object store behind ``caffezoo serve --blobs-url s3://BUCKET/PREFIX``.
``CAFFEZOO_S3_PUBLIC_ENDPOINT``
    The store's address as clients see it, for ``--blobs-redirect`` (default: the endpoint).
``CAFFEZOO_S3_PART_SIZE``
    Bytes per multipart upload part (default 16 MiB, at least 5 MiB); smaller blobs go up in one PUT.

Settings are parsed once per environment, not at import: :func:`settings`
returns the same :class:`Settings` while these variables (and the ``~/.gist``
file's size and time) stay as they are, and a new one as soon as one changes,
so a test or a long-running server sees the environment as it is, and a
command that asks for settings in every step parses them once.
"""

from __future__ import annotations

import math
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError

__all__ = ["DEFAULT_GIST_API", "Settings", "settings"]


DEFAULT_GIST_API = "https://api.github.com"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


@dataclass(frozen=True)
class Settings:
    """A snapshot of caffezoo's configuration."""

    home: Path | None
    cache_dir: Path
    data_dir: Path
    offline: bool = False
    gist_api: str = DEFAULT_GIST_API
    mirrors: tuple[str, ...] = ()
    database_url: str | None = None
    timeout: float = 30.0
    retries: int = 5
    _token: str | None = field(default=None, repr=False)

    @property
    def token(self) -> str | None:
        """The API token, if any. Kept out of ``repr`` so it never lands in a log."""
        return self._token

    @property
    def blobs_dir(self) -> Path:
        """Where downloaded weights live, addressed by SHA-1."""
        return self.cache_dir / "blobs"

    @property
    def server_database_url(self) -> str:
        """The zoo server's database: ``CAFFEZOO_DATABASE_URL``, else SQLite in the data directory."""
        return self.database_url or f"sqlite:///{self.data_dir / 'server.db'}"

    @property
    def server_blobs_dir(self) -> Path:
        """The zoo server's weights store (its mirror), addressed by SHA-1."""
        return self.data_dir / "server-blobs"

    @property
    def models_dir(self) -> Path:
        """Writable home of bundled models' weights (the package itself may be read-only)."""
        return self.data_dir / "models"


def _flag(name: str) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ConfigError(f"{name}={os.environ[name]!r}: expected 1/0, true/false, yes/no or on/off")


def _token() -> str | None:
    for name in ("CAFFEZOO_TOKEN", "GITHUB_TOKEN"):
        value = os.environ.get(name, "").strip()
        if value:
            return value
    # The Ruby `gist` tool that Caffe's upload script used keeps its token here.
    gist_file = Path.home() / ".gist"
    try:
        value = gist_file.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return value or None


def _parses(name: str, url: str) -> None:
    """A ConfigError unless the host and port of ``url`` parse (credentials are scoped by them)."""
    from urllib.parse import urlsplit

    try:
        urlsplit(url).port  # noqa: B018  (parsing the port is the check)
    except ValueError as e:
        raise ConfigError(f"{name}: {url!r} is not a valid URL: {e}") from None


def _mirrors() -> tuple[str, ...]:
    raw = os.environ.get("CAFFEZOO_MIRRORS", "")
    urls = tuple(u.rstrip("/") for u in re.split(r"[\s,]+", raw) if u)
    for url in urls:
        if not re.match(r"^(https?|file)://", url):
            raise ConfigError(f"CAFFEZOO_MIRRORS: {url!r} is not an http(s):// or file:// URL")
        _parses("CAFFEZOO_MIRRORS", url)
    return urls


def _number(
    name: str, default: float, kind: type[int] | type[float], minimum: float, maximum: float = math.inf
) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        value = None
    if value is None or not minimum <= value <= maximum:  # refuses NaN too: it compares false
        bounds = f">= {minimum}" if maximum == math.inf else f"from {minimum} to {maximum}"
        raise ConfigError(f"{name}={raw!r}: expected {'an integer' if kind is int else 'a number'} {bounds}")
    return value


@dataclass(frozen=True)
class S3Settings:
    """Where the server's S3-compatible object store is, and how to sign in (see the module doc)."""

    endpoint: str | None = None
    public_endpoint: str | None = None
    region: str = "us-east-1"
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    part_size: int = 16 << 20


def s3_settings() -> S3Settings:
    """The ``CAFFEZOO_S3_*`` variables, falling back on the standard AWS ones."""

    def named(*names: str) -> tuple[str, str | None]:
        """The first of ``names`` set (to more than spaces), and its value."""
        values = ((n, os.environ.get(n, "").strip()) for n in names)
        return next(((n, v) for n, v in values if v), (names[0], None))

    def first(*names: str) -> str | None:
        return named(*names)[1]

    # A bad value is named by the variable it came from: the user may never have set ours.
    endpoint_name, endpoint = named("CAFFEZOO_S3_ENDPOINT", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
    public = first("CAFFEZOO_S3_PUBLIC_ENDPOINT")
    for name, url in ((endpoint_name, endpoint), ("CAFFEZOO_S3_PUBLIC_ENDPOINT", public)):
        if url is not None:
            if not re.match(r"^https?://", url):
                raise ConfigError(f"{name}: {url!r} is not an http:// or https:// URL")
            _parses(name, url)
    return S3Settings(
        endpoint=endpoint.rstrip("/") if endpoint else None,
        public_endpoint=public.rstrip("/") if public else None,
        region=first("CAFFEZOO_S3_REGION", "AWS_REGION", "AWS_DEFAULT_REGION") or "us-east-1",
        access_key_id=first("CAFFEZOO_S3_ACCESS_KEY_ID"),
        secret_access_key=first("CAFFEZOO_S3_SECRET_ACCESS_KEY"),
        part_size=int(_number("CAFFEZOO_S3_PART_SIZE", 16 << 20, int, 5 << 20, 5 << 30)),
    )


# What a Settings depends on: these variables (platformdirs reads the XDG ones) and ~/.gist.
_VARIABLES = (
    "CAFFEZOO_HOME",
    "CAFFEZOO_OFFLINE",
    "CAFFEZOO_GIST_API",
    "CAFFEZOO_TOKEN",
    "GITHUB_TOKEN",
    "CAFFEZOO_MIRRORS",
    "CAFFEZOO_DATABASE_URL",
    "CAFFEZOO_TIMEOUT",
    "CAFFEZOO_RETRIES",
    "HOME",
    "XDG_CACHE_HOME",
    "XDG_DATA_HOME",
)
_last: tuple[tuple, Settings] | None = None
_lock = threading.Lock()


def _environment() -> tuple:
    try:
        st = (Path.home() / ".gist").stat()
        gist_file = (st.st_mtime_ns, st.st_size, st.st_ino)
    except (OSError, RuntimeError):  # RuntimeError: no home directory to be found
        gist_file = None
    return (*(os.environ.get(name) for name in _VARIABLES), gist_file)


def settings() -> Settings:
    """The current :class:`Settings`: parsed again only when the environment changed."""
    global _last
    key = _environment()
    last = _last
    if last is not None and last[0] == key:
        return last[1]
    with _lock:
        last = _last  # another thread may have read it while this one waited for the lock
        if last is not None and last[0] == key:
            return last[1]
        s = _read()  # a bad value raises here, and again on the next call: nothing bad is kept
        _last = (key, s)
    return s


def _read() -> Settings:
    """Read the environment and return the current :class:`Settings`."""
    home_raw = os.environ.get("CAFFEZOO_HOME", "").strip()
    if home_raw:
        home = Path(home_raw).expanduser()
        cache_dir, data_dir = home / "cache", home
    else:
        # Imported here: platformdirs costs start-up time that --help does not need.
        import platformdirs

        home = None
        cache_dir = Path(platformdirs.user_cache_dir("caffezoo"))
        data_dir = Path(platformdirs.user_data_dir("caffezoo"))
    gist_api = os.environ.get("CAFFEZOO_GIST_API", "").strip().rstrip("/") or DEFAULT_GIST_API
    if not re.match(r"^https?://", gist_api):
        raise ConfigError(f"CAFFEZOO_GIST_API={gist_api!r}: expected an http:// or https:// URL")
    _parses("CAFFEZOO_GIST_API", gist_api)
    return Settings(
        home=home,
        cache_dir=cache_dir,
        data_dir=data_dir,
        offline=_flag("CAFFEZOO_OFFLINE"),
        gist_api=gist_api,
        mirrors=_mirrors(),
        database_url=os.environ.get("CAFFEZOO_DATABASE_URL", "").strip() or None,
        # At most a day: the socket layer overflows on huge timeouts (and on inf).
        timeout=_number("CAFFEZOO_TIMEOUT", 30.0, float, 0.1, 86400),
        retries=int(_number("CAFFEZOO_RETRIES", 5, int, 0)),
        _token=_token(),
    )
