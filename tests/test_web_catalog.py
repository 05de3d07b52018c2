"""The catalog: which gists are models, indexed on every write; search and filters.

Runs on SQLite (FTS5) and PostgreSQL (tsvector), whose full-text search differ.
"""

from __future__ import annotations

import json

from web_helpers import publish, readme

from caffezoo.server import catalog
from caffezoo.server.storage import FileChange


def find(store, **kw):
    with store.session() as s:
        page = catalog.find(s, **kw)
        return [e.name for e in page.entries], page.total


def entry(store, gist_id):
    with store.session() as s:
        return catalog.get_entry(s, gist_id)


def test_a_gist_with_front_matter_is_a_model_and_others_are_not(store):
    model = publish(
        store,
        "alice",
        "Flower Net",
        license="MIT",
        task="classification",
        tags=["Flowers", "fine-tuned"],
        caffe_version="1.0",
        size=1234,
        sha1="9116a64c0fbe4459d18f4bb6b56d647b63920377",
        caffemodel="f.caffemodel",
        caffemodel_url="http://127.0.0.1:9/f.caffemodel",
        body="# Flowers\n\nCaffeNet fine-tuned on **Oxford flowers**. It works.\n",
    )
    store.create_gist("alice", "notes", True, {"notes.txt": b"just text"})
    store.create_gist("alice", "a readme but no front matter", True, {"readme.md": b"# Hello\n"})
    names, total = find(store)
    assert (names, total) == (["Flower Net"], 1)
    e = entry(store, model)
    assert (e.license, e.task, e.framework, e.size) == ("MIT", "classification", "Caffe 1.0", 1234)
    assert e.tags == "fine-tuned,flowers"
    assert e.summary == "CaffeNet fine-tuned on Oxford flowers."
    assert e.owner == "alice" and e.sha1 == "9116a64c0fbe4459d18f4bb6b56d647b63920377"


def test_secret_gists_are_not_listed(store):
    publish(store, "bob", "Hidden Net", public=False)
    assert find(store) == ([], 0)
    assert find(store, q="hidden") == ([], 0)


def test_updates_reindex_and_deletes_remove(store):
    gid = publish(store, "carol", "Old Name", license="MIT")
    store.update_gist(
        gid, "carol", changes={"readme.md": FileChange(content=readme("New Name", license="GPL").encode())}
    )
    assert find(store, q="old") == ([], 0)
    assert find(store, q="new") == (["New Name"], 1)
    assert find(store, license="GPL") == (["New Name"], 1)
    # Renaming the readme away makes it an ordinary gist.
    store.update_gist(gid, "carol", changes={"readme.md": FileChange(filename="about.md")})
    assert find(store) == ([], 0)
    store.update_gist(gid, "carol", changes={"about.md": FileChange(filename="readme.md")})
    assert find(store) == (["New Name"], 1)
    store.delete_gist(gid, "carol")
    assert find(store) == ([], 0) and entry(store, gid) is None


def test_search_covers_name_readme_and_tags_with_prefixes_and_ranks_names_first(store):
    publish(store, "dan", "Segmenter", tags=["pascal"], body="Fully convolutional network.\n")
    publish(store, "dan", "Other", body="This one mentions a segmenter in passing.\n")
    publish(store, "dan", "Tagged", tags=["segmenter-ish"], body="Nothing.\n")
    names, total = find(store, q="segment")
    assert total == 3 and names[0] == "Segmenter"
    assert find(store, q="convolutional") == (["Segmenter"], 1)
    assert find(store, q="pascal") == (["Segmenter"], 1)
    assert find(store, q="segmenter passing") == (["Other"], 1)  # every word must match


def test_search_words_are_never_query_syntax(store):
    publish(store, "erin", "Plain Net")
    # Punctuation is no word: alone it makes no search (every model is found), else it is dropped.
    for q in ['"', "*", "(((", "!", "\\", "(plain)", "pla*", "'plain'"]:
        assert find(store, q=q) == (["Plain Net"], 1), q
    for q in ["NEAR(", "NEAR(plain", "a OR", "x:*", "'; DROP TABLE gists; --", "é", "NEAR(plain, net)x"]:
        assert find(store, q=q) == ([], 0), q
    assert find(store, q="plain OR nothing") == ([], 0)  # OR is a word here, not an operator


def test_filters_combine_with_search_and_paginate(store):
    for i in range(25):
        publish(
            store,
            "fay",
            f"Net {i:02d}",
            license="MIT" if i % 2 else "GPL",
            task="detection" if i % 3 == 0 else "classification",
            tags=["even" if i % 2 == 0 else "odd"],
        )
    names, total = find(store, license="MIT", limit=5)
    assert total == 12 and names == ["Net 01", "Net 03", "Net 05", "Net 07", "Net 09"]
    names, total = find(store, license="MIT", limit=5, offset=10)
    assert total == 12 and names == ["Net 21", "Net 23"]
    assert find(store, tag="even", task="detection")[1] == 5  # 0, 6, 12, 18, 24
    assert find(store, tag="EVEN", task="detection")[1] == 5
    assert find(store, q="net", license="GPL", tag="odd") == ([], 0)
    with store.session() as s:
        f = catalog.facets(s)
    assert dict(f.licenses) == {"MIT": 12, "GPL": 13}
    assert dict(f.tasks) == {"classification": 16, "detection": 9}
    assert dict(f.tags) == {"even": 13, "odd": 12}


def test_broken_front_matter_is_listed_with_its_problems(store):
    store.ensure_user("gus")
    gid = store.create_gist(
        "gus", "Broken", True, {"readme.md": b"---\nname: Broken\nsha1: nothex\n---\nText.\n"}
    )
    e = entry(store, gid.id)
    assert e.listed and e.name == "Broken" and "sha1" in e.problems and e.sha1 is None
    bad_yaml = store.create_gist("gus", "Bad YAML", True, {"readme.md": b"---\nname: [unclosed\n---\n"})
    e = entry(store, bad_yaml.id)
    assert e.listed and e.name == "Bad YAML" and e.problems


def test_nul_characters_in_front_matter_are_kept_visible_on_every_database(store):
    """YAML's "\\0" escape puts a NUL in a value, which PostgreSQL text cannot hold."""
    gid = publish(
        store,
        "nia",
        '"Nul\\0Net"',
        license='"MIT\\0"',
        tags=['"a\\0b"'],
        task='"x\\0"',
        extra='"\\0"',
        body="Prose.\n",
    )
    e = entry(store, gid)
    assert (e.name, e.license, e.task, e.tags) == ("Nul\ufffdNet", "MIT\ufffd", "x\ufffd", "a\ufffdb")
    assert json.loads(e.front_matter)["extra"] == "\ufffd"
    assert find(store, license="MIT\ufffd") == (["Nul\ufffdNet"], 1)
    assert find(store, q="nul") == (["Nul\ufffdNet"], 1)


def test_deeply_nested_front_matter_is_a_problem_not_a_crash(store):
    """Nesting hundreds deep made the YAML composer raise RecursionError: a 500 on every write."""
    store.ensure_user("ned")
    for depth in (40, 5000):
        text = f"---\nname: Deep {depth}\nd: {'[' * depth}1{']' * depth}\n---\nProse.\n"
        view = store.create_gist("ned", f"Deep {depth}", True, {"readme.md": text.encode()})
        e = entry(store, view.id)
        assert e.listed and e.name == f"Deep {depth}"  # from the description: the YAML is refused
        assert "nested more than 32 levels deep" in e.problems


def test_a_front_matter_too_long_to_read_quickly_is_a_problem_left_unparsed(store):
    """Pure-Python YAML reads nested flow lists at some 15 KB/s: a 10 MB readme of them,
    accepted by POST /gists, held a server thread for 20 minutes while it was indexed."""
    store.ensure_user("lea")
    items = "".join(f"k{i}: {'[' * 20}{']' * 20}\n" for i in range(1000))
    text = f"---\nname: Long\n{items}---\nProse.\n"
    view = store.create_gist("lea", "Long front matter", True, {"readme.md": text.encode()})
    e = entry(store, view.id)
    assert e.listed and e.name == "Long front matter"  # from the description: the YAML is not read
    assert "at most 32,768 are read" in e.problems


def test_values_too_big_for_the_catalogs_columns_never_fail_a_write(store):
    """PostgreSQL refuses a string longer than its column and both databases an int past
    64 bits: the gist is stored all the same, its catalog entry keeps what fits."""
    long_tag = "t" * 150
    gid = publish(
        store,
        "vic",
        "Big Values",
        license="L" * 5000,
        task="T" * 5000,
        caffemodel="c" * 400,
        caffe_version="v" * 500,
        size=10**25,
        tags=[long_tag, long_tag[:100] + "x" * 50],
    )
    e = entry(store, gid)
    assert (e.license, e.task, e.caffemodel) == ("L" * 200, "T" * 200, "c" * 255)
    assert e.framework == ("Caffe " + "v" * 500)[:100] and e.size is None and e.tags == "t" * 100
    assert find(store, license="L" * 200) == (["Big Values"], 1)
    huge = publish(store, "vic", "Huge Int", size=2**63)
    assert entry(store, huge).size is None and entry(store, huge).listed
    digits = publish(store, "vic", "Many Digits", extra="9" * 5000)
    assert "a value YAML cannot read" in entry(store, digits).problems


def test_a_database_from_before_the_catalog_is_indexed_on_open(database_url):
    from sqlalchemy import delete

    from caffezoo.server import Storage
    from caffezoo.server.tables import Entry

    s1 = Storage(database_url)
    publish(s1, "hal", "Early Net")
    with s1.session(write=True) as s:
        s.execute(delete(Entry))
    assert find(s1) == ([], 0)
    s1.close()
    s2 = Storage(database_url)
    try:
        assert find(s2) == (["Early Net"], 1)
        assert s2.reindex() == 0  # nothing left to do
    finally:
        s2.close()


def test_generation_moves_on_every_change_pages_show(store):
    def gen():
        with store.session() as s:
            return catalog.generation(s)

    g0 = gen()
    gid = publish(store, "ida", "Counter Net")
    g1 = gen()
    store.update_gist(gid, "ida", description="only the description")
    g2 = gen()
    assert g0 < g1 < g2
