"""The web wiki under load: index, search and model page with 10,000 models; and blob
download throughput from the mirror against nginx serving the same file.

    PYTHONPATH=src python benchmarks/web.py [--models 10000] [--duration 5] [--blob-mb 256]
    PYTHONPATH=src python benchmarks/web.py --only try [--rounds 3]      # the try-it part alone

Generates the models into SQLite through the storage's own write path (so the
catalog and full-text index are built as in production), runs `caffezoo serve`
(one worker) and drives it with `wrk` at 8 concurrent connections on loopback.
Each page is also set against the same server's static stylesheet, measured in
the same run: the ratio says what rendering a page costs over serving a file.
Goals (SQLite): index and model page p99 < 50 ms, search and /compare p99 < 100 ms.

Try it (`--try`): GoogLeNet's deploy net with random weights, mirrored by the
server; one 640x480 JPEG classified through the upload form end to end, set
against `caffezoo run` on the same image (goal: within 1.5x), and the p99 of
cheap GETs alone and while four try-it requests run (goal: < 2x). Quiet and
loaded measurements alternate for ``--rounds`` rounds, each with the 1-minute
load average beside it (the machine may be shared): the goal is judged on
the median ratio.

Blob throughput: one file in the mirror's store, fetched by `wrk` over one and
over eight connections from `caffezoo serve` and from nginx (sendfile) with
the same bytes; the ratio is mirror / nginx.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))
from download import find, start_nginx  # noqa: E402
from gist_helpers import free_port  # noqa: E402
from gist_server import process, wrk  # noqa: E402

from caffezoo.server.devcluster import serve_command  # noqa: E402

WORDS = (
    "alexnet caffenet googlenet resnet vgg inception segmentation detection flowers cars faces "
    "places scenes style depth pose saliency optical flow siamese retrieval captioning fcn nin "
    "squeezenet mobilenet dense residual pascal imagenet coco cityscapes kitti voc street "
    "medical retina digits mnist cifar fine-tuned pretrained binary compact fast accurate"
).split()
LICENSES = ("MIT", "BSD-2-Clause", "Apache-2.0", "CC-BY-4.0", "non-commercial", "unrestricted")
TASKS = ("classification", "detection", "segmentation", "depth estimation", "style", "retrieval")


def deploy(width: int = 32, size: int = 64) -> str:
    """A 12-convolution net; models differ in width and input size, so their MACs differ."""
    convs = "".join(
        f'layer {{ name: "conv{i}" type: "Convolution" bottom: "{"data" if i == 0 else f"conv{i - 1}"}" '
        f'top: "conv{i}" convolution_param {{ num_output: {width} kernel_size: 3 pad: 1 }} }}\n'
        for i in range(12)
    )
    return (
        'name: "BenchNet"\nlayer { name: "data" type: "Input" top: "data" '
        f"input_param {{ shape {{ dim: 1 dim: 3 dim: {size} dim: {size} }} }} }}\n" + convs
    )


DEPLOY = deploy()
NETS = [deploy(w, s) for w in (8, 16, 32, 48, 64) for s in (32, 64, 96, 128)]  # 20 distinct nets


def vocabulary(rnd: random.Random, size: int = 5000) -> list[str]:
    """Made-up words for prose, so that, as in real readmes, most words are rare."""
    syllables = "ka lo mi ne ru ta vo si de pa gu le fo ri ma no te bi".split()
    return ["".join(rnd.choice(syllables) for _ in range(rnd.randint(2, 4))) for _ in range(size)]


def generate(database_url: str, n: int) -> list[str]:
    """``n`` public model gists with varied front matter and prose; their ids.

    Prose draws from a 5,000-word vocabulary with Zipf-like frequencies, and
    mentions the model's own tags: a search word matches some models, not all.
    """
    from caffezoo.server import Storage

    rnd = random.Random(1)
    vocab = vocabulary(rnd)
    weights = [1 / (k + 1) for k in range(len(vocab))]
    store = Storage(database_url)
    store.ensure_user("bench")
    ids = []
    t0 = time.monotonic()
    for i in range(n):
        tags = rnd.sample(WORDS, 3)
        prose = " ".join(rnd.choices(vocab, weights, k=300))
        readme = (
            f"---\nname: Bench {tags[0].title()} Net {i}\ncaffemodel: net{i}.caffemodel\n"
            f"caffemodel_url: http://127.0.0.1:9/net{i}.caffemodel\nsha1: {i:040x}\n"
            f"license: {rnd.choice(LICENSES)}\ntask: {rnd.choice(TASKS)}\ntags: [{', '.join(tags)}]\n"
            f"caffe_version: '1.0'\nsize: {rnd.randrange(1, 600) * 1_000_000}\n---\n\n"
            f"# Bench net {i}\n\nA generated model about {tags[0]} and {tags[1]}, for {tags[2]}.\n\n{prose}\n"
        )
        view = store.create_gist(
            "bench",
            f"Bench Net {i}",
            True,
            {"readme.md": readme.encode(), "deploy.prototxt": rnd.choice(NETS).encode()},
        )
        ids.append(view.id)
    store.close()
    print(f"generated {n} models in {time.monotonic() - t0:.0f} s", file=sys.stderr)
    return ids


def compare_queries(rnd: random.Random, n: int = 400) -> list[str]:
    """/compare with random sorts, filters and pages: the cache mostly misses."""
    columns = ("macs", "params", "weights", "name", "license", "task", "reported", "convertible")
    out = []
    for _ in range(n):
        q = f"/compare?sort={rnd.choice(columns)}&order={rnd.choice(['asc', 'desc'])}&page={rnd.randint(1, 100)}"
        if rnd.random() < 0.5:
            q += f"&task={rnd.choice(TASKS).replace(' ', '+')}"
        if rnd.random() < 0.3:
            q += f"&macs_max={rnd.choice(['50M', '200M', '1G'])}&convertible=1"
        out.append(q)
    return out


def make_try_model(tmp: Path, database_url: str, blobs: Path) -> tuple[Path, str]:
    """GoogLeNet's deploy net (a bundled-size net) with random weights: a model directory for
    `caffezoo run`, and the same as a public gist whose weights the server's mirror holds."""
    import hashlib

    from runtime_helpers import random_weights

    from caffezoo.caffe.caffemodel import write_caffemodel
    from caffezoo.caffe.prototxt import parse_prototxt
    from caffezoo.server import Storage

    deploy = (ROOT / "src" / "caffezoo" / "models" / "bvlc_googlenet" / "deploy.prototxt").read_text()
    model = tmp / "try_googlenet"
    model.mkdir()
    message = parse_prototxt(deploy).message
    weights = write_caffemodel(model / "net.caffemodel", message, random_weights(message, seed=1))
    data = weights.read_bytes()
    sha1 = hashlib.sha1(data).hexdigest()
    (blobs / "sha1").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(weights, blobs / "sha1" / sha1)
    (model / "deploy.prototxt").write_text(deploy)
    readme = (
        "---\nname: Try GoogLeNet\ncaffemodel: net.caffemodel\n"
        f"caffemodel_url: http://127.0.0.1:9/net.caffemodel\nsha1: {sha1}\n"
        "task: image classification\nmean: [104, 117, 123]\n---\nRandom weights.\n"
    )
    (model / "readme.md").write_text(readme)
    store = Storage(database_url)
    store.ensure_user("bench")
    gid = store.create_gist(
        "bench", "Try GoogLeNet", True, {"readme.md": readme.encode(), "deploy.prototxt": deploy.encode()}
    ).id
    store.close()
    return model, gid


def measure_try(base: str, model: Path, gid: str, image: Path, env: dict, duration: int, rounds: int) -> dict:
    """Try-it end to end (upload to rendered page) against `caffezoo run` on the same image, and
    cheap GETs' p99 alone and while four try-it requests run, alternately, ``rounds`` times."""
    import statistics
    import threading

    import httpx

    body = image.read_bytes()

    def post(client: httpx.Client) -> float:
        t0 = time.perf_counter()
        r = client.post(f"{base}/models/{gid}/try", files={"image": (image.name, body, "image/jpeg")})
        if r.status_code != 200:
            raise SystemExit(f"try-it answered {r.status_code}: {r.text[-400:]}")
        return time.perf_counter() - t0

    run = [sys.executable, "-m", "caffezoo", "run", str(model), str(image), "--json"]
    with httpx.Client(timeout=120) as client:
        post(client)  # converts and loads the net once, as `caffezoo run` converts once below
        subprocess.run(run, env=env, check=True, capture_output=True)
        tried = statistics.median(post(client) for _ in range(7))
    runs = []
    for _ in range(5):
        t0 = time.perf_counter()
        subprocess.run(run, env=env, check=True, capture_output=True)
        runs.append(time.perf_counter() - t0)
    ran = statistics.median(runs)
    done = [0]

    def busy(stop: threading.Event) -> None:
        with httpx.Client(timeout=120) as client:
            while not stop.is_set():
                post(client)
                done[0] += 1

    measured = []
    for _ in range(rounds):
        quiet = {p: wrk(base + p, 8, duration) for p in CHEAP}
        stop = threading.Event()
        threads = [threading.Thread(target=busy, args=(stop,)) for _ in range(4)]
        for t in threads:
            t.start()
        try:
            time.sleep(1)
            before = done[0]
            loaded = {p: wrk(base + p, 8, duration) for p in CHEAP}
            tries = done[0] - before
        finally:
            stop.set()
            for t in threads:
                t.join(120)
        measured.append({"quiet": quiet, "loaded": loaded, "tries": tries, "load": os.getloadavg()[0]})
    return {"try_s": tried, "run_s": ran, "rounds": measured}


CHEAP = ("/static/style.css", "/")


def report_try(tried: dict, duration: int) -> None:
    import statistics

    ratio = tried["try_s"] / tried["run_s"]
    print(
        f"try-it, GoogLeNet (random weights), 640x480 JPEG, upload to rendered page: {tried['try_s'] * 1000:.0f} ms; "
        f"`caffezoo run` on the same image: {tried['run_s'] * 1000:.0f} ms; ratio {ratio:.2f} "
        f"(goal < 1.5: {'met' if ratio < 1.5 else 'MISSED'})"
    )
    print(f"cheap GETs' p99 alone / while four try-it requests run (wrk -c8, {duration} s each), per round:")
    for i, r in enumerate(tried["rounds"], 1):
        cells = "; ".join(
            f"{p} {r['quiet'][p]['p99_ms']:.1f} / {r['loaded'][p]['p99_ms']:.1f} ms = "
            f"{r['loaded'][p]['p99_ms'] / r['quiet'][p]['p99_ms']:.2f}x"
            for p in CHEAP
        )
        print(f"  round {i}: {cells}; {r['tries']} uploads run meanwhile; load average {r['load']:.2f}")
    for p in CHEAP:
        median = statistics.median(
            r["loaded"][p]["p99_ms"] / r["quiet"][p]["p99_ms"] for r in tried["rounds"]
        )
        print(
            f"GET {p} p99 ratio, median of {len(tried['rounds'])}: {median:.2f} (goal < 2: {'met' if median < 2 else 'MISSED'})"
        )


def rotating(tmp: Path, name: str, paths: list[str]) -> str:
    """A wrk script that asks for a random one of ``paths`` each time (so caches mostly miss)."""
    script = tmp / f"{name}.lua"
    script.write_text(
        "paths = {" + ",".join(json.dumps(p) for p in paths) + "}\n"
        'request = function() return wrk.format("GET", paths[math.random(#paths)]) end\n'
    )
    return str(script)


def transfer_mb_s(url: str, connections: int, duration: int) -> float:
    out = subprocess.run(
        ["wrk", f"-t{min(connections, 2)}", f"-c{connections}", f"-d{duration}s", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    if "Non-2xx" in out:
        raise SystemExit(f"wrk saw error responses from {url}:\n{out}")
    m = re.search(r"Transfer/sec:\s+([\d.]+)([KMG]?B)", out)
    scale = {"B": 1e-6, "KB": 1e-3, "MB": 1.0, "GB": 1e3}[m.group(2)]
    return float(m.group(1)) * scale * 1.048576 if m.group(2) != "B" else float(m.group(1)) * scale


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=10_000)
    parser.add_argument("--duration", type=int, default=5, help="seconds per measurement")
    parser.add_argument("--blob-mb", type=int, default=256, help="size of the blob for the throughput test")
    parser.add_argument("--rounds", type=int, default=3, help="quiet/loaded rounds of the try-it measurement")
    parser.add_argument("--only", choices=["try"], help="measure only this part")
    args = parser.parse_args()
    for tool in ("wrk",) if args.only else ("wrk", "nginx"):
        find(tool)
    tmp = Path(tempfile.mkdtemp(prefix="caffezoo-webbench-"))
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), CAFFEZOO_HOME=str(tmp))
    database_url = f"sqlite:///{tmp / 'bench.db'}"
    results: dict[str, dict[str, float]] = {}
    try:
        ids = generate(database_url, args.models)
        blobs = tmp / "server-blobs"
        sha1 = "b" * 40
        try_model, try_gid = make_try_model(tmp, database_url, blobs)
        image = tmp / "photo.jpg"
        import numpy as np
        from PIL import Image
        from runtime_helpers import natural_image

        Image.fromarray(natural_image(np.random.default_rng(7), 480, 640)).save(image)
        for d in (tmp, blobs, blobs / "sha1"):  # nginx's workers run as another user
            d.chmod(0o755)
        with open(blobs / "sha1" / sha1, "wb") as f:
            chunk = os.urandom(1 << 20)
            for _ in range(0 if args.only else args.blob_mb):
                f.write(chunk)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        cmd = serve_command(
            port,
            "--blobs-dir",
            str(blobs),
            "--no-check-links",
            "--try",
            database_url=database_url,
            log_level="warning",
        )
        with process(cmd, f"{base}/static/style.css", env):
            if args.only == "try":
                wrk(base + "/", 8, 1)  # warm up
                tried = measure_try(base, try_model, try_gid, image, env, args.duration, args.rounds)
                print(f"{args.models:,} models, SQLite, one uvicorn worker, {os.cpu_count()} CPUs")
                report_try(tried, args.duration)
                print(json.dumps({"try": tried}))
                return
            model = ids[len(ids) // 2]
            rnd = random.Random(2)
            searches = [f"/?q={a}+{b}" for a in WORDS for b in rnd.sample(WORDS, 12)]
            pages = {
                "static css (baseline)": ("/static/style.css", None),
                "index page 1": ("/", None),
                "search, one query": ("/?q=segmentation+street", None),
                f"search, {len(searches)} queries": ("/", rotating(tmp, "search", searches)),
                "model page, one model": (f"/models/{model}", None),
                f"model page, random of {len(ids):,}": (
                    "/",
                    rotating(tmp, "models", [f"/models/{i}" for i in ids]),
                ),
                "compare, sorted by MACs": ("/compare?sort=macs&order=desc", None),
                "compare, 400 sorts/filters/pages": ("/", rotating(tmp, "compare", compare_queries(rnd))),
                "compare.json, sorted by MACs": ("/compare.json?sort=macs&order=desc", None),
            }
            for name, (path, script) in pages.items():
                wrk(base + path, 8, 1, script)  # warm up: caches, the network picture, connection pools
                results[name] = wrk(base + path, 8, args.duration, script)
            mirror = {c: transfer_mb_s(f"{base}/blobs/sha1/{sha1}", c, args.duration) for c in (1, 8)}
            tried = measure_try(base, try_model, try_gid, image, env, args.duration, args.rounds)
        nginx, nport = start_nginx(tmp, blobs)
        try:
            native = {
                c: transfer_mb_s(f"http://127.0.0.1:{nport}/sha1/{sha1}", c, args.duration) for c in (1, 8)
            }
        finally:
            nginx.terminate()
            nginx.wait(20)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(
        f"{args.models:,} models, SQLite, one uvicorn worker, wrk -c8 --latency, {args.duration} s per point, "
        f"{os.cpu_count()} CPUs"
    )
    base_rps = results["static css (baseline)"]["rps"]
    print(f"{'page':<34} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'req/s vs css':>13}")
    for name, r in results.items():
        print(
            f"{name:<34} {r['rps']:>8.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['rps'] / base_rps:>12.2f}x"
        )
    goals = {
        "index page 1": 50,
        "model page, one model": 50,
        f"model page, random of {args.models:,}": 50,
        "search, one query": 100,
        f"search, {len(WORDS) * 12} queries": 100,
        "compare, sorted by MACs": 100,
        "compare, 400 sorts/filters/pages": 100,
    }
    for name, limit in goals.items():
        p99 = results[name]["p99_ms"]
        print(f"goal {name}: p99 < {limit} ms: {'met' if p99 < limit else 'MISSED'} ({p99:.1f} ms)")
    print(f"blob download, {args.blob_mb} MiB file: MB/s (mirror / nginx)")
    for c in (1, 8):
        print(
            f"  {c} connection{'s' if c > 1 else ''}: mirror {mirror[c]:.0f}, nginx {native[c]:.0f}, "
            f"ratio {mirror[c] / native[c]:.2f}"
        )
    report_try(tried, args.duration)
    print(json.dumps({"pages": results, "mirror_mb_s": mirror, "nginx_mb_s": native, "try": tried}))


if __name__ == "__main__":
    main()
