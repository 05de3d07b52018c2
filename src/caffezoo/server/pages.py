"""The web wiki: server-rendered pages over the catalog (Jinja2, no JavaScript).

Routes: ``/`` (the index: search, filters, pages), ``/models/{id}`` (one
model), ``/models/{id}/net.svg`` (its network), ``/publish`` (how to publish),
``/wiki`` (the imported wiki page, section by section), ``/{user}/{id}`` (a
gist's ``html_url``, sent on to its model page), and ``/api/models[/{id}]``
(the catalog as JSON, with link health and mirror state).

Every page is sent with a Content-Security-Policy that allows no script at
all and styles only from ``/static``: even a sanitizer bug could not run code.
Rendered pages are cached by the catalog's generation counter, which every
write that a page shows moves on.
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

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy import select
from sqlalchemy.orm import defer
from starlette.concurrency import run_in_threadpool

from ..errors import CaffezooError
from ..frontmatter import parse_readme
from . import catalog
from .api import JSON_TYPE, GistCache, base_url, json_response, valid_id
from .mirror import Mirror
from .models import Entry, LinkCheck, WikiSection
from .pictures import pick_net
from .render import highlight_prototxt, inline_markdown_html, markdown_html, plain_lines
from .storage import GistView, Storage

HERE = Path(__file__).parent
PER_PAGE = 20
MAX_PAGE = 10_000
PAGE_CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "base-uri 'none'; frame-ancestors 'none'"
)
SVG_CSP = "default-src 'none'; style-src 'unsafe-inline'; sandbox"
PAGE_HEADERS = {"Content-Security-Policy": PAGE_CSP}

router = APIRouter()


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
        filesize=_filesize, when=_when, thousands=lambda n: f"{n:,}", inline_markdown=inline_markdown_html
    )
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

    def json(self, base: str) -> dict[str, Any]:
        c = self.checked
        return {
            "url": self.url,
            "sha1": self.sha1,
            "size": self.size,
            "reachable": None if c is None else c.reachable,
            "status": None if c is None else c.status,
            "checked_size": None if c is None else c.size,
            "error": None if c is None else c.error,
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
    return {
        "id": entry.id,
        "name": entry.name,
        "summary": entry.summary,
        "license": entry.license,
        "task": entry.task,
        "framework": entry.framework,
        "tags": [t for t in entry.tags.split(",") if t],
        "gist_id": entry.gist_id if entry.indexed_serial else None,
        "owner": entry.owner,
        "html_url": f"{base}/models/{entry.id}",
        "source_url": entry.source_url,
        "updated_at": entry.updated_at.strftime("%Y-%m-%dT%H:%M:%SZ") if entry.updated_at else None,
        "problems": [p for p in entry.problems.splitlines() if p],
        "weights": weights.json(base),
    }


class PageCache(GistCache):
    """Rendered pages and query results, keyed with the catalog's generation."""

    def __init__(self, size: int = 512):
        super().__init__(size)

    def put(self, key: tuple, value: Any) -> Any:
        super().put(key, value)
        return value


def _state(request: Request) -> tuple[Storage, Mirror | None, PageCache]:
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


def _index_data(store: Storage, cache: PageCache, query: IndexQuery) -> IndexData:
    with store.session() as s:
        gen = catalog.generation(s)
        key = ("index", gen, query.q, query.license, query.task, query.tag, query.page)
        found = cache.get(key)
        if found is not None:
            return found
        facets = cache.get(("facets", gen)) or cache.put(("facets", gen), catalog.facets(s))
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


async def _answer(request: Request, page: Any, *args: Any) -> Response:
    """Run a page function: on the event loop on SQLite, in the thread pool otherwise.

    SQLite reads never wait on a network, so a thread hop costs more than it saves:
    under 8 concurrent clients it doubled a cold model page's p99. A page that may
    run a subprocess (the model page's network picture) must not use this as is.
    """
    if _state(request)[0].is_sqlite:
        return page(request, *args)
    return await run_in_threadpool(page, request, *args)


@router.get("/", response_class=HTMLResponse)
async def index(request: Request) -> Response:
    return await _answer(request, _index)


def _index(request: Request) -> HTMLResponse:
    store, mirror, cache = _state(request)
    query = IndexQuery.from_request(request)
    data = _index_data(store, cache, query)
    cards = [(e, weights_of(e, data.checks, mirror)) for e in data.entries]
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


_FILE_HTML = GistCache(1024)


def _file_html(blob_sha: str, prototxt: bool, content: bytes) -> str:
    """A file as highlighted (or plain) lines; by blob, since many models share their nets.

    Keyed on the blob's SHA-1 alone (an lru_cache would keep, hash and compare each
    file's whole content as part of its key).
    """
    key = (blob_sha, prototxt)
    html = _FILE_HTML.get(key)
    if html is None:
        text = content.decode("utf-8", errors="replace")
        html = highlight_prototxt(text) if prototxt else plain_lines(text)
        _FILE_HTML.put(key, html)
    return html


def _files(view: GistView, base: str) -> list[FileShown]:
    from .shapes import raw_url

    out = []
    for f in view.files:
        lower = f.filename.lower()
        if lower == "readme.md":
            continue
        if len(f.content or b"") > 2 * 1024 * 1024:
            html = None
        else:
            html = _file_html(f.blob_sha, lower.endswith(".prototxt"), f.content or b"")
        kind = "prototxt" if lower.endswith(".prototxt") else "text"
        out.append(FileShown(f.filename, f.size, raw_url(base, view, f), html, kind))
    return out


def _front_matter_rows(data: dict[str, Any]) -> list[tuple[str, Any, bool]]:
    """``(key, shown value, is a link)`` for the table."""
    rows = []
    for key, value in data.items():
        if isinstance(value, (list, tuple)):
            shown = ", ".join(str(v) for v in value)
        elif isinstance(value, dict):
            shown = json.dumps(value, ensure_ascii=False)
        else:
            shown = "" if value is None else str(value)
        rows.append((str(key), shown, _web_url(value)))
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


def _model_page(request: Request, entry_id: str, rev: str | None, draw: bool = True) -> HTMLResponse | None:
    """The model page; None when it would have to draw its network and ``draw`` is false."""
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
        if html is not None:
            return HTMLResponse(html, headers=PAGE_HEADERS)
        section = catalog.section_of(s, entry)
        checks = catalog.link_checks(s, [entry.caffemodel_url] if entry.caffemodel_url else [])
    view = store.get_gist(entry.gist_id, rev) if entry.gist_id and entry.indexed_serial else None
    if rev and view is None:
        return not_found_page(f"The model {entry_id!r} has no revision {rev!r}.")
    picture_name = pick_net([f.filename for f in view.files]) if view is not None else None
    picture = None
    if picture_name:
        blob = next(f for f in view.files if f.filename == picture_name)
        picture = request.app.state.pictures.cached(blob.blob_sha)
        if picture is None:
            if not draw:
                return None  # drawing runs `dot`, for seconds on a big net
            picture = request.app.state.pictures.get(blob.blob_sha, blob.content or b"")
    weights = weights_of(entry, checks, mirror)
    readme_html, rows, problems = "", [], [p for p in entry.problems.splitlines() if p]
    files: list[FileShown] = []
    if view is not None:
        readme = next((f for f in view.files if f.filename.lower() == "readme.md"), None)
        if readme is not None and rev is None and len(entry.readme) < catalog.MAX_SEARCH_TEXT:
            # The newest revision: the catalog parsed it on write (YAML parsing is the slow part).
            rows, body = _front_matter_rows(json.loads(entry.front_matter or "{}")), entry.readme
            readme_html = markdown_html(body, demote=1)
        elif readme is not None:
            text = (readme.content or b"").decode("utf-8", errors="replace")
            try:
                parsed = parse_readme(text)
                rows, body = _front_matter_rows(parsed.data), parsed.body
            except CaffezooError:  # a broken front matter: its problems are listed; show the text
                body = text
            readme_html = markdown_html(body, demote=1)
        files = _files(view, base)
    html = (
        templates()
        .get_template("model.html")
        .render(
            entry=entry,
            view=view,
            rev=rev,
            weights=weights,
            readme_html=readme_html,
            rows=rows,
            problems=problems,
            files=files,
            picture=picture,
            picture_name=picture_name,
            section=section,
            citation=section.citation if section else None,
            commands=commands_for(entry, view, base, weights.mirrored),
            base=base,
            q="",
            wiki_description_html=markdown_html(entry.wiki_description, demote=1)
            if entry.wiki_description
            else "",
        )
    )
    cache.put(key, html)
    return HTMLResponse(html, headers=PAGE_HEADERS)


@router.get("/models/{entry_id}", response_class=HTMLResponse)
async def model_page(request: Request, entry_id: str, rev: str | None = None) -> HTMLResponse:
    if not valid_id(entry_id):
        return not_found_page(f"There is no model {entry_id!r} in this zoo.")
    if rev is not None and not (4 <= len(rev) <= 40 and all(c in "0123456789abcdef" for c in rev.lower())):
        return not_found_page(f"{rev!r} is not a revision: expected the hex version from the history.")
    if _state(request)[0].is_sqlite:  # on the event loop, as _answer does, unless it must draw
        page = _model_page(request, entry_id, rev, draw=False)
        if page is not None:
            return page
    # PostgreSQL, or a network not drawn yet: `dot` must not hold up every other request.
    return await run_in_threadpool(_model_page, request, entry_id, rev)


@router.get("/models/{entry_id}/net.svg")
def model_svg(request: Request, entry_id: str, rev: str | None = None) -> Response:
    if not valid_id(entry_id):
        return Response("no such model", status_code=404, media_type="text/plain")
    store = request.app.state.storage
    with store.session() as s:
        entry = catalog.get_entry(s, entry_id)
    if entry is None or not entry.gist_id or not entry.indexed_serial:
        return Response("no such model", status_code=404, media_type="text/plain")
    view = store.get_gist(entry.gist_id, rev)
    name = pick_net([f.filename for f in view.files]) if view is not None else None
    if view is None or name is None:
        return Response("no network to draw", status_code=404, media_type="text/plain")
    blob = next(f for f in view.files if f.filename == name)
    picture = request.app.state.pictures.get(blob.blob_sha, blob.content or b"")
    if picture.svg is None:
        return Response(picture.error or "cannot draw", status_code=422, media_type="text/plain")
    return Response(
        picture.svg,
        media_type="image/svg+xml",
        headers={"Content-Security-Policy": SVG_CSP, "Cache-Control": "public, max-age=300"},
    )


@router.get("/publish", response_class=HTMLResponse)
def publish_page(request: Request) -> HTMLResponse:
    return render("publish.html", base=base_url(request), q="")


@router.get("/wiki", response_class=HTMLResponse)
def wiki_page(request: Request) -> HTMLResponse:
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
            data = cache.put(("wiki", gen), (sections, entries, checks))
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
    store, mirror, cache = _state(request)
    query = IndexQuery.from_request(request)
    data = _index_data(store, cache, query)
    base = base_url(request)
    items = [entry_json(e, weights_of(e, data.checks, mirror), base) for e in data.entries]
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
