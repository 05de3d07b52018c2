"""The front-matter schema: which keys a model's ``readme.md`` may carry, and their types.

The seed's keys are ``name``, ``caffemodel``, ``caffemodel_url``, ``sha1``,
``caffe_commit`` (or ``caffe_version``), ``gist_id`` and ``license``; the rest
are caffezoo's backward-compatible extensions. Unknown keys are kept as they
are. Which keys are *required* depends on the action:

>>> fm = FrontMatter.model_validate({"name": "Net", "sha1": "9116A64C0FBE4459D18F4BB6B56D647B63920377"})
>>> fm.sha1
'9116a64c0fbe4459d18f4bb6b56d647b63920377'
>>> missing_keys(fm, "download")
['caffemodel', 'caffemodel_url']
"""

from __future__ import annotations

from typing import Any, Literal

from .errors import FrontMatterError, Problem
from .gist.rules import file_name_problem
from .hashes import digest

__all__ = [
    "Action",
    "FrontMatter",
    "REQUIRED",
    "check_file_name",
    "check_results",
    "missing_keys",
    "require",
    "validate_front_matter",
]


Action = Literal["download", "upload", "run"]

REQUIRED: dict[str, tuple[str, ...]] = {
    "download": ("caffemodel", "caffemodel_url", "sha1"),
    "upload": ("name",),
    "run": ("caffemodel",),
}

_URL_SCHEMES = ("http://", "https://", "ftp://", "file://")


def check_file_name(value: str, what: str = "file name") -> str:
    """``value`` when it is a safe file name, else ValueError: the gist rule
    (:func:`caffezoo.gist.rules.file_name_problem`), so a model directory and a gist agree."""
    if why := file_name_problem(value):
        raise ValueError(f"{what}: {why}" if what != "file name" else why)
    return value


def _str_list(value: Any) -> Any:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return value


# The fields of a front matter and their defaults, in the order to_json() writes them.
_FIELDS: dict[str, Any] = {
    # The seed's keys.
    "name": None,
    "caffemodel": None,
    "caffemodel_url": None,
    "sha1": None,
    "caffe_commit": None,
    "caffe_version": None,
    "gist_id": None,
    "license": None,
    # caffezoo's extensions.
    "sha256": None,
    "size": None,
    "mirrors": [],
    "tags": [],
    "task": None,
    "dataset": None,
    "inputs": None,
    "mean": None,
    "labels": None,
    "paper": None,
    "authors": [],
    "results": [],
}
_TEXT_FIELDS = (
    "name caffemodel caffemodel_url sha1 caffe_commit caffe_version gist_id license sha256 task dataset labels paper"
).split()
_LIST_FIELDS = ("mirrors", "tags", "authors")


class FrontMatter:
    """Validated front matter: one attribute per known key; unknown keys are kept (``model_extra``).

    >>> FrontMatter(name="Net", tags="a, b").tags
    ['a', 'b']

    Built by :func:`validate_front_matter` (``FrontMatter(**data)`` and
    :meth:`model_validate` too), which checks plainly valid values itself and
    leaves the rest to the pydantic model in :mod:`caffezoo._front_matter_model`,
    so reading an ordinary readme does not pay for building that model.
    """

    model_fields = _FIELDS  # the known keys (the name pydantic gives them)

    name: str | None
    caffemodel: str | None
    caffemodel_url: str | None
    sha1: str | None
    caffe_commit: str | None
    caffe_version: str | None
    gist_id: str | None
    license: str | None
    sha256: str | None
    size: int | None
    mirrors: list[str]
    tags: list[str]
    task: str | None
    dataset: str | None
    inputs: dict[str, list[int]] | None
    mean: str | list[float] | None
    labels: str | None
    paper: str | None
    authors: list[str]
    results: list[dict[str, Any]]
    model_extra: dict[str, Any]

    def __init__(self, **data: Any) -> None:
        fm = FrontMatter.model_validate(data)
        self.__dict__.update(fm.__dict__)

    @classmethod
    def model_construct(cls, **values: Any) -> FrontMatter:
        """A FrontMatter of ``values`` as they are, unchecked (known keys; the rest are extras)."""
        fm = object.__new__(cls)
        for key, default in _FIELDS.items():
            value = values.get(key, default)
            setattr(fm, key, list(value) if value is default and isinstance(default, list) else value)
        fm.model_extra = {k: v for k, v in values.items() if k not in _FIELDS}
        return fm

    @classmethod
    def model_validate(cls, data: dict[str, Any]) -> FrontMatter:
        """Check ``data``; a bad value raises pydantic's ``ValidationError`` naming every bad key."""
        values = _plainly_valid(data)
        if values is None:
            from ._front_matter_model import FrontMatterModel

            model = FrontMatterModel.model_validate(data)
            values = {**{k: getattr(model, k) for k in _FIELDS}, **(model.model_extra or {})}
        return cls.model_construct(**values)

    @property
    def title(self) -> str:
        """What to call the model in a list: its ``name`` or, failing that, nothing."""
        return self.name or ""

    def to_json(self) -> dict[str, Any]:
        """The values that are set, seed keys first, unknown keys last."""
        out = {
            k: getattr(self, k) for k, default in _FIELDS.items() if getattr(self, k) not in (None, default)
        }
        out.update((k, v) for k, v in self.model_extra.items() if v is not None)
        return out

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FrontMatter) and self.__dict__ == other.__dict__

    def __repr__(self) -> str:
        return f"FrontMatter({', '.join(f'{k}={v!r}' for k, v in self.to_json().items())})"


def _plainly_valid(data: Any) -> dict[str, Any] | None:
    """``data`` checked and normalised exactly as the pydantic model would, when every value is of a
    kind this can judge and valid; None when any is not (pydantic decides, and names the errors)."""
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        return None
    out: dict[str, Any] = {}
    try:
        for key, value in data.items():
            if key in _TEXT_FIELDS:
                if type(value) in (int, float):
                    value = str(value)
                elif isinstance(value, str):
                    value = value if value.strip() else None
                elif value is not None:
                    return None
                if value is not None:
                    value = _TEXT_CHECKS.get(key, _same)(value)
            elif key in _LIST_FIELDS:
                value = [] if value is None else _str_list(value)
                if type(value) is not list or not all(type(v) is str for v in value):
                    return None
                value = list(value)  # a copy, as pydantic makes
                if key == "mirrors" and not all(v.lower().startswith(_URL_SCHEMES) for v in value):
                    return None
            elif key == "size":
                if value is not None and (type(value) is not int or value < 0):
                    return None
            elif key == "inputs":
                if value is not None and not (
                    type(value) is dict
                    and all(
                        type(k) is str and type(v) is list and all(type(d) is int for d in v)
                        for k, v in value.items()
                    )
                ):
                    return None
                value = None if value is None else {k: list(v) for k, v in value.items()}
            elif key == "results":
                value = check_results(value)
            elif key == "mean":
                if isinstance(value, str):
                    value = check_file_name(value, "mean file name") if value.strip() else None
                elif type(value) is list and all(type(v) in (int, float) for v in value):
                    value = [float(v) for v in value]
                elif value is not None:
                    return None
            out[key] = value
    except ValueError:  # a value the model refuses: it says so, with every other problem
        return None
    return out


MAX_RESULTS = 100
_RESULT_KEYS = ("dataset", "metric", "value")


def check_results(value: Any) -> list[dict[str, Any]]:
    """Reported results: a list of ``{dataset, metric, value}`` mappings (other keys kept).

    >>> check_results([{"dataset": "ILSVRC 2012 val", "metric": "top-1", "value": 57.1}])
    [{'dataset': 'ILSVRC 2012 val', 'metric': 'top-1', 'value': 57.1}]

    ``value`` is a number as the paper reports it (57.1 for 57.1%). Raises
    ValueError naming the item and key at fault.
    """
    if value is None:
        return []
    if type(value) is not list:
        raise ValueError(f"expected a list of {{dataset, metric, value}} mappings, found {value!r}")
    if len(value) > MAX_RESULTS:
        raise ValueError(f"expected at most {MAX_RESULTS} results, found {len(value)}")
    out = []
    for i, item in enumerate(value):
        if type(item) is not dict or not all(type(k) is str for k in item):
            raise ValueError(f"[{i}]: expected a mapping with dataset, metric and value, found {item!r}")
        missing = [k for k in _RESULT_KEYS if item.get(k) is None or item.get(k) == ""]
        if missing:
            raise ValueError(f"[{i}]: missing {', '.join(missing)} (expected dataset, metric and value)")
        result = dict(item)
        for k in ("dataset", "metric"):
            text = item[k]
            if type(text) in (int, float):
                text = str(text)
            if type(text) is not str or not text.strip():
                raise ValueError(f"[{i}].{k}: expected text, found {item[k]!r}")
            result[k] = text.strip()
        number = item["value"]
        if type(number) not in (int, float) or number != number or number in (float("inf"), float("-inf")):
            raise ValueError(f"[{i}].value: expected a number (57.1 for 57.1%), found {number!r}")
        result["value"] = float(number)
        out.append(result)
    return out


def _same(value: str) -> str:
    return value


def _url(value: str) -> str:
    if not value.strip().lower().startswith(_URL_SCHEMES):
        raise ValueError(value)
    return value.strip()


_TEXT_CHECKS = {
    "sha1": lambda v: digest(v, "sha1"),
    "sha256": lambda v: digest(v, "sha256"),
    "caffemodel": check_file_name,
    "labels": check_file_name,
    "caffemodel_url": _url,
}


def validate_front_matter(
    data: dict[str, Any], path: str = "readme.md", lines: dict[str, int] | None = None
) -> FrontMatter:
    """Build a :class:`FrontMatter`; raise :class:`FrontMatterError` naming *every* bad key."""
    lines = lines or {}
    values = _plainly_valid(data)
    if values is not None:
        return FrontMatter.model_construct(**values)
    from pydantic import ValidationError

    try:
        return FrontMatter.model_validate(data)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            key = str(err["loc"][0]) if err["loc"] else "?"
            where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"][1:])
            if err["type"] == "value_error":
                msg = str(err["ctx"]["error"])
            else:
                msg = f"{err['msg'][0].lower()}{err['msg'][1:]}, found {err['input']!r}"
            problems.append(Problem(path, lines.get(key), f"{key}{where}: {msg}"))
        problems.sort(key=lambda p: p.line or 0)  # file order reads best
        raise FrontMatterError(path, problems) from None


def missing_keys(fm: FrontMatter, action: str) -> list[str]:
    """The keys ``action`` needs that ``fm`` lacks."""
    return [k for k in REQUIRED[action] if getattr(fm, k, None) in (None, "")]


def require(fm: FrontMatter, action: str, path: str = "readme.md") -> None:
    """Raise :class:`FrontMatterError` listing every key ``action`` needs and ``fm`` lacks."""
    missing = missing_keys(fm, action)
    if missing:
        raise FrontMatterError(
            path,
            f"{action} needs the key{'s' if len(missing) > 1 else ''} "
            + ", ".join(missing)
            + " in the front matter",
        )
