"""``caffezoo download``: a model's weights, fetched by its front matter and verified.

>>> import caffezoo.download
>>> caffezoo.download.download("bvlc_alexnet").path          # doctest: +SKIP
PosixPath('~/.local/share/caffezoo/models/bvlc_alexnet/bvlc_alexnet.caffemodel')

The front matter gives ``caffemodel`` (the file name), ``caffemodel_url`` and
``sha1``; ``sha256`` and ``size`` are checked when present, and ``mirrors``
are tried after the URL. Mirrors in ``CAFFEZOO_MIRRORS`` come first. Weights
of a model directory go into it; those of a bundled model under
``CAFFEZOO_HOME`` (the package may be read-only). The bytes themselves live
once in the blob cache, hard-linked into place.

A model's front matter is not trusted with this machine's files: it may have
come from anyone's gist. ``file://`` URLs it names are refused unless the
caller allows them (``allow_local=True``, ``caffezoo download --allow-local``);
``file://`` mirrors the user set in ``CAFFEZOO_MIRRORS`` are hers and stay
allowed. The weights' file name may never be one of the model's own files.
"""

from __future__ import annotations

import os
from pathlib import Path

from .config import Settings, settings
from .errors import DownloadError
from .fetch import Fetched, Progress, fetch_to
from .fetch.core import How
from .fetch.urls import normalize, origin
from .modeldir import ModelDir
from .schema import require
from .zoo import resolve

DEFAULT_JOBS = 4


def _auth(s: Settings) -> dict[str, str]:
    """The token goes to the gist API's host (a caffezoo server also serves blobs), nowhere else."""
    return {origin(s.gist_api): f"Bearer {s.token}"} if s.token else {}


def download(
    model: str | os.PathLike[str] | ModelDir,
    *,
    verify: bool = False,
    how: How = "link",
    output: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
    allow_local: bool = False,
) -> Fetched:
    """Install a model's weights (at ``output`` if given) and return where they are.

    Raises :class:`~caffezoo.errors.FrontMatterError` when the front matter lacks
    ``caffemodel``, ``caffemodel_url`` or ``sha1``, and a
    :class:`~caffezoo.errors.DownloadError` when no source gives the right bytes, when the
    front matter names a local file and ``allow_local`` is not set (nothing is read), or
    when ``caffemodel`` names one of the model's own files.
    """
    m = model if isinstance(model, ModelDir) else resolve(model)
    fm = m.front_matter
    require(fm, "download", str(m.readme_path))
    if not allow_local:
        refuse_local_sources(m)
    if output is None:
        refuse_own_file(m)
    dest = Path(output) if output is not None else m.weights_path
    assert dest is not None  # require() checked caffemodel
    return fetch_to(
        dest,
        [fm.caffemodel_url, *fm.mirrors],
        sha1=fm.sha1,
        sha256=fm.sha256,
        size=fm.size,
        how=how,
        verify=verify,
        progress=progress,
        name=fm.caffemodel,
        auth=_auth(settings()),  # the cache, mirrors, offline, timeout...: fetch reads settings()
    )


def refuse_local_sources(m: ModelDir) -> None:
    """Raise :class:`DownloadError` naming the key when the front matter points at a local file."""
    fm = m.front_matter
    named = [("caffemodel_url", fm.caffemodel_url)] + [(f"mirrors[{i}]", u) for i, u in enumerate(fm.mirrors)]
    for key, url in named:
        if url and normalize(url).is_local:
            raise DownloadError(
                f"{m.readme_path}: {key}: {url} is a file on this machine; a model's front matter "
                "(which may come from anyone's gist) may not read local files, so nothing was read. "
                "If you trust this model, pass --allow-local (allow_local=True)."
            )


def refuse_own_file(m: ModelDir) -> None:
    """Raise :class:`DownloadError` when ``caffemodel`` names one of the model's own files."""
    clash = m.weights_clash()
    if clash:
        raise DownloadError(
            f"{m.readme_path}: caffemodel: {m.front_matter.caffemodel!r} is one of the model's own "
            f"files ({clash}); the weights would replace it, so nothing was downloaded. Name the "
            "weights file something else, e.g. <model>.caffemodel."
        )
