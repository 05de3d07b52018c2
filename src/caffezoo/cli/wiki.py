"""`caffezoo wiki import|export`: Caffe's Model-Zoo wiki page, into and out of a zoo server."""

from __future__ import annotations

from pathlib import Path

import typer

from ._app import JSON_OPTION, QUIET_OPTION, flag, group
from ._output import console, print_json
from .serve import (  # the zoo server's database and outbound-URL policy, as `caffezoo serve` takes them
    ALLOW_NETWORK_OPTION,
    ALLOW_PRIVATE_OPTION,
    DB_OPTION,
    server_policy,
)

__all__ = ["wiki_app", "wiki_export", "wiki_import"]


wiki_app = group(
    "wiki",
    "Import a Caffe Model-Zoo wiki page into a zoo server's database, or export the zoo as such a page.",
)


@wiki_app.command("import")
def wiki_import(
    page: Path = typer.Argument(..., help="The wiki page, e.g. Model-Zoo.md from a clone of the wiki."),
    no_fetch: bool = flag("--no-fetch", help="Do not fetch the gists: keep only the page's names and links."),
    database_url: str = DB_OPTION,
    allow_private: bool = ALLOW_PRIVATE_OPTION,
    allow_network: list[str] = ALLOW_NETWORK_OPTION,
    as_json: bool = JSON_OPTION,
    quiet: bool = QUIET_OPTION,
) -> None:
    """Read a page shaped like Caffe's Model-Zoo wiki into the zoo.

    Each heading becomes a section with its citation and notes; each bullet
    `[Name](URL): description` an entry that keeps its section, description and
    link. Gist links are fetched through the Gist API (CAFFEZOO_GIST_API,
    GitHub by default) and stored with their own id and owner, unless
    --no-fetch or CAFFEZOO_OFFLINE=1. Importing again replaces the previous page.
    The Gist API is yours to choose; anything else a gist points at (raw file
    URLs, redirects) must be on a public address unless --allow-private-urls
    or --allow-network allows it.
    """
    from ..config import settings
    from ..errors import UsageError
    from ..frontmatter import read_text
    from ..server.run import open_storage
    from ..server.wiki import import_page, parse_page

    parsed = parse_page(read_text(page, "a wiki page (Markdown file)"))
    if not parsed.sections:
        raise UsageError(
            f"{page}: no section headings found (expected '### Title' lines as on "
            "Caffe's Model-Zoo wiki page)"
        )
    out = console(stderr=True)

    def show(gist_id: str, status: str, error: str | None) -> None:
        if not (quiet or as_json):
            from rich.markup import escape

            mark = {"fetched": "[green]fetched[/]", "unchanged": "unchanged", "failed": "[red]failed[/]"}[
                status
            ]
            out.print(
                f"{mark} gist {gist_id}" + (f": {escape(error)}" if error else ""),
                markup=True,
                highlight=False,
            )

    fetch = not no_fetch and not settings().offline
    with open_storage(database_url) as store:
        report = import_page(
            store, parsed, fetch=fetch, on_gist=show, policy=server_policy(allow_private, allow_network)
        )
    if as_json:
        print_json(report)
    elif not quiet:
        out.print(
            f"{report.sections} sections, {report.gists} gist entries, {report.links} other links; "
            f"{len(report.fetched)} gists fetched, {len(report.failed)} failed"
            + ("" if fetch else " (not fetching)")
        )
    if report.failed:
        raise typer.Exit(1)


@wiki_app.command("export")
def wiki_export(
    output: Path = typer.Option(None, "--output", "-o", help="Write the page here [default: stdout]."),
    base_url: str = typer.Option(
        None,
        "--base-url",
        help="This server's URL, for links to gists that were not imported "
        "[default: https://gist.github.com/OWNER/ID].",
    ),
    sections_only: bool = flag(
        "--sections-only", help="Only the imported sections, not the zoo's other models."
    ),
    database_url: str = DB_OPTION,
) -> None:
    """Write the zoo as a page shaped like Caffe's Model-Zoo wiki, for those who keep a GitHub wiki."""
    from ..atomic import atomic_write_bytes
    from ..server.run import open_storage
    from ..server.wiki import export_page, render_page

    with open_storage(database_url) as store:
        text = render_page(export_page(store, base_url=base_url, include_unsectioned=not sections_only))
    if output is None:
        typer.echo(text, nl=False)
    else:
        atomic_write_bytes(output, text.encode("utf-8"))
