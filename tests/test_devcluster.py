"""`make cluster`'s engine: PostgreSQL, Ceph, two replicas and nginx started on 127.0.0.1,
weights uploaded and fetched through the load balancer, and a stop that ends exactly the
processes it started."""

from __future__ import annotations

import hashlib
import os
import subprocess

import httpx
import pytest
from web_helpers import publish

from caffezoo.server import Storage
from caffezoo.server.devcluster import _alive, start_cluster, stop_cluster, stop_pids

pytestmark = pytest.mark.postgresql  # it starts its own PostgreSQL: left out of make test-fast


def test_cluster_starts_serves_weights_through_nginx_and_stops_exactly_itself(tmp_path):
    bystander = subprocess.Popen(["sleep", "300"])  # a process the cluster must not touch
    state = start_cluster(tmp_path / "cluster", replicas=2, seed=False)
    try:
        pids = [int(open(p).read().split()[0]) for p in state["pid_files"]]
        assert len(pids) == 7  # nginx, 2 replicas, gateway, OSD, monitor, PostgreSQL
        data = os.urandom(1 << 20)
        sha1 = hashlib.sha1(data).hexdigest()
        store = Storage(state["database_url"])
        token = store.create_token("owen")
        publish(
            store, "owen", "Net", caffemodel="m.caffemodel", caffemodel_url="http://127.0.0.1:9/x", sha1=sha1
        )
        store.close()
        lb = state["url"]
        r = httpx.put(f"{lb}/blobs/sha1/{sha1}", content=data, headers={"Authorization": f"token {token}"})
        assert r.status_code == 201, r.text
        assert httpx.get(f"{lb}/blobs/sha1/{sha1}").content == data
        for replica in state["replicas"]:  # every replica serves what one of them stored...
            r = httpx.get(f"{replica}/blobs/sha1/{sha1}")
            # ... by default leaving the body to nginx, which fetches it from the store
            assert r.status_code == 200 and r.headers["x-accel-redirect"].startswith("/_s3/"), r.headers
        r = httpx.get(f"{lb}/blobs/sha1/{sha1}", headers={"Range": "bytes=100-199"})
        assert r.status_code == 206 and r.content == data[100:200]
        models = httpx.get(f"{state['replicas'][0]}/api/models").json()["models"]
        assert models[0]["html_url"].startswith(lb + "/")  # links name the balancer, not a replica
    finally:
        stopped = stop_cluster(tmp_path / "cluster")
    assert len(stopped) == 7
    assert not any(_alive(pid, "") for pid in pids)
    assert bystander.poll() is None  # still running
    assert stop_cluster(tmp_path / "cluster") == []  # nothing left to stop
    # A pid file whose pid now runs another program is not obeyed.
    (tmp_path / "stale.pid").write_text(f"{bystander.pid} radosgw\n")
    assert stop_pids([tmp_path / "stale.pid"]) == [] and bystander.poll() is None
    bystander.kill()
    bystander.wait()


def test_a_killed_nginx_master_leaves_no_worker_behind(tmp_path):
    """nginx's workers outlive a master that was SIGKILLed (not stopped): still serving its port,
    for ever. stop_pids ends them too, from the master's process group."""
    import os
    import signal
    import subprocess

    from download_helpers import wait_for

    from caffezoo.server.devcluster import Nginx

    lb = Nginx(tmp_path / "nginx", ["http://127.0.0.1:9"], tied=True).start()
    master = int(lb.pid_files[0].read_text().split()[0])
    workers = [
        int(p)
        for p in subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True).stdout.split()
    ]
    assert workers and all(_alive(w, "nginx") for w in workers)
    os.kill(master, signal.SIGKILL)
    wait_for(lambda: not _alive(master, "nginx"), 10, "the master gone")
    stop_pids(lb.pid_files)
    wait_for(lambda: not any(_alive(w, "nginx") for w in workers), 10, "its workers gone")


def test_a_reused_pid_does_not_lead_stop_pids_into_another_programs_group(tmp_path):
    """The recorded nginx is long gone and its pid now leads another program's process group,
    in which something's argv names nginx: nothing of that group is ours (a group id is not
    handed out again while the group has members), so none of it is killed."""
    from download_helpers import wait_for

    leader = subprocess.Popen(["sleep", "300"], process_group=0)
    member = subprocess.Popen(
        ["nginx: worker process", "300"], executable="sleep", process_group=leader.pid
    )  # what the old nginx's worker would look like
    try:
        (tmp_path / "nginx.pid").write_text(f"{leader.pid} nginx\n")
        # (its argv shows a moment after Popen returns: vfork resumes us mid-exec)
        wait_for(lambda: _alive(member.pid, "nginx"), 10, "the member's argv")
        assert os.getpgid(member.pid) == leader.pid
        assert stop_pids([tmp_path / "nginx.pid"]) == []
        assert leader.poll() is None and member.poll() is None
    finally:
        for p in (member, leader):
            p.kill()
            p.wait()


def test_a_killed_replica_with_workers_leaves_none_of_them_behind(tmp_path):
    """`caffezoo serve --workers 2` runs its workers as `python -c ...` (no "caffezoo" in their
    argv): a replica that stop_pids SIGKILLs itself must not leave them serving its port."""
    from download_helpers import wait_for

    from caffezoo.server.devcluster import Replica

    args = [
        "--workers",
        "2",
        "--database-url",
        f"sqlite:///{tmp_path}/zoo.db",
        "--blobs-dir",
        str(tmp_path / "b"),
    ]
    r = Replica(tmp_path, "w", args=args, env={"CAFFEZOO_HOME": str(tmp_path / "home")}, tied=True).start()
    master = r.proc.pid
    workers = [
        int(p)
        for p in subprocess.run(["pgrep", "-g", str(master)], capture_output=True, text=True).stdout.split()
    ]
    workers = [w for w in workers if w != master]
    assert len(workers) >= 2
    r.kill()
    r.proc.wait()
    wait_for(lambda: not any(_alive(w, "") for w in workers), 10, "its workers gone")


def test_a_second_nginx_in_a_folder_whose_nginx_runs_is_refused(tmp_path):
    """Two daemons in one folder share a pid file: the second's overwrote the first's, which
    was then never stopped (its worker ran on after the test run)."""
    from caffezoo.server.devcluster import EngineError, Nginx

    first = Nginx(tmp_path / "nginx", ["http://127.0.0.1:9"], tied=True).start()
    try:
        with pytest.raises(EngineError, match="nginx.pid"):
            Nginx(tmp_path / "nginx", ["http://127.0.0.1:9"], tied=True).start()
        master = int(first.pid_files[0].read_text().split()[0])
    finally:
        stop_pids(first.pid_files)
    assert not _alive(master, "nginx")  # the pid file still named the first one
