"""Commands about the zoo's model directories: list, show, new, validate."""

from __future__ import annotations

from pathlib import Path

import typer

from ._app import JSON_OPTION, QUIET_OPTION, app, flag
from ._output import console, human_size, print_json

__all__ = ["list_cmd", "model_summary", "new", "show", "validate"]


def model_summary(m) -> dict:
    """The JSON shape of a model in `list` and `show`."""
    fm = m.front_matter
    return {
        "name": m.name,
        "title": fm.title,
        "path": str(m.path),
        "bundled": m.bundled,
        "license": fm.license,
        "caffemodel": fm.caffemodel,
        "weights_path": str(m.weights_path) if m.weights_path else None,
        "weights_present": m.has_weights,
    }


@app.command("list")
def list_cmd(json: bool = JSON_OPTION) -> None:
    """List the models the zoo has: name, title, license, weights downloaded?"""
    from ..zoo import list_models

    models = list_models()
    if json:
        print_json([model_summary(m) for m in models])
        return
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="caffezoo models", title_justify="left")
    for col in ("name", "title", "license", "weights"):
        table.add_column(col)
    for m in models:
        fm = m.front_matter
        table.add_row(
            escape(m.name),
            escape(fm.title),
            escape(fm.license or "-"),
            "[green]yes[/]" if m.has_weights else "no",
        )
    console().print(table)


@app.command()
def show(
    model: str = typer.Argument(..., help="A model directory or a bundled model name."),
    json: bool = JSON_OPTION,
) -> None:
    """Show one model in full: front matter, files, license, where its weights go."""
    from ..zoo import resolve

    m = resolve(model)
    fm = m.front_matter
    if json:
        out = model_summary(m)
        out["front_matter"] = m.readme.data
        out["files"] = [{"name": f.name, "kind": f.kind, "size": f.size} for f in m.files]
        print_json(out)
        return
    from rich.markup import escape
    from rich.table import Table

    # Values come from the readme: escaped, so `[/x]` in a name is text, not rich markup.
    out = console()
    out.print(f"[bold]{escape(fm.title or m.name)}[/]  ({escape(str(m.path))})")
    table = Table("key", "value", title="front matter", title_justify="left")
    for key, value in m.readme.data.items():
        table.add_row(escape(key), escape(str(value)))
    out.print(table)
    files = Table("file", "kind", "size", title="files", title_justify="left")
    for f in m.files:
        files.add_row(escape(f.name), f.kind, "" if f.kind == "directory" else human_size(f.size))
    out.print(files)
    out.print(f"license: {escape(fm.license) if fm.license else '[yellow]not stated[/]'}")
    if m.weights_path:
        state = "[green]present[/]" if m.has_weights else "not downloaded"
        out.print(f"weights: {escape(str(m.weights_path))} ({state})")
    else:
        out.print("weights: [yellow]no caffemodel key in the front matter[/]")


@app.command()
def new(
    directory: Path = typer.Argument(..., help="The directory to create (must not exist, or be empty)."),
    name: str = typer.Option(..., "--name", "-n", help="The model's title (front-matter `name`)."),
    license: str = typer.Option("unspecified", "--license", help="License of the weights."),
    caffemodel: str = typer.Option(None, "--caffemodel", help="Weights file name [default: DIR.caffemodel]."),
    url: str = typer.Option(None, "--url", help="Where the weights can be downloaded."),
    sha1: str = typer.Option(None, "--sha1", help="SHA-1 of the weights file."),
    quiet: bool = QUIET_OPTION,
) -> None:
    """Scaffold a model directory: a readme.md with front matter and the sections to fill in."""
    from ..scaffold import new_model

    path = new_model(
        directory, name=name, license=license, caffemodel=caffemodel, caffemodel_url=url, sha1=sha1
    )
    if not quiet:
        from rich.markup import escape

        console().print(
            escape(
                f"created {path / 'readme.md'}; add your prototxt files, then run `caffezoo validate {path}`"
            )
        )


@app.command()
def validate(
    directories: list[str] = typer.Argument(..., help="Model directories (or bundled model names) to check."),
    json: bool = JSON_OPTION,
    quiet: bool = flag("--quiet", "-q", help="Print errors only, no warnings or summary."),
    strict: bool = flag("--strict", help="Treat warnings as errors."),
) -> None:
    """Check model directories; print every problem as `path:line: message`.

    Exits 1 when any directory has an error (or, with --strict, a warning).
    """
    from ._quick import validate_models

    raise typer.Exit(validate_models(directories, json=json, quiet=quiet, strict=strict))
