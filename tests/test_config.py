"""Configuration comes from the environment, read in one place."""

from __future__ import annotations

import sys

import pytest
from download_helpers import blob, weights_model

from caffezoo.config import DEFAULT_GIST_API, settings
from caffezoo.download import download_many
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


# Counts the opens of the one file the hook is pointed at (audit hooks cannot be removed).
_opened: dict[str, int] = {}


def _count_opens(event, args):
    if event == "open" and isinstance(args[0], str) and args[0] in _opened:
        _opened[args[0]] += 1


sys.addaudithook(_count_opens)


def test_a_command_reads_the_settings_and_gist_file_once(caffezoo_home, tmp_path):
    gist_file = caffezoo_home / "user" / ".gist"
    gist_file.write_text("from-gist-file\n")
    _opened[str(gist_file)] = 0
    try:
        data = blob(2048, seed=7)
        (tmp_path / "w.bin").write_bytes(data)
        models = [weights_model(tmp_path / f"net{i}", (tmp_path / "w.bin").as_uri(), data) for i in range(3)]
        outcomes = download_many([str(m) for m in models], jobs=2, allow_local=True)  # the test's own file
        assert all(o.error is None for o in outcomes) and all(
            m.joinpath("net.caffemodel").is_file() for m in models
        )
        assert settings() is settings() and settings().token == "from-gist-file"
        assert _opened[str(gist_file)] == 1
    finally:
        del _opened[str(gist_file)]


def test_a_changed_environment_or_gist_file_is_seen(monkeypatch, caffezoo_home):
    first = settings()
    monkeypatch.setenv("CAFFEZOO_OFFLINE", "1")
    assert settings() is not first and settings().offline
    gist_file = caffezoo_home / "user" / ".gist"
    gist_file.write_text("one\n")
    assert settings().token == "one"
    gist_file.write_text("second\n")
    assert settings().token == "second"
    monkeypatch.setenv("CAFFEZOO_TIMEOUT", "nan")
    with pytest.raises(ConfigError):
        settings()
    with pytest.raises(ConfigError):  # a bad value is not kept as if it were good
        settings()
