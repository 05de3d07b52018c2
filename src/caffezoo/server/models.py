"""The zoo server's tables (SQLAlchemy ORM), shared by the API and the web pages.

A gist is a row in ``gists``; each change of its files is a numbered row in
``revisions`` listing ``(filename, blob)`` pairs; file contents live once in
``blobs``, addressed by their SHA-1 (so a revision that keeps a file costs a
row, not a copy). Tokens are stored as SHA-256 digests only.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    Boolean, DateTime, ForeignKey, Index, Integer, LargeBinary, String, Text, UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


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

    revision_id: Mapped[int] = mapped_column(
        ForeignKey("revisions.id", ondelete="CASCADE"), primary_key=True
    )
    filename: Mapped[str] = mapped_column(String(255), primary_key=True)
    blob_sha: Mapped[str] = mapped_column(ForeignKey("blobs.sha"), index=True)


class Blob(Base):
    __tablename__ = "blobs"

    sha: Mapped[str] = mapped_column(String(40), primary_key=True)
    size: Mapped[int] = mapped_column(Integer)
    content: Mapped[bytes] = mapped_column(LargeBinary)


Index("ix_gists_public_updated", Gist.public, Gist.updated_at)
