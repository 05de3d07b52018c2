"""Gists as GitHub's REST API shapes them (``gist-simple`` and ``base-gist``).

>>> gist_json(view, "http://127.0.0.1:8000", full=True)["files"]["readme.md"]["raw_url"]  # doctest: +SKIP
'http://127.0.0.1:8000/alice/0123.../raw/<blob sha>/readme.md'

Contents over :data:`TRUNCATE_BYTES` are cut (``truncated: true``; the whole
file is at ``raw_url``); past :data:`MAX_LISTED_FILES` files the list itself is
cut and the top-level ``truncated`` is true, as on GitHub.
"""

from __future__ import annotations

import base64
import mimetypes
from datetime import datetime
from typing import Any
from urllib.parse import quote

from .listing import DESCRIPTION_CHARS, cut
from .storage import FileView, GistView, RevisionView

__all__ = ["MAX_LISTED_FILES", "TRUNCATE_BYTES", "commits_json", "gist_json", "raw_url", "user_json"]

TRUNCATE_BYTES = 1024 * 1024
MAX_LISTED_FILES = 300

# A few languages by extension, as GitHub's linguist names them; None otherwise.
LANGUAGES = {
    ".md": "Markdown",
    ".markdown": "Markdown",
    ".py": "Python",
    ".sh": "Shell",
    ".txt": "Text",
    ".json": "JSON",
    ".yaml": "YAML",
    ".yml": "YAML",
    ".prototxt": "Protocol Buffer Text Format",
    ".proto": "Protocol Buffer",
    ".m": "MATLAB",
    ".lua": "Lua",
    ".cpp": "C++",
    ".c": "C",
    ".ipynb": "Jupyter Notebook",
    ".csv": "CSV",
}


def timestamp(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _ext(name: str) -> str:
    dot = name.rfind(".")
    return name[dot:].lower() if dot > 0 else ""


def file_type(name: str) -> str:
    guessed, _ = mimetypes.guess_type(name, strict=False)
    if guessed and (guessed.startswith("text/") or guessed.startswith("application/")):
        return guessed
    return "text/plain"


def raw_url(base: str, g: GistView, f: FileView) -> str:
    return f"{base}/{g.owner}/{g.id}/raw/{f.blob_sha}/{quote(f.filename)}"


def user_json(base: str, login: str, user_id: int) -> dict[str, Any]:
    """GitHub's ``simple-user``, with this server's URLs."""
    url = f"{base}/users/{login}"
    return {
        "login": login,
        "id": user_id,
        "node_id": base64.b64encode(f"04:User{user_id}".encode()).decode(),
        "avatar_url": "",
        "gravatar_id": "",
        "url": url,
        "html_url": f"{base}/{login}",
        "followers_url": f"{url}/followers",
        "following_url": f"{url}/following{{/other_user}}",
        "gists_url": f"{url}/gists{{/gist_id}}",
        "starred_url": f"{url}/starred{{/owner}}{{/repo}}",
        "subscriptions_url": f"{url}/subscriptions",
        "organizations_url": f"{url}/orgs",
        "repos_url": f"{url}/repos",
        "events_url": f"{url}/events{{/privacy}}",
        "received_events_url": f"{url}/received_events",
        "type": "User",
        "site_admin": False,
    }


def file_json(base: str, g: GistView, f: FileView, full: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "filename": f.filename,
        "type": file_type(f.filename),
        "language": LANGUAGES.get(_ext(f.filename)),
        "raw_url": raw_url(base, g, f),
        "size": f.size,
    }
    if full:
        data = f.content or b""
        truncated = len(data) > TRUNCATE_BYTES
        if truncated:
            data = data[:TRUNCATE_BYTES]
        # The stored text is valid UTF-8: only a character cut at the end can be partial.
        out["truncated"] = truncated
        out["content"] = data.decode("utf-8", errors="ignore")
        out["encoding"] = "utf-8"
    return out


def history_json(base: str, g: GistView, r: RevisionView, user: dict[str, Any]) -> dict[str, Any]:
    return {
        "user": user,
        "version": r.version,
        "committed_at": timestamp(r.committed_at),
        "change_status": {"total": r.total, "additions": r.additions, "deletions": r.deletions},
        "url": f"{base}/gists/{g.id}/{r.version}",
    }


def gist_json(g: GistView, base: str, *, full: bool) -> dict[str, Any]:
    """``full``: gist-simple (contents, history), else base-gist as in lists."""
    url = f"{base}/gists/{g.id}"
    owner = user_json(base, g.owner, g.owner_id)
    listed = g.files[:MAX_LISTED_FILES]
    out: dict[str, Any] = {
        "url": url,
        "forks_url": f"{url}/forks",
        "commits_url": f"{url}/commits",
        "id": g.id,
        "node_id": base64.b64encode(f"08:Gist{g.id}".encode()).decode(),
        "git_pull_url": f"{base}/{g.id}.git",
        "git_push_url": f"{base}/{g.id}.git",
        "html_url": f"{base}/{g.owner}/{g.id}",
        "files": {f.filename: file_json(base, g, f, full) for f in listed},
        "public": g.public,
        "created_at": timestamp(g.created_at),
        "updated_at": timestamp(g.updated_at),
        # Lists cut what rows written before the input limits may hold; a gist's own answer has it whole.
        "description": g.description if full else cut(g.description, DESCRIPTION_CHARS),
        "comments": 0,
        "comments_enabled": True,
        "user": None,
        "comments_url": f"{url}/comments",
        "owner": owner,
    }
    if full:
        out["forks"] = []
        out["history"] = [history_json(base, g, r, owner) for r in g.history]
        out["fork_of"] = None
    out["truncated"] = len(g.files) > MAX_LISTED_FILES
    return out


def commits_json(g: GistView, base: str) -> list[dict[str, Any]]:
    """``GET /gists/{id}/commits``: the history entries (gist-commit)."""
    owner = user_json(base, g.owner, g.owner_id)
    return [history_json(base, g, r, owner) for r in g.history]
