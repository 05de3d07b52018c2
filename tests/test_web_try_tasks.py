"""Try it on detection and segmentation models: the answer page shows the picture `caffezoo run -o`
draws and the numbers `caffezoo run --json` prints for the same image, within the same bounds.

The nets have random weights, so what they find is whatever it is: each test compares the page
with `caffezoo run` on the same model directory and image, never with fixed expectations.
"""

from __future__ import annotations

import hashlib
import html
import io
import json
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from replica_helpers import replica
from runtime_helpers import natural_image, write_net
from test_runtime_layers import faster_rcnn
from test_runtime_ssd import _ssd
from test_runtime_tasks import scorer
from test_web_try import bomb_png
from web_helpers import OUTPUT, publish, web_for

from caffezoo.caffe.builder import NetBuilder
from caffezoo.server.tryit import ResultPictures
from caffezoo.server.work import Limits

MAX_BYTES = 1024 * 1024
CLASSES = ["background", "cat", "dog", "bird"]


def model_dir(tmp_path: Path, name: str, net: NetBuilder, seed: int, **front) -> tuple[Path, bytes, dict]:
    """A model directory (deploy net, random weights, labels) for `caffezoo run`; its weights and keys."""
    d = tmp_path / name
    d.mkdir()
    prototxt, weights = write_net(d, net, seed=seed, name="deploy")
    data = weights.read_bytes()
    weights.rename(d / "net.caffemodel")
    keys = dict(
        caffemodel="net.caffemodel",
        caffemodel_url="http://127.0.0.1:9/net.caffemodel",
        sha1=hashlib.sha1(data).hexdigest(),
        labels="labels.txt",
        **front,
    )
    (d / "labels.txt").write_text("".join(f"{c}\n" for c in CLASSES))
    (d / "readme.md").write_text(
        f"---\nname: {name}\n" + "".join(f"{k}: {v}\n" for k, v in keys.items()) + "---\nRandom weights.\n"
    )
    return d, data, keys


def segmenter(classes: int = 4) -> NetBuilder:
    """An FCN in miniature: a coarse score map (stride 4) over a 48 x 64 input."""
    n = NetBuilder("mini_fcn")
    x = n.Input("data", shape=dict(dim=[1, 3, 48, 64]))
    x = n.Convolution("conv1", x, num_output=8, kernel_size=4, stride=4)
    x = n.ReLU("relu1", x, in_place=True)
    n.Convolution("score", x, num_output=classes, kernel_size=3, pad=1)
    return n


MODELS = {  # name: (net, seed, front matter)
    "ssd": (lambda: _ssd(keep_top_k=6, threshold=0.05), 3, dict(task="object detection")),
    "frcnn": (lambda: faster_rcnn(classes=4), 5, dict(task="object detection")),
    "fcn": (segmenter, 2, dict(task="semantic segmentation", mean="[104, 117, 123]")),
    "hed": (lambda: scorer(classes=1, sigmoid=True, size=(32, 40)), 1, dict(task="edge detection")),
}


@pytest.fixture
def zoo(tmp_path, monkeypatch):
    """A server with --try holding the weights of an SSD, a Faster R-CNN, an FCN and an edge net."""
    monkeypatch.setenv("CAFFEZOO_HOME", str(tmp_path / "home"))
    limits = Limits(try_it=True, try_max_bytes=MAX_BYTES, try_max_pixels=4_000_000)
    (tmp_path / "models").mkdir()
    with web_for(f"sqlite:///{tmp_path / 'zoo.db'}", tmp_path, seed=False, limits=limits) as w:
        w.storage.ensure_user("tess")
        auth = {"Authorization": f"token {w.storage.create_token('tess')}"}
        w.models, w.ids = {}, {}
        for name, (net, seed, front) in MODELS.items():
            d, data, keys = model_dir(tmp_path / "models", name, net(), seed, **front)
            files = {f: (d / f).read_text() for f in ("labels.txt", "deploy.prototxt")}
            w.ids[name] = publish(w.storage, "tess", name, files=files, **keys)
            r = w.http.put(f"/blobs/sha1/{keys['sha1']}", content=data, headers=auth)
            assert r.status_code == 201, r.text
            w.models[name] = d
        yield w


def photo(path: Path, width: int = 96, height: int = 72, seed: int = 7) -> Path:
    Image.fromarray(natural_image(np.random.default_rng(seed), height, width)).save(path)
    return path


def post(zoo, name: str, image: Path | bytes, **fields):
    content = image.read_bytes() if isinstance(image, Path) else image
    return zoo.http.post(
        f"/models/{zoo.ids[name]}/try",
        files={"image": ("photo.png", content, "image/png")},
        data={k: str(v) for k, v in fields.items()},
    )


def detections(page: str) -> list[dict]:
    """The boxes listed on an answer page: label, score, box."""
    rows = re.findall(
        r'<td class="label" data-label="(\d+)">([^<]*)</td><td class="num score">([0-9.]+)</td>'
        r'<td class="num box">([0-9.]+)</td><td class="num box">([0-9.]+)</td>'
        r'<td class="num box">([0-9.]+)</td><td class="num box">([0-9.]+)</td>',
        page,
    )
    return [
        {
            "label": int(r[0]),
            "name": html.unescape(r[1]),
            "score": float(r[2]),
            "box": [float(v) for v in r[3:]],
        }
        for r in rows
    ]


def areas(page: str) -> list[tuple[int, str, int]]:
    return [
        (int(label), html.unescape(name), int(pixels))
        for label, name, pixels in re.findall(
            r'<td class="label" data-label="(\d+)">([^<]*)</td><td class="num pixels">(\d+)</td>', page
        )
    ]


def picture_of(zoo, page: str) -> np.ndarray:
    url = re.search(r'<img id="try-picture" src="([^"]+)"', page).group(1)
    r = zoo.http.get(url)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png", r.text
    return np.asarray(Image.open(io.BytesIO(r.content)))


def run_cli(cli, zoo, name: str, image: Path, tmp_path: Path, *args: str) -> tuple[dict, np.ndarray]:
    out = tmp_path / f"{name}-cli.png"
    result = cli("run", zoo.models[name], image, "--json", "-o", out, *args)
    assert result.code == 0, result.stderr
    return json.loads(result.stdout)["results"][0], np.asarray(Image.open(out))


@pytest.mark.parametrize("name", ["ssd", "frcnn"])
def test_detect_page_shows_the_boxes_caffezoo_run_finds(zoo, name, tmp_path, cli):
    image = photo(tmp_path / "street.png")
    r = post(zoo, name, image, threshold=0)
    assert r.status_code == 200, r.text[-800:]
    assert r.headers["cache-control"] == "no-store"
    found = detections(r.text)
    expected, drawn = run_cli(cli, zoo, name, image, tmp_path, "--threshold", "0")
    assert len(expected["detections"]) > 0  # the test sees boxes (random weights, threshold 0)
    assert len(found) == len(expected["detections"])
    for got, want in zip(found, expected["detections"]):
        assert (got["label"], got["name"]) == (want["label"], want["name"])
        assert got["score"] == pytest.approx(want["score"], abs=1e-4)
        assert np.allclose(got["box"], want["box"], atol=0.051)  # shown to one decimal
    assert np.array_equal(picture_of(zoo, r.text), drawn)  # the very picture `run -o` draws
    # At the default threshold (0.5), as `caffezoo run` without --threshold.
    r = post(zoo, name, image)
    expected, _ = run_cli(cli, zoo, name, image, tmp_path)
    assert len(detections(r.text)) == len(expected["detections"])
    if not expected["detections"]:
        assert "No box scored 0.50 or more" in r.text


def test_segment_page_shows_the_areas_and_overlay_caffezoo_run_gives(zoo, tmp_path, cli):
    image = photo(tmp_path / "scene.png", 80, 60)
    r = post(zoo, "fcn", image)
    assert r.status_code == 200, r.text[-800:]
    expected, drawn = run_cli(cli, zoo, "fcn", image, tmp_path)
    assert areas(r.text) == [(c["label"], c["name"], c["pixels"]) for c in expected["classes"]]
    assert sum(p for _, _, p in areas(r.text)) == 80 * 60
    assert np.array_equal(picture_of(zoo, r.text), drawn)
    assert 'id="threshold"' not in zoo.get(f"/models/{zoo.ids['fcn']}").text  # no boxes: no threshold


@pytest.mark.parametrize("bits", [8, 16])
def test_an_upload_is_turned_upright_as_run_turns_a_file(zoo, tmp_path, cli, bits):
    exif = Image.Exif()
    exif[0x0112] = 6  # a phone held upright: stored sideways, shown turned a quarter clockwise
    image = tmp_path / "phone.png"
    pixels = natural_image(np.random.default_rng(3), 60, 80)
    if bits == 16:  # a 16-bit grey PNG: made 8-bit before it is turned, which drops its EXIF
        pixels = pixels[:, :, 1].astype(np.uint16) * 257
    Image.fromarray(pixels).save(image, exif=exif)
    r = post(zoo, "fcn", image)
    assert r.status_code == 200, r.text[-800:]
    expected, drawn = run_cli(cli, zoo, "fcn", image, tmp_path)
    assert (expected["width"], expected["height"]) == (60, 80)
    assert areas(r.text) == [(c["label"], c["name"], c["pixels"]) for c in expected["classes"]]
    picture = picture_of(zoo, r.text)
    assert picture.shape[:2] == (80, 60) and np.array_equal(picture, drawn)


def test_edge_map_page(zoo, tmp_path, cli):
    image = photo(tmp_path / "edges.png", 50, 40)
    r = post(zoo, "hed", image)
    assert r.status_code == 200, r.text[-800:]
    expected, drawn = run_cli(cli, zoo, "hed", image, tmp_path)
    mean = float(re.search(r"Mean edge strength</th><td class=\"num\">([0-9.]+)<", r.text).group(1))
    assert mean == pytest.approx(expected["edges"]["mean"], abs=1e-4)
    grey = picture_of(zoo, r.text)
    assert grey.ndim == 2 and np.array_equal(grey, drawn)


def test_a_big_image_is_scaled_down_before_it_is_run(zoo, tmp_path, cli):
    big = tmp_path / "big.jpg"
    Image.fromarray(natural_image(np.random.default_rng(4), 1200, 1600)).save(big, quality=40)
    assert big.stat().st_size < MAX_BYTES
    r = post(zoo, "ssd", big, threshold=0)
    assert r.status_code == 200, r.text[-800:]
    assert "A 1600 x 1200 JPEG image" in r.text and "scaled down to 1024 x 768 first" in r.text
    assert picture_of(zoo, r.text).shape == (768, 1024, 3)
    boxes = detections(r.text)
    assert boxes and all(
        0 <= x0 <= x1 <= 1024 and 0 <= y0 <= y1 <= 768 for x0, y0, x1, y1 in (b["box"] for b in boxes)
    )
    r = post(zoo, "fcn", big)
    assert sum(p for _, _, p in areas(r.text)) == 1024 * 768 and picture_of(zoo, r.text).shape == (
        768,
        1024,
        3,
    )


def test_limits_on_detection_and_segmentation(zoo, tmp_path):
    for name in ("ssd", "fcn"):
        r = post(zoo, name, bomb_png())  # 1.6 gigapixels declared: refused from the header
        assert r.status_code == 413 and "pixels" in html.unescape(r.text)
        r = post(zoo, name, b"GIF89a not really" * 10)
        assert r.status_code in (415, 422) and "Traceback" not in r.text
        r = post(zoo, name, b"%PDF-1.4 a document\n" * 10)
        assert r.status_code == 415 and "not an image this server reads" in html.unescape(r.text)
        r = post(zoo, name, b"x" * (MAX_BYTES + 100_000))
        assert r.status_code == 413
    for bad in ("-0.1", "2", "nan", "lots"):
        r = post(zoo, "ssd", photo(tmp_path / "p.png", 20, 20), threshold=bad)
        assert r.status_code == 400 and "threshold: expected a number from 0 to 1" in html.unescape(r.text)
    lane = zoo.app.state.try_lane
    lane.admitted += lane.workers + lane.queue  # as if the lane were full of uploads
    try:
        for name in ("ssd", "fcn"):
            r = post(zoo, name, photo(tmp_path / "p.png", 20, 20))
            assert r.status_code == 503 and r.headers["retry-after"].isdigit()
    finally:
        lane.admitted -= lane.workers + lane.queue
    assert post(zoo, "ssd", photo(tmp_path / "p.png", 20, 20)).status_code == 200


def test_pictures_are_kept_briefly_in_the_database_only(zoo, tmp_path):
    marker = photo(tmp_path / "marker.png", 40, 40, seed=99)
    r = post(zoo, "fcn", marker)
    url = re.search(r'<img id="try-picture" src="(/tried/[A-Za-z0-9_-]{24}\.png)"', r.text).group(1)
    picture = zoo.http.get(url)
    assert picture.status_code == 200 and "default-src 'none'" in picture.headers["content-security-policy"]
    assert picture.headers["content-type"] == "image/png"
    drawn = picture.content
    database = {tmp_path / f"zoo.db{suffix}" for suffix in ("", "-wal", "-shm", "-journal")}
    for path in tmp_path.rglob("*"):  # the upload was written nowhere; its drawing to the database only
        if path.is_file() and path != marker and path.stat().st_size >= 200:
            data = path.read_bytes()
            assert marker.read_bytes() not in data, path
            assert path in database or drawn not in data, path
    assert zoo.http.get("/tried/" + "A" * 24 + ".png").status_code == 404
    assert zoo.http.get("/tried/" + "A" * 5000 + ".png").status_code == 404


def test_a_picture_drawn_by_one_server_is_served_by_another(database_url, tmp_path, monkeypatch):
    """Two servers on one database (as --workers 2, or two replicas behind nginx): the browser's
    request for the picture may reach either."""
    monkeypatch.setenv("CAFFEZOO_HOME", str(tmp_path / "home"))
    limits = Limits(try_it=True, try_max_bytes=MAX_BYTES, try_max_pixels=4_000_000)
    (tmp_path / "models").mkdir()
    with (
        web_for(database_url, tmp_path, seed=False, limits=limits) as a,
        web_for(database_url, tmp_path, seed=False, limits=limits) as b,
    ):
        a.storage.ensure_user("tess")
        auth = {"Authorization": f"token {a.storage.create_token('tess')}"}
        net, seed, front = MODELS["fcn"]
        d, data, keys = model_dir(tmp_path / "models", "fcn", net(), seed, **front)
        files = {f: (d / f).read_text() for f in ("labels.txt", "deploy.prototxt")}
        gid = publish(a.storage, "tess", "fcn", files=files, **keys)
        assert a.http.put(f"/blobs/sha1/{keys['sha1']}", content=data, headers=auth).status_code == 201
        r = a.http.post(
            f"/models/{gid}/try",
            files={"image": ("p.png", photo(tmp_path / "p.png").read_bytes(), "image/png")},
        )
        assert r.status_code == 200, r.text
        url = re.search(r'<img id="try-picture" src="(/tried/[A-Za-z0-9_-]{24}\.png)"', r.text).group(1)
        there, here = b.http.get(url), a.http.get(url)
        assert there.status_code == 200 and there.content == here.content
        assert Image.open(io.BytesIO(there.content)).size == (96, 72)
        assert b.http.get("/tried/" + "A" * 24 + ".png").status_code == 404
        for guess in ("%00", "A%00B", "%ff%fe", "%25", "A%20"):  # no token: never a database error
            assert b.http.get(f"/tried/{guess}.png").status_code == 404, guess


def test_a_picture_drawn_by_one_replica_is_served_by_another(database_url, tmp_path):
    """Two `caffezoo serve --try` processes on one database and one blob directory, as behind
    nginx: the page comes from one, its picture from the other."""
    from caffezoo.server import Storage

    (tmp_path / "models").mkdir()
    net, seed, front = MODELS["fcn"]
    d, data, keys = model_dir(tmp_path / "models", "fcn", net(), seed, **front)
    store = Storage(database_url)
    try:
        store.ensure_user("tess")
        token = store.create_token("tess")
        files = {f: (d / f).read_text() for f in ("labels.txt", "deploy.prototxt")}
        gid = publish(store, "tess", "fcn", files=files, **keys)
    finally:
        store.close()
    options = ("--try", "--no-check-links", "--blobs-dir", str(tmp_path / "blobs"))
    with replica(database_url, *options) as a, replica(database_url, *options) as b:
        auth = {"Authorization": f"token {token}"}
        r = httpx.put(f"{a.url}/blobs/sha1/{keys['sha1']}", content=data, headers=auth, timeout=60)
        assert r.status_code == 201, r.text
        image = photo(tmp_path / "p.png").read_bytes()
        r = httpx.post(
            f"{a.url}/models/{gid}/try", files={"image": ("p.png", image, "image/png")}, timeout=60
        )
        assert r.status_code == 200, r.text[-800:]
        url = re.search(r'<img id="try-picture" src="(/tried/[A-Za-z0-9_-]{24}\.png)"', r.text).group(1)
        there = httpx.get(b.url + url, timeout=60)
        assert there.status_code == 200 and there.content == httpx.get(a.url + url, timeout=60).content
        assert Image.open(io.BytesIO(there.content)).size == (96, 72)


def test_result_pictures_are_bounded_in_count_bytes_and_time(store):
    pictures = ResultPictures(store, max_bytes=1000, count=3, seconds=60)
    tokens = [pictures.put(bytes([i]) * 100) for i in range(5)]
    assert [pictures.get(t) is not None for t in tokens] == [False, False, True, True, True]
    assert pictures.get(tokens[-1]) == (bytes([4]) * 100, "image/png")
    big = pictures.put(b"x" * 900)  # room is made by pushing the oldest out
    assert pictures.get(big) and pictures.bytes <= 1000 and len(pictures) <= 3
    assert pictures.put(b"x" * 1001) is None
    assert len({pictures.put(b"p") for _ in range(50)}) == 50  # tokens differ
    assert len(pictures) == 3 and pictures.bytes == 3
    other = ResultPictures(store, max_bytes=1000, count=3, seconds=60)  # another process: the same bounds
    other.put(b"q" * 999)
    assert len(pictures) == 2 and pictures.bytes == 1000  # one "p" made room
    with ThreadPoolExecutor(8) as pool:  # writers at once, as replicas are: the bounds still hold
        assert all(pool.map(lambda i: pictures.put(bytes([i]) * 300), range(40)))
    assert len(pictures) <= 3 and pictures.bytes <= 1000
    brief = ResultPictures(store, seconds=0.0)
    token = brief.put(b"png")
    assert brief.get(token) is None
    before = len(brief)
    brief.put(b"png")  # expired pictures are purged, not only hidden
    assert len(brief) == before
    assert brief.purge() == 1 and len(brief) == before - 1


def test_a_picture_writer_sees_the_one_it_waited_for_whatever_the_isolation(postgres_url):
    """A database whose default isolation is REPEATABLE READ (an operator's choice) gives each
    transaction its snapshot at its first statement: a writer waiting for the pictures' lock
    would not see the picture stored meanwhile, and both would stay, past the bounds."""
    import threading
    import time

    import psycopg
    from web_helpers import fresh_postgres

    from caffezoo.server import Storage
    from caffezoo.server.tryit import PICTURES_LOCK

    url = fresh_postgres(postgres_url)
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(
            f"ALTER DATABASE {url.rsplit('/', 1)[1]} SET default_transaction_isolation TO 'repeatable read'"
        )
    store = Storage(url)
    try:
        pictures = ResultPictures(store, max_bytes=1000, count=3, seconds=60)
        with psycopg.connect(url) as other:  # another replica's writer, holding the lock
            other.execute("SELECT pg_advisory_xact_lock(%s)", (PICTURES_LOCK,))
            other.execute(
                "INSERT INTO tried_pictures (token, content, content_type, size, expires) "
                "VALUES ('theirs', %s, 'image/png', 900, now() + interval '1 hour')",
                (b"t" * 900,),
            )
            writer = threading.Thread(target=pictures.put, args=(b"m" * 900,))
            writer.start()
            waiting, deadline = 0, time.monotonic() + 60
            while not waiting:  # our writer has begun, and waits for the lock
                assert time.monotonic() < deadline, "the writer never waited for the lock"
                with psycopg.connect(url, autocommit=True) as probe:
                    waiting = probe.execute(
                        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                    ).fetchone()[0]
            other.commit()
        writer.join(60)
        assert len(pictures) == 1 and pictures.bytes == 900
    finally:
        store.close()


def test_a_picture_writer_stuck_elsewhere_costs_the_picture_not_the_page(postgres_url):
    """A replica's picture transaction that hangs with the lock (its network gone, say) keeps it
    until PostgreSQL notices: every other writer waits a few seconds, then goes without its
    picture (None: the page says what was found), and a server starting without its purge,
    instead of holding a thread, or the start, for ever."""
    import threading

    import psycopg
    from web_helpers import fresh_postgres

    from caffezoo.server import Storage
    from caffezoo.server.tryit import PICTURES_LOCK

    url = fresh_postgres(postgres_url)
    store = Storage(url)
    try:
        pictures = ResultPictures(store, lock_seconds=0.5)
        ResultPictures(store, seconds=0).put(b"old")  # expired at once
        with psycopg.connect(url) as stuck:
            stuck.execute("SELECT pg_advisory_xact_lock(%s)", (PICTURES_LOCK,))
            stuck.execute("DELETE FROM tried_pictures WHERE expires <= now()")  # its purge, unfinished
            got: list = []
            writer = threading.Thread(target=lambda: got.append(pictures.put(b"png")))
            starting = threading.Thread(target=lambda: got.append(pictures.purge()))  # a server starting
            for t in (writer, starting):
                t.start()
                t.join(60)
            alive = writer.is_alive() or starting.is_alive()
            stuck.rollback()  # (let a writer still waiting go)
        writer.join(60)
        starting.join(60)
        assert not alive and got == [None, 0]
        assert pictures.get(pictures.put(b"png")) == (b"png", "image/png")  # the lock free: kept again
    finally:
        store.close()


@pytest.mark.parametrize("name", ["ssd", "fcn"])
def test_try_detection_and_segmentation_in_the_browser(zoo, browser, tmp_path, name, cli):
    image = photo(tmp_path / "upload.png", 120, 90, seed=12)
    page = browser.new_page()
    try:
        page.goto(f"{zoo.url}/models/{zoo.ids[name]}")
        page.set_input_files("#try input[name=image]", str(image))
        if name == "ssd":
            page.fill("#try-threshold", "0")
        page.click("#try-submit")
        page.wait_for_url(f"**/models/{zoo.ids[name]}/try")
        # The picture loaded under the page's Content-Security-Policy (img-src 'self').
        loaded = page.locator("#try-picture").evaluate("img => img.complete && img.naturalWidth")
        assert loaded == 120
        if name == "ssd":
            expected, _ = run_cli(cli, zoo, name, image, tmp_path, "--threshold", "0")
            rows = page.locator("#detections tbody tr")
            assert rows.count() == len(expected["detections"]) > 0
            first = rows.first
            assert first.locator("td.label").inner_text() == expected["detections"][0]["name"]
            assert float(first.locator("td.score").inner_text()) == pytest.approx(
                expected["detections"][0]["score"], abs=1e-4
            )
        else:
            expected, _ = run_cli(cli, zoo, name, image, tmp_path)
            rows = page.locator("#areas tbody tr")
            assert rows.count() == len(expected["classes"])
            assert rows.first.locator("td.label").inner_text() == expected["classes"][0]["name"]
        shot = OUTPUT / f"try-{name}.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 1000
    finally:
        page.close()


def test_the_swatches_are_the_colours_the_pictures_use():
    from caffezoo.runtime.draw import palette

    css = (Path(__file__).parent.parent / "src/caffezoo/server/static/style.css").read_text()
    found = dict(re.findall(r"\.swatch\.c(\d+) \{ background: #([0-9a-f]{6}); \}", css))
    assert {int(k): v for k, v in found.items()} == {k: bytes(c).hex() for k, c in enumerate(palette(21))}


def test_a_model_naming_no_task_runs_what_its_net_computes(zoo, tmp_path, cli):
    # The SSD again, its front matter silent on the task: as `caffezoo run`, the net decides.
    d = zoo.models["ssd"]
    keys = dict(caffemodel="net.caffemodel", caffemodel_url="http://127.0.0.1:9/x", labels="labels.txt")
    keys["sha1"] = hashlib.sha1((d / "net.caffemodel").read_bytes()).hexdigest()  # weights the server holds
    files = {f: (d / f).read_text() for f in ("labels.txt", "deploy.prototxt")}
    zoo.ids["quiet_ssd"] = publish(zoo.storage, "tess", "quiet ssd", files=files, **keys)
    page = zoo.get(f"/models/{zoo.ids['quiet_ssd']}").text
    assert ">Run</button>" in page and 'id="try-threshold"' in page
    image = photo(tmp_path / "p.png")
    r = post(zoo, "quiet_ssd", image, threshold=0)
    assert r.status_code == 200 and "searched for objects" in r.text
    expected, _ = run_cli(cli, zoo, "ssd", image, tmp_path, "--threshold", "0")
    assert [d["score"] for d in detections(r.text)] == pytest.approx(
        [d["score"] for d in expected["detections"]], abs=1e-4
    )


def test_labels_that_do_not_fit_say_so(zoo, tmp_path):
    d = zoo.models["fcn"]
    keys = dict(caffemodel="net.caffemodel", caffemodel_url="http://127.0.0.1:9/x", labels="labels.txt")
    keys.update(sha1=hashlib.sha1((d / "net.caffemodel").read_bytes()).hexdigest(), task="segmentation")
    files = {"labels.txt": "one\ntwo\n", "deploy.prototxt": (d / "deploy.prototxt").read_text()}
    gid = publish(zoo.storage, "tess", "mislabelled", files=files, **keys)
    r = zoo.http.post(
        f"/models/{gid}/try", files={"image": ("p.png", photo(tmp_path / "p.png").read_bytes())}
    )
    text = html.unescape(r.text)
    assert r.status_code == 409 and "2 labels, but the net's 'score' has 4 classes" in text
    assert str(tmp_path) not in text  # no server path in what a visitor reads
