"""Try it with the weights in a real S3 store (Ceph's RADOS Gateway): copied to a bounded local
cache with their SHA-1 checked, then run as from a local store."""

from __future__ import annotations

import hashlib
import json

import pytest
from test_web_try_tasks import areas, model_dir, photo, segmenter
from web_helpers import publish, web_for

from caffezoo.server.work import Limits


@pytest.fixture
def s3_zoo(s3_env, tmp_path, monkeypatch, request):
    """A server with --try whose blobs are in the bucket, holding two segmenters' weights."""
    monkeypatch.setenv("CAFFEZOO_HOME", str(tmp_path / "home"))
    (tmp_path / "models").mkdir()
    built = {
        name: model_dir(tmp_path / "models", name, segmenter(), seed, task="semantic segmentation")
        for name, seed in (("fcn_a", 2), ("fcn_b", 3))
    }
    size = len(built["fcn_a"][1])
    budget = getattr(request, "param", None) or 64 * 1024 * 1024
    limits = Limits(try_it=True, try_cache_bytes=budget(size) if callable(budget) else budget)
    with web_for(
        f"sqlite:///{tmp_path / 'zoo.db'}", tmp_path, seed=False, limits=limits, blobs_url=s3_env
    ) as w:
        w.storage.ensure_user("tess")
        auth = {"Authorization": f"token {w.storage.create_token('tess')}"}
        w.ids, w.models, w.sha1 = {}, {}, {}
        for name, (d, data, keys) in built.items():
            files = {f: (d / f).read_text() for f in ("labels.txt", "deploy.prototxt")}
            w.ids[name] = publish(w.storage, "tess", name, files=files, **keys)
            assert w.http.put(f"/blobs/sha1/{keys['sha1']}", content=data, headers=auth).status_code == 201
            w.models[name], w.sha1[name] = d, keys["sha1"]
        w.store = w.app.state.mirror.store
        w.copies = tmp_path / "home" / "cache" / "server" / "try" / "weights" / "sha1"
        assert w.store.local_path(w.sha1["fcn_a"]) is None  # really remote
        try:
            yield w
        finally:
            w.store.close()


def post(zoo, name, image):
    return zoo.http.post(
        f"/models/{zoo.ids[name]}/try", files={"image": ("p.png", image.read_bytes(), "image/png")}
    )


def test_weights_in_s3_are_copied_verified_and_tried(s3_zoo, tmp_path, cli):
    zoo = s3_zoo
    page = zoo.get(f"/models/{zoo.ids['fcn_a']}").text
    assert 'id="try"' in page and "object store" not in page
    image = photo(tmp_path / "scene.png", 80, 60)
    r = post(zoo, "fcn_a", image)
    assert r.status_code == 200, r.text[-800:]
    out = cli("run", zoo.models["fcn_a"], image, "--json")
    expected = json.loads(out.stdout)["results"][0]["classes"]
    assert areas(r.text) == [(c["label"], c["name"], c["pixels"]) for c in expected]
    copy = zoo.copies / zoo.sha1["fcn_a"]
    assert hashlib.sha1(copy.read_bytes()).hexdigest() == zoo.sha1["fcn_a"]
    assert post(zoo, "fcn_a", image).status_code == 200  # loaded: no second copy made


def test_a_damaged_object_is_never_used(s3_zoo, tmp_path):
    zoo = s3_zoo
    sha1 = zoo.sha1["fcn_b"]
    body = zoo.store.client.get_object(Bucket=zoo.store.bucket, Key=zoo.store.key(sha1))["Body"].read()
    flipped = body[:-1] + bytes([body[-1] ^ 1])  # one bit, behind the server's back
    zoo.store.client.put_object(Bucket=zoo.store.bucket, Key=zoo.store.key(sha1), Body=flipped)
    r = post(zoo, "fcn_b", photo(tmp_path / "p.png", 30, 20))
    assert r.status_code == 409 and "damaged" in r.text and zoo.store.bucket not in r.text
    assert not (zoo.copies / sha1).exists() and not list(zoo.copies.parent.glob(".partial/*.part"))


@pytest.mark.parametrize("s3_zoo", [lambda size: int(3.5 * size)], indirect=True)
def test_the_local_copies_and_conversions_stay_within_their_budget(s3_zoo, tmp_path):
    zoo = s3_zoo
    files = zoo.app.state.tryit.files
    image = photo(tmp_path / "p.png", 30, 20)
    assert post(zoo, "fcn_a", image).status_code == 200
    assert (zoo.copies / zoo.sha1["fcn_a"]).is_file() and files.bytes <= files.max_bytes
    onnx = list(files.onnx_dir.glob(f"{zoo.sha1['fcn_a']}-*.onnx"))
    assert len(onnx) == 1
    assert post(zoo, "fcn_b", image).status_code == 200  # room for b: a's files go
    assert (zoo.copies / zoo.sha1["fcn_b"]).is_file() and not (zoo.copies / zoo.sha1["fcn_a"]).exists()
    assert not onnx[0].exists() and files.bytes <= files.max_bytes
    # Both nets are still loaded; once pushed out of memory too, a is fetched and converted again.
    zoo.app.state.tryit._nets.clear()
    assert post(zoo, "fcn_a", image).status_code == 200 and (zoo.copies / zoo.sha1["fcn_a"]).is_file()


@pytest.mark.parametrize("s3_zoo", [lambda size: int(1.5 * size)], indirect=True)
def test_weights_that_cannot_fit_are_refused(s3_zoo, tmp_path):
    r = post(s3_zoo, "fcn_a", photo(tmp_path / "p.png", 30, 20))
    assert r.status_code == 409 and "would not fit" in r.text
    assert not s3_zoo.copies.exists() or not list(s3_zoo.copies.iterdir())


def test_the_budget_counts_what_is_on_disk_at_start(s3_zoo, tmp_path):
    from caffezoo.server.tryfiles import TryFiles

    zoo = s3_zoo
    image = photo(tmp_path / "p.png", 30, 20)
    for name in ("fcn_a", "fcn_b"):
        assert post(zoo, name, image).status_code == 200
    files = zoo.app.state.tryit.files
    again = TryFiles(files.copies.root, files.onnx_dir, files.bytes - 1)  # a restart with less room
    assert again.bytes <= again.max_bytes
    assert not (zoo.copies / zoo.sha1["fcn_a"]).exists() and (zoo.copies / zoo.sha1["fcn_b"]).is_file()
    kept = [zoo.copies / zoo.sha1["fcn_b"], *files.onnx_dir.glob(f"{zoo.sha1['fcn_b']}-*.onnx")]
    assert again.bytes == sum(p.stat().st_size for p in kept) and len(kept) == 2
