"""``caffezoo cache ls|verify|rm|prune``: the downloaded weights, by SHA-1."""

from __future__ import annotations

import typer

from ._app import JSON_OPTION, QUIET_OPTION, flag, group
from ._output import console, human_size, print_json

__all__ = ["cache_app", "ls", "prune", "rm", "verify"]


cache_app = group(
    "cache", "The blob cache: downloaded weights, stored once by SHA-1, linked into model directories."
)


def _blob_json(b) -> dict:
    return {
        "sha1": b.sha1,
        "path": str(b.path),
        "size": b.size,
        "mtime": b.mtime,
        "links": b.links,
        "used_by": b.users,
    }


@cache_app.command("ls")
def ls(json: bool = JSON_OPTION) -> None:
    """List cached blobs: SHA-1, size, and the model files known to use each."""
    from ..fetch import BlobCache

    cache = BlobCache()
    blobs = cache.entries()
    if json:
        print_json([_blob_json(b) for b in blobs])
        return
    from rich.table import Table

    table = Table(title=f"blobs in {cache.root}", title_justify="left")
    table.add_column("sha1", no_wrap=True, min_width=40)
    table.add_column("size", justify="right")
    table.add_column("used by")
    for b in blobs:
        table.add_row(b.sha1, human_size(b.size), "\n".join(b.users) or "-")
    console().print(table)
    console().print(f"{len(blobs)} blob{'s' * (len(blobs) != 1)}, {human_size(sum(b.size for b in blobs))}")


@cache_app.command()
def verify(
    sha1s: list[str] = typer.Argument(None, help="SHA-1s (7+ digits) of the blobs to check [default: all]."),
    json: bool = JSON_OPTION,
    quiet: bool = QUIET_OPTION,
) -> None:
    """Re-hash cached blobs; each must hash to its name. Exits 1 if any does not."""
    from ..fetch import BlobCache

    cache = BlobCache()
    blobs = cache.find(sha1s) if sha1s else None
    results = cache.verify(blobs)
    bad = [r for r in results if not r.ok]
    if json:
        print_json([{**_blob_json(r.blob), "ok": r.ok, "problem": r.problem} for r in results])
    elif not quiet:
        out = console()
        for r in results:
            out.print(f"{r.blob.sha1}: " + ("[green]ok[/]" if r.ok else f"[red]{r.problem}[/]"))
    if bad:
        from ._output import error_line

        for r in bad:
            error_line(
                f"{r.blob.path}: {r.problem}; `caffezoo cache rm {r.blob.sha1[:12]}` removes it "
                "and the next download fetches it again"
            )
        raise typer.Exit(1)


@cache_app.command()
def rm(
    sha1s: list[str] = typer.Argument(None, help="SHA-1s (7+ digits) of the blobs to remove."),
    all_: bool = flag("--all", help="Remove every blob."),
    json: bool = JSON_OPTION,
    quiet: bool = QUIET_OPTION,
) -> None:
    """Remove blobs from the cache. Model files hard-linked to them keep their bytes."""
    from ..errors import UsageError
    from ..fetch import BlobCache

    if bool(sha1s) == all_:
        raise UsageError("give SHA-1s of blobs to remove, or --all")
    cache = BlobCache()
    blobs = cache.entries() if all_ else cache.find(sha1s)
    freed = cache.remove(blobs)
    if json:
        print_json({"removed": [b.sha1 for b in blobs], "freed": freed})
    elif not quiet:
        console().print(f"removed {len(blobs)} blob{'s' * (len(blobs) != 1)}, freed {human_size(freed)}")


@cache_app.command()
def prune(
    dry_run: bool = flag("--dry-run", "-n", help="Only say what would be removed."),
    json: bool = JSON_OPTION,
    quiet: bool = QUIET_OPTION,
) -> None:
    """Remove blobs no model file links to, partial downloads nobody is resuming, and leftovers."""
    from ..fetch import BlobCache

    report = BlobCache().prune(dry_run=dry_run)
    if json:
        print_json(
            {
                "dry_run": dry_run,
                "blobs": report.blobs,
                "partials": report.partials,
                "other": report.other,
                "bytes": report.bytes,
            }
        )
    elif not quiet:
        verb = "would remove" if dry_run else "removed"
        console().print(
            f"{verb} {len(report.blobs)} blob(s), {len(report.partials)} partial download(s), "
            f"{len(report.other)} other file(s): {human_size(report.bytes)}"
        )
