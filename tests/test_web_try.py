"""Try it (`caffezoo serve --try`): classify an uploaded image, bounded; hostile uploads refused."""

from __future__ import annotations

import hashlib
import io
import json
import socket
import struct
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from download_helpers import answer_while_trickling, wait_for
from runtime_helpers import natural_image, random_weights
from web_helpers import DEPLOY, OUTPUT, publish, web_for

from caffezoo.caffe.caffemodel import write_caffemodel
from caffezoo.caffe.prototxt import parse_prototxt
from caffezoo.server.work import Limits

LABELS = "".join(f"n0000{i} thing number {i}\n" for i in range(10))
MAX_BYTES = 256 * 1024


def png(array: np.ndarray) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG")
    return out.getvalue()


def bomb_png(width: int = 40_000, height: int = 40_000) -> bytes:
    """A valid-looking PNG header declaring 1.6 gigapixels, with a few bytes of data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 1000))
        + chunk(b"IEND", b"")
    )


@pytest.fixture
def model_files(tmp_path):
    """TinyNet with random weights, labels and a mean, as files (for `caffezoo run` too)."""
    message = parse_prototxt(DEPLOY).message
    d = tmp_path / "tiny_classifier"
    d.mkdir()
    weights = write_caffemodel(d / "tiny.caffemodel", message, random_weights(message, seed=3))
    data = weights.read_bytes()
    (d / "deploy.prototxt").write_text(DEPLOY)
    (d / "labels.txt").write_text(LABELS)
    sha1 = hashlib.sha1(data).hexdigest()
    keys = dict(
        caffemodel="tiny.caffemodel",
        caffemodel_url="http://127.0.0.1:9/tiny.caffemodel",
        sha1=sha1,
        task="image classification",
        labels="labels.txt",
        mean="[104, 117, 123]",
    )
    (d / "readme.md").write_text(
        "---\nname: Tiny Classifier\n"
        + "".join(f"{k}: {v}\n" for k, v in keys.items())
        + "---\nA tiny net.\n"
    )
    return d, data, keys


@pytest.fixture
def zoo(tmp_path, monkeypatch, model_files):
    """A server with --try, holding the tiny classifier's weights (uploaded by its owner)."""
    monkeypatch.setenv("CAFFEZOO_HOME", str(tmp_path / "home"))
    with serving(tmp_path, model_files) as w:
        yield w


@contextmanager
def serving(tmp_path, model_files, server: dict | None = None, **limits):
    """The ``zoo`` fixture's server, with ``limits`` added to its own (``server``: uvicorn's options)."""
    d, data, keys = model_files
    limits = Limits(try_it=True, try_max_bytes=MAX_BYTES, try_max_pixels=4_000_000, **limits)
    with web_for(f"sqlite:///{tmp_path / 'zoo.db'}", tmp_path, limits=limits, server=server) as w:
        gid = publish(w.storage, "tess", "Tiny Classifier", files={"labels.txt": LABELS}, **keys)
        token = w.storage.create_token("tess")
        r = w.http.put(
            f"/blobs/sha1/{keys['sha1']}", content=data, headers={"Authorization": f"token {token}"}
        )
        assert r.status_code == 201
        w.gid = gid
        yield w


def post(zoo, content: bytes, *, filename: str = "photo.png", field: str = "image", gid: str | None = None):
    return zoo.http.post(f"/models/{gid or zoo.gid}/try", files={field: (filename, content, "image/png")})


def text(r) -> str:
    import html

    return html.unescape(r.text)


def top_rows(html: str) -> list[tuple[str, float]]:
    import re

    return [
        (label, float(score))
        for label, score in re.findall(
            r'<td class="label">([^<]*)</td><td class="num">([0-9.e-]+)</td>', html
        )
    ]


def test_a_model_page_offers_the_form_and_answers_like_caffezoo_run(zoo, model_files, tmp_path, cli):
    page = zoo.get(f"/models/{zoo.gid}").text
    assert 'id="try"' in page and 'enctype="multipart/form-data"' in page
    image = png(natural_image(np.random.default_rng(5), 48, 64))
    r = post(zoo, image)
    assert r.status_code == 200, r.text[-500:]
    rows = top_rows(r.text)
    assert len(rows) == 5 and all(label.startswith("n0000") for label, _ in rows)
    # The same image through `caffezoo run` on the same model directory: the same classes and scores.
    (tmp_path / "photo.png").write_bytes(image)
    out = cli("run", str(model_files[0]), str(tmp_path / "photo.png"), "--json")
    assert out.code == 0, out.stderr
    expected = json.loads(out.stdout)[0]["top"]
    assert [label for label, _ in rows] == [c["label"] for c in expected]
    assert np.allclose([s for _, s in rows], [c["score"] for c in expected], atol=1e-4)


def test_hostile_uploads(zoo):
    r = post(zoo, b"this is not an image at all\n" * 10, filename="notes.png")
    assert r.status_code == 415 and "not an image" in text(r)
    r = post(zoo, bomb_png())  # 1.6 gigapixels declared: refused from the header, never decoded
    assert r.status_code == 413 and "pixels" in text(r)
    r = post(zoo, bomb_png(3000, 2000))  # 6 megapixels: over this server's 4 million
    assert r.status_code == 413 and "3,000 x 2,000 pixels" in text(r) and "at most 4,000,000" in text(r)
    r = post(zoo, b"\x89PNG\r\n\x1a\n" + b"\0" * 100)
    assert r.status_code in (415, 422)
    r = post(zoo, b"x" * (MAX_BYTES + 100_000))
    assert r.status_code == 413 and "over 262,144 bytes" in text(r)
    r = post(zoo, png(natural_image(np.random.default_rng(1), 8, 8)), field="file")
    assert r.status_code == 400 and "no 'image' file field" in text(r)
    r = zoo.http.post(f"/models/{zoo.gid}/try", content=b"raw", headers={"Content-Type": "image/png"})
    assert r.status_code == 415 and "multipart/form-data" in text(r)
    truncated = png(natural_image(np.random.default_rng(2), 64, 64))[:300]
    r = post(zoo, truncated)
    assert r.status_code == 422 and "cannot decode" in text(r)
    assert "Traceback" not in text(r)
    # Still serving after all of that.
    assert post(zoo, png(natural_image(np.random.default_rng(3), 32, 32))).status_code == 200


def test_a_mean_file_with_a_name_of_the_longest_length_is_no_server_error(zoo, model_files):
    """The server copies the mean file from the gist to read it; named after the net's SHA and the
    gist's name, a 252-byte name made a file name past 255 bytes: a 500 with a traceback."""
    _, _, keys = model_files
    name = "m" * 240 + ".binaryproto"
    files = {"labels.txt": LABELS, name: "not a BlobProto"}
    gid = publish(zoo.storage, "tess", "Long Mean", files=files, **dict(keys, mean=name))
    r = post(zoo, png(natural_image(np.random.default_rng(4), 16, 16)), gid=gid)
    assert r.status_code == 200, text(r)[-300:]
    assert f"the mean file cannot be read ({name}:" in text(r) and "none was subtracted" in text(r)


def test_a_labels_name_too_long_for_a_file_is_a_note_not_a_server_error(zoo, model_files):
    """A ``labels`` name that is no gist file is looked for among the shared label sets; a name
    past 255 bytes made that look-up raise (ENAMETOOLONG): a 500 with a traceback."""
    _, _, keys = model_files
    name = "l" * 300 + ".txt"
    gid = publish(zoo.storage, "tess", "Long Labels", files={"labels.txt": LABELS}, **dict(keys, labels=name))
    r = post(zoo, png(natural_image(np.random.default_rng(5), 16, 16)), gid=gid)
    assert r.status_code == 200, text(r)[-300:]
    assert "is not among the model's files" in text(r)


def test_uploads_are_never_stored(zoo, tmp_path):
    marker = png(natural_image(np.random.default_rng(9), 40, 40))
    assert post(zoo, marker).status_code == 200
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.stat().st_size >= len(marker):
            assert marker not in path.read_bytes(), path


def test_a_full_lane_is_a_503_with_retry_after(zoo):
    lane = zoo.app.state.try_lane
    lane.admitted += lane.workers + lane.queue  # as if that many uploads were in the lane
    try:
        r = post(zoo, png(natural_image(np.random.default_rng(4), 16, 16)))
        assert r.status_code == 503 and r.headers["retry-after"].isdigit()
    finally:
        lane.admitted -= lane.workers + lane.queue
    assert post(zoo, png(natural_image(np.random.default_rng(4), 16, 16))).status_code == 200


def upload_head(zoo, length: int) -> bytes:
    host = zoo.url.removeprefix("http://")
    return (
        f"POST /models/{zoo.gid}/try HTTP/1.1\r\nHost: {host}\r\nAccept: text/html\r\n"
        f"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: {length}\r\n\r\n"
    ).encode() + b"--b\r\nContent-Disposition: form-data; name=image; filename=x.png\r\n\r\n"


def test_slow_uploads_hold_a_bounded_budget_and_are_cut_at_their_deadline(tmp_path, monkeypatch, model_files):
    """Two uploads that send a byte now and then reserve what they say they will send; a third
    is refused at once (503) instead of holding more; at the deadline both are cut (408) and
    their reservations are back."""
    monkeypatch.setenv("CAFFEZOO_HOME", str(tmp_path / "home"))
    with serving(tmp_path, model_files, try_upload_bytes=2 * MAX_BYTES, try_upload_deadline=3.0) as zoo:
        uploads = zoo.app.state.try_uploads
        slow = []
        for _ in range(2):
            s = socket.create_connection(("127.0.0.1", int(zoo.url.rsplit(":", 1)[1])), timeout=60)
            s.sendall(upload_head(zoo, MAX_BYTES))
            slow.append(s)
        wait_for(lambda: uploads.answers == 2, what="two reservations")
        assert uploads.bytes == 2 * MAX_BYTES
        image = png(natural_image(np.random.default_rng(6), 16, 16))
        r = post(zoo, image)
        assert r.status_code == 503 and r.headers["retry-after"].isdigit(), r.status_code
        assert "busy" in text(r)
        answers = [answer_while_trickling(s, b"x") for s in slow]
        assert all(a.startswith(b"HTTP/1.1 408 ") for a in answers), answers
        assert all(b"did not arrive within 3 seconds" in a for a in answers)
        wait_for(lambda: uploads.answers == 0, what="the reservations back")
        assert uploads.bytes == 0
        assert post(zoo, image).status_code == 200


def test_a_chunked_upload_reserves_the_most_whatever_length_it_states(tmp_path, monkeypatch, model_files):
    """With both headers, the body is chunked and its Content-Length ignored (RFC 9112 6.3; h11,
    the protocol `serve` falls back to, reads it so): it reserves --try-max-bytes, not the 10
    bytes it states, or uploads of megabytes would each count as 10 bytes."""
    from caffezoo.server.protocols import H11HeaderDeadline

    monkeypatch.setenv("CAFFEZOO_HOME", str(tmp_path / "home"))
    with serving(tmp_path, model_files, server={"http": H11HeaderDeadline}) as zoo:
        uploads = zoo.app.state.try_uploads
        head = upload_head(zoo, 10).replace(b"\r\n\r\n", b"\r\nTransfer-Encoding: chunked\r\n\r\n", 1)
        part, rest = head.split(b"\r\n\r\n", 1)
        with socket.create_connection(("127.0.0.1", int(zoo.url.rsplit(":", 1)[1])), timeout=60) as s:
            s.sendall(part + b"\r\n\r\n" + b"%x\r\n" % len(rest) + rest + b"\r\n")  # more to come
            wait_for(lambda: uploads.answers == 1, what="the upload's reservation")
            assert uploads.bytes == MAX_BYTES + 64 * 1024
            s.sendall(b"0\r\n\r\n")
            assert s.recv(65536).startswith(b"HTTP/1.1 400 ")  # a form without its image
        wait_for(lambda: uploads.answers == 0, what="the reservation back")
        assert uploads.bytes == 0


def test_a_content_length_of_thousands_of_digits_is_no_server_error(zoo):
    """httptools takes 4,400 zeros then 10 for the 10 it is; Python's int() refuses that many
    digits: the form is read as 10 bytes (and refused, 400), not answered 500."""
    head = upload_head(zoo, 10).replace(b"Content-Length: 10", b"Content-Length: " + b"0" * 4400 + b"10")
    with socket.create_connection(("127.0.0.1", int(zoo.url.rsplit(":", 1)[1])), timeout=60) as s:
        s.sendall(head.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n0123456789")
        assert s.recv(65536).startswith(b"HTTP/1.1 400 ")
    assert zoo.app.state.try_uploads.bytes == 0


def test_models_that_cannot_be_tried_say_why(zoo):
    alexnet = next(m for m in zoo.http.get("/compare.json").json()["models"] if "AlexNet" in m["name"])
    page = zoo.get(f"/models/{alexnet['id']}").text
    assert 'id="try"' not in page and "this server does not hold its weights" in page
    r = post(zoo, png(natural_image(np.random.default_rng(1), 8, 8)), gid=alexnet["id"])
    assert r.status_code == 409 and "does not hold its weights" in text(r)
    detector = next(m for m in zoo.http.get("/compare.json").json()["models"] if "RCNN" in m["name"])
    assert (
        "no SSD DetectionOutput or Faster R-CNN proposal layer" in zoo.get(f"/models/{detector['id']}").text
    )


def test_try_is_off_unless_asked(web):
    gid = web.http.get("/compare.json").json()["models"][0]["id"]
    assert (
        'id="try"' not in web.get(f"/models/{gid}").text and "Try it:" not in web.get(f"/models/{gid}").text
    )
    r = web.http.post(f"/models/{gid}/try", files={"image": ("x.png", b"x", "image/png")})
    assert r.status_code in (404, 405)


def test_try_in_the_browser(zoo, browser, tmp_path):
    image = tmp_path / "upload.png"
    image.write_bytes(png(natural_image(np.random.default_rng(11), 60, 80)))
    expected = top_rows(post(zoo, image.read_bytes()).text)[0][0]
    page = browser.new_page()
    try:
        page.goto(f"{zoo.url}/models/{zoo.gid}")
        page.set_input_files("#try input[name=image]", str(image))
        page.click("#try-submit")
        page.wait_for_url(f"**/models/{zoo.gid}/try")
        first = page.locator("#top5 tbody tr").first.locator("td.label").inner_text()
        assert first == expected and first.startswith("n0000")
        page.screenshot(path=str(OUTPUT / "try-result.png"), full_page=True)
        assert Path(OUTPUT / "try-result.png").stat().st_size > 1000
    finally:
        page.close()


def test_a_big_jpeg_gives_the_same_top_class_as_caffezoo_run(zoo, model_files, tmp_path, cli):
    from PIL import Image

    path = tmp_path / "big.jpg"
    Image.fromarray(natural_image(np.random.default_rng(21), 900, 1200)).save(path, quality=40)
    assert path.stat().st_size < MAX_BYTES  # big in pixels (4x the draft threshold), not in bytes
    r = post(zoo, path.read_bytes(), filename="big.jpg")
    assert r.status_code == 200
    out = cli("run", str(model_files[0]), str(path), "--json")
    assert top_rows(r.text)[0][0] == json.loads(out.stdout)[0]["top"][0]["label"]


def test_form_fields_are_cut_at_the_boundary():
    import httpx

    from caffezoo.server.tryit import TryError, form_fields

    data = b"\r\n--not-the-boundary\r\n\r\n" + bytes(range(256)) * 100  # lines, CRLFs, dashes: all content
    request = httpx.Request(
        "POST",
        "http://x/",
        files={"image": ('we"ird name.png', data, "image/png")},
        data={"threshold": "0.3"},
    )
    body, content_type = request.read(), request.headers["content-type"]
    assert form_fields(body, content_type) == {"threshold": b"0.3", "image": data}
    boundary = content_type.split("boundary=")[1]
    quoted = f'multipart/form-data; boundary="{boundary}"'
    preamble = b"a preamble, ignored\r\n" + body
    assert form_fields(preamble, quoted)["image"] == data
    twice = body[: body.rindex(b"--" + boundary.encode() + b"--")] + body  # the first "image" counts
    assert form_fields(twice, content_type)["image"] == data
    for broken in (
        body[: len(body) // 2],
        body.replace(b"\r\n\r\n", b"\r\n"),
        b"",
        b"--" + boundary.encode(),
    ):
        with pytest.raises(TryError) as e:
            form_fields(broken, content_type)
        assert e.value.status == 400
    for wrong in ("multipart/mixed; boundary=x", "multipart/form-data", "text/plain", ""):
        with pytest.raises(TryError) as e:
            form_fields(body, wrong)
        assert e.value.status == 415


def test_forms_with_many_parts_or_long_part_headers_are_refused_unparsed(zoo):
    # An 8 MB body of 150,000 tiny parts (or one part with a megabyte of header parameters) kept the
    # email header parser busy for minutes, holding the try lane and the GIL: refused from the cut.
    image = png(natural_image(np.random.default_rng(6), 16, 16))
    many = {f"f{i}": "v" for i in range(40)}
    r = zoo.http.post(f"/models/{zoo.gid}/try", files={"image": ("p.png", image, "image/png")}, data=many)
    assert r.status_code == 413 and "more than 8 fields" in text(r)
    head = b'Content-Disposition: form-data; name="image"' + b"; a=b" * 2000
    body = b"--BND\r\n" + head + b"\r\n\r\n" + image + b"\r\n--BND--\r\n"
    r = zoo.http.post(
        f"/models/{zoo.gid}/try", content=body, headers={"Content-Type": "multipart/form-data; boundary=BND"}
    )
    assert r.status_code == 413 and "header" in text(r) and "Traceback" not in text(r)
    # Eight fields, headers of a usual size: still served.
    some = {f"f{i}": "v" for i in range(6)}
    r = zoo.http.post(f"/models/{zoo.gid}/try", files={"image": ("p.png", image, "image/png")}, data=some)
    assert r.status_code == 200


def test_a_16_bit_grey_png_is_read_as_its_8_bit_self(zoo):
    from PIL import Image

    grey = Image.fromarray(natural_image(np.random.default_rng(12), 48, 64)).convert("L")
    deep = io.BytesIO()
    Image.fromarray(np.asarray(grey, np.uint16) * 257).save(deep, format="PNG")  # mode I;16
    assert Image.open(io.BytesIO(deep.getvalue())).mode == "I;16"
    eight = top_rows(post(zoo, png(np.asarray(grey))).text)
    sixteen = top_rows(post(zoo, deep.getvalue()).text)  # Pillow's convert("RGB") clips it to white
    assert [label for label, _ in sixteen] == [label for label, _ in eight]
    assert np.allclose([s for _, s in sixteen], [s for _, s in eight], atol=1e-3)


def test_an_upload_that_is_no_image_is_refused_before_the_net_is_loaded(zoo):
    # Loading converts the net (and copies weights from a remote store): not for a file it cannot run on.
    r = post(zoo, b"GIF89a" + b"\0" * 50, filename="x.gif")
    assert r.status_code in (415, 422) and not zoo.app.state.tryit._nets
    assert post(zoo, bomb_png()).status_code == 413 and not zoo.app.state.tryit._nets
