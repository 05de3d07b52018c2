"""Computed network facts: against `caffezoo inspect`, in the catalog on write, on the pages."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import pytest
from runtime_helpers import random_weights
from web_helpers import DEPLOY, publish, readme

from caffezoo.caffe.caffemodel import write_caffemodel
from caffezoo.caffe.prototxt import parse_prototxt
from caffezoo.server.facts import MAX_LAYERS, MAX_NET_BYTES, net_facts, weights_fit
from caffezoo.server.storage import FileChange
from caffezoo.server.tables import Entry

MODELS = Path(__file__).resolve().parent.parent / "src" / "caffezoo" / "models"
BUNDLED = sorted(p.name for p in MODELS.iterdir() if (p / "deploy.prototxt").exists())
TINY_PARAMS = (8 * 3 * 3 * 3 + 8) + (8 * 30 * 30 * 10 + 10)  # conv1 + fc, by hand
TINY_MACS = 8 * 30 * 30 * 27 + 7200 * 10


def test_alexnet_facts():
    f = net_facts((MODELS / "bvlc_alexnet" / "deploy.prototxt").read_bytes())
    assert f.params == 60_965_224 and f.input_shape == "3x227x227"
    assert f.layers == 24 and f.layer_types["Convolution"] == 5 and f.layer_types["InnerProduct"] == 3
    assert f.convertible is True and f.unsupported == [] and f.error is None


@pytest.mark.parametrize("model", BUNDLED)
def test_facts_agree_with_caffezoo_inspect(cli, model):
    r = cli("inspect", model, "--json")
    assert r.code == 0, r.stderr
    totals = json.loads(r.stdout)["totals"]
    f = net_facts((MODELS / model / "deploy.prototxt").read_bytes())
    assert (f.params, f.macs, f.layers) == (totals["params"], totals["macs_per_sample"], totals["layers"])


def test_tiny_net_by_hand():
    f = net_facts(DEPLOY.encode())
    assert (f.params, f.macs, f.input_shape, f.layers) == (TINY_PARAMS, TINY_MACS, "3x32x32", 5)


def test_unsupported_layers_are_named():
    net = DEPLOY.replace('type: "ReLU"', 'type: "Python" python_param { module: "m" layer: "L" }')
    f = net_facts(net.encode())
    assert f.convertible is False
    assert len(f.unsupported) == 1 and "relu1" in f.unsupported[0] and "Python" in f.unsupported[0]


@pytest.mark.parametrize(
    "text, expected",
    [
        (b"layer { name: ", "deploy.prototxt:1"),
        (b"\x00\x01\x02binary", "binary file"),
        (b'layer { name: "x" type: "Convolution" bottom: "nowhere" top: "y" }', "nowhere"),
        (b"x" * (MAX_NET_BYTES + 1), "over the"),
        (b'layer { name: "d" type: "Input" top: "d" }\n' * (MAX_LAYERS + 1), "layers is over"),
    ],
)
def test_hostile_prototxts_give_a_reason_not_an_exception(text, expected):
    f = net_facts(text)
    assert f.error is not None and expected in f.error
    assert f.params is None or f.convertible is not True


def test_weights_fit_the_net(tmp_path):
    message = parse_prototxt(DEPLOY).message
    good = write_caffemodel(tmp_path / "good.caffemodel", message, random_weights(message))
    assert weights_fit(DEPLOY.encode(), good) == (True, [])
    wrong_net = DEPLOY.replace("num_output: 10", "num_output: 12")
    fits, why = weights_fit(wrong_net.encode(), good)
    assert fits is False and any("fc" in w for w in why)
    junk = tmp_path / "junk.caffemodel"
    junk.write_bytes(b"\xff" * 64)
    assert weights_fit(DEPLOY.encode(), junk)[0] is False


def _entry(store, gid: str) -> Entry:
    from sqlalchemy import select

    with store.session() as s:
        return s.scalar(select(Entry).where(Entry.id == gid))


def test_catalog_computes_facts_on_write_and_on_change(store):
    gid = publish(store, "fay", "Tiny Facts")
    e = _entry(store, gid)
    assert (e.params, e.macs, e.input_shape, e.convertible, e.net_file) == (
        TINY_PARAMS,
        TINY_MACS,
        "3x32x32",
        True,
        "deploy.prototxt",
    )
    wider = DEPLOY.replace("num_output: 8", "num_output: 16")
    store.update_gist(gid, "fay", changes={"deploy.prototxt": FileChange(wider.encode())})
    e2 = _entry(store, gid)
    assert e2.params == 16 * 27 + 16 + 16 * 900 * 10 + 10 and e2.net_sha != e.net_sha
    # An edit of the readme alone keeps the analysed blob.
    store.update_gist(
        gid, "fay", changes={"readme.md": FileChange(readme("Tiny Facts", "New words.\n").encode())}
    )
    assert _entry(store, gid).net_sha == e2.net_sha
    store.update_gist(gid, "fay", changes={"deploy.prototxt": None})
    gone = _entry(store, gid)
    assert gone.params is None and gone.net_file is None and "no network" in gone.facts_error


def test_a_hostile_prototxt_does_not_fail_the_write(store):
    gid = publish(store, "hal", "Hostile", files={"deploy.prototxt": "layer { " * 20_000})
    e = _entry(store, gid)
    assert e.params is None and e.facts_error and e.convertible is None


def test_an_old_database_gains_the_columns_and_facts(tmp_path):
    from sqlalchemy import text

    from caffezoo.server import Storage

    sqlite_indexes = text("SELECT name FROM sqlite_master WHERE type = 'index'")

    url = f"sqlite:///{tmp_path / 'old.db'}"
    store = Storage(url)
    gid = publish(store, "olga", "Old Net")
    store.close()
    with sqlite3.connect(tmp_path / "old.db") as db:  # as a database from before the facts
        for (ix,) in db.execute(
            "SELECT name FROM sqlite_master WHERE name LIKE 'ix_zoo_compare_%'"
        ).fetchall():
            db.execute(f"DROP INDEX {ix}")
        db.execute("ALTER TABLE zoo_entries DROP COLUMN macs")
        db.execute("ALTER TABLE zoo_entries DROP COLUMN params")
        db.execute("UPDATE zoo_entries SET facts_version = 0")
    store = Storage(url)
    try:
        e = _entry(store, gid)
        assert (e.params, e.macs) == (TINY_PARAMS, TINY_MACS)
        with store.session() as s:  # and the indexes /compare sorts with
            names = {r[0] for r in s.execute(sqlite_indexes)}
        assert {"ix_zoo_compare_macs", "ix_zoo_compare_params"} <= names
    finally:
        store.close()


def test_pages_and_api_show_the_facts(web):
    from sqlalchemy import select

    with web.storage.session() as s:
        alexnet = s.scalar(select(Entry.id).where(Entry.name == "BAIR/BVLC AlexNet Model"))
    data = web.http.get(f"/api/models/{alexnet}").json()
    assert data["facts"]["params"] == 60_965_224 and data["facts"]["input_shape"] == "3x227x227"
    assert data["facts"]["convertible"] is True and data["facts"]["layers"] == 24
    listed = web.http.get("/api/models").json()["models"]
    assert all("facts" in m for m in listed)
    page = web.get(f"/models/{alexnet}").text
    assert 'id="fact-params">60,965,224<' in page and "3x227x227" in page and "Convolution 5" in page


def test_mirrored_weights_are_checked_against_the_net(web, tmp_path):
    message = parse_prototxt(DEPLOY).message
    path = write_caffemodel(tmp_path / "tiny.caffemodel", message, random_weights(message))
    data = path.read_bytes()
    sha1 = hashlib.sha1(data).hexdigest()
    gid = publish(
        web.storage,
        "wes",
        "Weighed Net",
        caffemodel="tiny.caffemodel",
        caffemodel_url="http://127.0.0.1:9/tiny.caffemodel",
        sha1=sha1,
    )
    token = web.storage.create_token("wes")
    r = web.http.put(f"/blobs/sha1/{sha1}", content=data, headers={"Authorization": f"token {token}"})
    assert r.status_code == 201
    held = _entry(web.storage, gid)
    assert held.weights_fit is True and held.mirrored is True and held.weights_size == len(data)
    assert web.http.get(f"/api/models/{gid}").json()["facts"]["weights_fit"] is True
    assert "fit the net" in web.get(f"/models/{gid}").text
    # The net changes under the weights: the mirror's job finds they no longer fit.
    wider = DEPLOY.replace("num_output: 10", "num_output: 11")
    web.storage.update_gist(gid, "wes", changes={"deploy.prototxt": FileChange(wider.encode())})
    assert _entry(web.storage, gid).weights_fit is None
    web.app.state.mirror.sync(web.storage)
    e = _entry(web.storage, gid)
    assert e.weights_fit is False and "fc" in e.weights_problems
    # Other weights named: not held, so not mirrored and not judged.
    web.storage.update_gist(
        gid, "wes", changes={"readme.md": FileChange(readme("Weighed Net", sha1="2" * 40).encode())}
    )
    e = _entry(web.storage, gid)
    assert e.mirrored is False and e.weights_fit is None
    assert web.http.get("/compare.json", params={"ids": gid}).json()["models"][0]["mirrored"] is False
