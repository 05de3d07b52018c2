"""Configuration comes from the environment, read in one place."""

from __future__ import annotations

import pytest

from caffezoo.config import DEFAULT_GIST_API, settings
from caffezoo.errors import ConfigError


def test_defaults_under_caffezoo_home(caffezoo_home):
    s = settings()
    assert s.cache_dir == caffezoo_home / "cache" and s.blobs_dir == caffezoo_home / "cache" / "blobs"
    assert s.models_dir == caffezoo_home / "models"
    assert (s.offline, s.gist_api, s.mirrors, s.token) == (False, DEFAULT_GIST_API, (), None)


def test_platform_dirs_without_caffezoo_home(monkeypatch, tmp_path):
    monkeypatch.delenv("CAFFEZOO_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "c"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "d"))
    s = settings()
    assert s.cache_dir == tmp_path / "c" / "caffezoo" and s.data_dir == tmp_path / "d" / "caffezoo"


def test_values(monkeypatch):
    monkeypatch.setenv("CAFFEZOO_OFFLINE", "Yes")
    monkeypatch.setenv("CAFFEZOO_GIST_API", "http://127.0.0.1:8000/")
    monkeypatch.setenv("CAFFEZOO_MIRRORS", "http://a/ , https://b\nfile:///srv/m")
    s = settings()
    assert s.offline and s.gist_api == "http://127.0.0.1:8000"
    assert s.mirrors == ("http://a", "https://b", "file:///srv/m")


def test_token_order_and_never_in_repr(monkeypatch, caffezoo_home):
    (caffezoo_home / "user" / ".gist").write_text("from-gist-file\n")
    assert settings().token == "from-gist-file"
    monkeypatch.setenv("GITHUB_TOKEN", "from-github")
    assert settings().token == "from-github"
    monkeypatch.setenv("CAFFEZOO_TOKEN", "from-caffezoo")
    s = settings()
    assert s.token == "from-caffezoo" and "from-caffezoo" not in repr(s)


@pytest.mark.parametrize(
    "var, value, fragment",
    [
        ("CAFFEZOO_OFFLINE", "perhaps", "expected 1/0"),
        ("CAFFEZOO_GIST_API", "api.github.com", "expected an http:// or https:// URL"),
        ("CAFFEZOO_MIRRORS", "ftp://x", "is not an http(s):// or file:// URL"),
        (
            "CAFFEZOO_TIMEOUT",
            "nan",
            "expected a number from 0.1 to 86400",
        ),  # NaN compares false with everything
        ("CAFFEZOO_TIMEOUT", "0", "expected a number from 0.1 to 86400"),
        ("CAFFEZOO_TIMEOUT", "inf", "expected a number from 0.1 to 86400"),  # overflowed the socket's time_t
        ("CAFFEZOO_RETRIES", "2.5", "expected an integer >= 0"),
    ],
)
def test_bad_values_name_the_variable(monkeypatch, var, value, fragment):
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError, match=var) as e:
        settings()
    assert fragment in str(e.value)


@pytest.mark.parametrize(
    "var, value",
    [
        ("CAFFEZOO_GIST_API", "http://127.0.0.1:99999"),
        ("CAFFEZOO_MIRRORS", "http://[::1/zoo"),
    ],
)
def test_urls_that_do_not_parse_name_the_variable(monkeypatch, var, value):
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError, match=f"{var}: .* is not a valid URL"):
        settings()
