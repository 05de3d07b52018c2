"""caffezoo wiki import|export: parsing Caffe's Model-Zoo page, importing it (with and
without fetching the gists from a real Gist API server), and the round trip."""

from __future__ import annotations

import httpx
from web_helpers import publish, readme, web_for

from caffezoo.server import Storage, catalog
from caffezoo.server.wiki import WikiItem, export_page, import_page, parse_page, render_page

PAGE = """\
# Model Zoo

Trained models are posted here as links to gists. Fetch one with the scripts.

<a name="nin"></a>
### Network in Network model

The Network in Network model is described in the following paper:

```bibtex
@inproceedings{lin2014nin,
  title={Network In Network},
  author={Lin, Min and Chen, Qiang and Yan, Shuicheng},
  year={2014}
}
```

Please cite the paper if you use the models.

**Models:**

* [NIN-Imagenet]({nin}): NIN on ImageNet, 59.36% top-1
  error with a small model
* [NIN-CIFAR10](https://github.com/mavenlin/nin-cifar10): NIN on CIFAR-10, no gist

License: non-commercial.

### Models used by the VGG team in ILSVRC-2014

    Very Deep Convolutional Networks for Large-Scale Image Recognition
    K. Simonyan, A. Zisserman
    arXiv:1409.1556, 2014

- [16-layer]({vgg}) - the 16-layer net
- [Project page](http://www.robots.ox.ac.uk/~vgg/research/very_deep/)

### Places-CNN

A [project site](http://places.csail.mit.edu) with no model list.
"""

NIN_ID, VGG_ID = "d802a5849de39225bcc6", "211839e770f7b538e2d8"


def page_text(
    nin: str = f"https://gist.github.com/mavenlin/{NIN_ID}#file-readme-md",
    vgg: str = f"https://gist.github.com/ksimonyan/{VGG_ID}#file-readme-md",
) -> str:
    return PAGE.replace("{nin}", nin).replace("{vgg}", vgg)


def test_parse_keeps_sections_citations_items_and_notes():
    page = parse_page(page_text())
    assert page.title == "Model Zoo" and page.preamble.startswith("Trained models are posted")
    assert [s.title for s in page.sections] == [
        "Network in Network model",
        "Models used by the VGG team in ILSVRC-2014",
        "Places-CNN",
    ]
    nin, vgg, places = page.sections
    assert nin.anchor == "nin" and nin.citation.startswith("@inproceedings{lin2014nin,")
    assert nin.items == [
        WikiItem(
            "NIN-Imagenet",
            f"https://gist.github.com/mavenlin/{NIN_ID}#file-readme-md",
            "NIN on ImageNet, 59.36% top-1 error with a small model",
        ),
        WikiItem("NIN-CIFAR10", "https://github.com/mavenlin/nin-cifar10", "NIN on CIFAR-10, no gist"),
    ]
    assert (
        nin.items[0].gist.id == NIN_ID and nin.items[0].gist.user == "mavenlin" and nin.items[1].gist is None
    )
    assert "License: non-commercial." in nin.notes and "Please cite" in nin.notes
    assert vgg.citation.startswith("Very Deep Convolutional Networks") and "arXiv:1409.1556" in vgg.citation
    assert [i.name for i in vgg.items] == ["16-layer", "Project page"] and vgg.items[
        0
    ].description == "the 16-layer net"
    assert places.items == [] and "project site" in places.notes


def test_odd_pages_do_not_break_the_parser():
    for text in (
        "",
        "no headings at all\n* [x](http://y)",
        "### Only a heading",
        "###\n* [a](b)",
        "### T\n```\nunclosed fence\n* [a](https://gist.github.com/u/abc)",
        "### T\r\n* [CRLF](https://gist.github.com/u/0123456789abcdef0123): d\r\n",
        "### T\n* [a [nested] name](https://x.org/a(b)): d",
    ):
        page = parse_page(text)
        assert render_page(page)  # and writes back without error
    crlf = parse_page("### T\r\n* [CRLF](https://gist.github.com/u/0123456789abcdef0123): d\r\n")
    assert crlf.sections[0].items[0].gist.id == "0123456789abcdef0123"
    nul = parse_page(
        "# T\0\n\n### S\0\n\nnote\0\n\n* [a\0](https://x.org/\0): d\0\n"
    )  # (PostgreSQL holds no NUL)
    assert "\0" not in render_page(nul) and nul.sections[0].items[0].name == "a\ufffd"


def test_import_without_fetching_keeps_the_page(store):
    report = import_page(store, parse_page(page_text()), fetch=False)
    assert (report.sections, report.gists, report.links) == (3, 2, 2)
    with store.session() as s:
        page = catalog.find(s, limit=50)
        assert page.total == 4
        nin = catalog.get_entry(s, NIN_ID)
        assert nin.wiki_name == "NIN-Imagenet" and nin.indexed_serial == 0 and nin.listed
        assert catalog.section_of(s, nin).citation.startswith("@inproceedings")
        assert [e.name for e in catalog.find(s, q="cifar").entries] == ["NIN-CIFAR10"]
        assert sorted(e.name for e in catalog.find(s, q="vgg").entries) == [
            "16-layer",
            "Project page",
        ]  # section title


def test_overlong_titles_and_anchors_are_imported(store):
    """An anchor longer than its column (and the page title, kept in the same column) is cut to fit."""
    title, anchor = "T" * 300, "a" * 300
    report = import_page(
        store,
        parse_page(f'# {title}\n\n<a name="{anchor}"></a>\n### S\n\n* [x](https://x.org)\n'),
        fetch=False,
    )
    assert report.sections == 1
    page = export_page(store, include_unsectioned=False)
    assert page.title == "T" * 200 and page.sections[0].anchor == "a" * 200


def test_reimport_replaces_the_page_and_keeps_gist_models(store):
    import_page(store, parse_page(page_text()), fetch=False)
    publish(store, "zed", "Unrelated Model")
    smaller = f"### Only section\n\n* [NIN again](https://gist.github.com/mavenlin/{NIN_ID}): renamed\n"
    import_page(store, parse_page(smaller), fetch=False)
    with store.session() as s:
        names = sorted(e.name for e in catalog.find(s, limit=50).entries)
        assert names == ["NIN again", "Unrelated Model"]
    import_page(store, parse_page(smaller), fetch=False)  # idempotent
    with store.session() as s:
        assert catalog.find(s).total == 2


def test_import_fetches_gists_from_the_api_and_export_round_trips(zoo, tmp_path, monkeypatch):
    """A second caffezoo server plays GitHub: gists are fetched with their id and owner."""
    source = zoo  # CAFFEZOO_GIST_API and the token point at the source server
    nin = source.create(
        {
            "readme.md": readme(
                "NIN ImageNet",
                license="non-commercial",
                tags=["nin"],
                body="Network in Network, trained on ImageNet.\n",
            ),
            "deploy.prototxt": 'name: "nin"\n',
        },
        public=True,
    )
    vgg = source.create({"readme.md": readme("VGG 16", license="CC-BY-4.0")}, public=True)
    text = page_text(
        nin=f"https://gist.github.com/{source.login}/{nin['id']}#file-readme-md",
        vgg=f"https://gist.github.com/{source.login}/{vgg['id']}#file-readme-md",
    )
    text = text.replace(
        "* [NIN-CIFAR10]",
        f"* [Missing](https://gist.github.com/{source.login}/{'f' * 32}): gone\n* [NIN-CIFAR10]",
    )
    monkeypatch.delenv("CAFFEZOO_TOKEN")  # public gists need none, as on GitHub
    target = Storage(f"sqlite:///{tmp_path / 'target.db'}")
    try:
        report = import_page(target, parse_page(text), fetch=True)
        assert sorted(report.fetched) == sorted([nin["id"], vgg["id"]])
        assert list(report.failed) == ["f" * 32] and "404" in report.failed["f" * 32]
        copy = target.get_gist(nin["id"])
        assert copy.owner == source.login and copy.public
        assert {f.filename for f in copy.files} == {"readme.md", "deploy.prototxt"}
        with target.session() as s:
            e = catalog.get_entry(s, nin["id"])
            assert (
                e.name == "NIN ImageNet" and e.license == "non-commercial" and e.wiki_name == "NIN-Imagenet"
            )
            assert catalog.section_of(s, e).title == "Network in Network model"
        # A second import with nothing changed at the source changes nothing.
        again = import_page(target, parse_page(text), fetch=True)
        assert sorted(again.unchanged) == sorted([nin["id"], vgg["id"]])
        assert len(target.get_gist(nin["id"]).history) == 1
        # Export, parse: the same sections, citations, items and notes.
        exported = render_page(export_page(target, include_unsectioned=False))
        a, b = parse_page(text), parse_page(exported)
        assert b.sections == a.sections
        assert b.title == a.title and b.preamble == a.preamble
    finally:
        target.close()


def test_wiki_cli_import_export_round_trip_and_pages(cli, tmp_path, monkeypatch):
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("CAFFEZOO_DATABASE_URL", db)
    page = tmp_path / "Model-Zoo.md"
    page.write_text(page_text())
    r = cli("wiki", "import", page, "--no-fetch")
    assert r.code == 0, r.stderr
    assert "3 sections, 2 gist entries, 2 other links" in r.stderr
    out = tmp_path / "exported.md"
    r = cli("wiki", "export", "-o", out, "--sections-only")
    assert r.code == 0, r.stderr
    assert parse_page(out.read_text()).sections == parse_page(page.read_text()).sections
    r = cli("wiki", "import", tmp_path / "missing.md")
    assert r.code != 0 and "missing.md" in r.stderr and "Traceback" not in r.stderr
    r = cli("wiki", "import", tmp_path)
    assert r.code == 1 and f"{tmp_path}: is a directory, expected a wiki page (Markdown file)" in r.stderr
    (tmp_path / "flat.md").write_text("no sections here\n")
    r = cli("wiki", "import", tmp_path / "flat.md", "--no-fetch")
    assert r.code == 2 and "no section headings" in r.stderr
    with web_for(db, tmp_path, seed=False) as w:
        html = w.get("/wiki").text
        assert "Network in Network model" in html and "lin2014nin" in html and "NIN-CIFAR10" in html
        assert "gist not fetched" in html and "external link" in html
        nin = w.get(f"/models/{NIN_ID}").text
        assert f"caffezoo gist download mavenlin/{NIN_ID}" in nin and "Please cite" in nin
        assert (
            httpx.get(f"{w.url}/api/models/{NIN_ID}")
            .json()["source_url"]
            .startswith("https://gist.github.com/")
        )


def test_offline_import_does_not_fetch(cli, tmp_path, monkeypatch, scripted):
    srv = scripted()
    monkeypatch.setenv("CAFFEZOO_GIST_API", srv.url)
    monkeypatch.setenv("CAFFEZOO_OFFLINE", "1")
    monkeypatch.setenv("CAFFEZOO_DATABASE_URL", f"sqlite:///{tmp_path / 'o.db'}")
    page = tmp_path / "p.md"
    page.write_text(page_text())
    r = cli("wiki", "import", page)
    assert r.code == 0 and "not fetching" in r.stderr and srv.seen == []


def test_a_wiki_link_that_is_not_http_is_shown_as_text(tmp_path):
    """The wiki page is anyone's words: a javascript: link must not become a link on a page."""
    from caffezoo.server.wiki import link_entry_id

    url = "javascript:alert`1`"
    with web_for(f"sqlite:///{tmp_path / 'w.db'}", tmp_path, seed=False) as w:
        import_page(w.storage, parse_page(f"### Evil\n\n* [Evil]({url}): a trap\n"), fetch=False)
        html = w.get(f"/models/{link_entry_id(url)}").text
        assert "<th>Source</th><td>javascript:alert`1`</td>" in html
        assert 'href="javascript' not in html.lower()


def test_the_wiki_page_follows_imports_mirrored_blobs_and_link_checks(tmp_path):
    """The rendered page is cached: each change it shows must still show at once."""
    from caffezoo.server.links import Probe, record

    with web_for(f"sqlite:///{tmp_path / 'w.db'}", tmp_path, seed=False) as w:
        assert "No wiki page has been imported yet" in w.get("/wiki").text
        gid = publish(
            w.storage,
            "wes",
            "Wes Net",
            sha1="6" * 40,
            caffemodel="w.caffemodel",
            caffemodel_url="http://127.0.0.1:9/w.caffemodel",
        )
        import_page(
            w.storage,
            parse_page(f"### Wes\n\n* [Wes on the wiki](https://gist.github.com/wes/{gid})\n"),
            fetch=False,
        )
        html = w.get("/wiki").text
        assert "Wes on the wiki" in html and "link not checked yet" in html and "mirrored here" not in html
        blob = w.app.state.mirror.path("6" * 40)
        blob.parent.mkdir(parents=True)
        blob.write_bytes(b"weights")  # a file-system fact: no database write tells the page
        assert "mirrored here" in w.get("/wiki").text
        record(w.storage, [Probe("http://127.0.0.1:9/w.caffemodel", False, error="refused")])
        html = w.get("/wiki").text
        assert "weights unreachable" in html and "link not checked yet" not in html
        import_page(
            w.storage, parse_page("### Another section\n\n* [Other](https://example.org/o)\n"), fetch=False
        )
        html = w.get("/wiki").text
        assert "Another section" in html and "Wes on the wiki" not in html


VGG = """\
### Very Deep Convolutional Networks for Large-Scale Image Recognition

* [16-layer](https://example.org/vgg16.caffemodel): the model of the [paper](https://arxiv.org/abs/1409.1556), *ILSVRC-2014*
* [19-layer](https://example.org/vgg19.caffemodel): a [trap](javascript:alert(1)) and <script>alert(2)</script>
"""


def test_wiki_entries_name_their_section_and_render_their_description_links(tmp_path):
    """The index shows where a wiki entry came from, and a description's Markdown as safe HTML."""
    from caffezoo.server.wiki import link_entry_id

    with web_for(f"sqlite:///{tmp_path / 'w.db'}", tmp_path, seed=False) as w:
        import_page(w.storage, parse_page(VGG), fetch=False)
        with w.storage.session() as s:
            from caffezoo.server.tables import WikiSection

            (sid,) = [x.id for x in s.query(WikiSection) if x.title.startswith("Very Deep")]
        section_link = f'In the wiki under <a href="/wiki#section-{sid}">Very Deep Convolutional Networks'
        paper = '<a href="https://arxiv.org/abs/1409.1556" rel="nofollow noopener noreferrer">paper</a>'
        for html in (w.get("/").text, w.get("/?q=layer").text):
            assert html.count(section_link) == 2
            assert f"the model of the {paper}, <em>ILSVRC-2014</em>" in html
        wiki = w.get("/wiki").text
        assert f"the model of the {paper}, <em>ILSVRC-2014</em>" in wiki and "](https://" not in wiki
        for html in (w.get("/").text, wiki):
            assert 'href="javascript' not in html.lower() and "<script>alert(2)" not in html
            assert "&lt;script&gt;alert(2)&lt;/script&gt;" in html
        assert w.get(f"/models/{link_entry_id('https://example.org/vgg16.caffemodel')}").status_code == 200
