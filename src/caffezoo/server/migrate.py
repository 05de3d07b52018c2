"""Move a single-machine zoo (SQLite + a blob directory) into a cluster (PostgreSQL + S3).

    >>> report = migrate("sqlite:///zoo.db", "/srv/blobs",
    ...                  "postgresql://zoo@db/zoo", "s3://zoo-bucket/blobs")   # doctest: +SKIP
    >>> report.rows["gists"], report.blobs_copied                             # doctest: +SKIP
    ((120, 0), 37)

Rows are copied table by table in foreign-key order, in batches, each batch
one transaction that inserts only the primary keys the target lacks (and, for
catalog entries, their full-text index). Blobs are copied through the target
store's verified ``put``: every SHA-1 is checked on the way, and a blob the
target already has is not copied again. A run that is killed leaves whole
batches and whole blobs behind; running it again continues where it
stopped and copies nothing twice. Both ends may be any database URL and any
store (directory or ``s3://``): the same command moves a zoo back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import func, inspect, select, text, tuple_
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from ..errors import ChecksumError, UsageError
from . import catalog
from .blobstore import BlobStore, BlobStoreError, open_store
from .storage import Storage, _shown, make_engine
from .tables import Base, Entry, Meta, TriedPicture

__all__ = ["MigrateReport", "migrate"]

BATCH = 500
# Copied first: the target's Storage indexes any gist that has no catalog entry yet, and a
# resumed run must find the source's entries already there rather than fresh ones in the way.
CATALOG_TABLES = ("wiki_sections", "zoo_entries", "zoo_entry_tags", "link_checks")


@dataclass(frozen=True)
class Step:
    """Progress: a batch of ``table`` rows, or one blob (``table`` is ``"blob"``)."""

    table: str
    copied: int
    skipped: int
    detail: str = ""


@dataclass
class MigrateReport:
    rows: dict[str, tuple[int, int]] = field(default_factory=dict)  # table -> (copied, already there)
    blobs_copied: int = 0
    blobs_present: int = 0
    blobs_failed: list[str] = field(default_factory=list)  # "sha1: why"

    @property
    def ok(self) -> bool:
        return not self.blobs_failed


def _source_engine(url: str):
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1] if "///" in url else ""
        if not path or path == ":memory:" or not Path(path).is_file():
            raise UsageError(f"--from-database-url {url}: no such SQLite file")
    try:
        engine = make_engine(url)
        tables = set(inspect(engine).get_table_names())
    except (SQLAlchemyError, ImportError, OSError) as e:
        raise UsageError(f"--from-database-url {_shown(url)}: cannot open it: {e}") from None
    missing = [t.name for t in Base.metadata.sorted_tables if t.name not in tables]
    if "gists" in missing or "users" in missing:
        engine.dispose()
        raise UsageError(
            f"--from-database-url {_shown(url)}: not a caffezoo server database (no gists table)"
        )
    return engine, tables


def migrate(
    from_database_url: str,
    from_blobs: str,
    database_url: str,
    blobs_url: str,
    *,
    batch: int = BATCH,
    on_step: Callable[[Step], None] | None = None,
) -> MigrateReport:
    """Copy every row and blob that the target lacks, verified; see the module doc."""
    if from_database_url == database_url:
        raise UsageError("the source and target databases are the same")
    source_engine, source_tables = _source_engine(from_database_url)
    source_blobs = open_store(from_blobs)
    target_blobs = open_store(blobs_url)
    report = MigrateReport()
    try:
        if hasattr(target_blobs, "ensure_bucket"):
            target_blobs.ensure_bucket()
        target = Storage(database_url)
        try:
            tables = Base.metadata.sorted_tables
            ordered = [t for t in tables if t.name in CATALOG_TABLES] + [
                t for t in tables if t.name not in CATALOG_TABLES
            ]
            # Not the counters, nor try-it's pictures (minutes-lived; they hold what visitors uploaded).
            skipped = (Meta.__table__, TriedPicture.__table__)
            copied = [t for t in ordered if t.name in source_tables and t not in skipped]
            for table in copied:  # before anything is written: a refused target stays as it was
                _check_same_owners(source_engine, target, table, batch)
            for table in copied:
                report.rows[table.name] = _copy_table(source_engine, target, table, batch, on_step)
            _reset_sequences(target)
            with target.session(write=True) as s:
                catalog.bump(s)  # pages cached before the move are stale
        finally:
            target.close()
        _copy_blobs(source_blobs, target_blobs, report, on_step)
    finally:
        source_engine.dispose()
        source_blobs.close()
        target_blobs.close()
    return report


def _check_same_owners(source_engine, target: Storage, table, batch: int) -> None:
    """Refuse a target whose row under a source row's key belongs to someone else.

    A key that is "already there" is skipped by the copy: right for a resumed run, whose rows
    agree; wrong for another zoo's user 1, whose gists and tokens would change hands. Only
    what says who a row belongs to (unique and foreign-key columns) is compared.
    """
    pk = list(table.primary_key.columns)
    identity = [c for c in table.columns if not c.primary_key and (c.unique or c.foreign_keys)]
    if not identity:
        return
    with source_engine.connect() as src:
        result = src.execute(select(*pk, *identity).order_by(*pk)).yield_per(batch)
        for rows in result.partitions(batch):
            theirs = {tuple(r[: len(pk)]): tuple(r[len(pk) :]) for r in rows}
            keys = list(theirs)
            wanted = tuple_(*pk).in_(keys) if len(pk) > 1 else pk[0].in_([k[0] for k in keys])
            with target.session() as s:
                for r in s.execute(select(*pk, *identity).where(wanted)):
                    key = tuple(r[: len(pk)])
                    if tuple(r[len(pk) :]) != theirs[key]:
                        raise UsageError(
                            f"table {table.name}: the target database holds a different row under the key "
                            f"{', '.join(map(str, key))} ({', '.join(c.name for c in identity)} differ); "
                            "migrate into an empty database, or the one an earlier run of this migration filled"
                        )


def _copy_table(source_engine, target: Storage, table, batch: int, on_step) -> tuple[int, int]:
    pk = list(table.primary_key.columns)
    names = [c.name for c in table.columns]
    copied = skipped = 0
    with source_engine.connect() as src:
        result = src.execute(select(*table.columns).order_by(*pk)).yield_per(batch)
        for rows in result.partitions(batch):
            keys = [tuple(getattr(r, c.name) for c in pk) for r in rows]
            with target.session(write=True) as s:
                wanted = tuple_(*pk).in_(keys) if len(pk) > 1 else pk[0].in_([k[0] for k in keys])
                have = {tuple(r) for r in s.execute(select(*pk).where(wanted))}
                new = [dict(zip(names, r)) for r, k in zip(rows, keys) if k not in have]
                if new:
                    try:
                        s.execute(table.insert(), new)
                        if table is Entry.__table__:  # the search index is not a column SQLAlchemy knows
                            for row in new:
                                catalog.refresh_search(s, s.get(Entry, row["pk"]))
                        s.flush()
                    except IntegrityError as e:
                        raise UsageError(
                            f"table {table.name}: the target database already holds other rows that clash "
                            f"with these ({e.orig}); migrate into an empty database"
                        ) from None
            copied += len(new)
            skipped += len(rows) - len(new)
            if on_step:
                on_step(Step(table.name, len(new), len(rows) - len(new)))
    return copied, skipped


def _reset_sequences(target: Storage) -> None:
    """PostgreSQL hands out ids from sequences, which explicit inserts do not advance."""
    if target.is_sqlite:
        return
    with target.session(write=True) as s:
        for table in Base.metadata.sorted_tables:
            pk = list(table.primary_key.columns)
            if len(pk) == 1 and pk[0].autoincrement in (True, "auto") and pk[0].type.python_type is int:
                top = s.scalar(select(func.max(pk[0])))
                if top is not None:
                    s.execute(
                        text("SELECT setval(pg_get_serial_sequence(:t, :c), :v)"),
                        {"t": table.name, "c": pk[0].name, "v": top},
                    )


def _copy_blobs(source: BlobStore, target: BlobStore, report: MigrateReport, on_step) -> None:
    for info in source.list():
        there = target.stat(info.sha1)
        if there is not None and there.size == info.size:
            report.blobs_present += 1
            if on_step:
                on_step(Step("blob", 0, 1, info.sha1))
            continue
        try:
            target.put(info.sha1, source.get(info.sha1))  # hashed on the way: ChecksumError if damaged
        except (ChecksumError, BlobStoreError, OSError) as e:
            report.blobs_failed.append(f"{info.sha1}: {e}")
            if on_step:
                on_step(Step("blob", 0, 0, f"{info.sha1} failed: {e}"))
            continue
        report.blobs_copied += 1
        if on_step:
            on_step(Step("blob", 1, 0, info.sha1))
