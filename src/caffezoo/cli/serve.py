"""`caffezoo serve`: the zoo server (Gist-compatible API), and its tokens."""

from __future__ import annotations

import typer

from ._app import app, console

serve_app = typer.Typer(help="Run the caffezoo server, or manage its tokens.", rich_markup_mode=None)
token_app = typer.Typer(help="API tokens of the server's users.", no_args_is_help=True, rich_markup_mode=None)
serve_app.add_typer(token_app, name="token")
app.add_typer(serve_app, name="serve")

DB_OPTION = typer.Option(None, "--database-url", envvar="CAFFEZOO_DATABASE_URL", show_envvar=True,
                         help="SQLAlchemy URL, e.g. postgresql://user@host/db "
                              "[default: SQLite under CAFFEZOO_HOME].")


@serve_app.callback(invoke_without_command=True)
def serve(
    ctx: typer.Context,
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
    port: int = typer.Option(8000, "--port", "-p", help="TCP port."),
    database_url: str = DB_OPTION,
    workers: int = typer.Option(1, "--workers", help="Server processes (each with its own cache)."),
    log_level: str = typer.Option("info", "--log-level",
                                  help="uvicorn's log level: 'warning' drops the per-request access log."),
) -> None:
    """Serve the Gist API: point clients at it with CAFFEZOO_GIST_API=http://HOST:PORT."""
    if ctx.invoked_subcommand is not None:
        return
    from ..server.run import run

    run(host=host, port=port, database_url=database_url, workers=workers, log_level=log_level)


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
