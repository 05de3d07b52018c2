"""Sources: Dropbox and Google Drive links, local paths, mirror order, credential scope."""

from __future__ import annotations

import pytest

from caffezoo.fetch import Source, mirror_url, normalize, origin, plan
from caffezoo.fetch.http import drive_confirm_url
from caffezoo.fetch.urls import redact

SHA1 = "9116a64c0fbe4459d18f4bb6b56d647b63920377"


@pytest.mark.parametrize(
    "link, url",
    [
        (
            "https://www.dropbox.com/s/abc/net.caffemodel?dl=0",
            "https://www.dropbox.com/s/abc/net.caffemodel?dl=1",
        ),
        (
            "https://www.dropbox.com/s/abc/net.caffemodel",
            "https://www.dropbox.com/s/abc/net.caffemodel?dl=1",
        ),
        (
            "https://www.dropbox.com/scl/fi/x/net.caffemodel?rlkey=k&dl=0",
            "https://www.dropbox.com/scl/fi/x/net.caffemodel?rlkey=k&dl=1",
        ),
        ("https://dropbox.com/s/abc/n?raw=1&dl=0", "https://dropbox.com/s/abc/n?raw=1&dl=1"),
    ],
)
def test_dropbox_links_get_dl_1(link, url):
    assert normalize(link).url == url


@pytest.mark.parametrize(
    "link",
    [
        "https://drive.google.com/file/d/1AbC_x-Y/view?usp=sharing",
        "https://drive.google.com/open?id=1AbC_x-Y",
        "https://drive.google.com/uc?id=1AbC_x-Y&export=download",
        "https://docs.google.com/uc?export=download&id=1AbC_x-Y",
    ],
)
def test_google_drive_links_become_direct_downloads(link):
    src = normalize(link)
    assert src.url == "https://drive.google.com/uc?export=download&id=1AbC_x-Y"
    assert src.drive


def test_other_urls_are_kept_as_they_are():
    url = "http://dl.caffe.berkeleyvision.org/bvlc_alexnet.caffemodel"
    assert normalize(url) == Source(url)


def test_local_paths_become_file_urls(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert normalize("w.caffemodel").url == (tmp_path / "w.caffemodel").as_uri()
    assert normalize(tmp_path / "a b").url.endswith("/a%20b")
    assert normalize("w").is_local and not normalize("http://h/w").is_local


def test_plan_puts_mirrors_first_and_drops_duplicates():
    sources = plan(
        SHA1, ["http://a/w", "http://b/w", "http://a/w"], ["https://zoo.example/", "file:///srv/c"]
    )
    assert [s.url for s in sources] == [
        f"https://zoo.example/blobs/sha1/{SHA1}",
        f"file:///srv/c/blobs/sha1/{SHA1}",
        "http://a/w",
        "http://b/w",
    ]
    assert [s.role for s in sources] == ["mirror", "mirror", "url", "url"]
    assert mirror_url("http://h/base", SHA1) == f"http://h/base/blobs/sha1/{SHA1}"


def test_origin_is_scheme_host_and_port():
    assert origin("https://API.github.com/gists") == "https://api.github.com:443"
    assert origin("http://127.0.0.1:8000/x") == "http://127.0.0.1:8000"
    assert origin("http://h/x") != origin("http://h:8080/x") != origin("https://h:8080/x")


def test_credentials_in_urls_are_not_printed():
    assert redact("https://user:pw@host/w") == "https://***@host/w"
    assert str(Source("https://user:pw@host/w")) == "https://***@host/w"
    assert Source("https://user:pw@host:1/w").host == "host:1"


def test_drive_confirm_link_in_an_older_page():
    page = '<a id="uc-download-link" href="/uc?export=download&amp;confirm=AbC1&amp;id=F">Download anyway</a>'
    assert drive_confirm_url(page, "https://drive.google.com/uc?id=F") == (
        "https://drive.google.com/uc?export=download&confirm=AbC1&id=F"
    )
    assert drive_confirm_url("<html>no</html>", "https://drive.google.com/") is None
