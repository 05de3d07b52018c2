"""The Typer application and the output helpers every command shares.

Command modules import :data:`app` and register their verbs on it. They import
the library lazily, inside each command, so that ``caffezoo --help`` loads
neither the server nor the runtime stacks.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import typer

app = typer.Typer(
    name="caffezoo",
    help="The Caffe Model Zoo: package, publish, find, fetch and run Caffe models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

state: dict[str, bool] = {"debug": False}

JSON_OPTION = typer.Option(False, "--json", help="Print machine-readable JSON on stdout.")
QUIET_OPTION = typer.Option(False, "--quiet", "-q", help="Print nothing but errors.")


def version_callback(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"caffezoo {version('caffezoo')}")
        raise typer.Exit()


@app.callback()
def _main(
    debug: bool = typer.Option(False, "--debug", help="Show the full traceback when a command fails."),
    version: bool = typer.Option(
        False, "--version", callback=version_callback, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """The Caffe Model Zoo: package, publish, find, fetch and run Caffe models.

    MODEL arguments accept a directory path or a bundled model name (see `caffezoo list`).
    Configuration comes from the environment: CAFFEZOO_HOME, CAFFEZOO_OFFLINE,
    CAFFEZOO_GIST_API, CAFFEZOO_TOKEN / GITHUB_TOKEN, CAFFEZOO_MIRRORS.
    """
    state["debug"] = debug


def console(stderr: bool = False):
    """A rich Console (imported on first use: printing help does not need it)."""
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def print_json(data: Any) -> None:
    """Dump ``data`` as indented JSON on stdout."""
    sys.stdout.write(json.dumps(data, indent=2, default=str, ensure_ascii=False) + "\n")


def error_line(message: str) -> None:
    """One red line per problem on stderr (plain text when stderr is not a terminal)."""
    from rich.markup import escape

    err = console(stderr=True)
    for line in str(message).splitlines() or [""]:
        err.print(f"[bold red]error:[/] {escape(line)}")


def warning_line(message: str) -> None:
    from rich.markup import escape

    console(stderr=True).print(f"[yellow]warning:[/] {escape(message)}")
