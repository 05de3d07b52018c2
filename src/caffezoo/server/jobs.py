"""Background jobs done once across replicas: leases claimed through the database.

>>> leases = Leases(storage, ttl=60)                                  # doctest: +SKIP
>>> if leases.claim("link", url, still_due=lambda s: is_due(s, url)):  # doctest: +SKIP
...     probe(url); leases.finish("link", url)                         # doctest: +SKIP

Every replica of ``caffezoo serve`` (and every ``caffezoo serve --role worker``)
may run the link checker and the mirror; a job (one URL to probe, one blob to
fetch) is done by whoever claims its row in ``job_leases`` first. A claim is
one atomic statement on both databases::

    INSERT INTO job_leases ... ON CONFLICT (kind, key) DO UPDATE SET owner = me, expires = now + ttl
        WHERE job_leases.expires <= now RETURNING key

PostgreSQL locks the conflicting row and re-reads it after a concurrent claim
commits, so of two replicas racing for the same job exactly one gets a row
back; SQLite serializes writers (``BEGIN IMMEDIATE``), which makes the same
statement the single-process path. After the claim, and in the same
transaction, ``still_due`` looks at the job's own state (``link_checks``, the
blob store): a replica whose list of due jobs is older than another's finished
round sees that the job was done and lets it be. A holder renews its leases
every ``ttl / 3`` (:meth:`renew`, from a heartbeat thread); a holder that dies
(kill -9, a lost machine) stops renewing and its jobs are claimable again once
``ttl`` has passed. :meth:`finish` releases a job, optionally with a
``cooldown`` during which nobody claims it (a failed mirror fetch is not
retried by the next replica in the same period); :meth:`release_all` hands
back everything at shutdown.

Times are the replicas' clocks (UTC): keep them in sync (NTP) and ``ttl``
well above their skew.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from .storage import Storage, now
from .tables import JobLease

__all__ = ["DEFAULT_TTL", "Leases", "job_key", "replica_id"]

log = logging.getLogger("caffezoo.server.jobs")

DEFAULT_TTL = 60.0  # seconds a claim lasts unless renewed


def job_key(subject: str) -> str:
    """The key of a job's row: the SHA-1 of its subject (URLs may be longer than an index allows)."""
    return hashlib.sha1(subject.encode("utf-8", "surrogatepass")).hexdigest()


def replica_id() -> str:
    """This process, for ``job_leases.owner``: host, pid and a random part (pids are reused)."""
    return f"{socket.gethostname()[:64]}:{os.getpid()}:{secrets.token_hex(4)}"


class _NotDue(Exception):
    pass


class Leases:
    """This process's claims on background jobs, in ``storage``'s database."""

    def __init__(self, storage: Storage, *, ttl: float = DEFAULT_TTL, owner: str | None = None):
        self.storage, self.ttl = storage, timedelta(seconds=ttl)
        self.owner = owner or replica_id()
        if storage.is_sqlite:
            from sqlalchemy.dialects.sqlite import insert
        else:
            from sqlalchemy.dialects.postgresql import insert
        self._insert = insert
        self._heartbeat: threading.Thread | None = None
        self._stop = threading.Event()
        # The jobs in progress here: only these are renewed. A job whose end could not be
        # written (the database went away) leaves this set all the same, so its row expires.
        self._held: set[tuple[str, str]] = set()
        self._held_lock = threading.Lock()

    def claim(self, kind: str, subject: str, still_due: Callable[[Session], bool] | None = None) -> bool:
        """Take the job ``(kind, subject)`` unless another holds it (or it cools down), and
        ``still_due(session)`` (read after the claim, in its transaction) agrees; True if taken."""
        when = now()
        stmt = self._insert(JobLease).values(
            kind=kind,
            key=job_key(subject),
            subject=subject,
            owner=self.owner,
            expires=when + self.ttl,
            claimed_at=when,
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["kind", "key"],
            set_={"owner": self.owner, "expires": when + self.ttl, "claimed_at": when},
            where=JobLease.expires <= when,
        ).returning(JobLease.key)
        try:
            with self.storage.session(write=True) as s:
                if s.execute(stmt).first() is None:
                    return False  # held by another, or cooling down
                if still_due is not None and not still_due(s):
                    raise _NotDue  # done meanwhile by another: roll back, leave its row as it was
        except _NotDue:
            return False
        with self._held_lock:
            self._held.add((kind, job_key(subject)))
        return True

    def finish(
        self, kind: str, subject: str, *, cooldown: float = 0.0, session: Session | None = None
    ) -> None:
        """Release a job this process holds; nobody claims it for ``cooldown`` seconds.
        Given ``session``, in that transaction (so the job's result and its release commit together)."""
        with self._held_lock:
            self._held.discard((kind, job_key(subject)))
        stmt = (
            update(JobLease)
            .where(JobLease.kind == kind, JobLease.key == job_key(subject), JobLease.owner == self.owner)
            .values(owner=None, expires=now() + timedelta(seconds=cooldown))
        )
        if session is not None:
            session.execute(stmt)
            return
        with self.storage.session(write=True) as s:
            s.execute(stmt)

    def renew(self) -> int:
        """Push the expiry of the jobs in progress here ``ttl`` ahead, unless another
        replica took them over meanwhile (this one stalled past their expiry); how many."""
        with self._held_lock:
            held = list(self._held)
        if not held:
            return 0
        with self.storage.session(write=True) as s:
            return s.execute(
                update(JobLease)
                .where(
                    JobLease.owner == self.owner,
                    or_(*(and_(JobLease.kind == kind, JobLease.key == key) for kind, key in held)),
                )
                .values(expires=now() + self.ttl)
            ).rowcount

    def held(self) -> list[str]:
        """Subjects of the jobs this process holds."""
        with self.storage.session() as s:
            return list(s.scalars(select(JobLease.subject).where(JobLease.owner == self.owner)))

    def release_all(self) -> int:
        """Hand back every job this process holds (at shutdown): claimable at once; how many."""
        with self._held_lock:
            self._held.clear()
        with self.storage.session(write=True) as s:
            return s.execute(
                update(JobLease).where(JobLease.owner == self.owner).values(owner=None, expires=now())
            ).rowcount

    # ------------------------------------------------------------------ the heartbeat

    def start_heartbeat(self) -> None:
        """Renew held leases every ``ttl / 3`` in a daemon thread, until :meth:`stop`."""
        if self._heartbeat is not None:
            return

        def beat() -> None:
            while not self._stop.wait(self.ttl.total_seconds() / 3):
                try:
                    self.renew()
                except Exception:  # the database may be back on the next beat
                    log.exception("renewing job leases failed")

        self._heartbeat = threading.Thread(target=beat, name="job-leases", daemon=True)
        self._heartbeat.start()

    def stop(self) -> int:
        """Stop the heartbeat and release every held job; how many were released."""
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join(5)
        try:
            return self.release_all()
        except Exception:  # the database is gone: the leases expire by themselves
            log.exception("releasing job leases failed")
            return 0
