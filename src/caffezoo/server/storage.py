"""Gist storage: the library the API (and the web pages) call; no HTTP here.

>>> store = Storage("sqlite:///zoo.db")                                   # doctest: +SKIP
>>> token = store.create_token("alice")                                   # doctest: +SKIP
>>> g = store.create_gist("alice", "My Net", False, {"readme.md": b"---\\nname: My Net\\n---\\n"})  # doctest: +SKIP
>>> store.update_gist(g.id, "alice", changes={"readme.md": FileChange(filename="README.md")})      # doctest: +SKIP

Every change of a gist's files is a revision numbered 1, 2, 3... without
gaps, even under concurrent writers: a writer locks the gist's row
(``SELECT ... FOR UPDATE`` on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite)
before reading the state it changes. Contents are checked here, not only in
the API, so every caller gets the same rules.
"""

from __future__ import annotations

import functools
import hashlib
import os
import random
import re
import secrets
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import create_engine, delete, event, func, inspect, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.orm import Session

from ..errors import ConfigError
from ..gist.rules import (
    check_content,
    check_description,
    check_files,
    check_gist_id,
    check_login,
    invalid,
)
from . import catalog, coherence
from .tables import Base, Blob, Gist, Revision, RevisionFile, Token, User

__all__ = [
    "UNSET",
    "FileChange",
    "FileView",
    "GistView",
    "NotFound",
    "ReadOnly",
    "RevisionView",
    "Storage",
    "StorageError",
    "make_engine",
    "now",
]

T = TypeVar("T")
UNSET: Any = object()  # "argument not given", distinct from None


class StorageError(Exception):
    """Base class of what storage refuses; the API maps each to a status code."""


class NotFound(StorageError):
    """No such gist, revision, file or user (or not the caller's to change)."""


class ReadOnly(StorageError):
    """The gist was imported from another zoo: only ``wiki import`` changes it."""


@dataclass(frozen=True)
class FileChange:
    """One entry of an update: new ``content`` and/or a new ``filename`` (a rename)."""

    content: bytes | None = None
    filename: str | None = None


@dataclass(frozen=True)
class FileView:
    filename: str
    blob_sha: str
    size: int
    content: bytes | None = None  # None in lists, which carry no content


@dataclass(frozen=True)
class RevisionView:
    number: int
    version: str
    committed_at: datetime
    additions: int
    deletions: int

    @property
    def total(self) -> int:
        return self.additions + self.deletions


@dataclass(frozen=True)
class GistView:
    """A gist as of one revision (the newest unless asked otherwise)."""

    id: str
    owner: str
    owner_id: int
    description: str | None
    public: bool
    created_at: datetime
    updated_at: datetime
    revision: int  # the newest revision's number
    serial: int  # changes with every write: a cache key
    version: str | None  # the shown revision's version (sha)
    files: list[FileView] = field(default_factory=list)
    history: list[RevisionView] = field(default_factory=list)
    imported_from: str | None = None  # the Gist API a `wiki import` copied it from


def now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def blob_sha(content: bytes) -> str:
    return hashlib.sha1(content).hexdigest()


def token_digest(token: str) -> str:
    """What is stored for a token: its SHA-256 (tokens are random, so no salt is needed)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _line_changes(old: bytes | None, new: bytes | None) -> tuple[int, int]:
    """(additions, deletions) in lines, as a multiset difference: linear time, close to git's."""
    a = Counter((old or b"").splitlines())
    b = Counter((new or b"").splitlines())
    return sum((b - a).values()), sum((a - b).values())


# SQLSTATEs a write may meet only because another writer ran at the same time: a
# serialization failure, a deadlock, and the foreign-key and unique violations of two
# transactions that each saw the other's rows absent (deleting a gist while another
# gist with the same content is created). Running the transaction again resolves each.
_TRANSIENT_SQLSTATES = frozenset({"40001", "40P01", "23503", "23505"})
WRITE_ATTEMPTS = 8


def _transient(e: DBAPIError) -> bool:
    orig = getattr(e, "orig", None)
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    return code in _TRANSIENT_SQLSTATES or "database is locked" in str(orig)


def retried(fn: Callable[..., T]) -> Callable[..., T]:
    """Run a write transaction again (up to :data:`WRITE_ATTEMPTS` times, after a short random
    pause) when the database refused it only because of a concurrent writer."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> T:
        for attempt in range(WRITE_ATTEMPTS):
            try:
                return fn(*args, **kwargs)
            except DBAPIError as e:
                if attempt == WRITE_ATTEMPTS - 1 or not _transient(e):
                    raise
                time.sleep(random.uniform(0, 0.005 * 2**attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    return run


def _create_private(path: Path) -> None:
    """Make the SQLite file ``path`` readable by its owner only (it holds token digests and
    secret gists); SQLite gives its -wal, -shm and -journal files the same mode."""
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        pass


def normalize_url(url: str) -> str:
    """``postgresql://`` means psycopg 3 here (the driver the server extra installs)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _shown(url: str) -> str:
    """``url`` fit for a message: its password hidden."""
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", url)


def make_engine(url: str) -> Engine:
    """An engine tuned for the server: SQLite in WAL mode with explicit transactions."""
    url = normalize_url(url)
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:" and not path.startswith("file:"):
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            _create_private(Path(path))
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 60}, pool_size=16, max_overflow=48
        )

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn, _record):  # pragma: no cover - driver callback
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (below)
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn):  # pragma: no cover - driver callback
            # A writer takes the write lock up front: two deferred transactions
            # that both read then write would otherwise fail with "database is locked".
            conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("write") else "BEGIN")

        return engine
    # READ COMMITTED whatever the database's default: a writer that waited for a lock (try-it's
    # pictures take an advisory one) must see what the holder committed, not a snapshot from before.
    return create_engine(
        url, pool_size=16, max_overflow=48, pool_pre_ping=True, isolation_level="READ COMMITTED"
    )


class Storage:
    """Users, tokens and gists in one SQL database."""

    def __init__(self, url: str):
        """Open (creating its tables if new) the database at ``url``; :class:`ConfigError`
        names the URL, password hidden, when it cannot be opened."""
        self.url = normalize_url(url)
        self._feed: coherence.ChangeFeed | None = None  # (reindex below may write already)
        self._feed_lock = threading.Lock()
        engine = None
        try:
            engine = self.engine = make_engine(self.url)
            self._write_engine = self.engine.execution_options(write=True)
            self.is_sqlite = self.engine.dialect.name == "sqlite"
            Base.metadata.create_all(self.engine)
            self._add_columns()
            catalog.setup(self.engine)
            if not self.is_sqlite:
                with self.engine.begin() as conn:
                    coherence.setup(conn)
            self.reindex()
        except (SQLAlchemyError, ImportError, OSError) as e:  # a bad URL, a missing driver, no server
            if engine is not None:
                engine.dispose()
            why = str(getattr(e, "orig", None) or e).strip().split("\n")[0] or type(e).__name__
            raise ConfigError(
                f"cannot open the database {_shown(self.url)}: {why}; check --database-url "
                "or CAFFEZOO_DATABASE_URL"
            ) from e
        mark = "?" if self.is_sqlite else "%s"
        self._state_sql = f"SELECT revision, serial FROM gists WHERE id = {mark}"
        self._states_by_loop: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def close(self) -> None:
        self.stop_listening()
        self.engine.dispose()
        for states in list(self._states_by_loop.values()):
            states.close()

    def stop_listening(self) -> None:
        """End the change feed, if one runs, and its lease: writers stop waiting for it."""
        feed, self._feed = self._feed, None
        if feed is not None:
            feed.close()

    def ping(self) -> None:
        """Raise unless the database answers a trivial query (readiness)."""
        with self.engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")

    def _add_columns(self) -> None:
        """Columns added since a database was made (``create_all`` makes tables, not columns)."""
        have = {c["name"] for c in inspect(self.engine).get_columns("gists")}
        if "imported_from" not in have:
            with self.engine.begin() as conn:
                conn.exec_driver_sql("ALTER TABLE gists ADD COLUMN imported_from TEXT")

    def reindex(self) -> int:
        """Index the gists the catalog has not seen at their newest state (a database
        written before the catalog existed); return how many."""
        with self.session() as s:
            stale = catalog.stale_gists(s)
        for gist_id in stale:
            with self.session(write=True) as s:
                catalog.index_gist(s, gist_id)
        return len(stale)

    @contextmanager
    def session(self, write: bool = False) -> Iterator[Session]:
        """A transaction: committed when the block ends, rolled back on an exception."""
        with Session(self._write_engine if write else self.engine, expire_on_commit=False) as s:
            with s.begin():
                yield s
            generation = s.info.get("generation")
        if generation is not None:
            self._changed(generation, s.info.get("gists", ()))

    def _changed(self, generation: int, gist_ids) -> None:
        """After a commit that moved the generation on (PostgreSQL): wait until the replicas
        answering from memory have heard of it, so a write that returned is seen everywhere."""
        feed = self._feed
        if feed is not None:  # this process's own feed: told directly, not waited for
            feed.forget(gist_ids)
        coherence.wait_for_readers(self.engine, generation, feed.id if feed is not None else "")

    # ------------------------------------------------------------------ users and tokens

    def _user_id(self, s: Session, login: str, create: bool = False) -> int:
        uid = s.scalar(select(User.id).where(func.lower(User.login) == login.lower()))
        if uid is None:
            if not create:
                raise NotFound(f"no user {login!r}")
            user = User(login=check_login(login), created_at=now())
            s.add(user)
            s.flush()
            uid = user.id
        return uid

    @retried
    def create_token(self, login: str) -> str:
        """Make a new token for ``login`` (creating the user); only its digest is kept."""
        check_login(login)
        token = "czt_" + secrets.token_urlsafe(30)
        with self.session(write=True) as s:
            uid = self._user_id(s, login, create=True)
            s.add(Token(user_id=uid, digest=token_digest(token), created_at=now()))
        return token

    @retried
    def ensure_user(self, login: str) -> str:
        """Create ``login`` (without a token) unless it exists; return the login as stored."""
        check_login(login)
        with self.session(write=True) as s:
            self._user_id(s, login, create=True)
        return self.login_of(login) or login

    def user_for_token(self, token: str) -> str | None:
        """The login a token belongs to, or None."""
        with self.session() as s:
            return s.scalar(
                select(User.login)
                .join(Token, Token.user_id == User.id)
                .where(Token.digest == token_digest(token))
            )

    def login_of(self, login: str) -> str | None:
        """The user's login as stored (case as registered), or None."""
        with self.session() as s:
            return s.scalar(select(User.login).where(func.lower(User.login) == login.lower()))

    # ------------------------------------------------------------------ writing gists

    def _put_blob(self, s: Session, content: bytes) -> str:
        sha = blob_sha(content)
        if self.is_sqlite:
            from sqlalchemy.dialects.sqlite import insert
        else:
            from sqlalchemy.dialects.postgresql import insert
        s.execute(
            insert(Blob)
            .values(sha=sha, size=len(content), content=content)
            .on_conflict_do_nothing(index_elements=["sha"])
        )
        return sha

    def _commit(
        self,
        s: Session,
        gist: Gist,
        old: Mapping[str, str],
        new: Mapping[str, str],
        added: Mapping[str, bytes],
        when: datetime,
    ) -> None:
        """Record revision ``gist.revision + 1`` holding ``new`` (name -> blob sha).

        ``added`` holds the contents of blobs that may not be stored yet, by sha.
        """
        for content in added.values():
            self._put_blob(s, content)
        changed = {n for n in set(old) | set(new) if old.get(n) != new.get(n)}
        contents = dict(added)
        contents.update(self._contents(s, {old[n] for n in changed if n in old} - set(added)))
        adds = dels = 0
        for name in changed:
            a, d = _line_changes(contents.get(old.get(name, "")), contents.get(new.get(name, "")))
            adds, dels = adds + a, dels + d
        number = gist.revision + 1
        listing = "".join(f"{n}\0{new[n]}\n" for n in sorted(new))
        version = hashlib.sha1(
            f"{gist.id}:{gist.revision}\n{number}\n{when.isoformat()}\n{listing}".encode()
        ).hexdigest()
        rev = Revision(
            gist_id=gist.id, number=number, version=version, committed_at=when, additions=adds, deletions=dels
        )
        s.add(rev)
        s.flush()
        s.add_all(RevisionFile(revision_id=rev.id, filename=n, blob_sha=sha) for n, sha in new.items())
        gist.revision = number

    def _contents(self, s: Session, shas: set[str]) -> dict[str, bytes]:
        if not shas:
            return {}
        return dict(s.execute(select(Blob.sha, Blob.content).where(Blob.sha.in_(shas))).all())

    @staticmethod
    def _check_files(files: Mapping[str, object]) -> None:
        check_files(files)
        for name, content in files.items():
            if isinstance(content, bytes):  # (a sha string: content checked on its way in)
                check_content(name, content)

    def create_gist(
        self,
        owner: str,
        description: str | None,
        public: bool,
        files: Mapping[str, bytes],
        *,
        gist_id: str | None = None,
        imported_from: str | None = None,
    ) -> GistView:
        """Create a gist with its first revision; return it as stored.

        ``gist_id`` keeps an id given elsewhere (a gist imported from GitHub, a
        bundled model); by default a new random one is made. ``imported_from``
        (the source's API) makes the gist read-only but to :meth:`update_gist`
        with ``importer=True``: its owner's name here may be someone else.
        """
        self._check_files(files)
        check_description(description)
        if gist_id is not None:
            check_gist_id(gist_id)
        # Only the transaction is retried: a failure of the read after it has committed
        # must not create the gist a second time.
        made = self._create_gist(owner, description, public, files, gist_id, imported_from)
        return retried(self.get_gist)(made)  # type: ignore[return-value]

    @retried
    def _create_gist(
        self,
        owner: str,
        description: str | None,
        public: bool,
        files: Mapping[str, bytes],
        gist_id: str | None,
        imported_from: str | None,
    ) -> str:
        when = now()
        with self.session(write=True) as s:
            uid = self._user_id(s, owner)
            if gist_id is not None and s.get(Gist, gist_id) is not None:
                raise invalid("id", "already_exists", f"a gist with id {gist_id!r} already exists")
            gist = Gist(
                id=gist_id or secrets.token_hex(16),
                owner_id=uid,
                description=description,
                public=public,
                created_at=when,
                updated_at=when,
                revision=0,
                # Past any serial a gist deleted under this id had (each serial's move bumped the
                # generation too): caches keyed on the serial must not answer with that gist.
                serial=catalog.generation(s) + 1,
                imported_from=imported_from,
            )
            s.add(gist)
            s.flush()
            self._commit(
                s,
                gist,
                {},
                {n: blob_sha(c) for n, c in files.items()},
                {blob_sha(c): c for c in files.values()},
                when,
            )
            catalog.index_gist(s, gist.id)
            return gist.id

    def _lock_own(self, s: Session, gist_id: str, owner: str, importer: bool = False) -> Gist:
        """The gist's row, locked for this transaction; NotFound unless ``owner`` owns it,
        ReadOnly when it was imported and this is not the import."""
        gist = s.scalar(
            select(Gist)
            .join(User, User.id == Gist.owner_id)
            .where(Gist.id == gist_id, func.lower(User.login) == owner.lower())
            .with_for_update(of=Gist)
        )
        if gist is None:
            raise NotFound(f"no gist {gist_id!r} owned by {owner!r}")
        if gist.imported_from and not importer:
            raise ReadOnly(
                f"gist {gist_id} was imported from {gist.imported_from} by `caffezoo wiki import` and "
                "is read-only here: change it at its source, then import again"
            )
        return gist

    def _head_blobs(self, s: Session, gist: Gist) -> dict[str, str]:
        return dict(
            s.execute(
                select(RevisionFile.filename, RevisionFile.blob_sha)
                .join(Revision, Revision.id == RevisionFile.revision_id)
                .where(Revision.gist_id == gist.id, Revision.number == gist.revision)
            ).all()
        )

    def update_gist(
        self,
        gist_id: str,
        owner: str,
        *,
        description: str | None = UNSET,
        changes: Mapping[str, FileChange | None] | None = None,
        importer: bool = False,
    ) -> GistView:
        """Apply GitHub's update semantics: add, replace, rename, delete; others unchanged.

        ``changes`` maps a *current* file name to a :class:`FileChange`, or to
        None (or an empty change) to delete it; an unknown name with content adds
        a file. A new revision is recorded only when the files change.
        """
        # Only the transaction is retried: a failure of the read after it has committed
        # must not apply a rename or an addition twice.
        self._update_gist(gist_id, owner, description, changes, importer)
        return retried(self.get_gist)(gist_id)  # type: ignore[return-value]

    @retried
    def _update_gist(
        self,
        gist_id: str,
        owner: str,
        description: str | None,
        changes: Mapping[str, FileChange | None] | None,
        importer: bool,
    ) -> None:
        changes = dict(changes or {})
        if description is not UNSET:
            check_description(description)
        for name, change in changes.items():
            if change is not None and change.content is not None:
                check_content(change.filename or name, change.content)
        when = now()
        with self.session(write=True) as s:
            gist = self._lock_own(s, gist_id, owner, importer)
            old = self._head_blobs(s, gist)
            new = dict(old)
            added: dict[str, bytes] = {}
            # Names that stop existing under their current name: deleted or renamed away.
            leaving = {
                n
                for n, c in changes.items()
                if n in old
                and (c is None or (c.content is None and c.filename is None) or (c.filename or n) != n)
            }
            for name in leaving:
                del new[name]
            targets: set[str] = set()
            for name, change in changes.items():
                if change is None or (change.content is None and change.filename is None):
                    if name not in old:
                        raise invalid(
                            "files", "missing", f"cannot delete {name!r}: the gist has no such file"
                        )
                    continue
                if name not in old and change.content is None:
                    raise invalid("files", "missing", f"cannot rename {name!r}: the gist has no such file")
                target = change.filename or name
                if target in targets or (target != name and target in old and target not in leaving):
                    raise invalid(
                        "files",
                        "already_exists",
                        f"cannot name a file {target!r}: another file has that name",
                    )
                targets.add(target)
                if change.content is not None:
                    new[target] = blob_sha(change.content)
                    added[new[target]] = change.content
                else:
                    new[target] = old[name]
            self._check_files(new)
            contents_changed = new != old
            desc_changed = description is not UNSET and description != gist.description
            if contents_changed:
                self._commit(s, gist, old, new, added, when)
            if desc_changed:
                gist.description = description
            if contents_changed or desc_changed:
                gist.updated_at = when
                gist.serial += 1
                s.flush()
                catalog.index_gist(s, gist_id)

    @retried
    def delete_gist(self, gist_id: str, owner: str) -> None:
        """Delete a gist with all its revisions; blobs no other revision uses go too."""
        with self.session(write=True) as s:
            gist = self._lock_own(s, gist_id, owner)
            shas = set(
                s.scalars(select(RevisionFile.blob_sha).join(Revision).where(Revision.gist_id == gist.id))
            )
            rev_ids = select(Revision.id).where(Revision.gist_id == gist.id)
            s.execute(delete(RevisionFile).where(RevisionFile.revision_id.in_(rev_ids)))
            s.execute(delete(Revision).where(Revision.gist_id == gist.id))
            s.execute(delete(Gist).where(Gist.id == gist.id))
            catalog.forget_gist(s, gist_id)
            if shas:
                used = select(RevisionFile.blob_sha).where(RevisionFile.blob_sha.in_(shas))
                s.execute(delete(Blob).where(Blob.sha.in_(shas), Blob.sha.not_in(used)))

    # ------------------------------------------------------------------ reading gists

    def state(self, gist_id: str) -> tuple[int, int] | None:
        """``(revision, serial)`` of a gist, or None: one indexed lookup, for cache checks.

        On the hot path of every read, so it skips SQLAlchemy's statement
        machinery: one SELECT on a pooled DB-API connection.
        """
        conn = self.engine.raw_connection()
        try:
            cur = conn.cursor()
            cur.execute(self._state_sql, (gist_id,))
            row = cur.fetchone()
            cur.close()
            if not self.is_sqlite:
                conn.commit()  # end the read transaction here, not in the pool's reset
        finally:
            conn.close()
        return None if row is None else (row[0], row[1])

    async def state_async(self, gist_id: str) -> tuple[int, int] | None:
        """:meth:`state` without leaving the event loop: on SQLite :meth:`state` itself; on
        PostgreSQL the state held by this process's change feed (:mod:`.coherence`), else a
        batched read on an async connection (:mod:`.hotreads`)."""
        if self.is_sqlite:
            return self.state(gist_id)
        feed = self._feed or self._listen()
        state = feed.state(gist_id)
        if state is not None:
            return state  # no query: the feed hears of every change before its writer returns
        import asyncio

        from .hotreads import GistStates

        loop = asyncio.get_running_loop()
        states = self._states_by_loop.get(loop)
        if states is None:  # connections belong to the loop that made them (a test may run several)
            states = self._states_by_loop[loop] = GistStates(self.url)
        mark = feed.mark()
        state = await states.get(gist_id)
        if state is not None:
            feed.remember(gist_id, state, mark)
        return state

    def _listen(self) -> coherence.ChangeFeed:
        """Start this process's change feed (the first Gist API read on PostgreSQL)."""
        with self._feed_lock:
            if self._feed is None:
                self._feed = coherence.ChangeFeed(self.url).start()
            return self._feed

    def get_gist(self, gist_id: str, version: str | None = None) -> GistView | None:
        """A gist with its files' contents as of ``version`` (default: the newest), and its history."""
        with self.session() as s:
            row = s.execute(
                select(Gist, User.login).join(User, User.id == Gist.owner_id).where(Gist.id == gist_id)
            ).first()
            if row is None:
                return None
            gist, login = row
            revs = (
                s.execute(
                    select(Revision).where(Revision.gist_id == gist_id).order_by(Revision.number.desc())
                )
                .scalars()
                .all()
            )
            if version is None:
                shown = next((r for r in revs if r.number == gist.revision), None)
            else:
                shown = next((r for r in revs if r.version == version.lower()), None)
                if shown is None:
                    return None
            files: list[FileView] = []
            if shown is not None:
                rows = s.execute(
                    select(RevisionFile.filename, Blob.sha, Blob.size, Blob.content)
                    .join(Blob, Blob.sha == RevisionFile.blob_sha)
                    .where(RevisionFile.revision_id == shown.id)
                    .order_by(RevisionFile.filename)
                ).all()
                files = [FileView(n, sha, size, content) for n, sha, size, content in rows]
            return _view(
                gist,
                login,
                shown.version if shown else None,
                files,
                [RevisionView(r.number, r.version, r.committed_at, r.additions, r.deletions) for r in revs],
            )

    def list_gists(
        self,
        owner: str | None = None,
        *,
        public_only: bool = True,
        since: datetime | None = None,
        limit: int = 30,
        offset: int = 0,
    ) -> tuple[list[GistView], int]:
        """Gists newest-updated first, with file names and sizes (no contents); and the total count."""
        with self.session() as s:
            q = select(Gist, User.login).join(User, User.id == Gist.owner_id)
            if owner is not None:
                q = q.where(func.lower(User.login) == owner.lower())
            if public_only:
                q = q.where(Gist.public.is_(True))
            if since is not None:
                q = q.where(Gist.updated_at >= since)
            total = s.scalar(select(func.count()).select_from(q.subquery())) or 0
            rows = s.execute(q.order_by(Gist.updated_at.desc(), Gist.id).limit(limit).offset(offset)).all()
            ids = [g.id for g, _ in rows]
            files: dict[str, list[FileView]] = {i: [] for i in ids}
            versions: dict[str, str] = {}
            if ids:
                for gid, version, name, sha, size in s.execute(
                    select(Revision.gist_id, Revision.version, RevisionFile.filename, Blob.sha, Blob.size)
                    .join(Gist, (Gist.id == Revision.gist_id) & (Gist.revision == Revision.number))
                    .join(RevisionFile, RevisionFile.revision_id == Revision.id)
                    .join(Blob, Blob.sha == RevisionFile.blob_sha)
                    .where(Revision.gist_id.in_(ids))
                    .order_by(RevisionFile.filename)
                ):
                    files[gid].append(FileView(name, sha, size))
                    versions[gid] = version
            return [_view(g, login, versions.get(g.id), files[g.id], []) for g, login in rows], total

    def raw(self, owner: str, gist_id: str, blob_sha: str, filename: str) -> bytes | None:
        """The bytes of ``filename`` as stored under ``blob_sha`` in any revision of
        ``owner``'s gist ``gist_id`` (None for any other owner, as its ``raw_url`` says)."""
        with self.session() as s:
            return s.scalar(
                select(Blob.content)
                .join(RevisionFile, RevisionFile.blob_sha == Blob.sha)
                .join(Revision, Revision.id == RevisionFile.revision_id)
                .join(Gist, Gist.id == Revision.gist_id)
                .join(User, User.id == Gist.owner_id)
                .where(
                    Revision.gist_id == gist_id,
                    RevisionFile.filename == filename,
                    Blob.sha == blob_sha.lower(),
                    func.lower(User.login) == owner.lower(),
                )
                .limit(1)
            )


def _view(
    gist: Gist, login: str, version: str | None, files: list[FileView], history: list[RevisionView]
) -> GistView:
    return GistView(
        id=gist.id,
        owner=login,
        owner_id=gist.owner_id,
        description=gist.description,
        public=gist.public,
        created_at=gist.created_at,
        updated_at=gist.updated_at,
        revision=gist.revision,
        serial=gist.serial,
        version=version,
        files=files,
        history=history,
        imported_from=gist.imported_from,
    )
