"""The web wiki's pages over HTTP: what they show, their headers, and hostile readmes."""

from __future__ import annotations

import os
import re

import pytest
from web_helpers import publish, web_for

from caffezoo.server.render import highlight_prototxt, markdown_html

MALICIOUS = """\
# Innocent model

<script>document.title = "pwned"</script>
<img src=x onerror="alert(1)">
<iframe src="https://evil.example/"></iframe>
<div style="position:fixed;top:0;left:0;width:100%;height:100%;background:red">overlay</div>
<style>body { display: none }</style>
<a href="javascript:alert(1)" onclick="alert(2)">raw link</a>
<svg><script>alert(3)</script></svg>
<object data="x.swf"></object><embed src="x.swf"><form action="https://evil.example/"><input></form>
<meta http-equiv="refresh" content="0;url=https://evil.example/">

[md js](javascript:alert(4)) [md JS](JaVaScRiPt:alert(5)) [entity](&#106;avascript:alert(6))
[data](data:text/html;base64,PHNjcmlwdD5hbGVydCg3KTwvc2NyaXB0Pg==) [vb](vbscript:msgbox(8))
![pixel](https://tracker.example/p.gif) ![js img](javascript:alert(9))
[ok](https://example.org/paper "a title") and **bold** text.
"""


def test_index_lists_the_bundled_models_with_their_facts(web):
    r = web.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    html = r.text
    for title in (
        "BAIR/BVLC AlexNet Model",
        "BAIR/BVLC GoogleNet Model",
        "Finetuning CaffeNet on Flickr Style",
    ):
        assert title in html
    assert "5 models" in html
    assert "non-commercial" in html and "unrestricted" in html
    assert "Caffe @709dc15" in html  # the framework version, from caffe_commit
    assert "SHA-1 ✓" in html and "link not checked yet" in html
    assert 'href="/?tag=imagenet"' in html


def test_search_filters_and_pagination(web):
    store = web.storage
    for i in range(30):
        publish(store, "paula", f"Page Net {i:02d}", license="Apache-2.0", tags=["paged"])
    r = web.get("/", params={"q": "googlenet"})
    assert (
        "BAIR/BVLC GoogleNet Model" in r.text and "AlexNet Model" not in r.text and "1 model found" in r.text
    )
    r = web.get("/", params={"license": "Apache-2.0"})
    assert "30 models found" in r.text and "page 1 of 2" in r.text and "Page Net 19" in r.text
    assert "Page Net 20" not in r.text and 'rel="next"' in r.text
    r2 = web.get("/", params={"license": "Apache-2.0", "page": "2"})
    assert "Page Net 20" in r2.text and "Page Net 29" in r2.text and "Page Net 19" not in r2.text
    assert web.get("/", params={"tag": "paged", "q": "net 07"}).text.count('class="card"') == 1
    r = web.get("/", params={"q": "no-such-thing-anywhere"})
    assert "No model matches" in r.text
    for bad in ({"page": "x"}, {"page": "-3"}, {"page": "99999999999"}, {"q": "x" * 5000}, {"tag": "<b>"}):
        assert web.get("/", params=bad).status_code == 200


def test_model_page_shows_everything_a_user_needs(web):
    store = web.storage
    gid = publish(
        store,
        "quinn",
        "Quinn Net",
        license="MIT",
        task="segmentation",
        tags=["street"],
        sha1="0" * 40,
        caffemodel="q.caffemodel",
        caffemodel_url="https://127.0.0.1:9/q.caffemodel",
        size=4096,
        files={"solver.prototxt": 'net: "deploy.prototxt"\nbase_lr: 0.01\n'},
    )
    from caffezoo.server.storage import FileChange

    store.update_gist(gid, "quinn", changes={"notes.txt": FileChange(content=b"second revision\n")})
    r = web.get(f"/models/{gid}")
    assert r.status_code == 200
    html = r.text
    assert "<h1>Quinn Net</h1>" in html
    assert "<th>license</th><td>MIT</td>" in html.replace("\n", "")  # the front matter table
    assert f"caffezoo gist download quinn/{gid}" in html
    assert f"caffezoo download models/quinn-{gid}" in html
    assert f"export CAFFEZOO_GIST_API={web.url}" in html
    assert '<span class="k">base_lr</span>' in html  # prototxt highlighted
    assert f'src="/models/{gid}/net.svg"' in html
    assert html.count("<td><code>") >= 2  # two revisions listed
    assert "4.1 KB" in html and "0" * 40 in html
    svg = web.get(f"/models/{gid}/net.svg")
    assert svg.status_code == 200 and svg.headers["content-type"] == "image/svg+xml"
    assert "<svg" in svg.text and "conv1" in svg.text
    assert svg.headers["content-security-policy"].startswith("default-src 'none'")
    old = store.get_gist(gid).history[-1].version
    r = web.get(f"/models/{gid}", params={"rev": old})
    assert "older revision" in r.text and "notes.txt" not in r.text
    assert web.get(f"/models/{gid}", params={"rev": "f" * 40}).status_code == 404
    assert web.get(f"/models/{gid}", params={"rev": "<script>"}).status_code == 404


def test_a_net_that_cannot_be_drawn_says_why(web):
    gid = publish(
        web.storage, "rita", "Broken Net", files={"deploy.prototxt": "layer { this is not prototxt"}
    )
    html = web.get(f"/models/{gid}").text
    assert "could not be drawn" in html and "net.svg" not in html
    assert web.get(f"/models/{gid}/net.svg").status_code == 422


def test_html_url_of_a_gist_leads_to_its_page_and_unknowns_are_404_pages(web):
    gid = publish(web.storage, "sam", "Sam Net")
    api = web.http.get(f"/gists/{gid}", headers={"Accept": "application/vnd.github+json"}).json()
    r = web.http.get(api["html_url"], follow_redirects=True)
    assert r.status_code == 200 and "<h1>Sam Net</h1>" in r.text
    assert web.get(f"/someone/{gid}").status_code == 404
    r = web.get("/models/nope")
    assert r.status_code == 404 and "text/html" in r.headers["content-type"] and "no model" in r.text
    assert web.get("/no/such/page/at/all").status_code == 404


def test_publish_and_wiki_pages(web):
    r = web.get("/publish")
    assert r.status_code == 200
    for needle in (
        "caffezoo gist upload",
        "caffemodel_url",
        "sha1",
        f"CAFFEZOO_GIST_API={web.url}",
        "/blobs/sha1/",
    ):
        assert needle in r.text
    assert "No wiki page has been imported yet" in web.get("/wiki").text


def test_security_headers_on_pages_and_api(web):
    page = web.get("/")
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp and "frame-ancestors 'none'" in csp
    assert "'unsafe-inline'" not in csp
    for r in (page, web.get("/gists/none"), web.get("/static/style.css")):
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["referrer-policy"] == "no-referrer"
    assert web.http.get("/api/models").headers["content-security-policy"] == "default-src 'none'"


def test_pages_carry_no_secrets(web, tmp_path):
    token = web.storage.create_token("tina")
    publish(web.storage, "tina", "Tina Net")
    pages = [web.get(p).text for p in ("/", "/publish", "/wiki", "/api/models")]
    gid = web.get("/api/models", params={"q": "tina"}).json()["models"][0]["id"]
    pages.append(web.get(f"/models/{gid}").text)
    for text in pages:
        assert token not in text and "czt_" + token[4:] not in text
        assert str(tmp_path) not in text  # no server paths either


def test_malicious_readme_is_rendered_inert(web):
    gid = publish(web.storage, "mallory", "Innocent Net", body=MALICIOUS)
    html = web.get(f"/models/{gid}").text
    readme = html.split('<article class="readme panel">', 1)[1].split("</article>", 1)[0]
    # No active element or attribute made it through.
    for tag in (
        "<script",
        "<iframe",
        "<img",
        "<style",
        "<svg",
        "<object",
        "<embed",
        "<form",
        "<input",
        "<meta",
        "<div",
    ):
        assert tag not in readme.lower(), tag
    tags = re.findall(r"<[a-z][^>]*>", readme, re.I)  # real tags; escaped text is &lt;...
    assert not [t for t in tags if re.search(r"\son\w+\s*=|style\s*=", t, re.I)]
    assert not [
        t for t in tags if re.search(r"(href|src)\s*=\s*[\"']?\s*(javascript|data|vbscript):", t, re.I)
    ]
    # The text is still there, shown as text.
    assert "&lt;script&gt;" in readme and "overlay" in readme
    assert (
        '<a href="https://example.org/paper" title="a title" rel="nofollow noopener noreferrer">ok</a>'
        in readme
    )
    assert 'href="https://tracker.example/p.gif"' in readme  # an image becomes a link, fetched by nobody
    # The front matter's values are escaped too.
    gid2 = publish(
        web.storage, "mallory", '"<script>alert(1)</script>"', license='"<b onmouseover=x>MIT</b>"'
    )
    page = web.get(f"/models/{gid2}").text
    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<b onmouseover" not in page


@pytest.mark.parametrize(
    "text",
    [
        "<script>alert(1)</script>",
        "[x](javascript:alert(1))",
        "<a href='javascript:1'>y</a>",
        "<img src=x onerror=alert(1)>",
        "[z](data:text/html,<script>1</script>)",
        "<iframe srcdoc='x'>",
        "<p style='background:url(javascript:alert(1))'>s</p>",
        "![i](javascript:alert(1))",
        "<details open ontoggle=alert(1)>",
        "[a](  javascript:alert(1))",
        "<math><mi xlink:href='javascript:1'>",
    ],
)
def test_markdown_pipeline_never_emits_active_content(text):
    html = markdown_html(text).lower()
    assert "<script" not in html and "<iframe" not in html and "<img" not in html and "<details" not in html
    tags = re.findall(r"<[a-z][^>]*>", html)
    assert not [t for t in tags if re.search(r"\son\w+\s*=|style\s*=", t)]
    assert not [t for t in tags if re.search(r"(href|src)\s*=\s*[\"']?\s*(javascript|data):", t)]


def test_prototxt_highlighting_escapes_everything():
    html = highlight_prototxt('name: "<script>" # </span><b>\nlayer { type: "X" kernel_size: 3 }\n')
    assert "<script>" not in html and "<b>" not in html
    assert '<span class="s">&quot;&lt;script&gt;&quot;</span>' in html
    assert html.count('<span class="ln">') == 2


def test_api_models_reports_weights_status(web):
    gid = publish(
        web.storage,
        "uma",
        "Uma Net",
        sha1="1" * 40,
        caffemodel_url="http://127.0.0.1:9/u.caffemodel",
        caffemodel="u.caffemodel",
    )
    data = web.http.get(f"/api/models/{gid}").json()
    assert data["name"] == "Uma Net" and data["gist_id"] == gid and data["owner"] == "uma"
    assert data["weights"] == {
        "url": "http://127.0.0.1:9/u.caffemodel",
        "sha1": "1" * 40,
        "size": None,
        "reachable": None,
        "status": None,
        "checked_size": None,
        "error": None,
        "checked_at": None,
        "mirrored": False,
        "mirror_url": None,
    }
    listing = web.http.get("/api/models", params={"q": "uma"}).json()
    assert listing["total"] == 1 and listing["models"][0]["id"] == gid
    assert web.http.get("/api/models/none").status_code == 404


def test_pages_on_postgresql(postgres_url, tmp_path):
    """The index, search and model pages where the storage differs: PostgreSQL full-text search."""
    from web_helpers import fresh_postgres

    with web_for(fresh_postgres(postgres_url), tmp_path) as w:
        publish(w.storage, "vera", "Vera Segmenter", tags=["street"], body="Cuts street scenes apart.\n")
        assert "6 models" in w.get("/").text
        r = w.get("/", params={"q": "segm"})
        assert "Vera Segmenter" in r.text and "1 model found" in r.text
        r = w.get("/", params={"q": "goog"})
        assert "BAIR/BVLC GoogleNet Model" in r.text and "1 model found" in r.text
        assert "1 model found" in w.get("/", params={"tag": "street"}).text
        gid = w.http.get("/api/models", params={"q": "vera"}).json()["models"][0]["id"]
        assert "Cuts street scenes apart." in w.get(f"/models/{gid}").text


def test_odd_page_requests_never_answer_500(database_url, tmp_path):
    """Ids, filters and revisions no model has (NUL bytes, which PostgreSQL refuses, overlong
    ids, markup): a 4xx or an empty result, on either database, as a page or as JSON."""
    with web_for(database_url, tmp_path, seed=False) as w:
        gid = publish(w.storage, "odd", "Odd Net")
        paths = [
            "/models/%00",
            "/models/%00/net.svg",
            "/api/models/%00",
            "/odd/%00",
            "/%00/" + gid,
            "/models/" + "a" * 300,
            "/api/models/" + "a" * 300,
            "/odd/" + "a" * 100,
            f"/models/{gid}?rev=%00",
            f"/models/{gid}/net.svg?rev=%00",
            "/models/%3Cb%3E",
            "/?license=%00",
            "/?task=%00",
            "/?tag=%00",
            "/?q=%00",
            "/api/models?license=%00&tag=%00",
        ]
        for accept in ("text/html", "application/json"):
            for path in paths:
                r = w.http.get(path, headers={"Accept": accept})
                assert r.status_code < 500, (accept, path, r.status_code, r.text[:200])
        assert w.get("/", params={"license": "\0"}).status_code == 200
        assert w.get("/models/%00").status_code == 404 and w.http.get("/api/models/%00").status_code == 404


def test_drawing_a_network_does_not_hold_up_other_requests(web, tmp_path, monkeypatch):
    """A big net keeps `dot` busy for seconds: meanwhile the server must go on answering.

    The `dot` found first on PATH waits for a go-ahead before it runs the real one; the
    index must be answered while it still waits.
    """
    import shutil
    import threading

    real = shutil.which("dot")
    assert real, "graphviz's dot is missing (Debian package `graphviz`, see .ci/run)"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "dot").write_text(
        "#!/bin/sh\n"
        f"touch {tmp_path}/started\n"
        f"i=0; while [ ! -e {tmp_path}/go ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done\n"
        f"touch {tmp_path}/finished\n"
        f'exec {real} "$@"\n'
    )
    (bin_dir / "dot").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    gid = publish(web.storage, "dora", "Slow Drawing Net")
    model: dict = {}
    thread = threading.Thread(target=lambda: model.setdefault("r", web.get(f"/models/{gid}")))
    thread.start()
    try:
        for _ in range(600):
            if (tmp_path / "started").exists() or not thread.is_alive():
                break
            threading.Event().wait(0.05)
        assert (tmp_path / "started").exists(), "the model page did not draw its network"
        index = web.get("/")
        assert index.status_code == 200 and not (tmp_path / "finished").exists()
    finally:
        (tmp_path / "go").touch()
        thread.join(60)
    assert model["r"].status_code == 200 and f'src="/models/{gid}/net.svg"' in model["r"].text
