"""The web wiki: server-rendered pages over the catalog (Jinja2, no JavaScript).

Routes: ``/`` (the index: search, filters, pages), ``/models/{id}`` (one
model), ``/models/{id}/net.svg`` (its network), ``/publish`` (how to publish),
``/wiki`` (the imported wiki page, section by section), ``/{user}/{id}`` (a
gist's ``html_url``, sent on to its model page), and ``/api/models[/{id}]``
(the catalog as JSON, with link health and mirror state).

Every page is sent with a Content-Security-Policy that allows no script at
all and styles only from ``/static``: even a sanitizer bug could not run code.
Rendered pages are cached by the catalog's generation counter, which every
write that a page shows moves on, and by the configured base URL (never the
request's ``Host``), in the app's byte-bounded cache (:mod:`.caches`).

Costly pages (a model, the wiki) render in the render lane (:mod:`.work`):
worker threads with a concurrency limit, a bounded queue and a deadline, so
they never block the event loop and a flood of them is answered 503 rather
than queued without end. A cached page is answered without the lane. What one
render may cost is bounded too: Markdown by :mod:`.render`'s budgets, files
shown inline by :data:`MAX_INLINE_FILE` and :data:`MAX_INLINE_TOTAL`, listed
fields by :mod:`.listing`.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy import select
from sqlalchemy.orm import defer
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from ..errors import CaffezooError
from ..frontmatter import parse_readme
from ..gist.rules import valid_id
from ..hashes import is_hex
from . import catalog
from .api import JSON_TYPE, base_url, json_response
from .caches import CachePart, size_of
from .links import shown_error
from .listing import (
    DESCRIPTION_CHARS,
    NAME_CHARS,
    PAGE_TEXT_CHARS,
    TEXT_CHARS,
    URL_CHARS,
    cut,
    cut_lines,
)
from .mirror import Mirror
from .pictures import Picture, pick_net
from .render import highlight_prototxt, inline_markdown_html, markdown_html, plain_lines
from .routing import Router
from .storage import FileView, GistView, Storage
from .tables import Entry, LinkCheck, WikiSection

HERE = Path(__file__).parent
PER_PAGE = 20
MAX_PAGE = 10_000
PAGE_CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "base-uri 'none'; frame-ancestors 'none'"
)
SVG_CSP = "default-src 'none'; style-src 'unsafe-inline'; sandbox"
PAGE_HEADERS = {"Content-Security-Policy": PAGE_CSP}
MAX_INLINE_FILE = 512 * 1024  # a file larger is linked, not shown
MAX_INLINE_TOTAL = 1024 * 1024  # and past this much shown on one page, the rest is linked too
MAX_FRONT_MATTER_ROWS = 200

router = Router()


# --------------------------------------------------------------------------- templates


def _filesize(n: int | None) -> str:
    if n is None:
        return "—"
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"  # pragma: no cover


def _web_url(value: object) -> bool:
    """Whether a user's URL may be a link: http(s) only (a ``javascript:`` one stays text)."""
    return isinstance(value, str) and value.lower().startswith(("http://", "https://"))


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else "never"


def _short(n: int) -> str:
    """``60,965,224`` as ``61.0M`` (the comparison table's cells; the exact count is the title)."""
    from ..caffe.summary import format_macs

    return format_macs(n)


def _side_metrics(rows: list) -> list[tuple[str, str]]:
    """The (metric, dataset) pairs any of the side-by-side models reports, first seen first."""
    seen: dict[tuple[str, str], None] = {}
    for _, _, results in rows:
        for r in results:
            if isinstance(r, dict):
                seen.setdefault((str(r.get("metric")), str(r.get("dataset"))), None)
    return list(seen)


@lru_cache(maxsize=1)
def templates() -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(default=True),
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,
    )
    env.filters.update(
        filesize=_filesize,
        when=_when,
        thousands=lambda n: f"{n:,}",
        cut=cut,
        inline_markdown=inline_markdown_html,
    )
    env.filters["short"] = _short
    env.globals["side_metrics"] = _side_metrics
    env.tests["web_url"] = _web_url
    env.globals["static_version"] = _static_version()
    return env


def _static_version() -> str:
    import hashlib

    digest = hashlib.sha1()
    for p in sorted((HERE / "static").iterdir()):
        digest.update(p.read_bytes())
    return digest.hexdigest()[:10]


def render(name: str, status: int = 200, **context: Any) -> HTMLResponse:
    html = templates().get_template(name).render(**context)
    return HTMLResponse(html, status_code=status, headers=PAGE_HEADERS)


def not_found_page(what: str) -> HTMLResponse:
    return render("error.html", status=404, title="Not found", message=what, q="")


# --------------------------------------------------------------------------- what pages show


@dataclass
class Weights:
    """What the pages and the API say about an entry's weights."""

    url: str | None
    sha1: str | None
    size: int | None
    checked: LinkCheck | None
    mirrored: bool

    @property
    def state(self) -> str:
        """``reachable``, ``unreachable``, ``unchecked`` or ``none`` (no URL)."""
        if not self.url:
            return "none"
        if self.checked is None or self.checked.checked_at is None:
            return "unchecked"
        return "reachable" if self.checked.reachable else "unreachable"

    @property
    def error(self) -> str | None:
        """The last check's error, as anyone may read it (see :func:`.links.shown_error`)."""
        return None if self.checked is None else shown_error(self.checked.error)

    def json(self, base: str) -> dict[str, Any]:
        c = self.checked
        return {
            "url": cut(self.url, URL_CHARS),
            "sha1": self.sha1,
            "size": self.size,
            "reachable": None if c is None else c.reachable,
            "status": None if c is None else c.status,
            "checked_size": None if c is None else c.size,
            "error": self.error,
            "checked_at": None
            if c is None or c.checked_at is None
            else c.checked_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "mirrored": self.mirrored,
            "mirror_url": f"{base}/blobs/sha1/{self.sha1}" if self.mirrored else None,
        }


def weights_of(entry: Entry, checks: dict[str, LinkCheck], mirror: Mirror | None) -> Weights:
    check = checks.get(entry.caffemodel_url or "")
    size = entry.size if entry.size is not None else (check.size if check is not None else None)
    mirrored = mirror is not None and mirror.has(entry.sha1)
    return Weights(entry.caffemodel_url, entry.sha1, size, check, mirrored)


def entry_json(entry: Entry, weights: Weights, base: str) -> dict[str, Any]:
    """An entry as ``/api/models`` lists it: every field cut to its listed length (:mod:`.listing`)."""
    return {
        "id": entry.id,
        "name": cut(entry.name, NAME_CHARS),
        "summary": cut(entry.summary, DESCRIPTION_CHARS),
        "license": cut(entry.license, TEXT_CHARS),
        "task": cut(entry.task, TEXT_CHARS),
        "framework": cut(entry.framework, TEXT_CHARS),
        "tags": [t for t in entry.tags[: 50 * (NAME_CHARS + 1)].split(",") if t][:50],
        "gist_id": entry.gist_id if entry.indexed_serial else None,
        "owner": entry.owner,
        "html_url": f"{base}/models/{entry.id}",
        "source_url": cut(entry.source_url, URL_CHARS),
        "updated_at": entry.updated_at.strftime("%Y-%m-%dT%H:%M:%SZ") if entry.updated_at else None,
        "problems": cut_lines(entry.problems),
        "weights": weights.json(base),
        "dataset": entry.dataset,
        "results": json.loads(entry.results or "[]"),
        "facts": facts_json(entry),
    }


def facts_json(entry: Entry) -> dict[str, Any]:
    """The network facts the catalog computed on write (see :mod:`.facts`)."""
    return {
        "net_file": entry.net_file,
        "input_shape": entry.input_shape,
        "params": entry.params,
        "macs_per_sample": entry.macs,
        "layers": entry.layer_count,
        "layer_types": json.loads(entry.layer_types or "{}"),
        "convertible": entry.convertible,
        "unsupported": [u for u in (entry.unsupported or "").splitlines() if u],
        "weights_size": entry.weights_size,
        "weights_fit": entry.weights_fit,
        "weights_problems": [p for p in (entry.weights_problems or "").splitlines() if p],
        "error": entry.facts_error,
    }


def entry_size(entry: Entry) -> int:
    """Roughly what an entry holds in memory (its loaded text columns), for the byte-bounded cache."""
    return 600 + sum(size_of(v) for v in vars(entry).values() if isinstance(v, str))  # memory, not length


def _state(request: Request) -> tuple[Storage, Mirror | None, CachePart]:
    app = request.app.state
    return app.storage, app.mirror, app.page_cache


# --------------------------------------------------------------------------- the index


@dataclass
class IndexQuery:
    q: str = ""
    license: str = ""
    task: str = ""
    tag: str = ""
    page: int = 1

    @classmethod
    def from_request(cls, request: Request) -> IndexQuery:
        p = request.query_params
        try:
            page = min(max(int(p.get("page", "1") or 1), 1), MAX_PAGE)
        except ValueError:
            page = 1
        # Filters compare with the catalog's values, which hold U+FFFD for NUL.
        return cls(
            q=p.get("q", "")[:200].strip(),
            license=catalog.without_nul(p.get("license", "")[:200]),
            task=catalog.without_nul(p.get("task", "")[:200]),
            tag=catalog.without_nul(p.get("tag", "")[:100].lower()),
            page=page,
        )

    def url(self, **changes: Any) -> str:
        values = {"q": self.q, "license": self.license, "task": self.task, "tag": self.tag, "page": self.page}
        values.update(changes)
        params = {k: v for k, v in values.items() if v and not (k == "page" and v == 1)}
        return "/?" + urlencode(params) if params else "/"

    @property
    def filtered(self) -> bool:
        return bool(self.q or self.license or self.task or self.tag)


@dataclass
class IndexData:
    entries: list[Entry]
    total: int
    facets: catalog.Facets
    checks: dict[str, LinkCheck] = field(default_factory=dict)
    key: tuple = ()  # what the data is a function of: the query and the catalog's generation
    sections: dict[int, str] = field(default_factory=dict)  # wiki section id -> title, of these entries

    def __cache_size__(self) -> int:
        sections = sum(len(t) + 100 for t in self.sections.values())
        return 1000 + sum(entry_size(e) for e in self.entries) + 300 * len(self.checks) + sections


def _index_data(store: Storage, cache: CachePart, query: IndexQuery) -> IndexData:
    with store.session() as s:
        gen = catalog.generation(s)
        key = ("index", gen, query.q, query.license, query.task, query.tag, query.page)
        found = cache.get(key)
        if found is not None:
            return found
        facets = cache.get(("facets", gen))
        if facets is None:
            facets = catalog.facets(s)
            cache.put(("facets", gen), facets, size_of((facets.licenses, facets.tasks, facets.tags)))
        page = catalog.find(
            s,
            q=query.q,
            license=query.license or None,
            task=query.task or None,
            tag=query.tag or None,
            limit=PER_PAGE,
            offset=(query.page - 1) * PER_PAGE,
        )
        checks = catalog.link_checks(s, [e.caffemodel_url for e in page.entries if e.caffemodel_url])
        ids = {e.section_id for e in page.entries if e.section_id is not None}
        titles = (
            s.execute(select(WikiSection.id, WikiSection.title).where(WikiSection.id.in_(ids))) if ids else []
        )
        sections = {sid: title for sid, title in titles}
        return cache.put(key, IndexData(page.entries, page.total, facets, checks, key, sections))


def page_links(current: int, last: int) -> list[int | None]:
    """Page numbers to offer: the ends, and the neighbourhood of the current page (None: a gap)."""
    shown = sorted({1, last, *range(max(1, current - 2), min(last, current + 2) + 1)})
    out: list[int | None] = []
    for n in shown:
        if out and n - (out[-1] or 0) > 1:
            out.append(None)
        out.append(n)
    return out


async def _answer(request: Request, page: Any, *args: Any) -> Any:
    """Run a cheap page function: on the event loop on SQLite, in the thread pool otherwise.

    SQLite reads never wait on a network, so a thread hop costs more than it saves:
    under 8 concurrent clients it doubled a cold model page's p99. Only functions whose
    cost is bounded and small (a cache lookup, a list of cut fields) may use this;
    costly rendering goes through the render lane (:func:`_render`).
    """
    if _state(request)[0].is_sqlite:
        return page(request, *args)
    return await run_in_threadpool(page, request, *args)


async def _render(request: Request, fn: Any, *args: Any) -> Any:
    """Run costly page work in the render lane: a worker thread, a queue limit, a deadline."""
    return await request.app.state.render_lane.run(fn, *args)


@router.get("/")
async def index(request: Request) -> Response:
    return await _answer(request, _index)


def _index_cards(request: Request) -> tuple[IndexQuery, IndexData, list[tuple[Entry, Weights]], CachePart]:
    """The query, its page of the catalog and each entry with its weights: what the home page and
    ``/api/models`` both show; and the cache part they answer from."""
    store, mirror, cache = _state(request)
    query = IndexQuery.from_request(request)
    data = _index_data(store, cache, query)
    return query, data, [(e, weights_of(e, data.checks, mirror)) for e in data.entries], cache


def _index(request: Request) -> HTMLResponse:
    query, data, cards, cache = _index_cards(request)
    # The page is a function of the query, the catalog's generation and which of the
    # shown blobs are mirrored (a file-system fact): the rendered HTML is cached on that.
    key = ("index-html", *data.key, tuple(w.mirrored for _, w in cards))
    html = cache.get(key)
    if html is None:
        last = max(1, -(-data.total // PER_PAGE))
        html = cache.put(
            key,
            templates()
            .get_template("index.html")
            .render(
                query=query,
                q=query.q,
                cards=cards,
                sections=data.sections,
                total=data.total,
                facets=data.facets,
                page=query.page,
                last=last,
                pages=page_links(query.page, last),
            ),
        )
    return HTMLResponse(html, headers=PAGE_HEADERS)


# --------------------------------------------------------------------------- a model


@dataclass
class FileShown:
    name: str
    size: int
    raw_url: str
    html: str | None  # None: not shown inline (too big)
    kind: str


def _file_html(cache: CachePart, blob_sha: str, prototxt: bool, content: bytes) -> str:
    """A file as highlighted (or plain) lines; by blob, since many models share their nets.

    Keyed on the blob's SHA-1 alone (an lru_cache would keep, hash and compare each
    file's whole content as part of its key).
    """
    key = (blob_sha, prototxt)
    html = cache.get(key)
    if html is None:
        text = content.decode("utf-8", errors="replace")
        html = cache.put(key, highlight_prototxt(text) if prototxt else plain_lines(text))
    return html


def _files(view: GistView, base: str, cache: CachePart) -> list[FileShown]:
    """The files shown below the readme: inline while they fit the page's budget, else linked."""
    from .gist_json import raw_url

    out, shown = [], 0
    for f in view.files:
        lower = f.filename.lower()
        if lower == "readme.md":
            continue
        size = len(f.content or b"")
        html = None
        if size <= MAX_INLINE_FILE and shown + size <= MAX_INLINE_TOTAL:
            html = _file_html(cache, f.blob_sha, lower.endswith(".prototxt"), f.content or b"")
            shown += size
        kind = "prototxt" if lower.endswith(".prototxt") else "text"
        out.append(FileShown(f.filename, f.size, raw_url(base, view, f), html, kind))
    return out


def _front_matter_rows(data: dict[str, Any]) -> list[tuple[str, Any, bool]]:
    """``(key, shown value, is a link)`` for the table."""
    rows = []
    for key, value in list(data.items())[:MAX_FRONT_MATTER_ROWS]:
        if isinstance(value, (list, tuple)):
            shown = ", ".join(str(v)[:PAGE_TEXT_CHARS] for v in value[:1000])
        elif isinstance(value, dict):
            shown = json.dumps(value, ensure_ascii=False)
        else:
            shown = "" if value is None else str(value)
        rows.append((cut(str(key), NAME_CHARS), cut(shown, PAGE_TEXT_CHARS), _web_url(value)))
    return rows


def commands_for(entry: Entry, view: GistView | None, base: str, mirrored: bool) -> list[tuple[str, str]]:
    """Copy-paste shell commands that get this model, as ``(what, command)``."""
    q = shlex.quote
    if view is not None:
        ref = f"{view.owner}/{view.id}"
        out = [("Point caffezoo at this zoo", f"export CAFFEZOO_GIST_API={q(base)}")]
        if mirrored:
            out.append(("Fetch weights from this server first", f"export CAFFEZOO_MIRRORS={q(base)}"))
        out.append(("Get the model info: readme and prototxt files", f"caffezoo gist download {q(ref)}"))
        if entry.caffemodel_url:
            out.append(
                (
                    "Get the weights, checked against their SHA-1",
                    f"caffezoo download {q(f'models/{view.owner}-{view.id}')}",
                )
            )
        return out
    if entry.gist_id and entry.source_url:
        from ..gist import parse_ref

        ref = parse_ref(entry.source_url)
        local = f"models/{ref.dirname}"
        out = [
            (
                "Get the model info from GitHub",
                f"caffezoo gist download {q(f'{ref.user}/{ref.id}' if ref.user else ref.id)}",
            )
        ]
        out.append(("Get the weights, checked against their SHA-1", f"caffezoo download {q(local)}"))
        return out
    return []


@dataclass
class ModelData:
    """What a model page shows, loaded from storage; rendering it is :func:`_model_html`."""

    entry: Entry
    key: tuple
    base: str
    rev: str | None
    section: WikiSection | None
    checks: dict[str, LinkCheck]
    mirror: Mirror | None
    view: GistView | None = None
    net: FileView | None = None  # the prototxt to draw
    try_on: bool = False  # the server runs models on uploads (`--try`)
    try_max_bytes: int = 0


def _model_lookup(request: Request, entry_id: str, rev: str | None) -> Response | ModelData:
    """The cached page, a 404 page, or what loading it needs: cheap, no file contents."""
    store, mirror, cache = _state(request)
    base = base_url(request)
    with store.session() as s:
        gen = catalog.generation(s)
        entry = catalog.get_entry(s, entry_id)
        if entry is None:
            return not_found_page(f"There is no model {entry_id!r} in this zoo.")
        mirrored = mirror is not None and mirror.has(entry.sha1)
        key = ("model", entry_id, gen, rev, mirrored, base)
        html = cache.get(key)
        if isinstance(html, tuple):  # shown while its net was being drawn: (html, the net's blob)
            html = None if request.app.state.pictures.ready(html[1]) else html[0]
        if html is not None:
            return HTMLResponse(html, headers=PAGE_HEADERS)
        section = catalog.section_of(s, entry)
        checks = catalog.link_checks(s, [entry.caffemodel_url] if entry.caffemodel_url else [])
    limits = request.app.state.limits
    return ModelData(
        entry,
        key,
        base,
        rev,
        section,
        checks,
        mirror,
        try_on=limits.try_it,
        try_max_bytes=limits.try_max_bytes,
    )


def _model_load(store: Storage, data: ModelData) -> Response | ModelData:
    """The gist's files (the costly read: megabytes, maybe), in the render lane."""
    entry = data.entry
    view = store.get_gist(entry.gist_id, data.rev) if entry.gist_id and entry.indexed_serial else None
    if data.rev and view is None:
        return not_found_page(f"The model {entry.id!r} has no revision {data.rev!r}.")
    data.view = view
    name = pick_net([f.filename for f in view.files]) if view is not None else None
    data.net = next(f for f in view.files if f.filename == name) if name and view is not None else None
    return data


def _model_html(cache: CachePart, files_cache: CachePart, data: ModelData, picture: Picture | None) -> str:
    """The model page's HTML (markdown, highlighting, the template): bounded work, in the render lane."""
    entry, view, base = data.entry, data.view, data.base
    weights = weights_of(entry, data.checks, data.mirror)
    readme_html, rows, problems = "", [], cut_lines(entry.problems, 200)
    files: list[FileShown] = []
    if view is not None:
        from .gist_json import raw_url

        readme = next((f for f in view.files if f.filename.lower() == "readme.md"), None)
        readme_raw = raw_url(base, view, readme) if readme is not None else None
        if readme is not None and data.rev is None and len(entry.readme) < catalog.MAX_SEARCH_TEXT:
            # The newest revision: the catalog parsed it on write (YAML parsing is the slow part).
            rows, body = _front_matter_rows(json.loads(entry.front_matter or "{}")), entry.readme
            readme_html = markdown_html(body, demote=1, raw_url=readme_raw)
        elif readme is not None:
            text = (readme.content or b"").decode("utf-8", errors="replace")
            try:
                parsed = parse_readme(text)
                rows, body = _front_matter_rows(parsed.data), parsed.body
            except CaffezooError:  # a broken front matter: its problems are listed; show the text
                body = text
            readme_html = markdown_html(body, demote=1, raw_url=readme_raw)
        files = _files(view, base, files_cache)
    html = (
        templates()
        .get_template("model.html")
        .render(
            entry=entry,
            view=view,
            rev=data.rev,
            weights=weights,
            readme_html=readme_html,
            rows=rows,
            problems=problems,
            files=files,
            picture=picture,
            picture_name=data.net.filename if data.net is not None else None,
            section=data.section,
            citation=data.section.citation if data.section else None,
            commands=commands_for(entry, view, base, weights.mirrored),
            base=base,
            q="",
            layer_types=json.loads(entry.layer_types or "{}"),
            unsupported=[u for u in (entry.unsupported or "").splitlines() if u],
            weights_problems=[p for p in (entry.weights_problems or "").splitlines() if p],
            results=json.loads(entry.results or "[]"),
            try_why_not=_try_why_not(data),
            try_task=_try_task(data),
            try_max_bytes=data.try_max_bytes,
            wiki_description_html=markdown_html(entry.wiki_description, demote=1)
            if entry.wiki_description
            else "",
        )
    )
    # A page showing its drawing as pending is kept with the net's blob, and rendered again
    # once that drawing is done: only then (another net's drawing leaves it cached).
    pending = data.net is not None and picture is None
    cache.put(data.key, (html, data.net.blob_sha) if pending and data.net is not None else html)
    return html


def _try_why_not(data: ModelData) -> str | None:
    """Why the page offers no "try it" form; None: it offers one."""
    if not data.try_on or data.rev:
        return "off"
    from .tryit import why_not

    return why_not(data.entry, data.mirror)


def _try_task(data: ModelData) -> str | None:
    """What the "try it" form runs: classify, detect, segment; None: what the net computes."""
    if not data.try_on:
        return None
    from .tryit import task_of

    return task_of(data.entry)


def _asked_revision(request: Request) -> tuple[str | None, bool]:
    """The ``?rev=`` asked for, and whether it looks like one: 4-40 hex digits of a version."""
    rev = request.query_params.get("rev")
    return rev, rev is None or is_hex(rev, (4, 40))


@router.get("/models/{entry_id}")
async def model_page(request: Request, entry_id: str) -> Response:
    if not valid_id(entry_id):
        return not_found_page(f"There is no model {entry_id!r} in this zoo.")
    rev, looks_right = _asked_revision(request)
    if not looks_right:
        return not_found_page(f"{rev!r} is not a revision: expected the hex version from the history.")
    found = await _answer(request, _model_lookup, entry_id, rev)
    if isinstance(found, Response):
        return found
    store, _, cache = _state(request)
    data = await _render(request, _model_load, store, found)
    if isinstance(data, Response):
        return data
    picture = None
    if data.net is not None:
        # Awaited as a coroutine (no thread waits on `dot`); a drawing still under way
        # after a moment is shown by its URL, and the page is rendered again when it ends.
        pictures = request.app.state.pictures
        picture = await pictures.wait(
            data.net.blob_sha, data.net.content or b"", request.app.state.limits.picture_wait
        )
    html = await _render(request, _model_html, cache, request.app.state.file_cache, data, picture)
    return HTMLResponse(html, headers=PAGE_HEADERS)


def _svg_source(request: Request, entry_id: str, rev: str | None) -> Response | FileView:
    store = request.app.state.storage
    with store.session() as s:
        entry = catalog.get_entry(s, entry_id)
    if entry is None or not entry.gist_id or not entry.indexed_serial:
        return Response("no such model", status_code=404, media_type="text/plain")
    view = store.get_gist(entry.gist_id, rev)
    name = pick_net([f.filename for f in view.files]) if view is not None else None
    if view is None or name is None:
        return Response("no network to draw", status_code=404, media_type="text/plain")
    return next(f for f in view.files if f.filename == name)


@router.get("/models/{entry_id}/net.svg")
async def model_svg(request: Request, entry_id: str) -> Response:
    if not valid_id(entry_id):
        return Response("no such model", status_code=404, media_type="text/plain")
    rev, looks_right = _asked_revision(request)
    if not looks_right:
        return Response("no such revision", status_code=404, media_type="text/plain")
    blob = await run_in_threadpool(_svg_source, request, entry_id, rev)
    if isinstance(blob, Response):
        return blob
    # Every request for a net being drawn awaits the one run (Busy -> 503 when the queue is full).
    picture = await request.app.state.pictures.get(blob.blob_sha, blob.content or b"")
    if picture.svg is None:
        return Response(picture.error or "cannot draw", status_code=422, media_type="text/plain")
    return Response(
        picture.svg,
        media_type="image/svg+xml",
        headers={"Content-Security-Policy": SVG_CSP, "Cache-Control": "public, max-age=300"},
    )


@router.get("/publish")
def publish_page(request: Request) -> HTMLResponse:
    return render("publish.html", base=base_url(request), q="")


@router.get("/wiki")
async def wiki_page(request: Request) -> Response:
    # Its sections' notes are Markdown: rendered in the lane, like a model page.
    return await _render(request, _wiki_page, request)


def _wiki_page(request: Request) -> HTMLResponse:
    store, mirror, cache = _state(request)
    with store.session() as s:
        gen = catalog.generation(s)
        data = cache.get(("wiki", gen))
        if data is None:
            sections = list(s.scalars(select(WikiSection).order_by(WikiSection.position)))
            entries = list(
                s.scalars(
                    select(Entry)
                    .where(Entry.section_id.is_not(None))
                    .order_by(Entry.section_id, Entry.position)
                    .options(defer(Entry.readme))
                )
            )
            checks = catalog.link_checks(s, [e.caffemodel_url for e in entries if e.caffemodel_url])
            size = sum(entry_size(e) for e in entries) + sum(entry_size(x) for x in sections)
            data = cache.put(("wiki", gen), (sections, entries, checks), size + 300 * len(checks))
    sections, entries, checks = data
    items = [(e, weights_of(e, checks, mirror)) for e in entries]
    # As the index: a function of the catalog's generation and of which blobs are mirrored.
    key = ("wiki-html", gen, tuple(w.mirrored for _, w in items))
    html = cache.get(key)
    if html is None:
        from .wiki import notes_text

        by_section: dict[int, list] = {}
        for e, w in items:
            by_section.setdefault(e.section_id, []).append((e, w))
        shown = [
            (
                sec,
                markdown_html(notes_text(sec.notes), demote=2) if sec.notes else "",
                by_section.get(sec.id, []),
            )
            for sec in sections
        ]
        html = cache.put(key, templates().get_template("wiki.html").render(sections=shown, q=""))
    return HTMLResponse(html, headers=PAGE_HEADERS)


@router.get("/api/models")
async def api_models(request: Request) -> Response:
    return await _answer(request, _api_models)


def _api_models(request: Request) -> Response:
    query, data, cards, _ = _index_cards(request)
    base = base_url(request)
    items = [entry_json(e, w, base) for e, w in cards]
    return json_response({"total": data.total, "page": query.page, "per_page": PER_PAGE, "models": items})


@router.get("/api/models/{entry_id}")
async def api_model(request: Request, entry_id: str) -> Response:
    if not valid_id(entry_id):
        return json_response({"message": "Not Found"}, status=404)
    return await _answer(request, _api_model, entry_id)


def _api_model(request: Request, entry_id: str) -> Response:
    store, mirror, _ = _state(request)
    with store.session() as s:
        entry = catalog.get_entry(s, entry_id)
        if entry is None:
            return json_response({"message": "Not Found"}, status=404)
        checks = catalog.link_checks(s, [entry.caffemodel_url] if entry.caffemodel_url else [])
    return json_response(entry_json(entry, weights_of(entry, checks, mirror), base_url(request)))


# --------------------------------------------------------------------------- comparing models


MAX_HTML_ROWS = 100


def _compare_query(request: Request):
    from .compare import CompareQuery

    return CompareQuery.parse(request.query_params, request.query_params.getlist("ids"))


def _compare_data(request: Request, query: Any) -> tuple[Any, Any, tuple]:
    """The page of rows and the facets, cached on the query and the catalog's generation."""
    from .compare import rows

    store, _, cache = _state(request)
    with store.session() as s:
        gen = catalog.generation(s)
        key = ("compare", gen, query.key())
        data = cache.get(key)
        if data is None:
            facets = cache.get(("facets", gen)) or cache.put(("facets", gen), catalog.facets(s))
            data = cache.put(key, (rows(s, query), facets))
    return data[0], data[1], key


def _bad_query(request: Request, message: str, as_json: bool) -> Response:
    if as_json:
        return json_response({"message": message}, status=400)
    if request.url.path.endswith(".csv"):
        return Response(message + "\n", status_code=400, media_type="text/plain; charset=utf-8")
    return render("error.html", status=400, title="Bad request", message=message, q="")


@router.get("/compare")
async def compare_page(request: Request) -> Response:
    return await _answer(request, _compare, "html")


@router.get("/compare.csv")
async def compare_csv(request: Request) -> Response:
    return await _answer(request, _compare, "csv")


@router.get("/compare.json")
async def compare_json(request: Request) -> Response:
    return await _answer(request, _compare, "json")


def _compare(request: Request, kind: str) -> Response:
    from .compare import COLUMNS, BadQuery, results_of, row_json, to_csv

    _, mirror, cache = _state(request)
    try:
        query = _compare_query(request)
    except BadQuery as e:
        return _bad_query(request, str(e), kind == "json")
    if kind == "html":
        query.per_page = min(query.per_page, MAX_HTML_ROWS)  # scripts may take 500 rows; a page shows 100
    page, facets, key = _compare_data(request, query)
    held = [mirror is not None and mirror.has(e.sha1) for e in page.entries]
    if kind != "html":
        base = base_url(request)
        items = [row_json(e, base, m) for e, m in zip(page.entries, held, strict=True)]
        if kind == "csv":
            return Response(
                to_csv(items),
                media_type="text/csv; charset=utf-8",
                headers={"Content-Disposition": 'attachment; filename="caffezoo-compare.csv"'},
            )
        return json_response(
            {"total": page.total, "page": query.page, "per_page": query.per_page, "models": items}
        )
    html_key = ("compare-html", *key, tuple(held))
    html = cache.get(html_key)
    if html is None:
        last = max(1, -(-page.total // query.per_page))
        html = cache.put(
            html_key,
            templates()
            .get_template("compare.html")
            .render(
                query=query,
                rows=[(e, m, results_of(e)) for e, m in zip(page.entries, held, strict=True)],
                total=page.total,
                facets=facets,
                columns=COLUMNS,
                page=query.page,
                last=last,
                pages=page_links(query.page, last),
                q="",
            ),
        )
    return HTMLResponse(html, headers=PAGE_HEADERS)


# --------------------------------------------------------------------------- a user's models

USER_PAGE = 50


@router.get("/users/{user}")
async def user_page(request: Request, user: str) -> Response:
    """A person's models; to API clients (no ``text/html`` asked), GitHub's user JSON, since
    gists' ``owner.url`` points here."""
    if "text/html" not in request.headers.get("accept", ""):
        return await _answer(request, _user_json, user)
    return await _answer(request, _user_page, user)


def _user_json(request: Request, user: str) -> Response:
    from sqlalchemy import func

    from ..gist.rules import LOGIN_RE
    from .gist_json import user_json
    from .tables import User

    if not LOGIN_RE.fullmatch(user):  # nobody has such a name (at most 39 characters, no NUL for PostgreSQL)
        return json_response({"message": "Not Found"}, status=404)
    store = _state(request)[0]
    with store.session() as s:
        row = s.execute(select(User.login, User.id).where(User.login == user)).first()
        if row is None:
            row = s.execute(select(User.login, User.id).where(func.lower(User.login) == user.lower())).first()
    if row is None:
        return json_response({"message": "Not Found"}, status=404)
    return json_response(user_json(base_url(request), row[0], row[1]))


def _user_page(request: Request, user: str) -> HTMLResponse:
    """The public models ``user`` published, newest first; a 404 page for nobody."""
    from sqlalchemy import func

    from ..gist.rules import Invalid, check_login

    try:
        check_login(user)
    except Invalid:
        return not_found_page(f"There is no user {user[:64]!r} here.")
    store, mirror, cache = _state(request)
    try:
        page = min(max(int(request.query_params.get("page", "1") or 1), 1), MAX_PAGE)
    except ValueError:
        page = 1
    with store.session() as s:
        gen = catalog.generation(s)
        key = ("user", gen, user.lower(), page)
        data = cache.get(key)
        if data is None:
            login = store.login_of(user)
            if login is None:
                return not_found_page(f"There is no user {user!r} here.")
            where = [Entry.listed.is_(True), Entry.public.is_(True), Entry.owner == login]
            total = s.scalar(select(func.count(Entry.pk)).where(*where)) or 0
            entries = list(
                s.scalars(
                    select(Entry)
                    .where(*where)
                    .options(defer(Entry.readme))
                    .order_by(Entry.updated_at.desc(), Entry.pk)
                    .limit(USER_PAGE)
                    .offset((page - 1) * USER_PAGE)
                )
            )
            checks = catalog.link_checks(s, [e.caffemodel_url for e in entries if e.caffemodel_url])
            data = cache.put(key, (login, entries, total, checks))
    login, entries, total, checks = data
    cards = [(e, weights_of(e, checks, mirror)) for e in entries]
    last = max(1, -(-total // USER_PAGE))
    return render(
        "user.html",
        login=login,
        cards=cards,
        total=total,
        page=page,
        last=last,
        pages=page_links(page, last),
        q="",
    )


# Last: two free segments would shadow every two-segment route registered after it.
@router.get("/{user}/{gist_id}")
def gist_html_url(request: Request, user: str, gist_id: str) -> Response:
    """A gist's ``html_url``: its model page (or a 404 page)."""
    store = request.app.state.storage
    view = store.get_gist(gist_id) if valid_id(gist_id, user) else None
    if view is None or view.owner.lower() != user.lower():
        return not_found_page(f"There is no gist {user}/{gist_id} here.")
    return RedirectResponse(f"/models/{gist_id}", status_code=302)


__all__ = ["router", "JSON_TYPE", "commands_for", "entry_json", "weights_of"]
