"""Try it with the weights in a real S3 store (Ceph's RADOS Gateway): copied to a bounded local
cache with their SHA-1 checked, then run as from a local store."""

from __future__ import annotations

import hashlib
import json
import os
import time

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


# A second process using the same directories, as a second `--workers` process would: it reads
# commands ("copy SHA1", "hold SHA1", "release") and answers each with "ok"; ends with its input.
OTHER_PROCESS = """
import sys
from contextlib import ExitStack
from caffezoo.server.blobstore import open_store
from caffezoo.server.tryfiles import TryFiles

root, onnx, budget, url = sys.argv[1:5]
files, store, held = TryFiles(root, onnx, int(budget)), open_store(url), ExitStack()
print("ok", flush=True)
for line in sys.stdin:
    verb, *args = line.split()
    if verb == "copy":
        files.weights(store, args[0])
    elif verb == "hold":
        held.enter_context(files.hold(args[0]))
    elif verb == "release":
        held.close()
    else:
        break
    print("ok", flush=True)
"""


@pytest.mark.parametrize("s3_zoo", [lambda size: int(3.5 * size)], indirect=True)
def test_processes_on_one_machine_share_one_budget(s3_zoo, tmp_path, s3_env):
    """What is on disk is the budget: a process started while the cache was empty still makes
    room for its copy by removing what another process added since, and never removes what
    another process holds."""
    import subprocess
    import sys
    from pathlib import Path

    from caffezoo.server.tryfiles import TryFiles

    zoo = s3_zoo
    files = zoo.app.state.tryit.files
    src = Path(__file__).resolve().parent.parent / "src"
    other = subprocess.Popen(
        [sys.executable, "-c", OTHER_PROCESS, str(files.copies.root), str(files.onnx_dir)]
        + [str(files.max_bytes), s3_env],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(src)},
    )

    def tell(command: str) -> None:
        if command:
            other.stdin.write(command + "\n")
            other.stdin.flush()
        assert other.stdout.readline().strip() == "ok", f"the other process failed at {command!r}"

    def on_disk() -> int:
        found = [*zoo.copies.glob("*"), *files.onnx_dir.glob("*.onnx")]
        return sum(p.stat().st_size for p in found if p.is_file())

    try:
        tell("")  # started, with nothing on disk yet
        assert post(zoo, "fcn_a", photo(tmp_path / "p.png", 30, 20)).status_code == 200
        tell(f"copy {zoo.sha1['fcn_b']}")  # room for b: a's files, which it never saw made, go
        assert (zoo.copies / zoo.sha1["fcn_b"]).is_file() and not (zoo.copies / zoo.sha1["fcn_a"]).exists()
        assert on_disk() <= files.max_bytes
        tell(f"hold {zoo.sha1['fcn_b']}")
        TryFiles(files.copies.root, files.onnx_dir, 0)  # no room at all, but b is held elsewhere
        assert (zoo.copies / zoo.sha1["fcn_b"]).is_file()
        tell("release")
        TryFiles(files.copies.root, files.onnx_dir, 0)
        assert not (zoo.copies / zoo.sha1["fcn_b"]).exists() and on_disk() == 0
        other.stdin.close()
        assert other.wait(30) == 0
    finally:
        other.kill()
        other.wait(30)


def test_a_full_disk_while_copying_is_a_503_and_leaves_nothing(s3_env, postgres_url, tmp_path):
    """A `caffezoo serve --try` whose disk is full (a file-size limit stands in for it, as in the
    downloads' tests) answers a visitor 503 with Retry-After, not a 500; no partial copy is left
    and the copy's reservation is given back."""
    import resource
    import signal
    import subprocess
    import time
    from pathlib import Path

    import httpx
    from gist_helpers import free_port
    from web_helpers import fresh_postgres

    from caffezoo.caffe.builder import NetBuilder
    from caffezoo.server import Storage
    from caffezoo.server.blobstore import open_store
    from caffezoo.server.devcluster import serve_command
    from caffezoo.server.tryfiles import TryFiles

    n = NetBuilder("wide_fcn")  # weights of ~60 KB: more than the limit below, unlike the prototxt
    x = n.Input("data", shape=dict(dim=[1, 3, 48, 64]))
    x = n.Convolution("conv1", x, num_output=256, kernel_size=4, stride=4)
    n.Convolution("score", x, num_output=4, kernel_size=1)
    (tmp_path / "models").mkdir()
    d, data, keys = model_dir(tmp_path / "models", "wide", n, 2, task="semantic segmentation")
    limit = 16 * 1024
    assert len(data) > 2 * limit
    database_url = fresh_postgres(postgres_url)  # its writes are the database server's, not the limit's
    store = Storage(database_url)
    try:
        files = {f: (d / f).read_text() for f in ("labels.txt", "deploy.prototxt")}
        gid = publish(store, "tess", "wide", files=files, **keys)
    finally:
        store.close()
    blobs = open_store(s3_env)
    blobs.put(keys["sha1"], [data])
    blobs.close()

    def small_disk() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    home, port = tmp_path / "home", free_port()
    command = serve_command(
        port, "--try", "--no-check-links", "--blobs-url", s3_env, database_url=database_url
    )
    src = Path(__file__).resolve().parent.parent / "src"
    env = {**os.environ, "CAFFEZOO_HOME": str(home), "PYTHONPATH": str(src)}
    server = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, preexec_fn=small_disk
    )
    try:
        url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 60
        while True:
            assert server.poll() is None and time.monotonic() < deadline, "the server did not start"
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        image = photo(tmp_path / "p.png", 30, 20).read_bytes()
        r = httpx.post(f"{url}/models/{gid}/try", files={"image": ("p.png", image, "image/png")}, timeout=60)
        assert r.status_code == 503 and r.headers["retry-after"].isdigit(), (r.status_code, r.text[-800:])
        assert "disk" in r.text and str(home) not in r.text
        weights = home / "cache" / "server" / "try" / "weights"
        assert not list(weights.glob(".partial/*.part")) and not (weights / "sha1" / keys["sha1"]).exists()
        assert TryFiles(weights, tmp_path / "onnx", 1 << 30).bytes == 0  # its reservation is back
    finally:
        server.send_signal(signal.SIGTERM)
        out, _ = server.communicate(timeout=30)
    assert b"Traceback" not in out, out.decode(errors="replace")[-3000:]


# A copier that stalls half-way through its copy (a slow remote store), to be killed there.
STALLED_COPIER = """
import sys
from caffezoo.server.blobstore import LocalStore
from caffezoo.server.tryfiles import TryFiles

root, onnx, source, sha1 = sys.argv[1:5]


class Stalling(LocalStore):
    def local_path(self, sha1):
        return None  # copied, as a remote store's blobs are

    def get(self, sha1, start=0, stop=None):
        data = self.path(sha1).read_bytes()
        yield data[: 1 << 20]  # a whole write batch: on disk in the partial file
        print("copying", flush=True)
        sys.stdin.readline()  # until it is killed
        yield data[1 << 20 :]


TryFiles(root, onnx, 1 << 30).weights(Stalling(source), sha1)
"""


def test_what_a_copier_killed_mid_way_leaves_is_removed(tmp_path):
    """kill -9 in the middle of a copy: its reservation ends with it, and its partial file,
    which no budget counts, is removed rather than left on disk for ever."""
    import subprocess
    import sys
    from pathlib import Path

    from caffezoo.server.blobstore import LocalStore
    from caffezoo.server.tryfiles import TryFiles

    data = os.urandom(3 << 20)
    sha1 = hashlib.sha1(data).hexdigest()
    LocalStore(tmp_path / "source").put(sha1, [data])
    root, onnx = tmp_path / "weights", tmp_path / "onnx"
    src = Path(__file__).resolve().parent.parent / "src"
    copier = subprocess.Popen(
        [sys.executable, "-c", STALLED_COPIER, str(root), str(onnx), str(tmp_path / "source"), sha1],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(src)},
    )
    try:
        assert copier.stdout.readline().strip() == "copying"
        parts = list(root.glob(".partial/*.part"))
        assert len(parts) == 1 and parts[0].stat().st_size == 1 << 20
        assert TryFiles(root, onnx, 1 << 30).bytes == 2 * len(data)  # reserved: the copy and its conversion
        copier.kill()
        copier.wait(30)
        assert TryFiles(root, onnx, 1 << 30).bytes == 0
        assert not list(root.glob(".partial/*")), list(root.glob(".partial/*"))
    finally:
        copier.kill()
        copier.wait(30)


def flock_waiters(path) -> int:
    """How many flock()s wait for ``path`` (the kernel's /proc/locks lists them after "->")."""
    inode = os.stat(path).st_ino
    with open("/proc/locks") as f:
        return sum(1 for line in f if "-> FLOCK" in line and f":{inode} " in line)


def test_a_hold_taken_while_another_process_evicts_gets_weights_that_exist(s3_store, tmp_path):
    """Another process's eviction has found the weights unheld and is removing them when a
    request takes its hold: the request waits for that eviction to end, then copies the
    weights again, instead of being handed a path that is about to vanish."""
    import fcntl
    import threading

    from caffezoo.server.tryfiles import TryFiles, _locked_by_another

    data = os.urandom(100_000)
    sha1 = hashlib.sha1(data).hexdigest()
    s3_store.put(sha1, [data])
    files = TryFiles(tmp_path / "weights", tmp_path / "onnx", 1 << 30)
    copy = files.weights(s3_store, sha1)
    budget = tmp_path / "weights" / ".budget.lock"
    evictor = os.open(budget, os.O_RDWR)  # the other process, in _make_room: the budget is its
    fcntl.flock(evictor, fcntl.LOCK_EX)
    try:
        # ...and it has looked: nobody holds sha1. Now a request starts to use it.
        assert not _locked_by_another(tmp_path / "weights" / ".held" / sha1)
        given: list = []

        def request() -> None:
            with files.hold(sha1):
                path = files.weights(s3_store, sha1)
                given.append(path.is_file())

        user = threading.Thread(target=request)
        user.start()
        deadline = time.monotonic() + 60
        while not flock_waiters(budget):  # the request waits for the budget somewhere
            assert time.monotonic() < deadline and user.is_alive(), "the request never waited"
            time.sleep(0.01)
        copy.unlink()  # the eviction goes on, as it decided before the hold
    finally:
        os.close(evictor)
    user.join(60)
    assert given == [True]
