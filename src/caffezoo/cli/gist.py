"""`caffezoo gist upload|download|list`: model info to and from gists."""

from __future__ import annotations

from pathlib import Path

import typer

from ._app import JSON_OPTION, QUIET_OPTION, flag, group
from ._output import console, print_json, warning_line

__all__ = ["download_cmd", "gist_app", "list_cmd", "upload_cmd"]


gist_app = group("gist", "Share model info as gists, on GitHub or on a caffezoo server (CAFFEZOO_GIST_API).")


@gist_app.command("upload")
def upload_cmd(
    directory: Path = typer.Argument(..., help="The model directory to upload."),
    public: bool = typer.Option(
        None, "--public/--secret", help="Visibility of a new gist [default: secret, as Caffe's script]."
    ),
    dry_run: bool = flag("--dry-run", help="Print what would be sent; change nothing."),
    prune: bool = flag(
        "--prune",
        help="Delete remote files that are gone locally (a local rename becomes a rename in the gist).",
    ),
    json: bool = JSON_OPTION,
    quiet: bool = QUIET_OPTION,
) -> None:
    """Upload DIRECTORY's model info as a gist: readme.md, prototxts and other top-level text files.

    Validates first. Without `gist_id` in the front matter: creates the gist,
    writes `gist_id` into readme.md and updates the gist so it carries the id.
    With `gist_id`: updates that gist. Weights (*.caffemodel*), binary files and
    subfolders are never sent; what was skipped is listed, with why.
    """
    from ..gist import upload

    r = upload(directory, public=public, dry_run=dry_run, prune=prune)
    if json:
        print_json(
            {
                "action": r.action,
                "dry_run": r.dry_run,
                "gist_id": r.gist_id,
                "html_url": r.html_url,
                "public": r.public,
                "description": r.description,
                "sent": r.sent,
                "deleted": r.deleted,
                "renamed": [list(x) for x in r.renamed],
                "kept_remote": r.kept_remote,
                "skipped": [{"name": s.name, "reason": s.reason} for s in r.skipped],
                "warnings": r.warnings,
            }
        )
        return
    for w in r.warnings:
        warning_line(w)
    if quiet:
        return
    from rich.markup import escape

    out = console()
    verb = {
        "create": "would create" if r.dry_run else "created",
        "update": "would update" if r.dry_run else "updated",
        "unchanged": "up to date:",
    }[r.action]
    visibility = "public" if r.public else "secret"
    out.print(
        f"{verb} {visibility} gist {escape(r.gist_id or '')} {escape(repr(r.description))}".replace("  ", " ")
    )
    for name in r.sent:
        out.print(f"  [green]send[/]    {escape(name)}")
    for old, new in r.renamed:
        out.print(f"  [cyan]rename[/]  {escape(old)} -> {escape(new)}")
    for name in r.deleted:
        out.print(f"  [red]delete[/]  {escape(name)}")
    for name in r.kept_remote:
        out.print(f"  [yellow]keep[/]    {escape(name)} (only in the gist; --prune deletes it)")
    for s in r.skipped:
        out.print(f"  [dim]skip[/]    {escape(s.name)}: {escape(s.reason)}")
    if r.html_url and not r.dry_run:
        out.print(escape(r.html_url))


@gist_app.command("download")
def download_cmd(
    gist: str = typer.Argument(
        ..., help="A gist id, USER/ID, or a gist URL (https://gist.github.com/USER/ID#file-readme-md)."
    ),
    directory: Path = typer.Argument(
        None, help="Where to put it [default: models/<USER-ID>, as Caffe's script]."
    ),
    into: Path = typer.Option(Path("models"), "--into", help="Parent directory of the default DIRECTORY."),
    force: bool = flag("--force", "-f", help="Replace DIRECTORY if it exists (its files are lost)."),
    json: bool = JSON_OPTION,
    quiet: bool = QUIET_OPTION,
) -> None:
    """Download a gist's model info into a new directory, then validate it.

    Files the API cuts short are fetched whole from their raw URL; every file
    name is checked; nothing is written unless everything arrived.
    """
    from ..gist import download

    r = download(gist, directory, force=force, into=into)
    if json:
        print_json(
            {
                "path": str(r.path),
                "gist_id": r.gist_id,
                "html_url": r.html_url,
                "files": r.files,
                "warnings": r.warnings,
                "problems": [
                    {"path": p.path, "line": p.line, "severity": p.severity, "message": p.message}
                    for p in r.problems
                ],
            }
        )
        return
    for w in r.warnings:
        warning_line(w)
    from rich.markup import escape

    errors = [p for p in r.problems if p.severity == "error"]
    if not quiet:
        console().print(
            f"downloaded gist {escape(r.gist_id)} into {escape(str(r.path))}: " + escape(", ".join(r.files))
        )
    for p in r.problems:
        if p.severity == "error" or not quiet:
            warning_line(f"{p} ({p.severity})")
    if errors and not quiet:
        warning_line(
            f"{r.path} is not a valid model directory yet ({len(errors)} error"
            f"{'s' * (len(errors) != 1)}); see `caffezoo validate {r.path}`"
        )


@gist_app.command("list")
def list_cmd(
    user: str = typer.Argument(
        None, help="Whose public gists [default: yours, secret ones too; needs a token]."
    ),
    limit: int = typer.Option(100, "--limit", "-n", min=1, help="At most this many gists."),
    json: bool = JSON_OPTION,
) -> None:
    """List gists: id, description, files, visibility, last update."""
    from ..gist import list_gists

    gists = list_gists(user, limit=limit)
    if json:
        print_json(
            [
                {
                    "id": g.id,
                    "description": g.description,
                    "public": g.public,
                    "owner": g.owner,
                    "html_url": g.html_url,
                    "updated_at": g.updated_at,
                    "files": sorted(g.files),
                }
                for g in gists
            ]
        )
        return
    from rich.markup import escape
    from rich.table import Table

    # Every cell is the API's (anyone's) words: shown as text, never as rich markup.
    table = Table(title=escape(f"gists of {user}") if user else "your gists", title_justify="left")
    table.add_column("id", no_wrap=True)  # ids are what users copy: never cut them
    for col in ("description", "files", "visibility", "updated"):
        table.add_column(col)
    for g in gists:
        table.add_row(
            escape(g.id),
            escape(g.description or ""),
            escape(", ".join(sorted(g.files))),
            "public" if g.public else "secret",
            escape(g.updated_at or ""),
        )
    console().print(table)
