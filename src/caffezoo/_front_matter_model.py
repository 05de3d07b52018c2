"""The pydantic model of the front matter: the slow path of :func:`caffezoo.schema.validate_front_matter`.

Building this class costs more start-up time than reading a readme, so it is
only imported when a front matter is not plainly valid (its errors name every
bad key) or holds values that need pydantic's conversions.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

from .hashes import digest
from .schema import _URL_SCHEMES, _str_list, check_file_name, check_results

__all__ = ["FrontMatterModel"]


class FrontMatterModel(BaseModel):
    """Validated front matter, by pydantic. Unknown keys are kept (``model_extra``)."""

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
    results: list[dict[str, Any]] = []

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
        return None if value is None else digest(value, "sha1")

    @field_validator("sha256")
    @classmethod
    def _sha256(cls, value: str | None) -> str | None:
        return None if value is None else digest(value, "sha256")

    @field_validator("caffemodel", "labels")
    @classmethod
    def _file_name(cls, value: str | None) -> str | None:
        return None if value is None else check_file_name(value)

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
            check_file_name(value, "mean file name")
        return value

    @field_validator("results", mode="before")
    @classmethod
    def _results(cls, value: Any) -> Any:
        return check_results(value)
