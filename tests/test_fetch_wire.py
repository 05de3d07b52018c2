"""Plain http:// downloads read from the socket without httpx (caffezoo.fetch.wire)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from download_helpers import blob, sha1
from fault_server import FaultServer

DATA = blob(300_000, seed=5)


def test_a_plain_http_download_never_imports_httpx(tmp_path):
    with FaultServer() as srv:
        srv.route("/w", DATA)
        script = textwrap.dedent(f"""
            import sys
            from caffezoo.fetch import fetch_blob
            got = fetch_blob([{srv.url("/w")!r}], sha1={sha1(DATA)!r}, blobs_dir={str(tmp_path)!r})
            print(got.status, "httpx" in sys.modules)
        """)
        env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
        out = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == ["downloaded", "False"]
        assert srv.requests_for("/w")[0].headers["accept-encoding"] == "identity"
