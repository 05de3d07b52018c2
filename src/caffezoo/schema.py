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

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from .errors import FrontMatterError, Problem
from .gist.rules import file_name_problem
from .hashes import normalize_hex

Action = Literal["download", "upload", "run"]

REQUIRED: dict[str, tuple[str, ...]] = {
    "download": ("caffemodel", "caffemodel_url", "sha1"),
    "upload": ("name",),
    "run": ("caffemodel",),
}

_URL_SCHEMES = ("http://", "https://", "ftp://", "file://")


def _plain_name(value: str, what: str = "file name") -> str:
    """``value`` when it is a safe file name (the gist rule: :func:`.gist.rules.file_name_problem`)."""
    if why := file_name_problem(value):
        raise ValueError(f"{what}: {why}" if what != "file name" else why)
    return value


def _hex(value: str, digits: int, name: str) -> str:
    text = normalize_hex(value, digits)
    if text is None:
        raise ValueError(f"expected {digits} hexadecimal digits (the output of `{name}sum`), found {value!r}")
    return text


def _str_list(value: Any) -> Any:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return value


class FrontMatter(BaseModel):
    """Validated front matter. Unknown keys are kept (``model_extra``)."""

    model_config = ConfigDict(extra="allow", str_strip_whitespace=False)

    # The seed's keys.
    name: str | None = None
    caffemodel: str | None = None
    caffemodel_url: str | None = None
    sha1: str | None = None
    caffe_commit: str | None = None
    caffe_version: str | None = None
    gist_id: str | None = None
    license: str | None = None
    # caffezoo's extensions.
    sha256: str | None = None
    size: int | None = None
    mirrors: list[str] = []
    tags: list[str] = []
    task: str | None = None
    dataset: str | None = None
    inputs: dict[str, list[int]] | None = None
    mean: str | list[float] | None = None
    labels: str | None = None
    paper: str | None = None
    authors: list[str] = []

    @field_validator(
        "name",
        "caffemodel",
        "caffemodel_url",
        "sha1",
        "caffe_commit",
        "caffe_version",
        "gist_id",
        "license",
        "sha256",
        "task",
        "dataset",
        "labels",
        "paper",
        mode="before",
    )
    @classmethod
    def _scalar_to_str(cls, value: Any) -> Any:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        if isinstance(value, str) and value.strip() == "":
            return None  # `key:` with nothing after it reads as "not given"
        return value

    @field_validator("sha1")
    @classmethod
    def _sha1(cls, value: str | None) -> str | None:
        return None if value is None else _hex(value, 40, "sha1")

    @field_validator("sha256")
    @classmethod
    def _sha256(cls, value: str | None) -> str | None:
        return None if value is None else _hex(value, 64, "sha256")

    @field_validator("caffemodel", "labels")
    @classmethod
    def _file_name(cls, value: str | None) -> str | None:
        return None if value is None else _plain_name(value)

    @field_validator("caffemodel_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not value.strip().lower().startswith(_URL_SCHEMES):
            raise ValueError(f"expected an http://, https://, ftp:// or file:// URL, found {value!r}")
        return None if value is None else value.strip()

    @field_validator("mirrors")
    @classmethod
    def _mirrors(cls, value: list[str]) -> list[str]:
        for url in value:
            if not url.lower().startswith(_URL_SCHEMES):
                raise ValueError(f"expected http(s):// or file:// URLs, found {url!r}")
        return value

    @field_validator("size")
    @classmethod
    def _size(cls, value: int | None) -> int | None:
        if value is not None and value < 0:
            raise ValueError(f"expected a number of bytes >= 0, found {value}")
        return value

    @field_validator("mirrors", "tags", "authors", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> Any:
        return [] if value is None else _str_list(value)

    @field_validator("size", mode="before")
    @classmethod
    def _no_bool(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("expected a number of bytes, found a boolean")
        return value

    @field_validator("mean", mode="before")
    @classmethod
    def _mean(cls, value: Any) -> Any:
        if isinstance(value, str):
            if value.strip() == "":
                return None
            _plain_name(value, "mean file name")
        return value

    @property
    def title(self) -> str:
        """What to call the model in a list: its ``name`` or, failing that, nothing."""
        return self.name or ""

    def to_dict(self) -> dict[str, Any]:
        """The values that are set, seed keys first, unknown keys last."""
        return self.model_dump(exclude_none=True, exclude_defaults=True)


def validate_front_matter(
    data: dict[str, Any], path: str = "readme.md", lines: dict[str, int] | None = None
) -> FrontMatter:
    """Build a :class:`FrontMatter`; raise :class:`FrontMatterError` naming *every* bad key."""
    lines = lines or {}
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
