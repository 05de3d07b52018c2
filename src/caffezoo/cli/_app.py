"""The Typer application and the output helpers every command shares.

Command modules import :data:`app` and register their verbs on it. They import
the library lazily, inside each command, so that ``caffezoo --help`` loads
neither the server nor the runtime stacks.
"""

from __future__ import annotations

import re
import sys
from typing import Any

import typer

app = typer.Typer(
    name="caffezoo",
    help="The Caffe Model Zoo: package, publish, find, fetch and run Caffe models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain click help: rich's help renderer imports markdown-it and friends,
    # which would double the start-up time of every `--help`.
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

state: dict[str, bool] = {"debug": False}


def group(name: str, help: str, *, parent: typer.Typer = app, **options: Any) -> typer.Typer:
    """Verbs under one word, ``caffezoo NAME VERB``, registered on ``parent``; with no verb,
    the group's help (unless ``options`` say otherwise). Plain click help, as the main app's."""
    sub = typer.Typer(help=help, rich_markup_mode=None, **{"no_args_is_help": True, **options})
    parent.add_typer(sub, name=name)
    return sub


def flag(*names: str, help: str) -> Any:
    """A switch, off unless given: ``verbose: bool = flag("--verbose", "-v", help="...")``."""
    return typer.Option(False, *names, help=help)


JSON_OPTION = flag("--json", help="Print machine-readable JSON on stdout.")
QUIET_OPTION = flag("--quiet", "-q", help="Print nothing but errors.")


def version_callback(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"caffezoo {version('caffezoo')}")
        raise typer.Exit()


@app.callback()
def _main(
    debug: bool = flag("--debug", help="Show the full traceback when a command fails."),
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
    """A rich Console (imported on first use: printing help does not need it).

    On a terminal, tables fit its width; piped or redirected, rows are printed
    whole (rich would otherwise squeeze them into 80 columns and cut names and
    shapes with an ellipsis), so what a script or a file gets is complete.
    """
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else 100_000
    return Console(stderr=stderr, highlight=False, soft_wrap=True, width=width)


def print_json(data: Any) -> None:
    """Dump ``data`` as indented JSON on stdout, through :func:`caffezoo.jsonable` like every result."""
    import json  # here: `caffezoo --help` and table output do not need it

    from .._json import jsonable

    text = json.dumps(jsonable(data), indent=2, ensure_ascii=False)
    # A file name that is not UTF-8 holds lone surrogates (os.fsdecode): escaped, the document stays
    # valid UTF-8 and json.loads then os.fsencode give the name's bytes back.
    sys.stdout.write(_LONE_SURROGATE.sub(lambda m: f"\\u{ord(m[0]):04x}", text) + "\n")


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _styled(text: str, **style) -> str:
    # click's styling is already loaded with typer; rich would cost start-up time.
    return typer.style(text, **style) if sys.stderr.isatty() else text


def error_line(message: str) -> None:
    """One red ``error:`` line per problem on stderr (plain when stderr is not a terminal)."""
    for line in str(message).splitlines() or [""]:
        typer.echo(f"{_styled('error:', fg='red', bold=True)} {line}", err=True)


def warning_line(message: str) -> None:
    typer.echo(f"{_styled('warning:', fg='yellow')} {message}", err=True)


def human_size(n: float) -> str:
    """``233.0 MiB``: a byte count as people read it."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def parse_input_shapes(values: list[str] | None) -> dict[str, list[int]] | None:
    """``--input data=1,3,224,224`` options (``x`` works as a separator too) as a dict."""
    from ..errors import UsageError

    shapes = {}
    for value in values or []:
        name, sep, dims = value.partition("=")
        try:
            shapes[name] = [int(d) for d in dims.replace("x", ",").split(",")]
        except ValueError:
            sep = ""
        if not sep or not name:
            raise UsageError(f"--input {value!r}: expected NAME=DIMS, e.g. data=1,3,224,224")
    return shapes or None
