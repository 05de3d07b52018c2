"""Seed a server with the models bundled in caffezoo, as public gists of the user ``bvlc``.

>>> seed_bundled(storage)       # idempotent: a second run changes nothing   # doctest: +SKIP
[SeedResult(name='bvlc_alexnet', gist_id='5d1b…', status='created'), ...]

A bundled model keeps one gist id for good: its front matter's ``gist_id`` when
it has one, else an id derived from its directory name. Re-seeding brings the
gist in line with the bundled files (a new revision only when they changed).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from ..gist import collect_files
from ..zoo import bundled, bundled_names
from .storage import FileChange, Storage

__all__ = ["SeedResult", "bundled_gist_id", "seed_bundled"]

SEED_USER = "bvlc"


@dataclass(frozen=True)
class SeedResult:
    name: str
    gist_id: str
    status: str  # created, updated, unchanged


def bundled_gist_id(name: str, front_matter_id: str | None) -> str:
    return front_matter_id or hashlib.sha1(f"caffezoo-bundled:{name}".encode()).hexdigest()[:20]


def seed_bundled(storage: Storage, owner: str = SEED_USER) -> list[SeedResult]:
    """Create or refresh one public gist per bundled model."""
    storage.ensure_user(owner)
    results = []
    for name in bundled_names():
        model = bundled(name)
        files, _skipped = collect_files(model.path)
        contents = {n: c.encode("utf-8") for n, c in files.items()}
        gist_id = bundled_gist_id(name, model.front_matter.gist_id)
        current = storage.get_gist(gist_id)
        if current is None:
            storage.create_gist(owner, model.front_matter.name or name, True, contents, gist_id=gist_id)
            results.append(SeedResult(name, gist_id, "created"))
            continue
        have = {f.filename: f.content for f in current.files}
        changes: dict[str, FileChange | None] = {
            n: FileChange(content=c) for n, c in contents.items() if have.get(n) != c
        }
        changes.update({n: None for n in have if n not in contents})
        if changes:
            storage.update_gist(gist_id, current.owner, changes=changes)
        results.append(SeedResult(name, gist_id, "updated" if changes else "unchanged"))
    return results
