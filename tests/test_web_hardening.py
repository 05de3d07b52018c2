"""Bounded work per request, against the real server: costly pages render off the event
loop within budgets, full queues answer 503 with Retry-After, caches are keyed on the
configured base URL (never the Host header) and bounded by bytes, one net is drawn once.

No timings: where a test needs a slow render or drawing it holds one (a PostgreSQL
table lock, a `dot` that waits for a go-ahead file) and asserts on what is answered
meanwhile.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from web_helpers import publish, web_for

from caffezoo.server import catalog, render
from caffezoo.server.caches import ByteCache
from caffezoo.server.listing import DESCRIPTION_CHARS, NAME_CHARS
from caffezoo.server.render import markdown_html
from caffezoo.server.work import AnswerBudget, Busy, Lane, Limits, TooSlow


def wait_until(condition, what: str, tries: int = 1200) -> None:
    """Poll ``condition`` (every 50 ms, up to a minute): the tests wait on events, not on durations."""
    for _ in range(tries):
        if condition():
            return
        threading.Event().wait(0.05)
    pytest.fail(f"gave up waiting: {what}")


# --------------------------------------------------------------------------- Markdown budgets


def test_markdown_over_its_budgets_is_shown_plain_and_escaped():
    brackets = markdown_html("[" * 20_000, raw_url="https://zoo.example/raw/readme.md")
    assert "Shown as plain text" in brackets and "would take too long" in brackets
    assert 'href="https://zoo.example/raw/readme.md"' in brackets and "[" * 1000 in brackets
    hidden = markdown_html("[" * 3000 + "<script>alert(1)</script>" + "*a_" * 20_000)
    assert "<script>" not in hidden and "&lt;script&gt;" in hidden
    huge = markdown_html("word " * 300_000)
    assert "characters long" in huge and "Only the first" in huge
    assert len(huge) < render.MAX_PLAIN_CHARS + 10_000
    # Within budget, Markdown is formatted as before.
    assert markdown_html("# Hi\n\n[a](https://x.org) *b*").startswith("<h1>Hi</h1>")


def test_a_parse_past_its_deadline_is_stopped_and_shown_plain(monkeypatch):
    monkeypatch.setattr(render, "MARKDOWN_SECONDS", -1.0)  # every parse is already late
    out = markdown_html("# Title\n\nSome [link](https://x.org) text.\n", raw_url="https://z/raw")
    assert "took over" in out and "<h1>" not in out and "# Title" in out


def test_bracket_scan_counts_what_markdown_it_rescans():
    assert render.bracket_scan("[a](b) [c](d)") == 4
    assert render.bracket_scan("[" * 1000, stop=10**9) > 400_000  # every unclosed bracket scans to the end
    assert render.bracket_scan("[\n\n" * 1000) < 5_000  # a blank line ends the scan


# --------------------------------------------------------------------------- the lane


def test_a_lane_answers_busy_when_full_and_too_slow_at_its_deadline():
    async def scenario():
        go = threading.Event()
        lane = Lane("t", workers=1, queue=1, deadline=60)
        running = asyncio.ensure_future(lane.run(go.wait))
        queued = asyncio.ensure_future(lane.run(lambda: "second"))
        while lane.running < 1:
            await asyncio.sleep(0.01)
        with pytest.raises(Busy) as busy:
            await lane.run(lambda: "third")
        assert busy.value.retry_after >= 1
        go.set()
        assert await running is True and await queued == "second"
        assert lane.admitted == 0

        short = Lane("s", workers=1, queue=0, deadline=0.2)
        stuck = threading.Event()
        with pytest.raises(TooSlow):
            await short.run(stuck.wait)
        # The caller was answered; the thread still runs and keeps its slot until it ends.
        assert short.running == 1
        with pytest.raises(Busy):
            await short.run(lambda: None)
        stuck.set()
        while short.running:
            await asyncio.sleep(0.01)
        assert await short.run(lambda: "free again") == "free again"

    with ThreadPoolExecutor(1) as pool:  # its own loop: the browser suite may hold this thread's
        pool.submit(asyncio.run, scenario()).result(120)


def test_byte_cache_is_bounded_by_bytes_not_entries():
    cache = ByteCache(100_000)
    pages = cache.part("page")
    for i in range(1000):
        pages.put(i, "x" * 1000)
    assert cache.bytes <= 100_000 and 50 <= len(cache) < 100
    assert pages.get(999) is not None and pages.get(0) is None
    pages.put("huge", "x" * 50_000)  # over an eighth of the budget: answered, never kept
    assert pages.get("huge") is None and cache.bytes <= 100_000


# --------------------------------------------------------------------------- pages


def test_a_pathological_readme_page_is_answered_with_the_readme_escaped(database_url, tmp_path):
    with web_for(database_url, tmp_path, seed=False) as w:
        gid = publish(w.storage, "mallory", "Bracket Net", body="[" * 100_000 + "\n<script>x</script>\n")
        r = w.get(f"/models/{gid}")
        assert r.status_code == 200
        assert "Shown as plain text" in r.text and "[" * 5000 in r.text
        assert "<script>x" not in r.text and "&lt;script&gt;x" in r.text
        assert f"/mallory/{gid}/raw/" in r.text  # the link to the whole readme
        other = publish(w.storage, "alice", "Fine Net", body="# Fine\n\nA [link](https://x.org).\n")
        fine = w.get(f"/models/{other}").text
        assert "<h2>Fine</h2>" in fine and 'href="https://x.org"' in fine


def test_listed_fields_are_cut_to_their_listed_length(database_url, tmp_path):
    """Rows written before the input limits (here: written straight to the database) may
    be huge; the lists cut them, the model's own page still shows it."""
    from sqlalchemy import text

    with web_for(database_url, tmp_path, seed=False) as w:
        gid = publish(w.storage, "olduser", "Old Net")
        long_text = "very long words " * 10_000
        with w.storage.session() as s:
            s.execute(text("UPDATE gists SET description = :d WHERE id = :i"), {"d": long_text, "i": gid})
            s.execute(
                text("UPDATE zoo_entries SET name = :n, summary = :d WHERE gist_id = :i"),
                {"n": "N" * 50_000, "d": long_text, "i": gid},
            )
            catalog.bump(s)  # as every write a page shows does
            s.commit()
        listed = w.http.get("/gists/public", headers={"Accept": "application/json"}).json()
        assert len(listed[0]["description"]) == DESCRIPTION_CHARS and listed[0]["description"].endswith("…")
        whole = w.http.get(f"/gists/{gid}", headers={"Accept": "application/json"}).json()
        assert whole["description"] == long_text
        models = w.http.get("/api/models", headers={"Accept": "application/json"}).json()["models"]
        assert len(models[0]["name"]) == NAME_CHARS and len(models[0]["summary"]) <= DESCRIPTION_CHARS
        index = w.get("/?q=").text
        assert "N" * NAME_CHARS not in index.replace("N" * (NAME_CHARS - 1) + "…", "")
        assert len(index) < 60_000


def test_host_headers_do_not_make_cache_entries_or_links(tmp_path):
    with web_for(f"sqlite:///{tmp_path / 'zoo.db'}", tmp_path, seed=False) as w:
        gid = publish(w.storage, "hosty", "Host Net")
        hosts = [f"evil{i}.example:{1000 + i}" for i in range(100)]
        for host in hosts:
            page = w.http.get(f"/models/{gid}", headers={"Host": host})
            api = w.http.get(f"/gists/{gid}", headers={"Host": host, "Accept": "application/json"})
            assert page.status_code == 200 and api.status_code == 200
            assert host not in page.text and host not in api.text
            assert api.json()["html_url"] == f"{w.url}/hosty/{gid}"
        pages = [k for k in w.app.state.page_cache.keys() if k[0] == "model" and k[1] == gid]
        gists = [k for k in w.app.state.gist_cache.keys() if k[0] == gid]
        assert len(pages) == 1 and len(gists) == 1
        listed = w.http.get("/gists/public?per_page=1", headers={"Host": "evil.example"})
        assert "evil.example" not in listed.headers.get("link", "") + listed.text


def test_the_base_url_option_sets_every_link(tmp_path):
    base = "https://zoo.example.org/zoo"
    with web_for(f"sqlite:///{tmp_path / 'zoo.db'}", tmp_path, seed=False, base_url=base + "/") as w:
        gid = publish(w.storage, "basey", "Base Net")
        for i in range(3):
            publish(w.storage, "basey", f"More Net {i}")
        api = w.http.get(f"/gists/{gid}", headers={"Accept": "application/json"}).json()
        assert api["html_url"] == f"{base}/basey/{gid}" and api["url"] == f"{base}/gists/{gid}"
        assert f"export CAFFEZOO_GIST_API={base}" in w.get(f"/models/{gid}").text
        listed = w.http.get("/gists/public?per_page=1")
        assert listed.headers["link"].startswith(f"<{base}/gists/public?")
        models = w.http.get("/api/models", headers={"Accept": "application/json"}).json()["models"]
        assert all(m["html_url"].startswith(f"{base}/models/") for m in models)


def test_caches_stay_within_their_byte_budget(tmp_path):
    budget = 3 * 1024 * 1024
    with web_for(f"sqlite:///{tmp_path / 'zoo.db'}", tmp_path, limits=Limits(cache_bytes=budget)) as w:
        ids = [
            publish(w.storage, "bulk", f"Bulk Net {i}", files={"notes.txt": f"{i}\n" + "n" * 200_000})
            for i in range(30)
        ]
        for gid in ids:
            assert w.get(f"/models/{gid}").status_code == 200
            assert w.http.get(f"/gists/{gid}", headers={"Accept": "application/json"}).status_code == 200
        cache = w.app.state.cache
        assert cache.bytes <= budget
        assert len([k for k in w.app.state.page_cache.keys() if k[0] == "model"]) < 30


# --------------------------------------------------------------------------- the render lane, held


def test_render_lane_full_or_late_answers_503_while_cheap_requests_go_on(postgres_url, tmp_path):
    """A model page whose files cannot be read yet (a lock on the blobs table) holds the one
    render thread; meanwhile cheap pages answer, a second costly page is a 503 with
    Retry-After (a page for a browser, JSON for the API), and past the deadline the held
    request itself is answered 503 without waiting for its thread."""
    import psycopg
    from web_helpers import fresh_postgres

    url = fresh_postgres(postgres_url)
    limits = Limits(render_workers=1, render_queue=0, render_deadline=600)
    with web_for(url, tmp_path, seed=False, limits=limits) as w:
        held, other = publish(w.storage, "lock", "Held Net"), publish(w.storage, "lock", "Other Net")
        cached = publish(w.storage, "lock", "Cached Net")
        assert w.get(f"/models/{cached}").status_code == 200
        lane = w.app.state.render_lane
        with psycopg.connect(url) as conn:
            conn.execute("LOCK TABLE blobs IN ACCESS EXCLUSIVE MODE")
            pool = ThreadPoolExecutor(1)
            slow = pool.submit(w.get, f"/models/{held}")
            wait_until(lambda: lane.running == 1, "the model page to take the render thread")
            assert w.get("/static/style.css").status_code == 200
            assert w.http.get("/api/models", headers={"Accept": "application/json"}).status_code == 200
            assert w.get(f"/models/{cached}").status_code == 200  # cached: no render needed
            busy = w.get(f"/models/{other}")
            assert busy.status_code == 503 and int(busy.headers["retry-after"]) >= 1
            assert "text/html" in busy.headers["content-type"] and "try again" in busy.text
            api = w.http.get(f"/models/{other}", headers={"Accept": "application/json"})
            assert api.status_code == 503 and api.json()["status"] == "503" and "retry-after" in api.headers
            assert not slow.done()
            conn.commit()
        assert slow.result(60).status_code == 200
        pool.shutdown()

    late = Limits(render_workers=1, render_queue=0, render_deadline=1.0)
    with web_for(url, tmp_path / "late", seed=False, limits=late) as w:
        held = publish(w.storage, "lock", "Late Net")
        lane = w.app.state.render_lane
        with psycopg.connect(url) as conn:
            conn.execute("LOCK TABLE blobs IN ACCESS EXCLUSIVE MODE")
            r = w.get(f"/models/{held}")  # answered while the lock (and so its thread) is still held
            assert r.status_code == 503 and "retry-after" in r.headers
            assert lane.running == 1  # the thread was not waited for
            conn.commit()
        wait_until(lambda: lane.running == 0, "the cut-off render to end")
        assert w.get(f"/models/{held}").status_code == 200


def test_a_gist_zip_is_built_in_the_render_lane(postgres_url, tmp_path):
    """A zip download read every file and zipped them in the thread pool: 40 at once, each
    with its own copies (4 downloads of a 150 MB gist: 1.6 GB), and the render lane's bound
    did not apply. Held here by /wiki waiting on a lock, the one render thread leaves none."""
    import psycopg
    from web_helpers import fresh_postgres

    url = fresh_postgres(postgres_url)
    limits = Limits(render_workers=1, render_queue=0, render_deadline=600)
    with web_for(url, tmp_path, seed=False, limits=limits) as w:
        gid = publish(w.storage, "zippy", "Zip Net", files={"notes.txt": "n" * 100_000})
        lane = w.app.state.render_lane
        with psycopg.connect(url) as conn:
            conn.execute("LOCK TABLE wiki_sections IN ACCESS EXCLUSIVE MODE")
            pool = ThreadPoolExecutor(1)
            slow = pool.submit(w.get, "/wiki")
            wait_until(lambda: lane.running == 1, "/wiki to take the render thread")
            busy = w.http.get(f"/zippy/{gid}/download", headers={"Accept": "*/*"})
            assert busy.status_code == 503 and int(busy.headers["retry-after"]) >= 1
            conn.commit()
        assert slow.result(60).status_code == 200
        pool.shutdown()
        done = w.http.get(f"/zippy/{gid}/download", headers={"Accept": "*/*"})
        assert done.status_code == 200 and done.headers["content-type"] == "application/zip"


# --------------------------------------------------------------------------- drawings


def _waiting_dot(tmp_path: Path, monkeypatch) -> Path:
    """A `dot` first on PATH that logs each run (and its pid), waits for ``go``, then runs the real one."""
    real = shutil.which("dot")
    assert real, "graphviz's dot is missing (Debian package `graphviz`, see .ci/run)"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "dot").write_text(
        "#!/bin/sh\n"
        f"echo $$ >> {tmp_path}/runs\n"
        f"while [ ! -e {tmp_path}/go ]; do sleep 0.05; done\n"
        f'exec {real} "$@"\n'
    )
    (bin_dir / "dot").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return tmp_path / "runs"


def _runs(log: Path) -> list[str]:
    return log.read_text().split() if log.exists() else []


def test_a_drawing_requested_45_times_runs_dot_once_and_holds_no_threads(database_url, tmp_path, monkeypatch):
    log = _waiting_dot(tmp_path, monkeypatch)
    with web_for(database_url, tmp_path, seed=False) as w:
        gid = publish(w.storage, "draw", "Drawn Net")
        pictures = w.app.state.pictures
        with httpx.Client(base_url=w.url, timeout=120) as http, ThreadPoolExecutor(45) as pool:
            svgs = [pool.submit(http.get, f"/models/{gid}/net.svg") for _ in range(45)]
            wait_until(lambda: pictures.waiting == 45, "45 requests to wait for the drawing")
            # 45 waiting requests hold no thread: more than the server's thread pool has (40).
            assert w.http.get("/api/models", headers={"Accept": "application/json"}).status_code == 200
            assert w.get("/wiki").status_code == 200 and w.get("/").status_code == 200
            assert len(_runs(log)) == 1 and not any(f.done() for f in svgs)
            (tmp_path / "go").touch()
            answers = [f.result(120) for f in svgs]
        assert all(r.status_code == 200 and "<svg" in r.text for r in answers)
        assert len(_runs(log)) == 1
        assert w.get(f"/models/{gid}/net.svg").status_code == 200 and len(_runs(log)) == 1


def test_drawing_queue_full_is_503_and_the_page_still_renders(tmp_path, monkeypatch):
    log = _waiting_dot(tmp_path, monkeypatch)
    limits = Limits(draw_workers=1, draw_queue=0, picture_wait=0.1)
    with web_for(f"sqlite:///{tmp_path / 'zoo.db'}", tmp_path, seed=False, limits=limits) as w:
        first = publish(w.storage, "q", "First Net")
        second = publish(w.storage, "q", "Second Net", files={"deploy.prototxt": 'name: "other"\n'})
        with ThreadPoolExecutor(1) as pool:
            drawing = pool.submit(w.get, f"/models/{first}/net.svg")
            wait_until(lambda: len(_runs(log)) == 1, "dot to start on the first net")
            busy = w.get(f"/models/{second}/net.svg")
            assert busy.status_code == 503 and int(busy.headers["retry-after"]) >= 1
            page = w.get(f"/models/{second}")
            assert page.status_code == 200 and f'src="/models/{second}/net.svg"' in page.text
            assert "being drawn" in page.text
            (tmp_path / "go").touch()
            assert drawing.result(120).status_code == 200
        assert w.get(f"/models/{second}/net.svg").status_code == 200
        page = w.get(f"/models/{first}").text  # drawn now: the page is rendered anew
        assert "being drawn" not in page and f'src="/models/{first}/net.svg"' in page


def test_dot_is_killed_at_its_timeout_and_big_nets_are_refused(tmp_path, monkeypatch):
    log = _waiting_dot(tmp_path, monkeypatch)  # never told to go: only the timeout ends it
    limits = Limits(draw_timeout=0.5, draw_max_layers=3)
    with web_for(f"sqlite:///{tmp_path / 'zoo.db'}", tmp_path, seed=False, limits=limits) as w:
        big = publish(w.storage, "big", "Big Net")  # TinyNet: 5 layers
        r = w.get(f"/models/{big}/net.svg")
        assert r.status_code == 422 and "5 layers, over the 3" in r.text
        assert "5 layers, over the 3" in w.get(f"/models/{big}").text
        assert _runs(log) == []  # refused before `dot` ran
        small = publish(w.storage, "big", "Small Net", files={"deploy.prototxt": 'name: "x"\n'})
        r = w.get(f"/models/{small}/net.svg")
        assert r.status_code == 422 and "took more than 0.5 s" in r.text
        (pid,) = _runs(log)
        wait_until(lambda: not Path(f"/proc/{pid}").exists(), "the timed-out dot to be gone")


def test_serve_refuses_a_base_url_that_is_no_url(cli):
    for bad in ("ftp://zoo.example.org", "zoo.example.org", "https://zoo.example.org/?q=1"):
        r = cli("serve", "--base-url", bad, "--no-check-links")
        assert r.code != 0 and "--base-url" in r.stderr and "Traceback" not in r.stderr


def test_the_default_base_url_is_the_bind_address():
    from caffezoo.server.run import default_base_url

    assert default_base_url("127.0.0.1", 8000) == "http://127.0.0.1:8000"
    assert default_base_url("::1", 8080) == "http://[::1]:8080"
    assert default_base_url("0.0.0.0", 80) is None  # each connection's own local address, never Host


def test_a_picture_drawn_before_is_served_from_disk_even_when_the_queue_is_full(tmp_path, monkeypatch):
    database_url = f"sqlite:///{tmp_path / 'zoo.db'}"
    with web_for(database_url, tmp_path, seed=False) as w:
        drawn = publish(w.storage, "disk", "Drawn Net")
        waiting = publish(w.storage, "disk", "Waiting Net", files={"deploy.prototxt": 'name: "w"\n'})
        assert w.get(f"/models/{drawn}/net.svg").status_code == 200  # real dot; kept on disk
    (tmp_path / "later").mkdir()
    log = _waiting_dot(tmp_path / "later", monkeypatch)  # the next server's dot waits
    limits = Limits(draw_workers=1, draw_queue=0)
    with web_for(database_url, tmp_path, seed=False, limits=limits) as w, ThreadPoolExecutor(1) as pool:
        held = pool.submit(w.get, f"/models/{waiting}/net.svg")
        wait_until(lambda: len(_runs(log)) == 1, "dot to start on the waiting net")
        again = w.get(f"/models/{drawn}/net.svg")
        assert again.status_code == 200 and "<svg" in again.text and len(_runs(log)) == 1
        (tmp_path / "later" / "go").touch()
        assert held.result(120).status_code == 200


# --------------------------------------------------------------------------- large answers in flight

BIG_FILE = 8 * 1024 * 1024  # more than the kernel's socket buffers (4 MiB send + a small receive)
# The API shows 1 MiB of each file (GitHub's truncation), so a big answer takes several files.
BIG_FILES = {f"part{i}.txt": "n" * (1024 * 1024) for i in range(BIG_FILE // (1024 * 1024) + 1)}


def _never_reading(base: str, path: str) -> socket.socket:
    """A client that asks for ``path`` and reads only the status line: the server's send then
    waits on flow control with the rest of the body."""
    from urllib.parse import urlsplit

    host, port = urlsplit(base).hostname, urlsplit(base).port
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
    sock.connect((host, port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: zoo\r\nAccept: application/json\r\n\r\n".encode())
    sock.settimeout(60)
    status = b""
    while len(status) < 12:
        status += sock.recv(12 - len(status))
    assert status == b"HTTP/1.1 200", status  # admitted: its body is held in memory now
    return sock


def test_large_answers_in_flight_are_bounded_and_freed_when_their_clients_go(tmp_path):
    """Two clients that never read hold two 8 MiB gist answers: a third large answer is a
    503 with Retry-After (JSON for the API, a page for a browser) while small answers go
    on; once those clients are gone, large answers are sent again."""
    limits = Limits(
        cache_bytes=4 * 1024 * 1024, inflight_bytes=2 * BIG_FILE + BIG_FILE // 2, send_deadline=600
    )
    with web_for(f"sqlite:///{tmp_path / 'zoo.db'}", tmp_path, limits=limits) as w:
        big = publish(w.storage, "bulk", "Big Net", files=BIG_FILES)
        small = publish(w.storage, "bulk", "Small Net")
        budget = w.app.state.large_answers
        stuck = [_never_reading(w.url, f"/gists/{big}") for _ in range(2)]
        try:
            assert budget.answers == 2 and budget.bytes > 2 * BIG_FILE
            api = w.http.get(f"/gists/{big}", headers={"Accept": "application/json"})
            assert api.status_code == 503 and int(api.headers["retry-after"]) >= 1
            assert api.json()["status"] == "503" and "large answers" in api.json()["message"]
            assert api.headers["x-content-type-options"] == "nosniff"  # still behind the other middleware
            page = w.get(f"/gists/{big}")  # asked for by a browser: the 503 is a page
            assert page.status_code == 503 and "try again" in page.text and "retry-after" in page.headers
            assert "text/html" in page.headers["content-type"]
            assert w.get(f"/models/{big}").status_code == 200  # shows 1 MiB of files at most: not large
            assert w.http.get(f"/gists/{small}", headers={"Accept": "application/json"}).status_code == 200
            assert w.get(f"/models/{small}").status_code == 200
            assert w.get("/static/style.css").status_code == 200
            assert budget.answers == 2  # the refused answers held nothing
        finally:
            for sock in stuck:
                sock.close()
        wait_until(lambda: budget.answers == 0, "the closed clients' answers to be let go")
        assert budget.bytes == 0
        again = w.http.get(f"/gists/{big}", headers={"Accept": "application/json"})
        assert (
            again.status_code == 200
            and again.json()["files"]["part3.txt"]["content"] == BIG_FILES["part3.txt"]
        )


def test_a_client_that_never_reads_is_cut_off_at_the_send_deadline(tmp_path):
    """With room for one large answer, a client that never reads holds it only until the
    send deadline: then its connection is closed with the body cut short, and the next
    large answer is sent whole."""
    limits = Limits(cache_bytes=4 * 1024 * 1024, inflight_bytes=1, send_deadline=1.0)
    with web_for(f"sqlite:///{tmp_path / 'zoo.db'}", tmp_path, limits=limits) as w:
        big = publish(w.storage, "bulk", "Big Net", files=BIG_FILES)
        budget = w.app.state.large_answers
        sock = _never_reading(w.url, f"/gists/{big}")
        try:
            wait_until(lambda: budget.answers == 0, "the send deadline to free the stuck answer")
            again = w.http.get(f"/gists/{big}", headers={"Accept": "application/json"})
            assert again.status_code == 200 and len(again.content) == int(again.headers["content-length"])
            received = b"HTTP/1.1 200"
            while chunk := sock.recv(1 << 20):  # the rest of what was queued, then the close
                received += chunk
        finally:
            sock.close()
        head, _, body = received.partition(b"\r\n\r\n")
        length = int(
            next(line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")).split(
                b":"
            )[1]
        )
        assert len(body) < length == len(again.content)  # cut short: the client can tell


def test_the_answer_budget_always_lets_one_answer_through():
    budget = AnswerBudget(10, send_deadline=60)
    assert budget.take(100)  # alone: larger than the whole budget, still sent
    assert not budget.take(1)
    budget.give(100)
    assert budget.take(6) and budget.take(4) and not budget.take(1)
    with pytest.raises(ValueError):
        AnswerBudget(10, send_deadline=0)


def test_drawing_another_net_does_not_re_render_a_cached_page(tmp_path):
    """A finished drawing re-renders only the pages that showed it as pending: anyone can
    have nets drawn (``net.svg`` of any revision), so a drawing that invalidated every cached
    model page would let a crawler of pictures turn every page view into a render."""
    with web_for(f"sqlite:///{tmp_path / 'zoo.db'}", tmp_path, seed=False) as w:
        shown = publish(w.storage, "storm", "Shown Net")
        other = publish(w.storage, "storm", "Other Net", files={"deploy.prototxt": 'name: "other"\n'})
        broken = publish(w.storage, "storm", "Broken Net", files={"deploy.prototxt": "layer { name: \n"})
        assert w.get(f"/models/{shown}/net.svg").status_code == 200  # drawn: the page shows it
        assert w.get(f"/models/{shown}").status_code == 200
        pages = lambda: [k for k in w.app.state.page_cache.keys() if k[0] == "model" and k[1] == shown]  # noqa: E731
        assert len(pages()) == 1
        assert w.get(f"/models/{other}/net.svg").status_code == 200  # another net drawn
        assert w.get(f"/models/{broken}/net.svg").status_code == 422  # and one that cannot be
        assert w.get(f"/models/{shown}").status_code == 200
        assert len(pages()) == 1  # answered from the cache: no new render


def test_a_net_that_cannot_be_drawn_says_where_without_the_servers_temp_path(tmp_path):
    import html
    import tempfile

    with web_for(f"sqlite:///{tmp_path / 'zoo.db'}", tmp_path, seed=False) as w:
        unwired = 'layer { name: "a" type: "ReLU" bottom: "nothing" top: "a" }\n'
        gid = publish(w.storage, "where", "Unwired Net", files={"deploy.prototxt": unwired})
        unknown = publish(w.storage, "where", "Unknown Net", files={"deploy.prototxt": "layer { p { } }\n"})
        for model, said in ((gid, "line 1: layer 'a' (ReLU)"), (unknown, "line 1:9: unknown field 'p'")):
            r = w.get(f"/models/{model}/net.svg")
            assert r.status_code == 422 and said in r.text
            assert tempfile.gettempdir() not in r.text and "caffezoo-draw-" not in r.text
            page = html.unescape(w.get(f"/models/{model}").text)
            assert said in page and "caffezoo-draw-" not in page


def test_the_process_tuning_is_the_servers_alone_and_reaches_every_worker(tmp_path):
    """`serve --workers N` builds each worker's app with ``app_from_env`` in a fresh (spawned)
    interpreter, which inherits nothing that ``run`` set: the factory applies the tuning too.
    Importing the library or building an app (tests, embedders) leaves the process alone."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from caffezoo.server.app import app_from_env, create_app\n"
        "before = sys.getswitchinterval()\n"
        "create_app()\n"
        "assert sys.getswitchinterval() == before, 'create_app changed the switch interval'\n"
        "app_from_env()\n"
        "print(before, sys.getswitchinterval())\n"
    )
    env = {
        **os.environ,
        "CAFFEZOO_HOME": str(tmp_path),
        "CAFFEZOO_DATABASE_URL": f"sqlite:///{tmp_path}/z.db",
    }
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    before, after = map(float, done.stdout.split())
    assert before == 0.005 and after == 0.001


def test_a_base_url_that_would_break_headers_or_links_is_refused(cli):
    """The base URL goes into every ``Link`` header, JSON ``url`` and page link: a newline
    would make every list answer fail, a quote or space a broken link, userinfo a credential
    shown to everyone."""
    from caffezoo.server.app import check_base_url

    bad = [
        "http://zoo.org\nSet-Cookie: x=1",
        "http://zoo.org\r",
        "http://zoo.org\t",
        "https://zoo.org/ ",
        "http://a b.org",
        'http://zoo.org/"><x',
        "http://user:secret@zoo.org",
        "http://:80",
        "http://zoo.org:99999",
        "http://[::1",
        "http://zoo.org/p?",
        "http://zoo.org#",
    ]
    for url in bad:
        with pytest.raises(ValueError):
            check_base_url(url)
    for url in bad[:2] + bad[6:8]:
        r = cli("serve", "--base-url", url, "--no-check-links")
        assert r.code != 0 and "--base-url" in r.stderr and "Traceback" not in r.stderr
    assert check_base_url("HTTPS://Zoo.example.org:8443/zoo/") == "https://Zoo.example.org:8443/zoo"
    assert check_base_url("http://[::1]:8000") == "http://[::1]:8000"


def test_cached_text_is_counted_by_the_memory_it_takes_not_its_length():
    """A str of non-ASCII characters takes 2 or 4 bytes a character: layer names and readmes
    in any script must not let pictures and listed entries hold 4 times their budget."""
    from caffezoo.server.caches import size_of
    from caffezoo.server.pages import entry_size
    from caffezoo.server.pictures import Picture
    from caffezoo.server.tables import Entry

    wide = "\U0001f600" * 100_000  # 4 bytes a character in memory
    assert size_of(Picture(wide)) >= 400_000
    assert size_of(Picture(None, wide)) >= 400_000
    assert entry_size(Entry(readme=wide, name="n")) >= 400_000


def test_serves_protocols_keep_a_never_reading_clients_answer_under_the_budget(tmp_path):
    """With the protocols ``serve`` uses (writes of a step sent together), a large answer to
    a client that never reads still waits for it piece by piece: it holds its budget (a
    second one is refused), not the connection's write buffer with the whole body."""
    from caffezoo.server.protocols import connection_options

    limits = Limits(cache_bytes=4 * 1024 * 1024, inflight_bytes=BIG_FILE, send_deadline=600)
    with web_for(
        f"sqlite:///{tmp_path / 'zoo.db'}", tmp_path, limits=limits, server=connection_options()
    ) as w:
        big = publish(w.storage, "bulk", "Big Net", files=BIG_FILES)
        budget = w.app.state.large_answers
        sock = _never_reading(w.url, f"/gists/{big}")  # its head came: the answer is being sent
        try:
            assert budget.answers == 1
            assert w.http.get(f"/gists/{big}", headers={"Accept": "application/json"}).status_code == 503
        finally:
            sock.close()


def test_a_gist_deleted_and_created_again_under_its_id_is_not_answered_from_the_old_cache(tmp_path):
    """A wiki import may bring back a deleted gist under the same id: its first serial must
    not be the deleted gist's, or the cached answer of the old one is served."""
    with web_for(f"sqlite:///{tmp_path / 'zoo.db'}", tmp_path, seed=False) as w:
        w.storage.ensure_user("hana")
        gid = "ab" * 10
        w.storage.create_gist("hana", "the first", True, {"a.txt": b"first"}, gist_id=gid)
        api = {"Accept": "application/json"}
        assert w.http.get(f"/gists/{gid}", headers=api).json()["description"] == "the first"
        w.storage.delete_gist(gid, "hana")
        w.storage.create_gist("hana", "the second", True, {"a.txt": b"second"}, gist_id=gid)
        assert w.http.get(f"/gists/{gid}", headers=api).json()["description"] == "the second"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values are Linux's")
def test_a_lane_can_run_its_threads_lower_than_the_event_loop(tmp_path):
    from caffezoo.server.app import TRY_NICE, create_app

    def niceness() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    async def scenario():
        low, plain = (
            Lane("low", workers=1, queue=0, deadline=60, nice=5),
            Lane("p", workers=1, queue=0, deadline=60),
        )
        try:
            return await low.run(niceness), await plain.run(niceness), niceness()
        finally:
            low.close()
            plain.close()

    with ThreadPoolExecutor(1) as pool:
        low, plain, loop = pool.submit(asyncio.run, scenario()).result(60)
    assert (low, plain) == (min(19, loop + 5), loop)  # only the lane's own thread was reniced
    app = create_app(f"sqlite:///{tmp_path / 'zoo.db'}", limits=Limits(try_it=True))
    assert app.state.try_lane.nice == TRY_NICE > 0 and app.state.render_lane.nice == 0
