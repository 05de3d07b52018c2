"""The Typer application and the option helpers every command shares (output: :mod:`._output`).

Command modules import :data:`app` and register their verbs on it. They import
the library lazily, inside each command, so that ``caffezoo --help`` loads
neither the server nor the runtime stacks.
"""

from __future__ import annotations

from typing import Any

import typer

from ._output import state

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
