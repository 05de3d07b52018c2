"""Caffe's Model-Zoo wiki page, in and out of a zoo server's database.

>>> page = parse_page(Path("Model-Zoo.md").read_text())                # doctest: +SKIP
>>> [(s.title, len(s.items)) for s in page.sections][:1]               # doctest: +SKIP
[('Network in Network model', 2)]
>>> report = import_page(storage, page, fetch=True)                    # doctest: +SKIP
>>> print(render_page(export_page(storage)))                           # doctest: +SKIP

The page's shape (BVLC/caffe's wiki, 2014-2019): a preamble, then one heading
per contribution (``###``, sometimes with an ``<a name="...">`` anchor), each
with a citation (a fenced ``bibtex`` block or an indented one), notes, and
bullets ``* [Name](https://gist.github.com/USER/ID#file-readme-md): what it
is``. Links to a GitHub repository, a project site or a drive instead of a gist
become entries too ("external link"), so nothing on the page is lost.

Import and export work on the database directly, like ``serve token create``:
a wiki page is the operator's material, its sections and citations have no
place in the Gist API, and the import must be one transaction (a page that
fails half-way changes nothing). Gists are fetched first, over the Gist API
(``CAFFEZOO_GIST_API``, GitHub by default), and stored with their own id and
owner, so ``caffezoo gist download USER/ID`` means the same gist on GitHub and
here.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx
from sqlalchemy import delete, select, update

from .. import _http
from ..errors import CaffezooError, UsageError
from ..gist import GistClient, GistRef, contents, parse_ref
from ..gist.rules import Invalid, check_login
from . import catalog
from .storage import FileChange, Storage
from .tables import Entry, WikiSection

__all__ = [
    "ImportReport",
    "WikiItem",
    "WikiPage",
    "export_page",
    "import_page",
    "link_entry_id",
    "notes_text",
    "parse_page",
    "render_page",
]

DEFAULT_OWNER = "wiki"
GIST_SECONDS = 120.0  # one gist's fetch (API answer and raw files) ends within this...
GIST_BYTES = 100 << 20  # ...and receives no more than this
GIST_HOSTS = ("gist.github.com",)
DEFAULT_PREAMBLE = (
    "Models shared by the community, one section per contribution. To get one:\n\n"
    "1. its model info: `caffezoo gist download USER/ID` (or Caffe's "
    "`./scripts/download_model_from_gist.sh <gist_id> <dirname>`);\n"
    "2. its weights, checked against their SHA-1: `caffezoo download models/USER-ID` (or "
    "`./scripts/download_model_binary.py <model_dir>`).\n"
)

_HEADING_RE = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_ANCHOR_RE = re.compile(r"""^\s*<a\s+(?:name|id)\s*=\s*["']?([^"'>\s]+)["']?\s*>\s*</a>\s*$""", re.I)
_ANCHOR_INLINE_RE = re.compile(r"""<a\s+(?:name|id)\s*=\s*["']?([^"'>\s]+)["']?\s*>\s*</a>""", re.I)
_ITEM_RE = re.compile(
    r"^\s{0,3}[-*+]\s+\[(?P<name>(?:[^\[\]]|\[[^\]]*\])+)\]\((?P<url>[^)\s]+)"
    r"(?:\s+\"[^\"]*\")?\)\s*(?:[:\-–—,]\s*)?(?P<desc>.*)$"
)
_BULLET_RE = re.compile(r"^\s{0,3}[-*+]\s+")
_FENCE_RE = re.compile(r"^\s{0,3}(```+|~~~+)\s*([\w+-]*)\s*$")
# Where the citation and the list of models stood among a section's notes, so an
# export puts them back in the page's own order.
CITATION_MARK = "<!-- caffezoo:citation -->"
MODELS_MARK = "<!-- caffezoo:models -->"


def notes_text(notes: str) -> str:
    """A section's notes without the position marks (for rendering)."""
    return _clean(["" if ln.strip() in (CITATION_MARK, MODELS_MARK) else ln for ln in notes.split("\n")])


# --------------------------------------------------------------------------- the page as data


@dataclass
class WikiItem:
    """One bullet: a model's name, its link, and the description after the colon."""

    name: str
    url: str
    description: str = ""

    @property
    def gist(self) -> GistRef | None:
        """The gist the link points to, when it is a gist link."""
        parts = urlsplit(self.url)
        if parts.scheme in ("http", "https") and parts.hostname in GIST_HOSTS:
            try:
                return parse_ref(self.url)
            except UsageError:
                return None
        return None


@dataclass
class Section:
    title: str
    anchor: str | None = None
    citation: str | None = None
    notes: str = ""
    items: list[WikiItem] = field(default_factory=list)


@dataclass
class WikiPage:
    preamble: str = ""
    sections: list[Section] = field(default_factory=list)
    title: str = "Model Zoo"


def _clean(lines: list[str]) -> str:
    """Lines as Markdown: no blank runs, no blank ends."""
    out: list[str] = []
    for line in lines:
        if line.strip() == "" and (not out or out[-1] == ""):
            continue
        out.append(line.rstrip())
    while out and out[-1] == "":
        out.pop()
    return "\n".join(out)


def parse_page(text: str) -> WikiPage:
    """Read a Model-Zoo-shaped Markdown page into sections, citations, notes and items."""
    page = WikiPage()
    lines = catalog.without_nul(text).replace("\r\n", "\n").replace("\r", "\n").split("\n")
    preamble: list[str] = []
    notes: list[str] = []
    current: Section | None = None
    pending_anchor: str | None = None
    i = 0

    def finish() -> None:
        if current is not None:
            marks = (CITATION_MARK, MODELS_MARK)
            kept = [
                ln
                for k, ln in enumerate(notes)
                if ln.strip()
                or not ((k > 0 and notes[k - 1] in marks) or (k + 1 < len(notes) and notes[k + 1] in marks))
            ]
            current.notes = _clean(kept)

    while i < len(lines):
        line = lines[i]
        heading = _HEADING_RE.match(line)
        anchor = _ANCHOR_RE.match(line)
        fence = _FENCE_RE.match(line)
        if anchor:
            if (
                current is not None
                and not current.items
                and not notes
                and current.anchor is None
                and current.citation is None
            ):
                current.anchor = anchor.group(1)
            else:
                pending_anchor = anchor.group(1)
            i += 1
            continue
        if heading and len(heading.group(1)) == 1 and current is None and not page.sections:
            page.title = heading.group(2)
            i += 1
            continue
        if heading:
            finish()
            title = heading.group(2)
            inline = _ANCHOR_INLINE_RE.search(title)
            if inline:
                pending_anchor = pending_anchor or inline.group(1)
                title = _ANCHOR_INLINE_RE.sub("", title).strip()
            current = Section(title=title, anchor=pending_anchor)
            page.sections.append(current)
            pending_anchor, notes = None, []
            i += 1
            continue
        if current is None:
            preamble.append(line)
            i += 1
            continue
        if fence:  # a fenced block: the citation when it is the section's first, else notes
            end = i + 1
            while end < len(lines) and not lines[end].strip().startswith(fence.group(1)):
                end += 1
            block = lines[i + 1 : end]
            if current.citation is None and not current.items and _looks_like_citation(block, fence.group(2)):
                current.citation = "\n".join(block).strip("\n")
                notes.append(CITATION_MARK)
            else:
                notes.extend(lines[i : end + 1])
            i = end + 1
            continue
        if (
            line.startswith(("    ", "\t"))
            and line.strip()
            and (not notes or notes[-1].strip() == "")
            and not _BULLET_RE.match(line.lstrip())
        ):
            end = i
            while end < len(lines) and (lines[end].startswith(("    ", "\t")) or lines[end].strip() == ""):
                end += 1
            block = [ln[4:] if ln.startswith("    ") else ln.lstrip("\t") for ln in lines[i:end]]
            if current.citation is None and not current.items and _looks_like_citation(block, ""):
                current.citation = "\n".join(block).strip("\n")
                notes.append(CITATION_MARK)
            else:
                notes.extend(lines[i:end])
            i = end
            continue
        item = _ITEM_RE.match(line)
        if item:
            desc = [item.group("desc").strip()]
            j = i + 1
            # Continuation lines: indented, not a new bullet or block.
            while (
                j < len(lines)
                and lines[j].startswith("  ")
                and lines[j].strip()
                and not _BULLET_RE.match(lines[j].lstrip())
                and not lines[j].startswith("    ")
            ):
                desc.append(lines[j].strip())
                j += 1
            if not current.items:
                notes.append(MODELS_MARK)
            current.items.append(
                WikiItem(
                    item.group("name").strip(), item.group("url").strip(), " ".join(d for d in desc if d)
                )
            )
            i = j
            continue
        notes.append(line)
        i += 1
    finish()
    page.preamble = _clean(preamble)
    return page


def _looks_like_citation(block: list[str], lang: str) -> bool:
    text = "\n".join(block)
    return (
        lang.lower() in ("bibtex", "bib", "tex", "latex")
        or bool(re.search(r"@\w+\s*\{", text))
        or bool(re.search(r"\b(19|20)\d\d\b", text) and len(block) <= 12)
    )


def render_page(page: WikiPage) -> str:
    """Write a page in the wiki's own shape (what :func:`parse_page` reads back the same)."""
    out = [f"# {page.title}", ""]
    if page.preamble:
        out += [page.preamble, ""]
    for sec in page.sections:
        if sec.anchor:
            out.append(f'<a name="{sec.anchor}"></a>')
        out += [f"### {sec.title}", ""]
        citation: list[str] = []
        if sec.citation:
            fence = "````" if "```" in sec.citation else "```"
            citation = [f"{fence}bibtex" if "@" in sec.citation else fence, sec.citation, fence, ""]
        items = [
            f"* [{i.name}]({i.url})" + (f": {' '.join(i.description.split())}" if i.description else "")
            for i in sec.items
        ]
        items += [""] if items else []
        notes = sec.notes.split("\n") if sec.notes else []
        if CITATION_MARK not in notes:
            notes = [CITATION_MARK, *notes]
        if MODELS_MARK not in notes:
            notes = [*notes, MODELS_MARK]
        for line in notes:
            if line == CITATION_MARK:
                out += citation
            elif line == MODELS_MARK:
                out += items
            else:
                out.append(line)
        if out[-1] != "":
            out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


# --------------------------------------------------------------------------- import


@dataclass
class ImportReport:
    sections: int = 0
    gists: int = 0
    links: int = 0
    fetched: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # gist id -> why
    duplicates: list[str] = field(default_factory=list)


def link_entry_id(url: str) -> str:
    return "link-" + hashlib.sha1(url.encode("utf-8")).hexdigest()[:16]


def _owner_for(storage: Storage, login: str | None) -> str:
    try:
        if login:
            check_login(login)
            return storage.ensure_user(login)
    except Invalid:
        pass
    return storage.ensure_user(DEFAULT_OWNER)


def fetch_gist(storage: Storage, ref: GistRef, client: GistClient) -> str:
    """Copy a gist from the Gist API into the zoo with its id and owner; ``fetched`` or ``unchanged``.

    The files go from the API to the database: no model directory is written or validated
    on the way (the catalog reads the readme when the gist is stored).
    """
    gist = client.get(ref.id)
    files = contents(gist, client)
    current = storage.get_gist(ref.id)
    if current is None:
        owner = _owner_for(storage, gist.owner or ref.user)
        storage.create_gist(owner, gist.description, True, files, gist_id=ref.id, imported_from=client.api)
        return "fetched"
    have = {f.filename: f.content for f in current.files}
    changes: dict[str, FileChange | None] = {
        n: FileChange(content=c) for n, c in files.items() if have.get(n) != c
    }
    changes.update({n: None for n in have if n not in files})
    if not changes:
        return "unchanged"
    storage.update_gist(ref.id, current.owner, changes=changes, importer=True)
    return "fetched"


def import_page(
    storage: Storage,
    page: WikiPage,
    *,
    fetch: bool = True,
    client: GistClient | None = None,
    on_gist: Callable[[str, str, str | None], None] | None = None,
    policy: _http.Policy | None = None,
) -> ImportReport:
    """Make the zoo's wiki the page: sections, citations, entries; fetch the gists when ``fetch``.

    A re-import replaces the previous page: entries that only the old page
    knew (external links, gists never fetched) go; fetched gists stay as models.
    ``on_gist(id, status, error)`` is told of each gist fetched. ``policy`` says where the
    fetches may go besides the Gist API itself (default: public addresses only): a gist's
    ``raw_url``, and every redirect, are a remote's words.
    """
    report = ImportReport(sections=len(page.sections))
    if fetch:
        own = client is None
        client = client or GistClient(policy=policy or _http.Policy())
        try:
            seen = set()
            for sec in page.sections:
                for item in sec.items:
                    ref = item.gist
                    if ref is None or ref.id in seen:
                        continue
                    seen.add(ref.id)
                    try:
                        with _http.budget(GIST_SECONDS, max_bytes=GIST_BYTES):
                            status = fetch_gist(storage, ref, client)
                        (report.fetched if status == "fetched" else report.unchanged).append(ref.id)
                        if on_gist:
                            on_gist(ref.id, status, None)
                    except (CaffezooError, Invalid) as e:
                        report.failed[ref.id] = str(e)
                        if on_gist:
                            on_gist(ref.id, "failed", str(e))
                    except (httpx.HTTPError, httpx.InvalidURL) as e:  # refused, over budget: no traceback
                        report.failed[ref.id] = f"gist {ref.id}: {_http.public_error(e)}"
                        if on_gist:
                            on_gist(ref.id, "failed", report.failed[ref.id])
        finally:
            if own:
                client.close()
    with storage.session(write=True) as s:
        old = list(s.scalars(select(Entry).where(Entry.wiki_name.is_not(None))))
        for entry in old:
            entry.section_id, entry.wiki_name, entry.wiki_description, entry.source_url = (
                None,
                None,
                None,
                None,
            )
        s.flush()
        s.execute(update(Entry).where(Entry.section_id.is_not(None)).values(section_id=None))
        s.execute(delete(WikiSection))
        if page.preamble or page.title:
            s.add(
                WikiSection(
                    position=0,
                    title="",
                    anchor=catalog.clip(WikiSection.anchor, page.title),
                    notes=page.preamble,
                )
            )
        touched: dict[str, Entry] = {}
        for pos, sec in enumerate(page.sections, start=1):
            row = WikiSection(
                position=pos,
                title=sec.title,
                anchor=catalog.clip(WikiSection.anchor, sec.anchor),
                citation=sec.citation,
                notes=sec.notes,
            )
            s.add(row)
            s.flush()
            for ipos, item in enumerate(sec.items):
                ref = item.gist
                entry_id = ref.id if ref else link_entry_id(item.url)
                if entry_id in touched:
                    report.duplicates.append(item.url)
                    continue
                entry = next((e for e in old if e.id == entry_id), None) or catalog.get_entry(s, entry_id)
                if entry is None:
                    entry = Entry(
                        id=entry_id,
                        gist_id=ref.id if ref else None,
                        indexed_serial=0,
                        listed=True,
                        public=True,
                        name=item.name,
                        sort_name=item.name.lower()[:200],
                    )
                    s.add(entry)
                if not entry.indexed_serial:  # nothing from a gist: the wiki's words are all there is
                    entry.name, entry.sort_name, entry.listed = item.name, item.name.lower()[:200], True
                entry.section_id, entry.position = row.id, ipos
                entry.wiki_name, entry.wiki_description, entry.source_url = (
                    item.name,
                    item.description,
                    item.url,
                )
                touched[entry_id] = entry
                if ref:
                    report.gists += 1
                else:
                    report.links += 1
        s.flush()
        for entry in old:
            if entry.id in touched:
                continue
            if entry.indexed_serial:
                touched[entry.id] = entry  # a gist model: stays, without its wiki words
            else:
                catalog.drop_entry(s, entry)
        s.flush()
        for entry in touched.values():
            catalog.refresh_search(s, entry)
        catalog.bump(s)
    return report


# --------------------------------------------------------------------------- export


def export_page(
    storage: Storage, *, base_url: str | None = None, include_unsectioned: bool = True
) -> WikiPage:
    """The zoo as a wiki page: imported sections in order, then every other listed model.

    Gists keep the link they were imported from; others link to ``base_url``
    (this server's address: ``{base_url}/{owner}/{id}``) when given, else to
    their GitHub-style ``https://gist.github.com/{owner}/{id}``.
    """
    page = WikiPage(preamble=DEFAULT_PREAMBLE.rstrip("\n"))
    with storage.session() as s:
        sections = list(s.scalars(select(WikiSection).order_by(WikiSection.position)))
        entries = list(
            s.scalars(
                select(Entry).where(Entry.section_id.is_not(None)).order_by(Entry.section_id, Entry.position)
            )
        )
        others = (
            list(
                s.scalars(
                    select(Entry)
                    .where(Entry.section_id.is_(None), Entry.listed.is_(True))
                    .order_by(Entry.sort_name)
                )
            )
            if include_unsectioned
            else []
        )
    by_section: dict[int, list[Entry]] = {}
    for e in entries:
        by_section.setdefault(e.section_id, []).append(e)

    def item(e: Entry) -> WikiItem:
        if e.source_url:
            url = e.source_url
        elif base_url:
            url = f"{base_url.rstrip('/')}/{e.owner}/{e.id}"
        else:
            url = f"https://gist.github.com/{e.owner}/{e.id}#file-readme-md"
        return WikiItem(e.wiki_name or e.name, url, e.wiki_description if e.wiki_name else e.summary)

    for sec in sections:
        if sec.title == "":
            page.title = sec.anchor or page.title
            page.preamble = sec.notes or page.preamble
            continue
        page.sections.append(
            Section(
                sec.title, sec.anchor, sec.citation, sec.notes, [item(e) for e in by_section.get(sec.id, [])]
            )
        )
    if others:
        page.sections.append(Section("Models on this zoo", None, None, "", [item(e) for e in others]))
    return page
