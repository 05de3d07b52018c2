"""``caffezoo download``: fetch, verify and install models' weights."""

from __future__ import annotations

from pathlib import Path

import typer

from ._app import JSON_OPTION, QUIET_OPTION, app, flag

__all__ = ["download"]


@app.command()
def download(
    models: list[str] = typer.Argument(..., help="Model directories or bundled model names."),
    output: Path = typer.Option(
        None,
        "--output",
        "-o",
        help="Install the weights at FILE instead of the model directory (one MODEL).",
    ),
    jobs: int = typer.Option(4, "--jobs", "-j", min=1, help="How many models to download at once."),
    verify: bool = flag(
        "--verify",
        help="Re-hash files already there instead of trusting the record of their last check.",
    ),
    symlink: bool = flag("--symlink", help="Install a symbolic link to the cached blob."),
    copy: bool = flag("--copy", help="Install a copy of the cached blob, not a hard link."),
    allow_local: bool = flag(
        "--allow-local",
        help="Let the front matter name file:// URLs (refused by default: a model from a gist "
        "must not read your files). file:// mirrors in CAFFEZOO_MIRRORS are always allowed.",
    ),
    connections: int = typer.Option(
        None,
        "--connections",
        "-c",
        min=1,
        max=64,
        help="Connections per file (default 8): a file of 8 MiB or more comes in pieces, from "
        "every source that takes byte ranges at once.",
    ),
    per_host: int = typer.Option(
        None, "--per-host", min=1, max=64, help="At most N connections to one host (default: -c)."
    ),
    limit_rate: str = typer.Option(
        None, "--limit-rate", metavar="RATE", help="At most RATE bytes a second in all, e.g. 10M or 500k."
    ),
    json: bool = JSON_OPTION,
    quiet: bool = QUIET_OPTION,
) -> None:
    """Download the weights named in each MODEL's readme.md; confirm their SHA-1.

    Each file lands at MODEL/<caffemodel> (bundled models: under
    CAFFEZOO_HOME/models/), hard-linked to a verified blob in the cache,
    so weights that several models share are fetched once.

    Sources, in order: the cache; each CAFFEZOO_MIRRORS base, as
    <base>/blobs/sha1/<sha1>; caffemodel_url; the front matter's mirrors.

    A file of 8 MiB or more comes in pieces over -c connections, from every
    source that takes byte ranges at once; a source that sends wrong bytes
    is named. Interrupted downloads resume on the next run; failures are
    retried with backoff. Exit status 0 only when every file is in place and right.
    """
    params = dict(locals())  # every option, by name, as the body takes them
    from ._quick import download_weights

    raise typer.Exit(download_weights(**params))
