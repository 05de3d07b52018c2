"""The web wiki in a real browser: Debian's Chromium driven by Playwright.

Screenshots of every page land in test-output/web/ (git-ignored). These tests
fail, never skip, when Chromium is missing.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import pytest
from fault_server import FaultServer
from web_helpers import OUTPUT, publish

WEIGHTS = os.urandom(50_000)
SHA1 = hashlib.sha1(WEIGHTS).hexdigest()

EVIL = """\
# Totally normal model

<script>window.__pwned = 1; document.body.insertAdjacentHTML('beforeend', '<p id="xss-marker">x</p>')</script>
<img src=x onerror="window.__pwned = 2; alert('img')">
<svg onload="alert('svg')"><script>alert('svg script')</script></svg>
<iframe src="javascript:alert('frame')"></iframe>
<a href="javascript:alert('link')" id="raw-js">raw js link</a>
<div style="position:fixed;inset:0;background:red" id="overlay">overlay</div>

[click me](javascript:alert('md')) [data](data:text/html,<script>alert('data')</script>)
<details open ontoggle="alert('toggle')"><summary>s</summary></details>
<form action="javascript:alert('form')"><button id="evil-button">go</button></form>
"""


class Watch:
    """Records what would betray a running script: dialogs, console output, page errors."""

    def __init__(self, page):
        self.dialogs, self.console, self.errors = [], [], []
        page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        page.on("console", lambda m: self.console.append(m.text))
        page.on("pageerror", lambda e: self.errors.append(str(e)))


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    p = context.new_page()
    yield p
    context.close()


def shot(page, name: str) -> None:
    page.screenshot(path=str(OUTPUT / f"{name}.png"), full_page=True)
    assert (OUTPUT / f"{name}.png").stat().st_size > 1000


def cards(page) -> list[str]:
    return page.locator("ol.models li.card h2 a").all_inner_texts()


def test_browse_search_filter_and_open_a_model(web, page):
    watch = Watch(page)
    page.goto(web.url + "/")
    assert page.title() == "Models — caffezoo"
    assert len(cards(page)) == 5
    shot(page, "index")

    page.fill("input[name=q]", "googlenet")
    page.press("input[name=q]", "Enter")
    page.wait_for_url("**/?q=googlenet")
    assert cards(page) == ["BAIR/BVLC GoogleNet Model"]
    shot(page, "search")

    page.goto(web.url + "/")
    page.select_option("select[name=license]", "non-commercial")
    page.click("form.filters button[type=submit]")
    page.wait_for_url("**license=non-commercial**")
    assert cards(page) == ["Finetuning CaffeNet on Flickr Style"]
    shot(page, "filter")

    page.click("text=Finetuning CaffeNet on Flickr Style")
    page.wait_for_url("**/models/**")
    assert page.locator("h1").inner_text() == "Finetuning CaffeNet on Flickr Style"
    picture = page.locator("#net-picture")
    picture.wait_for()
    # The graph really arrived and decoded (an <img> of an SVG: no script can run in it).
    assert page.evaluate(
        "() => { const i = document.getElementById('net-picture');"
        " return i.complete && i.naturalWidth > 50 && i.naturalHeight > 50 }"
    )
    assert page.locator("details.file[open] .k").count() > 10  # the prototxt, highlighted
    shot(page, "model")
    assert watch.dialogs == [] and watch.errors == []


def test_command_hints_work_when_followed(web, page, tmp_path):
    """Copy the commands from a model page and run them: model info, then verified weights."""
    with FaultServer() as origin:
        origin.route("/tiny.caffemodel", WEIGHTS)
        gid = publish(
            web.storage,
            "cora",
            "Tiny Commands Net",
            caffemodel="tiny.caffemodel",
            caffemodel_url=origin.url("/tiny.caffemodel"),
            sha1=SHA1,
            license="MIT",
        )
        page.goto(f"{web.url}/models/{gid}")
        commands = page.locator("#get code.cmd").all_inner_texts()
        assert commands[0] == f"export CAFFEZOO_GIST_API={web.url}"
        work = tmp_path / "work"
        work.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith("CAFFEZOO_")}
        env["CAFFEZOO_HOME"] = str(tmp_path / "client-home")
        script = "set -e\n" + "\n".join(
            c.replace("caffezoo ", f"{sys.executable} -m caffezoo ", 1) if c.startswith("caffezoo ") else c
            for c in commands
        )
        run = subprocess.run(
            ["bash", "-c", script], cwd=work, env=env, capture_output=True, text=True, timeout=180
        )
        assert run.returncode == 0, run.stderr
        model = work / "models" / f"cora-{gid}"
        assert (model / "readme.md").is_file() and (model / "deploy.prototxt").is_file()
        assert (model / "tiny.caffemodel").read_bytes() == WEIGHTS


def test_a_malicious_readme_runs_nothing(web, page):
    watch = Watch(page)
    gid = publish(
        web.storage, "mallory", "Totally Normal Net", body=EVIL, license="<script>alert('fm')</script>"
    )
    page.goto(f"{web.url}/models/{gid}")
    title = page.title()
    page.click("text=click me")  # a javascript: link is not a link any more: nothing happens
    page.wait_for_timeout(300)
    shot(page, "malicious")
    assert watch.dialogs == [], watch.dialogs
    assert page.evaluate("() => window.__pwned === undefined")
    assert page.locator("#xss-marker").count() == 0 and page.locator("#overlay").count() == 0
    assert page.locator("#raw-js").count() == 0 and page.locator("#evil-button").count() == 0
    assert page.locator("article.readme script, article.readme iframe, article.readme img").count() == 0
    assert page.title() == title == "Totally Normal Net — caffezoo"
    assert page.url == f"{web.url}/models/{gid}"
    assert not [c for c in watch.console if "pwned" in c or "alert" in c]
    # The hostile text is shown, as text.
    assert "window.__pwned = 1" in page.locator("article.readme").inner_text()


def test_the_csp_stops_scripts_even_if_the_sanitizer_did_not(web, page):
    """Defence in depth: HTML with a script, served with the pages' CSP, runs nothing."""
    from fastapi.responses import HTMLResponse

    from caffezoo.server.pages import PAGE_HEADERS

    @web.app.get("/__test_unsanitized")
    def unsanitized():
        return HTMLResponse(
            "<p id=ok>static</p><script>document.title='ran'</script>"
            "<img src=x onerror=\"document.title='ran'\">",
            headers=PAGE_HEADERS,
        )

    watch = Watch(page)
    page.goto(web.url + "/__test_unsanitized")
    page.wait_for_timeout(300)
    assert page.title() != "ran" and page.locator("#ok").count() == 1
    assert any("Content Security Policy" in c for c in watch.console)


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_pages_read_well_on_a_phone_in_light_and_dark(web, browser, scheme):
    context = browser.new_context(
        viewport={"width": 390, "height": 844}, color_scheme=scheme, device_scale_factor=2, is_mobile=True
    )
    p = context.new_page()
    try:
        gid = web.http.get("/api/models", params={"q": "alexnet"}).json()["models"][0]["id"]
        for name, path in (
            ("index", "/"),
            ("model", f"/models/{gid}"),
            ("publish", "/publish"),
            ("wiki", "/wiki"),
        ):
            p.goto(web.url + path)
            # Nothing wider than the screen: no sideways scrolling of the page itself.
            assert p.evaluate("() => document.documentElement.scrollWidth") <= 390, name
            shot(p, f"phone-{scheme}-{name}")
        bg = p.evaluate("() => getComputedStyle(document.body).backgroundColor")
        assert (bg == "rgb(18, 20, 22)") == (scheme == "dark")
    finally:
        context.close()


def test_an_imported_wiki_page_reads_like_the_wiki(web, page):
    from test_wiki import NIN_ID, page_text

    from caffezoo.server.wiki import import_page, parse_page

    import_page(web.storage, parse_page(page_text()), fetch=False)
    page.goto(web.url + "/wiki")
    assert page.locator("section.section h2").all_inner_texts() == [
        "Network in Network model",
        "Models used by the VGG team in ILSVRC-2014",
        "Places-CNN",
    ]
    assert "lin2014nin" in page.locator("pre.citation").first.inner_text()
    shot(page, "wiki")
    page.click("text=NIN-Imagenet")
    page.wait_for_url(f"**/models/{NIN_ID}")
    assert f"caffezoo gist download mavenlin/{NIN_ID}" in page.locator("#get").inner_text()
    shot(page, "wiki-entry")


def compare_names(page) -> list[str]:
    return page.locator("#compare tbody td.name a").all_inner_texts()


def test_compare_sort_filter_and_pick_three(web, page):
    watch = Watch(page)
    page.goto(web.url + "/")
    page.click("nav >> text=Compare")
    page.wait_for_url("**/compare")
    assert len(compare_names(page)) == 5
    shot(page, "compare")

    page.click("#sort-macs")  # fewest MACs first
    page.wait_for_url("**sort=macs**")
    assert compare_names(page)[-1] == "BAIR/BVLC GoogleNet Model"
    page.click("#sort-macs")  # again: most first
    page.wait_for_url("**order=desc**")
    assert compare_names(page)[0] == "BAIR/BVLC GoogleNet Model"
    page.click("#sort-params")  # a new column: smallest first
    page.wait_for_url("**sort=params**")
    params = page.locator("#compare tbody td.num:nth-child(6) span").evaluate_all(
        "spans => spans.map(s => Number(s.title.replaceAll(',', '')))"
    )
    assert params == sorted(params) and params[0] == 6_998_552 and params[-1] == 60_965_224
    shot(page, "compare-sorted")

    page.select_option("form.filters select[name=task]", "image classification")
    page.fill("input[name=params_max]", "10M")
    page.click("form.filters button[type=submit]")
    page.wait_for_url("**params_max=10M**")
    assert compare_names(page) == ["BAIR/BVLC GoogleNet Model"]
    assert page.locator("#count").inner_text().startswith("1 model match")
    shot(page, "compare-filtered")

    page.goto(web.url + "/compare?sort=name")
    for name in (
        "BAIR/BVLC AlexNet Model",
        "BAIR/BVLC GoogleNet Model",
        "Finetuning CaffeNet on Flickr Style",
    ):
        page.check(f"input[aria-label='Compare {name}']")
    page.click("#compare-chosen")
    page.wait_for_url("**ids=**")
    heads = page.locator("#side-by-side thead th a").all_inner_texts()
    assert heads == [
        "BAIR/BVLC AlexNet Model",
        "BAIR/BVLC GoogleNet Model",
        "Finetuning CaffeNet on Flickr Style",
    ]
    table = page.locator("#side-by-side").inner_text()
    assert "60,965,224" in table and "6,998,552" in table and "68.7" in table and "0.3916" in table
    shot(page, "compare-side-by-side")
    assert watch.dialogs == [] and watch.errors == []


def test_compare_and_user_pages_fit_a_phone(web, browser):
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    p = context.new_page()
    try:
        for name, path in (("compare", "/compare"), ("user", "/users/bvlc")):
            p.goto(web.url + path)
            assert p.evaluate("() => document.documentElement.scrollWidth") <= 390, name
            shot(p, f"phone-{name}")
        assert p.locator("ol.models li.card").count() == 5  # bvlc published the bundled five
    finally:
        context.close()
