"""Service identity: precedence of service.name / service.namespace, carried
attributes, container and host attributes, and cache invalidation when pod
metadata arrives after the process was first seen."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ebpf_tracer.k8s import PodStore
from ebpf_tracer.k8s.pods import pod_info
from ebpf_tracer.resources import (
    ProcessInfo,
    ResourceCache,
    build_resource,
    host_attributes,
    parse_resource_attributes,
    read_process,
)
from tests.k8s_fake import fixture

HOST = {"host.name": "worker-1", "host.id": "3d1219c7c4c5404aaa1f6d2a48adfda4", "os.type": "linux"}
PODS = {p["metadata"]["name"]: p for p in fixture("pod_list.json")["items"]}
CART = pod_info(PODS["cart-7c9d8b6f5d-x2x7q"])
DB = pod_info(PODS["orders-db-0"])
FLUENT = pod_info(PODS["fluent-bit-9k2xw"])
CART_CID = "d2c9e4f7a1b3c5d7e9f1a3b5c7d9e1f3a5b7c9d1e3f5a7b9c1d3e5f7a9b1c3d5"


def proc(env_name: str | None = None, env_attrs: dict | None = None,
         pod_uid: str | None = None, cid: str | None = None) -> ProcessInfo:
    return ProcessInfo(
        pid=4242,
        attrs={"process.pid": 4242, "process.executable.name": "node",
               "process.executable.path": "/usr/local/bin/node"},
        env_service_name=env_name, env_attrs=env_attrs or {},
        container_id=cid, container_runtime="containerd" if cid else None, pod_uid=pod_uid,
    )


def name_of(info: ProcessInfo, pod=None) -> str:
    return build_resource(info, HOST, pod).get("service.name")


# -- service.name precedence ----------------------------------------------------

def test_1_own_otel_service_name_beats_everything() -> None:
    assert name_of(proc("checkout", {"service.name": "other"}), DB) == "checkout"


def test_1b_service_name_in_otel_resource_attributes() -> None:
    info = read_process_with_env({"OTEL_RESOURCE_ATTRIBUTES": "service.name=billing,team=pay"})
    assert info.env_service_name == "billing"
    assert name_of(info, DB) == "billing"


def test_2_annotation_beats_label_and_workload() -> None:
    assert DB.labels.get("app.kubernetes.io/name") is None
    assert name_of(proc(), DB) == "orders-database"


def test_3_app_kubernetes_io_name_label_beats_workload() -> None:
    assert name_of(proc(), CART) == "cart"  # label says cart; deployment is cart too
    relabelled = pod_info({**PODS["cart-7c9d8b6f5d-x2x7q"], "metadata": {
        **PODS["cart-7c9d8b6f5d-x2x7q"]["metadata"],
        "labels": {"app.kubernetes.io/name": "basket", "pod-template-hash": "7c9d8b6f5d"}}})
    assert name_of(proc(), relabelled) == "basket"


def test_4_workload_then_pod_name() -> None:
    assert name_of(proc(), FLUENT) == "fluent-bit"  # DaemonSet, no name label
    bare = pod_info({"metadata": {"name": "debug-shell", "uid": "u1", "namespace": "default"},
                     "spec": {"nodeName": "worker-1"}})
    assert name_of(proc(), bare) == "debug-shell"


def test_5_executable_name_outside_kubernetes() -> None:
    assert name_of(proc()) == "node"


def test_service_namespace_precedence() -> None:
    ns = "service.namespace"
    assert build_resource(proc(env_attrs={ns: "team-a"}), HOST, CART).get(ns) == "team-a"
    assert build_resource(proc(), HOST, CART).get(ns) == "shop"  # app.kubernetes.io/part-of
    assert build_resource(proc(), HOST, FLUENT).get(ns) == "logging"  # the k8s namespace
    assert build_resource(proc(), HOST).get(ns) is None  # outside k8s: only if told


def test_other_resource_attributes_are_carried_but_not_over_observed_ones() -> None:
    info = proc(env_attrs={"deployment.environment.name": "prod", "team": "payments",
                           "process.pid": "1", "telemetry.sdk.name": "fake"})
    r = build_resource(info, HOST).as_dict()
    assert r["deployment.environment.name"] == "prod" and r["team"] == "payments"
    assert r["process.pid"] == 4242
    assert r["telemetry.sdk.name"] == "ebpf-tracer"


def test_annotation_attributes_and_version() -> None:
    r = build_resource(proc(), HOST, DB).as_dict()
    assert r["deployment.environment.name"] == "prod"
    assert build_resource(proc(), HOST, CART).get("service.version") == "1.4.2"


def test_k8s_and_container_attributes() -> None:
    r = build_resource(proc(pod_uid=CART.uid, cid=CART_CID), HOST, CART,
                       {"k8s.node.uid": "n-1"}).as_dict()
    assert r["container.id"] == CART_CID
    assert r["container.runtime"] == "containerd"
    assert r["k8s.container.name"] == "cart"
    assert r["k8s.pod.name"] == "cart-7c9d8b6f5d-x2x7q"
    assert r["k8s.pod.uid"] == CART.uid
    assert r["k8s.namespace.name"] == "shop"
    assert r["k8s.deployment.name"] == "cart"
    assert r["k8s.node.name"] == "worker-1" and r["k8s.node.uid"] == "n-1"
    assert r["host.name"] == "worker-1" and r["os.type"] == "linux"


def test_resource_attributes_parsing() -> None:
    assert parse_resource_attributes("a=1, b = x%20y ,broken,=v,c=") == {
        "a": "1", "b": "x y", "c": ""}


def test_host_attributes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EBPF_TRACER_HOST_NAME", raising=False)
    monkeypatch.setenv("NODE_NAME", "node-a")
    h = host_attributes()
    assert h["host.name"] == "node-a" and h["os.type"] == "linux"
    if os.path.exists("/etc/machine-id"):
        assert h["host.id"] == open("/etc/machine-id").read().strip()
    monkeypatch.delenv("NODE_NAME")
    assert host_attributes()["host.name"] == os.uname().nodename


# -- real processes ---------------------------------------------------------------

def read_process_with_env(env: dict[str, str]) -> ProcessInfo:
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"],
                         env={**os.environ, **env})
    try:
        time.sleep(0.05)
        return read_process(p.pid)
    finally:
        p.kill()
        p.wait()


def test_read_process_from_proc() -> None:
    info = read_process_with_env({"OTEL_SERVICE_NAME": "late-svc"})
    assert info.env_service_name == "late-svc"
    assert info.exe_name.startswith("python")
    assert info.exe_path == os.path.realpath(sys.executable)


def test_exited_process_is_named_by_comm() -> None:
    info = read_process(2**22 + 4321, comm="curl")
    assert info.exe_name == "curl"
    assert name_of(info) == "curl"


# -- the cache --------------------------------------------------------------------

class FakeCache(ResourceCache):
    """A ResourceCache whose /proc reads are scripted and counted."""

    def __init__(self, infos: dict[int, ProcessInfo], **kw) -> None:
        super().__init__(host=HOST, reader=self._fake_read, **kw)
        self.infos = infos
        self.reads = 0

    def _fake_read(self, pid: int, comm: str | None) -> ProcessInfo:
        self.reads += 1
        return self.infos[pid]


def test_pod_metadata_arriving_later_rebuilds_the_resource() -> None:
    store = PodStore()
    cache = FakeCache({7: proc(pod_uid=CART.uid, cid=CART_CID)}, pods=store)
    told: list[int] = []
    cache.listeners.append(told.append)
    early = cache.get(7)
    assert early.get("service.name") == "node" and early.get("k8s.pod.name") is None
    assert early.get("container.id") == CART_CID
    assert cache.get(7) is early  # cached
    store.put(CART)  # the watcher thread learns the pod
    late = cache.get(7)
    assert late.get("service.name") == "cart"
    assert late.get("k8s.pod.name") == "cart-7c9d8b6f5d-x2x7q"
    assert early.get("service.name") == "node"  # the old Resource is untouched
    assert cache.reads == 1  # /proc was not read again
    assert told == [7] and cache.rebuilt == 1
    store.put(CART)  # unchanged: nothing rebuilt
    assert cache.get(7) is late


def test_pod_known_by_container_id_only() -> None:
    store = PodStore()
    store.put(CART)
    cache = FakeCache({8: proc(cid=CART_CID)}, pods=store)
    assert cache.get(8).get("k8s.pod.name") == "cart-7c9d8b6f5d-x2x7q"


def test_forget_and_bound() -> None:
    infos = {pid: proc() for pid in range(100)}
    cache = FakeCache(infos, max_entries=10)
    for pid in range(100):
        cache.get(pid)
    assert len(cache) == 10
    cache.forget(99)
    cache.forget(12345)  # unknown: fine
    assert len(cache) == 9


def test_forget_drops_the_pod_index() -> None:
    store = PodStore()
    cache = FakeCache({1: proc(pod_uid="u-1"), 2: proc(pod_uid="u-1")}, pods=store)
    cache.get(1)
    cache.get(2)
    cache.forget(1)
    cache.forget(2)
    assert cache._by_pod == {}


def test_static_pod_found_by_its_config_hash() -> None:
    from ebpf_tracer.cgroup import parse_cgroup

    text = Path(__file__).resolve().parents[1] / "fixtures" / "cgroup" / "v2_k8s_static_pod.txt"
    cg = parse_cgroup(text.read_text())
    store = PodStore()
    store.put(pod_info(PODS["kube-apiserver-worker-1"]))
    cache = FakeCache({3: proc(pod_uid=cg.pod_uid, cid=cg.container_id)}, pods=store)
    r = cache.get(3)
    assert r.get("k8s.pod.name") == "kube-apiserver-worker-1"
    assert r.get("k8s.pod.uid") == "3f0a9e1c-2b4d-4c5e-8f6a-7b8c9d0e1f2a"  # the API's uid
    assert r.get("k8s.container.name") == "kube-apiserver"
