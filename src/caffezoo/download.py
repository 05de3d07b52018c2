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
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ._api import callable_module
from .config import Settings, settings
from .errors import DownloadError
from .fetch import Fetched, Progress, fetch_to
from .fetch.core import How
from .fetch.limits import RateLimit, parse_rate
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
    connections: int | None = None,
    per_host: int | None = None,
    limit_rate: str | float | RateLimit | None = None,
) -> Fetched:
    """Install a model's weights (at ``output`` if given) and return where they are.

    ``connections``, ``per_host`` and ``limit_rate`` are those of :func:`caffezoo.fetch.fetch_blob`:
    a large file comes in pieces over several connections, from every source at once.

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
        connections=connections,
        per_host=per_host,
        limit_rate=limit_rate,
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


@dataclass(frozen=True)
class Outcome:
    """One model of :func:`download_many`: its result, or the error that stopped it."""

    model: str
    result: Fetched | None = None
    error: Exception | None = None


def download_many(
    models: Sequence[str],
    *,
    jobs: int = DEFAULT_JOBS,
    progress: Callable[[str], Progress | None] | None = None,
    **options,
) -> list[Outcome]:
    """Download several models, at most ``jobs`` at a time; one failure does not stop the rest.

    ``progress(model)`` returns the progress callback for that model. A ``limit_rate``
    given as text or a number is one limit for all of them together.
    Outcomes come back in the order of ``models``. The workers are daemon
    threads: on Ctrl-C the caller may exit at once, and what each had written
    stays on disk for the next run to resume.
    """
    if options.get("limit_rate") is not None and not isinstance(options["limit_rate"], RateLimit):
        options["limit_rate"] = RateLimit(parse_rate(options["limit_rate"]))
    outcomes: dict[int, Outcome] = {}
    todo: queue.Queue = queue.Queue()
    for item in enumerate(models):
        todo.put(item)
    done = threading.Condition()

    def work() -> None:
        while True:
            try:
                i, name = todo.get_nowait()
            except queue.Empty:
                return
            try:
                cb = progress(name) if progress else None
                out = Outcome(name, result=download(name, progress=cb, **options))
            except Exception as e:  # kept with its model; the other downloads go on
                out = Outcome(name, error=e)
            with done:
                outcomes[i] = out
                done.notify()

    workers = [
        threading.Thread(target=work, daemon=True, name=f"caffezoo-download-{n}")
        for n in range(max(1, min(jobs, len(models))))
    ]
    for w in workers:
        w.start()
    with done:
        while len(outcomes) < len(models):
            done.wait(0.5)  # a timeout, so Ctrl-C reaches the main thread
    return [outcomes[i] for i in range(len(models))]


__all__ = ["DEFAULT_JOBS", "Outcome", "download", "download_many"]

callable_module(__name__, download)  # caffezoo.download("bvlc_alexnet")
