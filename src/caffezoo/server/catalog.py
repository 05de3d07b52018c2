"""The zoo's catalog: which gists are models, and finding them.

A gist is a model when its files include a ``readme.md`` with front matter.
:func:`index_gist` runs inside every write transaction of
:class:`~.storage.Storage`, so the catalog never lags behind the gists; wiki
imports add entries of their own (:mod:`.wiki`), gist or not.

>>> page = find(session, q="googlenet", license="unrestricted")      # doctest: +SKIP
>>> [e.name for e in page.entries], page.total                        # doctest: +SKIP
(['BAIR/BVLC GoogleNet Model'], 1)

Full-text search covers the name, the tags and the readme (with the wiki's
description and section title): SQLite's FTS5 with bm25 ranking, or
PostgreSQL's ``tsvector`` with a GIN index. Every query word matches as a
prefix, so ``goog`` finds GoogLeNet.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Float, Integer, delete, func, insert, literal_column, select, text, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, defer

from ..errors import CaffezooError
from ..frontmatter import parse_readme
from ..gist.rules import MAX_DESCRIPTION
from ..hashes import is_sha1
from ..schema import FrontMatter, validate_front_matter
from .facts import FACTS_VERSION, NetFacts, facts_of_blob, layer_types_text
from .tables import Blob, Entry, EntryTag, Gist, LinkCheck, Meta, Revision, RevisionFile, User, WikiSection

MAX_SEARCH_TEXT = 200_000  # characters of a readme that search sees (a tsvector tops out at 1 MB)
MAX_QUERY_WORDS = 12
_WORD_RE = re.compile(r"\w+", re.UNICODE)
_FRONT_MARK_RE = re.compile(r"^\s*---\s*$", re.M)


# --------------------------------------------------------------------------- reading a readme


@dataclass
class ModelInfo:
    """What the catalog keeps of a model's readme."""

    name: str
    summary: str = ""
    license: str | None = None
    task: str | None = None
    dataset: str | None = None
    results: list[dict] = field(default_factory=list)  # reported results, checked by the schema
    framework: str | None = None
    caffemodel: str | None = None
    caffemodel_url: str | None = None
    sha1: str | None = None
    size: int | None = None
    tags: list[str] = field(default_factory=list)
    body: str = ""
    problems: list[str] = field(default_factory=list)
    data: dict = field(default_factory=dict)  # the front matter as written


def framework_of(fm: FrontMatter) -> str | None:
    """``Caffe 1.0`` from ``caffe_version``, ``Caffe @709dc15`` from ``caffe_commit``."""
    if fm.caffe_version:
        return f"Caffe {fm.caffe_version}"
    if fm.caffe_commit:
        return f"Caffe @{fm.caffe_commit[:7]}"
    return None


_MD_DECOR_RE = re.compile(r"!\[([^\]]*)\]\([^)]*\)|\[([^\]]*)\]\([^)]*\)|[*_`]+|<[^>]*>")


def first_line(markdown: str, limit: int = 220) -> str:
    """The first sentence of the first paragraph of prose (no headings, tables, fences, HTML).

    >>> first_line("# Title\\n\\nAlexNet trained on **ILSVRC 2012**, [as in](http://x)\\nthe paper. More.\\n")
    'AlexNet trained on ILSVRC 2012, as in the paper.'
    """
    in_fence = False
    paragraph: list[str] = []
    for raw in markdown.splitlines():
        line = raw.strip()
        if line.startswith(("```", "~~~")):
            in_fence = not in_fence
            if paragraph:
                break
            continue
        if in_fence:
            continue
        if not line or line.startswith(("#", "|", ">", "---", "===", "<!--")):
            if paragraph:
                break
            continue
        # The link pattern rescans from every '[': only a summary's worth of a line is looked at
        # (100 KB of '[' in a readme took over a minute here, inside the write transaction).
        line = re.sub(r"^([-*+]|\d+[.)])\s+", "", line[: 8 * limit])
        plain = _MD_DECOR_RE.sub(lambda m: m.group(1) or m.group(2) or "", line).strip()
        if plain:
            paragraph.append(plain)
            if sum(map(len, paragraph)) > 4 * limit:
                break
    text = " ".join(paragraph)
    end = re.search(r"(?<!\bal)(?<!\be\.g)(?<!\bi\.e)(?<!\bvs)(?<!\bFig)[.!?](\s|$)", text)
    if end and end.end() > 20:
        text = text[: end.end()].strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def without_nul(value: Any) -> Any:
    """``value`` with every NUL character as U+FFFD, through lists and mappings.

    PostgreSQL text cannot hold NUL, and YAML's ``"\\0"`` escape makes one in a
    front-matter value; the catalog keeps a visible stand-in, on every database.
    """
    if isinstance(value, str):
        return value.replace("\0", "\ufffd")
    if isinstance(value, list):
        return [without_nul(v) for v in value]
    if isinstance(value, dict):
        return {without_nul(k): without_nul(v) for k, v in value.items()}
    return value


def clip(column: Any, value: str | None) -> str | None:
    """``value`` cut to the length ``column`` (a bounded ``String``) declares: PostgreSQL
    refuses a longer one, and the catalog's copy of a 5,000-character license is no loss."""
    limit = column.type.length
    return value[:limit] if value is not None and limit is not None else value


MAX_SIZE = 2**63 - 1  # a BigInteger column's largest value


def read_info(text: str, fallback_name: str | None = None) -> ModelInfo | None:
    """The catalog's view of a readme; None when it has no front matter (not a model).

    A readme whose front matter is broken is still a model: it is listed with
    its problems, so its owner sees them, rather than silently missing.
    """
    if not _FRONT_MARK_RE.search(text):
        return None
    problems: list[str] = []
    try:
        readme = parse_readme(text)
    except CaffezooError as e:
        return ModelInfo(name=fallback_name or "", problems=str(e).splitlines(), body=text)
    data, body = without_nul(readme.data), readme.body
    try:
        fm = validate_front_matter(data)
    except CaffezooError as e:
        problems = str(e).splitlines()
        # Keep what is usable: every value that is a plain string or a list of them (tags).
        fm = FrontMatter.model_construct(
            **{
                k: v
                for k, v in data.items()
                if k in FrontMatter.model_fields
                and (isinstance(v, str) or (isinstance(v, list) and all(isinstance(x, str) for x in v)))
            }
        )
    tags = [
        clip(EntryTag.tag, t.strip().lower())
        for t in (fm.tags if isinstance(fm.tags, list) else [])
        if str(t).strip()
    ]
    size = fm.size if isinstance(fm.size, int) and 0 <= fm.size <= MAX_SIZE else None
    return ModelInfo(
        name=(fm.name or fallback_name or "").strip(),
        summary=first_line(body),
        license=fm.license,
        task=fm.task,
        dataset=fm.dataset if isinstance(fm.dataset, str) else None,
        results=fm.results if not problems and isinstance(fm.results, list) else [],
        framework=framework_of(fm),
        caffemodel=fm.caffemodel,
        caffemodel_url=fm.caffemodel_url,
        sha1=fm.sha1 if not problems or is_sha1(fm.sha1, lowercase=True) else None,
        size=size,
        tags=sorted(set(tags))[:50],
        body=body,
        problems=problems,
        data=data,
    )


# --------------------------------------------------------------------------- setup and counters


def _add_columns(conn: Any) -> None:
    """Columns (and their indexes) added to ``zoo_entries`` since a database was made:
    ``create_all`` makes missing tables only."""
    from sqlalchemy import inspect as inspect_db

    have = {c["name"] for c in inspect_db(conn).get_columns(Entry.__tablename__)}
    table = Entry.__table__
    for column in table.columns:
        if column.name in have:
            continue
        kind = column.type.compile(dialect=conn.dialect)
        default = (
            column.default.arg if column.default is not None and not callable(column.default.arg) else None
        )
        extra = ""
        if isinstance(default, bool):
            extra = f" DEFAULT {'TRUE' if default else 'FALSE'}"
        elif isinstance(default, int):
            extra = f" DEFAULT {default}"
        elif isinstance(default, str):
            extra = " DEFAULT '" + default.replace("'", "''") + "'"
        conn.exec_driver_sql(f"ALTER TABLE {table.name} ADD COLUMN {column.name} {kind}{extra}")
    for index in table.indexes:
        index.create(conn, checkfirst=True)


def setup(engine: Engine) -> None:
    """Create what SQLAlchemy's metadata cannot: the full-text index, the generation counter,
    columns added since the database was made."""
    with engine.begin() as conn:
        _add_columns(conn)
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql(
                "CREATE VIRTUAL TABLE IF NOT EXISTS zoo_fts USING fts5("
                "name, tags, readme, tokenize = 'unicode61 remove_diacritics 2')"
            )
        else:
            conn.exec_driver_sql("ALTER TABLE zoo_entries ADD COLUMN IF NOT EXISTS search tsvector")
            conn.exec_driver_sql(
                "CREATE INDEX IF NOT EXISTS ix_zoo_entries_search ON zoo_entries USING gin (search)"
            )
        exists = conn.execute(select(Meta.key).where(Meta.key == "generation")).first()
        if exists is None:
            conn.execute(insert(Meta).values(key="generation", value=1))


def bump(s: Session, gist_id: str | None = None) -> None:
    """Something the pages show changed (``gist_id``'s state, if given): caches keyed on
    :func:`generation` go stale. On PostgreSQL the listening replicas are told at commit, and
    :meth:`.Storage.session` waits until they have heard (:mod:`.coherence`)."""
    bumped = update(Meta).where(Meta.key == "generation").values(value=Meta.value + 1)
    if _sqlite(s):
        s.execute(bumped)
        return
    from . import coherence

    value = s.execute(bumped.returning(Meta.value)).scalar_one()
    coherence.announce(s, value, gist_id)
    s.info["generation"] = max(value, s.info.get("generation", 0))
    if gist_id is not None:
        s.info.setdefault("gists", set()).add(gist_id)


def generation(s: Session) -> int:
    return s.scalar(select(Meta.value).where(Meta.key == "generation")) or 0


def _sqlite(s: Session) -> bool:
    return s.get_bind().dialect.name == "sqlite"


# --------------------------------------------------------------------------- indexing


def _head_readme(s: Session, gist: Gist) -> str | None:
    rows = s.execute(
        select(RevisionFile.filename, Blob.content)
        .join(Revision, Revision.id == RevisionFile.revision_id)
        .join(Blob, Blob.sha == RevisionFile.blob_sha)
        .where(
            Revision.gist_id == gist.id,
            Revision.number == gist.revision,
            func.lower(RevisionFile.filename) == "readme.md",
        )
    ).all()
    if not rows:
        return None
    # Caffe's scripts read exactly "readme.md"; another case is a second choice.
    rows.sort(key=lambda r: r[0] != "readme.md")
    return rows[0][1].decode("utf-8", errors="replace")


def refresh_search(s: Session, entry: Entry) -> None:
    """Rewrite the entry's full-text document (name, tags, readme + wiki text)."""
    section = (
        s.scalar(select(WikiSection.title).where(WikiSection.id == entry.section_id))
        if entry.section_id
        else None
    )
    prose = "\n".join(
        p for p in (entry.wiki_name, entry.wiki_description, section, entry.summary, entry.readme) if p
    )[:MAX_SEARCH_TEXT]
    tags = " ".join(entry.tags.split(","))
    if _sqlite(s):
        s.execute(text("DELETE FROM zoo_fts WHERE rowid = :pk"), {"pk": entry.pk})
        if entry.listed:
            s.execute(
                text("INSERT INTO zoo_fts(rowid, name, tags, readme) VALUES (:pk, :n, :t, :r)"),
                {"pk": entry.pk, "n": entry.name, "t": tags, "r": prose},
            )
    else:
        s.execute(
            text(
                "UPDATE zoo_entries SET search = setweight(to_tsvector('simple', :n), 'A') || "
                "setweight(to_tsvector('simple', :t), 'B') || "
                "setweight(to_tsvector('simple', :r), 'D') WHERE pk = :pk"
            ),
            {"pk": entry.pk, "n": entry.name, "t": tags, "r": prose},
        )


def _set_tags(s: Session, entry: Entry, tags: list[str]) -> None:
    s.execute(delete(EntryTag).where(EntryTag.entry_pk == entry.pk))
    if tags:
        s.execute(insert(EntryTag), [{"entry_pk": entry.pk, "tag": t} for t in tags])


def index_gist(s: Session, gist_id: str) -> None:
    """Bring the gist's catalog entry up to date with its newest revision (same transaction)."""
    row = s.execute(
        select(Gist, User.login).join(User, User.id == Gist.owner_id).where(Gist.id == gist_id)
    ).first()
    if row is None:
        forget_gist(s, gist_id)
        return
    gist, login = row
    readme = _head_readme(s, gist)
    info = read_info(readme, gist.description) if readme is not None else None
    entry = s.scalar(select(Entry).where(Entry.id == gist_id))
    if entry is None:
        entry = Entry(id=gist_id)
        s.add(entry)
    entry.gist_id, entry.owner, entry.public = gist_id, login, gist.public
    entry.indexed_serial, entry.updated_at = gist.serial, gist.updated_at
    if info is None:
        info = ModelInfo(name=entry.wiki_name or gist.description or gist_id)
        entry.listed = entry.wiki_name is not None and gist.public
    else:
        entry.listed = gist.public
    held = entry.sha1
    _apply(entry, info)
    if entry.sha1 != held:  # other weights: the mirror's job finds whether it holds them, and checks them
        entry.mirrored, entry.weights_fit, entry.weights_problems = False, None, ""
    refresh_facts(s, entry, gist)
    s.flush()
    _set_tags(s, entry, info.tags)
    refresh_search(s, entry)
    bump(s, gist_id)


def _apply(entry: Entry, info: ModelInfo) -> None:
    # Names are listed on every index page: as long as a description may be, at most.
    name = info.name or entry.wiki_name or entry.id
    entry.name = name if len(name) <= MAX_DESCRIPTION else name[: MAX_DESCRIPTION - 1] + "…"
    entry.sort_name = entry.name.lower()[:200]
    entry.summary = info.summary
    entry.license, entry.task = clip(Entry.license, info.license), clip(Entry.task, info.task)
    entry.dataset = clip(Entry.dataset, info.dataset)
    entry.results = json.dumps(info.results, ensure_ascii=False, default=str)
    first = info.results[0] if info.results else None
    entry.score = first["value"] if first else None
    entry.score_metric = (
        clip(Entry.score_metric, f"{first['metric']} ({first['dataset']})") if first else None
    )
    entry.framework, entry.caffemodel = (
        clip(Entry.framework, info.framework),
        clip(Entry.caffemodel, info.caffemodel),
    )
    entry.caffemodel_url, entry.sha1 = info.caffemodel_url, info.sha1
    entry.size, entry.tags = info.size, ",".join(info.tags)
    entry.readme = info.body[:MAX_SEARCH_TEXT]
    entry.problems = "\n".join(info.problems)
    entry.front_matter = json.dumps(info.data, ensure_ascii=False, default=str)


def _weights_size(s: Session, entry: Entry) -> int | None:
    """The weights' size: as the front matter states it, else as the link checker last saw it."""
    if entry.size is not None or not entry.caffemodel_url:
        return entry.size
    return s.scalar(select(LinkCheck.size).where(LinkCheck.url == entry.caffemodel_url))


def _head_files(s: Session, gist: Gist) -> dict[str, str]:
    """``{filename: blob sha}`` of the gist's newest revision."""
    rows = s.execute(
        select(RevisionFile.filename, RevisionFile.blob_sha)
        .join(Revision, Revision.id == RevisionFile.revision_id)
        .where(Revision.gist_id == gist.id, Revision.number == gist.revision)
    ).all()
    return dict(rows)


def _set_facts(entry: Entry, name: str | None, sha: str | None, facts: NetFacts) -> None:
    entry.facts_version = FACTS_VERSION
    if entry.net_sha != sha:
        entry.weights_fit, entry.weights_problems = None, ""  # the mirror's job checks the new net
    entry.net_file, entry.net_sha = clip(Entry.net_file, name), sha
    entry.input_shape = facts.input_shape
    entry.params = facts.params if facts.params is None or facts.params <= MAX_SIZE else None
    entry.macs = facts.macs if facts.macs is None or facts.macs <= MAX_SIZE else None
    entry.layer_count = facts.layers
    entry.layer_types = layer_types_text(facts.layer_types)
    entry.convertible = facts.convertible
    entry.unsupported = "\n".join(facts.unsupported)
    entry.facts_error = facts.error


def refresh_facts(s: Session, entry: Entry, gist: Gist | None) -> None:
    """Recompute the network's facts when its prototxt changed (or the facts' version did).

    Runs in the indexing transaction: bounded by :data:`.facts.MAX_NET_BYTES` and
    :data:`.facts.MAX_LAYERS`, and skipped when the analysed blob is unchanged.
    """
    from .pictures import pick_net

    entry.weights_size = _weights_size(s, entry)
    files = _head_files(s, gist) if gist is not None else {}
    name = pick_net(list(files))
    sha = files.get(name) if name else None
    if sha == entry.net_sha and entry.facts_version == FACTS_VERSION:
        return
    if sha is None:
        _set_facts(
            entry, None, None, NetFacts(error="no network (prototxt) among the files" if gist else None)
        )
        return
    content = s.scalar(select(Blob.content).where(Blob.sha == sha)) or b""
    _set_facts(entry, name, sha, facts_of_blob(sha, content, name))


def forget_gist(s: Session, gist_id: str) -> None:
    """The gist is gone: drop its entry, or keep only what a wiki import knows of it."""
    entry = s.scalar(select(Entry).where(Entry.id == gist_id))
    if entry is None:
        bump(s, gist_id)  # no entry, yet replicas may hold the gist's state
        return
    if entry.wiki_name is None:
        drop_entry(s, entry)
    else:
        entry.indexed_serial, entry.owner, entry.listed = 0, None, True
        _apply(entry, ModelInfo(name=entry.wiki_name))
        refresh_facts(s, entry, None)
        s.flush()
        _set_tags(s, entry, [])
        refresh_search(s, entry)
    bump(s, gist_id)


def drop_entry(s: Session, entry: Entry) -> None:
    """Delete an entry with its tags and its full-text document."""
    if _sqlite(s):
        s.execute(text("DELETE FROM zoo_fts WHERE rowid = :pk"), {"pk": entry.pk})
    s.execute(delete(EntryTag).where(EntryTag.entry_pk == entry.pk))
    s.delete(entry)


def stale_gists(s: Session) -> list[str]:
    """Gists whose entry is missing or older than the gist (a database from before the catalog)."""
    return list(
        s.scalars(
            select(Gist.id)
            .outerjoin(Entry, Entry.id == Gist.id)
            .where(
                (Entry.pk.is_(None))
                | (Entry.indexed_serial != Gist.serial)
                | (Entry.facts_version != FACTS_VERSION)
            )
        )
    )


# --------------------------------------------------------------------------- finding


@dataclass
class Page:
    entries: list[Entry]
    total: int


def query_words(q: str | None) -> list[str]:
    return _WORD_RE.findall((q or "").lower())[:MAX_QUERY_WORDS]


def find(
    s: Session,
    *,
    q: str | None = None,
    license: str | None = None,
    task: str | None = None,
    tag: str | None = None,
    limit: int = 20,
    offset: int = 0,
) -> Page:
    """Listed entries matching the filters and the search words; best match (or name) first."""
    where = [Entry.listed.is_(True)]
    if license:
        where.append(Entry.license == license)
    if task:
        where.append(Entry.task == task)
    if tag:
        where.append(Entry.pk.in_(select(EntryTag.entry_pk).where(EntryTag.tag == tag.lower())))
    words = query_words(q)
    stmt = select(Entry)
    order = [Entry.sort_name, Entry.pk]
    if words and _sqlite(s):
        match = " ".join(f'"{w}"*' for w in words)
        # Counting needs no ranking: bm25 over every match would cost more than the page.
        where.append(
            Entry.pk.in_(
                text("SELECT rowid FROM zoo_fts WHERE zoo_fts MATCH :match")
                .bindparams(match=match)
                .columns(rowid=Integer)
            )
        )
        hits = (
            text(
                "SELECT rowid AS pk, bm25(zoo_fts, 10.0, 5.0, 1.0) AS score FROM zoo_fts "
                "WHERE zoo_fts MATCH :match2"
            )
            .bindparams(match2=match)
            .columns(pk=Integer, score=Float)
            .subquery()
        )
        stmt = stmt.join(hits, hits.c.pk == Entry.pk)
        order = [hits.c.score, *order]
    elif words:
        tsq = func.to_tsquery("simple", " & ".join(f"{w}:*" for w in words))
        search = literal_column("zoo_entries.search")
        where.append(search.op("@@")(tsq))
        order = [func.ts_rank(search, tsq).desc(), *order]
    total = s.scalar(select(func.count(Entry.pk)).where(*where)) or 0
    if words and _sqlite(s):
        where.pop()  # the join with the ranked matches already keeps only them
    stmt = stmt.where(*where).options(defer(Entry.readme))  # cards never show the whole readme
    entries = list(s.scalars(stmt.order_by(*order).limit(limit).offset(offset)))
    return Page(entries, total)


@dataclass
class Facets:
    licenses: list[tuple[str, int]]
    tasks: list[tuple[str, int]]
    tags: list[tuple[str, int]]


def facets(s: Session, max_tags: int = 60) -> Facets:
    """The values the filters offer, with how many listed entries have each."""

    def column(col) -> list[tuple[str, int]]:
        return [
            (v, n)
            for v, n in s.execute(
                select(col, func.count())
                .where(Entry.listed.is_(True), col.is_not(None))
                .group_by(col)
                .order_by(func.count().desc(), col)
                .limit(200)
            )
        ]

    tags = [
        (t, n)
        for t, n in s.execute(
            select(EntryTag.tag, func.count())
            .join(Entry, Entry.pk == EntryTag.entry_pk)
            .where(Entry.listed.is_(True))
            .group_by(EntryTag.tag)
            .order_by(func.count().desc(), EntryTag.tag)
            .limit(max_tags)
        )
    ]
    return Facets(column(Entry.license), column(Entry.task), tags)


def get_entry(s: Session, entry_id: str) -> Entry | None:
    return s.scalar(select(Entry).where(Entry.id == entry_id))


def link_checks(s: Session, urls: list[str]) -> dict[str, LinkCheck]:
    urls = [u for u in set(urls) if u]
    if not urls:
        return {}
    return {c.url: c for c in s.scalars(select(LinkCheck).where(LinkCheck.url.in_(urls)))}


def section_of(s: Session, entry: Entry) -> WikiSection | None:
    return s.get(WikiSection, entry.section_id) if entry.section_id else None


__all__ = [
    "Facets",
    "ModelInfo",
    "Page",
    "clip",
    "drop_entry",
    "facets",
    "find",
    "first_line",
    "forget_gist",
    "framework_of",
    "generation",
    "get_entry",
    "index_gist",
    "link_checks",
    "read_info",
    "refresh_search",
    "section_of",
    "setup",
    "stale_gists",
    "without_nul",
]
