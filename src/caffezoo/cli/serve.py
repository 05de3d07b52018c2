"""`caffezoo serve`: the zoo server (Gist-compatible API), and its tokens."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from enum import Enum
from typing import Any

import typer

from ._app import JSON_OPTION, QUIET_OPTION, flag, group
from ._output import console, print_json

__all__ = [
    "BLOBS_OPTION",
    "DB_OPTION",
    "LogLevel",
    "check_links_command",
    "mirror_command",
    "seed_command",
    "serve",
    "serve_app",
    "token_app",
    "token_create",
]


serve_app = group(
    "serve", "Run the caffezoo server (web wiki, Gist API, mirror), or manage it.", no_args_is_help=False
)
token_app = group("token", "API tokens of the server's users.", parent=serve_app)

DB_OPTION = typer.Option(
    None,
    "--database-url",
    envvar="CAFFEZOO_DATABASE_URL",
    show_envvar=True,
    help="SQLAlchemy URL, e.g. postgresql://user@host/db [default: SQLite under CAFFEZOO_HOME].",
)


class LogLevel(str, Enum):
    """uvicorn's log levels (named here: importing uvicorn would slow every command's start)."""

    critical = "critical"
    error = "error"
    warning = "warning"
    info = "info"
    debug = "debug"
    trace = "trace"


class Role(str, Enum):
    """What one ``caffezoo serve`` process does (replicas may differ)."""

    all = "all"
    web = "web"
    worker = "worker"


BLOBS_OPTION = typer.Option(
    None, "--blobs-dir", help="The server's weights store [default: CAFFEZOO_HOME/server-blobs]."
)
BLOBS_URL_OPTION = typer.Option(
    None,
    "--blobs-url",
    envvar="CAFFEZOO_BLOBS_URL",
    show_envvar=True,
    help="Keep weights in an S3-compatible store, s3://BUCKET/PREFIX (endpoint and keys from "
    "CAFFEZOO_S3_* or AWS_*), instead of --blobs-dir.",
)
ALLOW_PRIVATE_OPTION = flag(
    "--allow-private-urls",
    help="Let server-side fetches (link checks, mirror, wiki import) reach loopback, private and "
    "link-local addresses. Off by default: a URL written by a user must not reach inside your network.",
)
ALLOW_NETWORK_OPTION = typer.Option(
    None,
    "--allow-network",
    metavar="CIDR",
    help="Let server-side fetches reach this network (e.g. 10.20.0.0/16) although it is not public; repeatable.",
)
MAX_BYTES_OPTION = typer.Option(
    4 << 30,
    "--mirror-max-bytes",
    min=1,
    help="Most bytes the mirror takes for one blob whose front matter gives no size (a larger size is refused).",
)


def server_policy(allow_private: bool, networks: list[str] | None):
    from ..server.run import outbound_policy

    return outbound_policy(allow_private, networks or ())


def _mirror_options(allow_private: bool, networks: list[str] | None, max_bytes: int):
    from ..server.mirror import MirrorOptions

    return MirrorOptions(policy=server_policy(allow_private, networks), max_bytes=max_bytes)


# The server's bounds on work and memory (server.work.Limits): one option per field, --cache-bytes
# for cache_bytes and so on, with Limits' default, the least value accepted and the help.
LIMIT_OPTIONS: tuple[tuple[str, float, float, str], ...] = (
    ("cache_bytes", 64 * 1024 * 1024, 0, "Memory for cached pages, gist JSON, files and pictures."),
    (
        "inflight_bytes",
        64 * 1024 * 1024,
        0,
        "Memory for answers over 1 MiB built and not yet sent, together; past this: 503 "
        "(one answer alone is always sent).",
    ),
    (
        "send_deadline",
        60.0,
        0.1,
        "Seconds an answer over 1 MiB may take to reach its client; then the connection is cut.",
    ),
    (
        "body_bytes",
        128 * 1024 * 1024,
        0,
        "Memory for Gist API request bodies being received or parsed, together (each reserves its "
        "stated length, else 30 MiB, before it is read); past this: 503 (one alone always fits).",
    ),
    (
        "body_deadline",
        60.0,
        0.1,
        "Seconds a Gist API request body may take to arrive; then 408 and the connection is closed.",
    ),
    ("render_workers", 2, 1, "Threads rendering pages at once."),
    ("render_queue", 32, 0, "Page renders that may wait for a thread; past this: 503."),
    ("render_deadline", 10.0, 0.1, "Seconds a page render may take, queueing included; then 503."),
    ("draw_workers", 1, 1, "Network drawings (`dot`) at once."),
    ("draw_queue", 8, 0, "Distinct nets that may wait to be drawn; past this: 503."),
    ("draw_timeout", 20.0, 0.1, "Seconds `dot` may run on one net before it is killed."),
    ("draw_max_layers", 1000, 1, "Nets with more layers are not drawn (a note is shown)."),
    ("try_workers", 1, 1, "Uploads run at once."),
    ("try_queue", 4, 0, "Uploads that may wait; past this: 503."),
    ("try_deadline", 30.0, 0.1, "Seconds an upload may take, queueing included; then 503."),
    ("try_max_bytes", 8 * 1024 * 1024, 1024, "Largest upload accepted, in bytes."),
    ("try_max_pixels", 24_000_000, 1, "Largest image accepted, width x height."),
    (
        "try_upload_bytes",
        32 * 1024 * 1024,
        0,
        "Memory for upload bodies being received or run, together (each reserves its stated "
        "length, else --try-max-bytes, before it is read); past this: 503 (one alone always fits).",
    ),
    (
        "try_upload_deadline",
        60.0,
        0.1,
        "Seconds an upload's body may take to arrive; then 408 and the connection is closed.",
    ),
    (
        "try_cache_bytes",
        4 * 1024**3,
        0,
        "Disk for weights copied from a remote blob store and for converted nets, together, "
        "shared by every process on this machine; least recently tried go first.",
    ),
)


def _with_limit_options(command: Callable[..., None]) -> Callable[..., None]:
    """Give ``command``, which takes ``**limits``, one option per row of :data:`LIMIT_OPTIONS`:
    typer builds its options from the signature, so the rows become parameters there."""
    signature = inspect.signature(command)
    named = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    added = [
        inspect.Parameter(
            name,
            inspect.Parameter.KEYWORD_ONLY,
            default=typer.Option(default, "--" + name.replace("_", "-"), min=least, help=help),
            annotation=type(default),
        )
        for name, default, least, help in LIMIT_OPTIONS
    ]
    command.__signature__ = signature.replace(parameters=[*named, *added])  # type: ignore[attr-defined]
    return command


def _refuse_server_options(ctx: typer.Context) -> None:
    """The server's own options are not passed on to a subcommand: written before it
    (``caffezoo serve --database-url URL token create alice``), they were dropped without a
    word, and the token went into the default SQLite database instead of URL's."""
    # By name: typer may bring its own copy of click, whose ParameterSource is another enum.
    given = [
        p.opts[0]
        for p in ctx.command.params
        if p.name and getattr(ctx.get_parameter_source(p.name), "name", None) == "COMMANDLINE"
    ]
    if given:
        from ..errors import UsageError

        raise UsageError(
            f"{', '.join(given)} before `{ctx.invoked_subcommand}` would be ignored: "
            f"write it after, as in `caffezoo serve {ctx.invoked_subcommand} ... {given[0]} ...`"
        )


@serve_app.callback(invoke_without_command=True)
@_with_limit_options
def serve(
    ctx: typer.Context,
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
    port: int = typer.Option(8000, "--port", "-p", min=1, max=65535, help="TCP port."),
    database_url: str = DB_OPTION,
    workers: int = typer.Option(1, "--workers", help="Server processes (each with its own cache)."),
    log_level: LogLevel = typer.Option(
        LogLevel.info,
        "--log-level",
        case_sensitive=False,
        help="uvicorn's log level: 'warning' drops the per-request access log.",
    ),
    seed_bundled: bool = flag(
        "--seed-bundled", help="First create (or refresh) one public gist per bundled model."
    ),
    mirror: bool = flag(
        "--mirror",
        help="Fetch the weights of listed models into the blob store and keep "
        "them served at /blobs/sha1/SHA1.",
    ),
    mirror_every: float = typer.Option(
        60.0, "--mirror-every", min=0.1, help="Seconds between mirror rounds (with --mirror)."
    ),
    blobs_dir: str = BLOBS_OPTION,
    blobs_url: str = BLOBS_URL_OPTION,
    blobs_redirect: bool = flag(
        "--blobs-redirect",
        help="With --blobs-url: answer weight downloads with a 302 to a presigned URL of the "
        "store (valid 5 minutes) instead of streaming them through the server.",
    ),
    blobs_accel: str = typer.Option(
        None,
        "--blobs-accel",
        metavar="PREFIX",
        help="With --blobs-url, behind nginx: answer weight downloads as when streamed, but leave "
        "the body to nginx (X-Accel-Redirect: PREFIX + a presigned URL's path), whose internal "
        "location PREFIX proxies to the store. E.g. /_s3/; see the README.",
    ),
    check_links: bool = typer.Option(
        True, "--check-links/--no-check-links", help="Probe weights URLs in the background."
    ),
    check_every: float = typer.Option(
        600.0, "--check-every", min=0.1, help="Seconds between link-checker rounds (each probes what is due)."
    ),
    link_rate: float = typer.Option(1.0, "--link-rate", min=0.01, help="Link probes per second, at most."),
    recheck_after: float = typer.Option(
        86400.0,
        "--recheck-after",
        min=0.1,
        help="Seconds after a successful probe before a URL is due again.",
    ),
    role: Role = typer.Option(
        Role.all,
        "--role",
        case_sensitive=False,
        help="all: serve and run the background jobs; web: only serve; "
        "worker: only run the jobs (listening for /healthz and /readyz alone).",
    ),
    lease_ttl: float = typer.Option(
        60.0,
        "--lease-ttl",
        min=1.0,
        help="Seconds a background job's claim lasts unless renewed: how soon another "
        "replica takes over the jobs of one that died.",
    ),
    graceful_timeout: float = typer.Option(
        30.0,
        "--graceful-timeout",
        min=0.0,
        help="On SIGTERM, seconds in-flight requests (and the job in progress) get to finish.",
    ),
    base_url: str = typer.Option(
        None,
        "--base-url",
        help="The public URL that links in pages and API answers start with, e.g. "
        "https://zoo.example.org (behind a proxy) [default: http://HOST:PORT]. The request's Host is never used.",
    ),
    allow_private: bool = ALLOW_PRIVATE_OPTION,
    allow_network: list[str] = ALLOW_NETWORK_OPTION,
    mirror_max_bytes: int = MAX_BYTES_OPTION,
    try_it: bool = flag(
        "--try",
        help="Let visitors run a model whose weights this server holds on an uploaded image: classify, "
        "detect, segment (spends the server's CPU).",
    ),
    **limits: Any,
) -> None:
    """Serve the zoo: web wiki at http://HOST:PORT/, and the Gist API for CAFFEZOO_GIST_API=http://HOST:PORT."""
    if ctx.invoked_subcommand is not None:
        _refuse_server_options(ctx)
        return
    from ..server.run import run
    from ..server.work import Limits

    run(
        host=host,
        port=port,
        database_url=database_url,
        workers=workers,
        log_level=log_level.value,
        seed_bundled=seed_bundled,
        blobs_dir=blobs_dir,
        blobs_url=blobs_url,
        blobs_redirect=blobs_redirect,
        blobs_accel=blobs_accel,
        mirror_every=mirror_every if mirror else None,
        check_every=check_every if check_links else None,
        link_rate=link_rate,
        role=role.value,
        recheck_after=recheck_after,
        lease_ttl=lease_ttl,
        graceful_timeout=graceful_timeout,
        base_url=base_url,
        limits=Limits(try_it=try_it, **limits),
        policy=server_policy(allow_private, allow_network),
        mirror_options=_mirror_options(allow_private, allow_network, mirror_max_bytes),
    )


@serve_app.command("check-links")
def check_links_command(
    database_url: str = DB_OPTION,
    all_urls: bool = flag("--all", help="Probe every weights URL, not only those due."),
    rate: float = typer.Option(1.0, "--rate", min=0.01, help="Probes per second, at most."),
    timeout: float = typer.Option(10.0, "--timeout", min=0.1, help="Seconds to wait for each answer."),
    allow_private: bool = ALLOW_PRIVATE_OPTION,
    allow_network: list[str] = ALLOW_NETWORK_OPTION,
    as_json: bool = JSON_OPTION,
    quiet: bool = QUIET_OPTION,
) -> None:
    """Probe the models' weights URLs (HEAD, or a one-byte Range GET) and record what answers.

    URLs are due when never checked, a day after a success, or after a backoff
    that doubles with each failure (1 hour up to 7 days). Exits 1 if any is unreachable.
    """
    from rich.markup import escape

    from ..server.run import check_links

    out = console(stderr=True)

    def show(p) -> None:
        if not (quiet or as_json):
            mark = "[green]ok[/]" if p.reachable else "[red]unreachable[/]"
            detail = f"HTTP {p.status}" if p.status else ""
            # The URL and the error are the front matter's and the host's words: never markup.
            out.print(
                f"{mark} {escape(p.url)} {detail} {escape(p.error or '')}".rstrip(),
                markup=True,
                highlight=False,
            )

    results = check_links(
        database_url,
        all_urls=all_urls,
        rate=rate,
        timeout=timeout,
        on_result=show,
        policy=server_policy(allow_private, allow_network),
    )
    if as_json:
        print_json(
            [
                {"url": p.url, "reachable": p.reachable, "status": p.status, "size": p.size, "error": p.error}
                for p in results
            ]
        )
    elif not quiet:
        bad = sum(not p.reachable for p in results)
        out.print(f"{len(results)} checked, {bad} unreachable" if results else "nothing is due")
    if any(not p.reachable for p in results):
        raise typer.Exit(1)


@serve_app.command("mirror")
def mirror_command(
    database_url: str = DB_OPTION,
    blobs_dir: str = BLOBS_OPTION,
    blobs_url: str = BLOBS_URL_OPTION,
    all_sources: bool = flag("--all", help="Try sources that failed before now, not after their backoff."),
    allow_private: bool = ALLOW_PRIVATE_OPTION,
    allow_network: list[str] = ALLOW_NETWORK_OPTION,
    mirror_max_bytes: int = MAX_BYTES_OPTION,
    as_json: bool = JSON_OPTION,
    quiet: bool = QUIET_OPTION,
) -> None:
    """Fetch, once, every listed model's weights that the server's blob store lacks.

    Each file is checked against its front matter's SHA-1 before it is kept.
    Every model naming a SHA-1 offers its URL as a source; a source that failed
    is tried again after a backoff (1 hour, doubling up to 7 days).
    `caffezoo serve --mirror` does the same in the background. Exits 1 if any fetch failed.
    """
    from rich.markup import escape

    from ..server.run import mirror_sync

    out = console(stderr=True)

    def show(r) -> None:
        if not (quiet or as_json):
            mark = {"mirrored": "[green]mirrored[/]", "refused": "[red]refused[/]"}.get(
                r.status, "[red]failed[/]"
            )
            out.print(
                f"{mark} {r.sha1} from {escape(r.url)}" + (f": {escape(r.error)}" if r.error else ""),
                markup=True,
                highlight=False,
            )

    results = mirror_sync(
        database_url,
        blobs_dir,
        on_result=show,
        options=_mirror_options(allow_private, allow_network, mirror_max_bytes),
        everything=all_sources,
        blobs_url=blobs_url,
    )
    if as_json:
        print_json([{"sha1": r.sha1, "url": r.url, "status": r.status, "error": r.error} for r in results])
    elif not quiet and not results:
        out.print("nothing to fetch: every listed model's weights are here")
    mirrored = {r.sha1 for r in results if r.status == "mirrored"}
    if any(r.sha1 not in mirrored for r in results):  # a blob that no source gave
        raise typer.Exit(1)


@serve_app.command("migrate")
def migrate_command(
    from_database_url: str = typer.Option(
        ..., "--from-database-url", help="The zoo to copy from, e.g. sqlite:////srv/caffezoo/server.db."
    ),
    from_blobs_dir: str = typer.Option(
        ..., "--from-blobs-dir", help="Its weights: a directory (or s3://BUCKET/PREFIX)."
    ),
    database_url: str = typer.Option(
        ..., "--database-url", help="The zoo to copy into, e.g. postgresql://zoo@db.lan/zoo."
    ),
    blobs_url: str = typer.Option(
        ..., "--blobs-url", help="Its weights: s3://BUCKET/PREFIX (created if missing) or a directory."
    ),
    batch: int = typer.Option(500, "--batch", min=1, max=10000, help="Rows per transaction."),
    as_json: bool = JSON_OPTION,
    quiet: bool = QUIET_OPTION,
) -> None:
    """Copy a zoo's database rows and weights into another (SQLite + directory -> PostgreSQL + S3).

    Every weight file is checked against its SHA-1 on the way. Safe to repeat and to
    interrupt: a re-run copies only what is still missing. Exits 1 if any blob failed.
    """
    from ..server.migrate import migrate

    out = console(stderr=True)

    def show(step) -> None:
        if quiet or as_json:
            return
        if step.table == "blob":
            if step.copied:
                out.print(f"copied blob {step.detail}", highlight=False)
            elif "failed" in step.detail:
                out.print(f"[red]failed[/] blob {escape(step.detail)}", highlight=False)
        elif step.copied:
            out.print(f"{step.table}: {step.copied} rows copied", highlight=False)

    from rich.markup import escape

    report = migrate(from_database_url, from_blobs_dir, database_url, blobs_url, batch=batch, on_step=show)
    if as_json:
        print_json(
            {
                "rows": {t: {"copied": c, "present": p} for t, (c, p) in report.rows.items()},
                "blobs": {"copied": report.blobs_copied, "present": report.blobs_present},
                "failed": report.blobs_failed,
            }
        )
    elif not quiet:
        rows = sum(c for c, _ in report.rows.values())
        kept = sum(p for _, p in report.rows.values())
        out.print(
            f"{rows} rows copied ({kept} already there); {report.blobs_copied} blobs copied "
            f"({report.blobs_present} already there), {len(report.blobs_failed)} failed",
            highlight=False,
        )
    if not report.ok:
        raise typer.Exit(1)


@serve_app.command("seed")
def seed_command(
    database_url: str = DB_OPTION, as_json: bool = JSON_OPTION, quiet: bool = QUIET_OPTION
) -> None:
    """Create or refresh one public gist per bundled model (owner `bvlc`); safe to repeat."""
    from ..server.run import seed

    results = seed(database_url)
    if as_json:
        print_json(results)
    elif not quiet:
        for r in results:
            typer.echo(f"{r.status:9} {r.name} ({r.gist_id})")


@token_app.command("create")
def token_create(
    user: str = typer.Argument(..., help="The user (created if new): letters, digits, hyphens."),
    database_url: str = DB_OPTION,
) -> None:
    """Create an API token for USER and print it, once: only its hash is stored."""
    from ..server.run import create_token

    token = create_token(user, database_url)
    console(stderr=True).print(f"token for {user} (shown once; keep it secret):")
    typer.echo(token)
