"""Pod identity end to end: the real agent in `run --k8s` mode, a real server
process placed in a pod-shaped cgroup, and the API server stand-in from the
unit tests serving that pod (no cluster is reachable from here: this is the
closest to a node we can get)."""

from __future__ import annotations

import copy
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.e2e.conftest import curl
from tests.e2e.test_run_mode import start_server
from tests.k8s_fake import FakeApiServer, fixture

CGROOT = Path("/sys/fs/cgroup")


@contextmanager
def pod_cgroup(pod_uid: str, container_id: str) -> Iterator[Path]:
    """A kubelet-style cgroupfs path, kubepods/besteffort/pod<uid>/<container id>."""
    if (CGROOT / "cgroup.controllers").exists():
        base = CGROOT  # cgroup v2
    else:
        base = next((CGROOT / c for c in ("freezer", "pids", "cpuacct")
                     if (CGROOT / c / "cgroup.procs").exists()), None)
        if base is None:
            pytest.skip("no writable cgroup hierarchy to place a process in")
    leaf = base / "kubepods" / "besteffort" / f"pod{pod_uid}" / container_id
    leaf.mkdir(parents=True)
    try:
        yield leaf
    finally:
        for pid in (leaf / "cgroup.procs").read_text().split():
            try:
                (base / "cgroup.procs").write_text(pid)
            except OSError:
                pass
        for d in (leaf, leaf.parent):
            for _ in range(50):
                try:
                    d.rmdir()
                    break
                except OSError:
                    time.sleep(0.1)
        for d in (base / "kubepods" / "besteffort", base / "kubepods"):
            try:
                d.rmdir()
            except OSError:
                pass  # another test's pod is still there


def spans_of(receiver, pid: int) -> list:
    return sorted((s for s in receiver.spans if s.resource.get("process.pid") == pid
                   and s.kind == 2), key=lambda s: s.start_time_unix_nano)


def test_spans_get_pod_identity_once_the_pod_is_known(start_agent, receiver, procs, otlp_env):
    pod_uid, cid = str(uuid.uuid4()), os.urandom(32).hex()
    pod = copy.deepcopy(fixture("pod_list.json")["items"][0])  # the Deployment pod "cart"
    pod["metadata"]["uid"] = pod_uid
    pod["status"]["containerStatuses"][0]["containerID"] = f"containerd://{cid}"
    with FakeApiServer([], resource_version="100", token=None) as api, \
            pod_cgroup(pod_uid, cid) as leaf:
        api.objects["/apis/apps/v1/namespaces/shop/replicasets/cart-7c9d8b6f5d"] = \
            fixture("replicaset_cart.json")
        api.objects["/api/v1/nodes/worker-1"] = fixture("node.json")
        srv, port = start_server(procs)
        (leaf / "cgroup.procs").write_text(str(srv.pid))
        assert f"pod{pod_uid}/{cid}" in Path(f"/proc/{srv.pid}/cgroup").read_text()
        env = dict(otlp_env, EBPF_TRACER_K8S_API=api.url, NODE_NAME="worker-1")
        env.pop("KUBERNETES_SERVICE_HOST", None)
        agent = start_agent("run", "--k8s", "--port", str(port), env=env)

        # 1. The pod is not known yet: the span has the process's attributes.
        assert curl(f"http://127.0.0.1:{port}/hello.txt").stdout.strip() == "200"
        deadline = time.monotonic() + 20
        while not spans_of(receiver, srv.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        (early,) = spans_of(receiver, srv.pid)
        assert early.resource["container.id"] == cid
        assert "k8s.pod.name" not in early.resource
        assert early.resource["service.name"].startswith("python")

        # 2. The watch delivers the pod: later spans carry it.
        api.push("ADDED", pod)
        deadline = time.monotonic() + 20
        late = None
        while late is None and time.monotonic() < deadline:
            curl(f"http://127.0.0.1:{port}/hello.txt")
            time.sleep(0.3)
            late = next((s for s in spans_of(receiver, srv.pid)
                         if "k8s.pod.name" in s.resource), None)
        assert late is not None, agent.stderr()[-3000:]
        r = late.resource
        assert r["service.name"] == "cart"  # the app.kubernetes.io/name label
        assert r["service.namespace"] == "shop"  # app.kubernetes.io/part-of
        assert r["k8s.pod.name"] == "cart-7c9d8b6f5d-x2x7q"
        assert r["k8s.pod.uid"] == pod_uid
        assert r["k8s.namespace.name"] == "shop"
        assert r["k8s.deployment.name"] == "cart"
        assert r["k8s.container.name"] == "cart"
        assert r["k8s.node.name"] == "worker-1"
        assert r["k8s.node.uid"] == "6a1f0c2e-3b4d-4e5f-8a9b-0c1d2e3f4a5b"
        assert r["host.name"] == "worker-1"
        assert r["container.id"] == cid
        rc, _, err = agent.stop()
        assert rc == 0, err
        watches = api.watch_params()
        assert watches and watches[0]["fieldSelector"] == ["spec.nodeName=worker-1"]
    assert early.resource["service.name"] != "cart"  # spans already sent were not rewritten
    assert shutil.which("curl")
