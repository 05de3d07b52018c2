"""The comparison table: every listed model as one row of facts, sorted and filtered in SQL.

>>> q = CompareQuery.parse({"sort": "macs", "convertible": "1", "params_max": "10M"})   # doctest: +SKIP
>>> page = rows(session, q)                                                          # doctest: +SKIP
>>> [(r.name, r.params) for r in page.entries], page.total                           # doctest: +SKIP
([('BAIR/BVLC GoogleNet Model', 6998552)], 1)

Every column a row shows is a column of ``zoo_entries`` the catalog fills on
write (:mod:`.facts`), most of them indexed, so a sorted, filtered page of a
10,000-model zoo is one bounded query. :class:`CompareQuery` turns query
parameters into that query, refusing what it cannot mean (an unknown column,
a range that is not a number, too many ids) with a message naming the
parameter; the web page, the CSV and the JSON share it.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import func, select
from sqlalchemy.orm import Session, load_only

from .tables import Entry

# Sortable columns: query name -> (heading, the entry's column).
COLUMNS: dict[str, tuple[str, Any]] = {
    "name": ("Model", Entry.sort_name),
    "task": ("Task", Entry.task),
    "dataset": ("Dataset", Entry.dataset),
    "reported": ("Reported", Entry.score),
    "params": ("Parameters", Entry.params),
    "macs": ("MACs", Entry.macs),
    "weights": ("Weights", Entry.weights_size),
    "license": ("License", Entry.license),
    "convertible": ("Convertible", Entry.convertible),
    "mirrored": ("Mirrored", Entry.mirrored),
}
PER_PAGE = 50
MAX_PER_PAGE = 500
MAX_PAGE = 10_000
MAX_IDS = 20
MAX_NUMBER = 10**18
_SUFFIX = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
_NUMBER_RE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([kmgt]?)\s*", re.I)
_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
RANGES = ("params_min", "params_max", "macs_min", "macs_max")


class BadQuery(ValueError):
    """A query parameter that cannot be understood; the message names it."""


def parse_number(name: str, text: str) -> int | None:
    """``10M`` -> 10,000,000; ``1.5G``; empty -> None; else :class:`BadQuery` naming ``name``.

    >>> parse_number("params_max", "10M")
    10000000
    """
    if not text.strip():
        return None
    m = _NUMBER_RE.fullmatch(text[:40])
    if not m:
        raise BadQuery(f"{name}: expected a number such as 5000000, 5M or 1.5G, found {text[:40]!r}")
    value = int(float(m.group(1)) * _SUFFIX[m.group(2).lower()])
    if value > MAX_NUMBER:
        raise BadQuery(f"{name}: {text[:40]!r} is larger than any model")
    return value


def _human(n: int | None) -> str:
    return "" if n is None else str(n)


@dataclass
class CompareQuery:
    sort: str = "name"
    desc: bool = False
    task: str = ""
    license: str = ""
    convertible: bool = False
    params_min: int | None = None
    params_max: int | None = None
    macs_min: int | None = None
    macs_max: int | None = None
    ids: list[str] = field(default_factory=list)
    page: int = 1
    per_page: int = PER_PAGE

    @classmethod
    def parse(cls, params: Mapping[str, str], ids: Sequence[str] = ()) -> CompareQuery:
        """From query parameters (``ids``: every ``ids`` value, each may hold commas)."""
        from .catalog import without_nul

        sort = params.get("sort", "name") or "name"
        if sort not in COLUMNS:
            raise BadQuery(f"sort: expected one of {', '.join(COLUMNS)}, found {sort[:40]!r}")
        order = params.get("order", "") or ""
        if order not in ("", "asc", "desc"):
            raise BadQuery(f"order: expected asc or desc, found {order[:40]!r}")
        chosen: list[str] = []
        for value in ids:
            for part in value.split(",")[: MAX_IDS + 1]:
                part = part.strip()
                if not part:
                    continue
                if not _ID_RE.fullmatch(part):
                    raise BadQuery(f"ids: {part[:40]!r} is not a model id")
                if part not in chosen:
                    chosen.append(part)
                if len(chosen) > MAX_IDS:
                    raise BadQuery(f"ids: at most {MAX_IDS} models side by side")
        q = cls(
            sort=sort,
            desc=order == "desc",
            task=without_nul(params.get("task", "")[:200]),
            license=without_nul(params.get("license", "")[:200]),
            convertible=params.get("convertible", "") in ("1", "on", "true", "yes"),
            ids=chosen,
            page=_int(params, "page", 1, 1, MAX_PAGE),
            per_page=_int(params, "per_page", PER_PAGE, 1, MAX_PER_PAGE),
        )
        for name in RANGES:
            setattr(q, name, parse_number(name, params.get(name, "")))
        return q

    def params(self, **changes: Any) -> dict[str, str]:
        values: dict[str, Any] = {
            "sort": self.sort if self.sort != "name" else "",
            "order": "desc" if self.desc else "",
            "task": self.task,
            "license": self.license,
            "convertible": "1" if self.convertible else "",
            **{name: _human(getattr(self, name)) for name in RANGES},
            "ids": ",".join(self.ids),
            "page": self.page if self.page != 1 else "",
            "per_page": self.per_page if self.per_page != PER_PAGE else "",
        }
        values.update(changes)
        return {k: str(v) for k, v in values.items() if v not in ("", None)}

    def url(self, path: str = "/compare", **changes: Any) -> str:
        params = self.params(**changes)
        return path + ("?" + urlencode(params) if params else "")

    def sort_url(self, column: str) -> str:
        """The heading's link: sort by ``column``; again to flip the order."""
        desc = not self.desc if column == self.sort else column in ("reported", "convertible", "mirrored")
        return self.url(sort=column if column != "name" else "", order="desc" if desc else "", page="")

    @property
    def filtered(self) -> bool:
        return bool(self.task or self.license or self.convertible or any(getattr(self, n) for n in RANGES))

    def key(self) -> tuple:
        return tuple(sorted(self.params().items()))


@dataclass
class ComparePage:
    entries: list[Entry]
    total: int


def _int(params: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    text = params.get(name, "")
    if not text:
        return default
    if not text.isdigit() or len(text) > 9:
        raise BadQuery(f"{name}: expected a whole number from {low} to {high}, found {text[:40]!r}")
    return min(max(int(text), low), high)


_SHOWN = (
    Entry.pk,
    Entry.id,
    Entry.name,
    Entry.owner,
    Entry.task,
    Entry.dataset,
    Entry.results,
    Entry.score,
    Entry.score_metric,
    Entry.params,
    Entry.macs,
    Entry.input_shape,
    Entry.layer_count,
    Entry.weights_size,
    Entry.license,
    Entry.convertible,
    Entry.unsupported,
    Entry.mirrored,
    Entry.sha1,
    Entry.weights_fit,
    Entry.facts_error,
)


def rows(s: Session, q: CompareQuery) -> ComparePage:
    """One page of listed entries for ``q`` (or exactly the entries ``q.ids`` names, in that order)."""
    where = [Entry.listed.is_(True)]
    if q.ids:
        # Chosen models are shown whether listed or secret: their ids are the secret.
        found = {
            e.id: e for e in s.scalars(select(Entry).where(Entry.id.in_(q.ids)).options(load_only(*_SHOWN)))
        }
        chosen = [found[i] for i in q.ids if i in found]
        return ComparePage(chosen, len(chosen))
    if q.task:
        where.append(Entry.task == q.task)
    if q.license:
        where.append(Entry.license == q.license)
    if q.convertible:
        where.append(Entry.convertible.is_(True))
    for name, column in (("params", Entry.params), ("macs", Entry.macs)):
        low, high = getattr(q, f"{name}_min"), getattr(q, f"{name}_max")
        if low is not None:
            where.append(column >= low)
        if high is not None:
            where.append(column <= high)
    column = COLUMNS[q.sort][1]

    def pks(*conditions: Any) -> Any:
        # Only the pk: the covering ix_zoo_compare_* indexes answer these without reading the wide
        # rows (tables.py); the page's own rows are fetched by pk at the end.
        return select(Entry.pk).where(*conditions)

    total = s.scalar(select(func.count()).select_from(pks(*where).subquery())) or 0
    offset, wanted = (q.page - 1) * q.per_page, q.per_page
    # Known values first, in index order, ties by pk in the same direction; then the rows where
    # the column is unknown, by name.
    known = [*where, column.is_not(None)] if q.sort != "name" else where
    n_known = (
        total if q.sort == "name" else s.scalar(select(func.count()).select_from(pks(*known).subquery())) or 0
    )
    direction = (lambda c: c.desc()) if q.desc else (lambda c: c.asc())
    chosen: list[int] = []
    if offset < n_known:
        order = pks(*known).order_by(direction(column), direction(Entry.pk))
        chosen = list(s.scalars(order.limit(wanted).offset(offset)))
    if len(chosen) < wanted and q.sort != "name":
        rest = pks(*where, column.is_(None)).order_by(Entry.sort_name, Entry.pk)
        chosen += list(s.scalars(rest.limit(wanted - len(chosen)).offset(max(0, offset - n_known))))
    if not chosen:
        return ComparePage([], total)
    found = {
        e.pk: e for e in s.scalars(select(Entry).where(Entry.pk.in_(chosen)).options(load_only(*_SHOWN)))
    }
    return ComparePage([found[pk] for pk in chosen if pk in found], total)


def results_of(entry: Entry) -> list[dict[str, Any]]:
    try:
        value = json.loads(entry.results or "[]")
    except ValueError:
        return []
    return value if isinstance(value, list) else []


def row_json(entry: Entry, base: str, mirrored: bool) -> dict[str, Any]:
    """One row for scripts: the same facts the table shows, as numbers."""
    return {
        "id": entry.id,
        "name": entry.name,
        "html_url": f"{base}/models/{entry.id}",
        "owner": entry.owner,
        "task": entry.task,
        "dataset": entry.dataset,
        "results": results_of(entry),
        "params": entry.params,
        "macs_per_sample": entry.macs,
        "input_shape": entry.input_shape,
        "layers": entry.layer_count,
        "weights_size": entry.weights_size,
        "license": entry.license,
        "convertible": entry.convertible,
        "mirrored": mirrored,
    }


CSV_COLUMNS = [
    "id",
    "name",
    "owner",
    "task",
    "dataset",
    "results",
    "params",
    "macs_per_sample",
    "input_shape",
    "layers",
    "weights_size",
    "license",
    "convertible",
    "mirrored",
    "html_url",
]


def _cell(value: Any) -> str:
    """A CSV cell a spreadsheet will not run: text starting with = + - @ is quoted with '."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        value = "; ".join(f"{r.get('metric')} {r.get('value')} ({r.get('dataset')})" for r in value)
    text = str(value)
    if text[:1] in ("=", "+", "-", "@", "\t", "\r"):
        text = "'" + text
    return text


def to_csv(items: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for item in items:
        writer.writerow([_cell(item.get(c)) for c in CSV_COLUMNS])
    return out.getvalue()


__all__ = [
    "COLUMNS",
    "BadQuery",
    "CompareQuery",
    "ComparePage",
    "parse_number",
    "results_of",
    "row_json",
    "rows",
    "to_csv",
]
