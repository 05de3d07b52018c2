"""The zoo server's tables (SQLAlchemy ORM), shared by the API and the web pages.

A gist is a row in ``gists``; each change of its files is a numbered row in
``revisions`` listing ``(filename, blob)`` pairs; file contents live once in
``blobs``, addressed by their SHA-1 (so a revision that keeps a file costs a
row, not a copy). Tokens are stored as SHA-256 digests only.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "COMPARE_FILTERS",
    "Base",
    "Blob",
    "Entry",
    "EntryTag",
    "Gist",
    "JobLease",
    "LinkCheck",
    "Meta",
    "MirrorSource",
    "Revision",
    "RevisionFile",
    "Token",
    "TriedPicture",
    "User",
    "WikiSection",
]


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    login: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)


class Token(Base):
    __tablename__ = "tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 hex of the token
    created_at: Mapped[datetime] = mapped_column(DateTime)


class Gist(Base):
    __tablename__ = "gists"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    public: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime, index=True)
    # Number of the newest revision; revisions are numbered 1..revision, no gaps.
    revision: Mapped[int] = mapped_column(Integer, default=0)
    # Bumped on every change (files or description): the key of cached JSON.
    serial: Mapped[int] = mapped_column(Integer, default=0)
    # The Gist API a `wiki import` copied it from; such a gist is read-only through the API.
    imported_from: Mapped[str | None] = mapped_column(Text, nullable=True)


class Revision(Base):
    __tablename__ = "revisions"
    __table_args__ = (UniqueConstraint("gist_id", "number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    gist_id: Mapped[str] = mapped_column(ForeignKey("gists.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    version: Mapped[str] = mapped_column(String(40), unique=True)
    committed_at: Mapped[datetime] = mapped_column(DateTime)
    additions: Mapped[int] = mapped_column(Integer, default=0)
    deletions: Mapped[int] = mapped_column(Integer, default=0)


class RevisionFile(Base):
    __tablename__ = "revision_files"

    revision_id: Mapped[int] = mapped_column(ForeignKey("revisions.id", ondelete="CASCADE"), primary_key=True)
    filename: Mapped[str] = mapped_column(String(255), primary_key=True)
    blob_sha: Mapped[str] = mapped_column(ForeignKey("blobs.sha"), index=True)


class Blob(Base):
    __tablename__ = "blobs"

    sha: Mapped[str] = mapped_column(String(40), primary_key=True)
    size: Mapped[int] = mapped_column(Integer)
    content: Mapped[bytes] = mapped_column(LargeBinary)


Index("ix_gists_public_updated", Gist.public, Gist.updated_at)


# --------------------------------------------------------------------------- the zoo (web wiki)
#
# A zoo entry is what the web pages list: every gist whose files include a
# readme.md with front matter (indexed from it on every write, in the same
# transaction), and every model a wiki import found, gist or not. Gist-derived
# columns and wiki columns are written by different code and never overwrite
# each other.


class WikiSection(Base):
    """A ``###`` section of an imported Caffe wiki page: title, citation, notes."""

    __tablename__ = "wiki_sections"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    position: Mapped[int] = mapped_column(Integer, index=True)
    title: Mapped[str] = mapped_column(Text)
    anchor: Mapped[str | None] = mapped_column(String(200), nullable=True)
    citation: Mapped[str | None] = mapped_column(Text, nullable=True)
    notes: Mapped[str] = mapped_column(Text, default="")  # the section's other Markdown


class Entry(Base):
    __tablename__ = "zoo_entries"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)  # the gist id, or link-<hex>
    gist_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    owner: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    public: Mapped[bool] = mapped_column(Boolean, default=True)
    listed: Mapped[bool] = mapped_column(Boolean, default=False, index=True)  # shown in the index
    indexed_serial: Mapped[int] = mapped_column(Integer, default=0)  # gist serial indexed; 0: none
    name: Mapped[str] = mapped_column(Text, default="")
    sort_name: Mapped[str] = mapped_column(String(200), default="", index=True)
    summary: Mapped[str] = mapped_column(Text, default="")
    license: Mapped[str | None] = mapped_column(String(200), nullable=True, index=True)
    task: Mapped[str | None] = mapped_column(String(200), nullable=True, index=True)
    framework: Mapped[str | None] = mapped_column(String(100), nullable=True)
    caffemodel: Mapped[str | None] = mapped_column(String(255), nullable=True)
    caffemodel_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    sha1: Mapped[str | None] = mapped_column(String(40), nullable=True, index=True)
    size: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    tags: Mapped[str] = mapped_column(Text, default="")  # comma-separated, for display
    readme: Mapped[str] = mapped_column(Text, default="")  # the readme's prose, for search and the page
    front_matter: Mapped[str] = mapped_column(Text, default="{}")  # as JSON: parsed once, on write
    problems: Mapped[str] = mapped_column(Text, default="")  # front-matter faults, one a line
    updated_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True, index=True)
    # From a wiki import.
    section_id: Mapped[int | None] = mapped_column(
        ForeignKey("wiki_sections.id", ondelete="SET NULL"), nullable=True, index=True
    )
    position: Mapped[int] = mapped_column(Integer, default=0)
    wiki_name: Mapped[str | None] = mapped_column(Text, nullable=True)
    wiki_description: Mapped[str | None] = mapped_column(Text, nullable=True)
    source_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    # Computed from the gist's network on write (server/facts.py); indexed for /compare.
    facts_version: Mapped[int] = mapped_column(Integer, default=0)  # 0: not computed
    net_file: Mapped[str | None] = mapped_column(String(255), nullable=True)
    net_sha: Mapped[str | None] = mapped_column(String(40), nullable=True)  # the blob analysed
    input_shape: Mapped[str | None] = mapped_column(String(200), nullable=True)
    params: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    macs: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # per sample
    layer_count: Mapped[int | None] = mapped_column(Integer, nullable=True)
    layer_types: Mapped[str] = mapped_column(Text, default="{}")  # JSON: type -> count
    convertible: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    unsupported: Mapped[str] = mapped_column(Text, default="")  # one a line
    facts_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    # The weights: size from the front matter, else the link check; fit checked by the mirror's job.
    weights_size: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    mirrored: Mapped[bool] = mapped_column(Boolean, default=False)
    weights_fit: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    weights_problems: Mapped[str] = mapped_column(Text, default="")
    # Reported results (front matter `results`), as JSON; the first value, for sorting.
    dataset: Mapped[str | None] = mapped_column(String(200), nullable=True)
    results: Mapped[str] = mapped_column(Text, default="[]")
    score: Mapped[float | None] = mapped_column(Float, nullable=True)
    score_metric: Mapped[str | None] = mapped_column(String(100), nullable=True)


class EntryTag(Base):
    __tablename__ = "zoo_entry_tags"

    entry_pk: Mapped[int] = mapped_column(ForeignKey("zoo_entries.pk", ondelete="CASCADE"), primary_key=True)
    tag: Mapped[str] = mapped_column(String(100), primary_key=True, index=True)


class LinkCheck(Base):
    """What the link checker last saw at a weights URL."""

    __tablename__ = "link_checks"

    url: Mapped[str] = mapped_column(String(2048), primary_key=True)
    reachable: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    size: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    checked_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)  # in a row; drives the backoff
    next_check: Mapped[datetime | None] = mapped_column(DateTime, nullable=True, index=True)


class MirrorSource(Base):
    """A source the mirror failed to copy a blob from, and when to try it again."""

    __tablename__ = "mirror_sources"

    sha1: Mapped[str] = mapped_column(String(40), primary_key=True)
    url: Mapped[str] = mapped_column(String(2048), primary_key=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    tried_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)  # in a row; drives the backoff
    next_try: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


Index("ix_zoo_entries_listed_sort", Entry.listed, Entry.sort_name)
# /compare sorts by these. Each index leads with (listed, column) and carries every column /compare
# filters on, and the name: a sorted, filtered page (and its count) is a walk of one index, never a
# read of the wide rows (a readme each) until the page's own rows are fetched.
COMPARE_FILTERS = ("task", "license", "convertible", "params", "macs")
for _column in (
    "sort_name", "task", "license", "dataset", "score", "params", "macs", "weights_size", "convertible", "mirrored"
):  # fmt: skip
    Index(
        f"ix_zoo_compare_{_column}",
        Entry.listed,
        getattr(Entry, _column),
        *(getattr(Entry, c) for c in (*COMPARE_FILTERS, "sort_name") if c != _column),
    )


class Meta(Base):
    """Counters: ``generation`` grows with every change the pages show (a cache key)."""

    __tablename__ = "zoo_meta"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[int] = mapped_column(Integer, default=0)


class JobLease(Base):
    """Who is doing (or last did) one background job, and until when nobody else may."""

    __tablename__ = "job_leases"

    kind: Mapped[str] = mapped_column(String(32), primary_key=True)  # "link", "mirror"
    key: Mapped[str] = mapped_column(String(40), primary_key=True)  # SHA-1 of the subject: any length fits
    subject: Mapped[str] = mapped_column(Text)  # the URL or blob, for people reading the table
    owner: Mapped[str | None] = mapped_column(String(128), nullable=True, index=True)  # None: free
    expires: Mapped[datetime] = mapped_column(DateTime)  # claimable again from then on
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class TriedPicture(Base):
    """A try-it result's picture, for its page, until ``expires``: any process or replica serves it.

    Few and short-lived (:class:`~.tryit.ResultPictures` bounds their count and bytes across
    the zoo); ``id`` orders them oldest first for eviction."""

    __tablename__ = "tried_pictures"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    token: Mapped[str] = mapped_column(String(64), unique=True)  # unguessable: the picture's only name
    content: Mapped[bytes] = mapped_column(LargeBinary)
    content_type: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer)
    expires: Mapped[datetime] = mapped_column(DateTime, index=True)
