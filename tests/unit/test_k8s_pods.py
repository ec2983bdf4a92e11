"""Pod metadata from API JSON: containers, owners (ReplicaSet -> Deployment, ...)."""

from __future__ import annotations

import copy
from collections.abc import Callable

from ebpf_tracer.k8s.pods import pod_info, resolve_owners, strip_runtime
from tests.k8s_fake import fixture

PODS = {p["metadata"]["name"]: p for p in fixture("pod_list.json")["items"]}
CART = PODS["cart-7c9d8b6f5d-x2x7q"]
DB = PODS["orders-db-0"]
FLUENT = PODS["fluent-bit-9k2xw"]
REPORT = PODS["nightly-report-29364480-8z5fq"]
APISERVER = PODS["kube-apiserver-worker-1"]
RS = fixture("replicaset_cart.json")
JOB = fixture("job_nightly_report.json")


def lookup_from(objs: dict) -> Callable:
    def lookup(kind: str, ns: str, name: str) -> list | None:
        o = objs.get((kind, ns, name))
        return None if o is None else o["metadata"].get("ownerReferences", [])
    return lookup


API = lookup_from({("ReplicaSet", "shop", "cart-7c9d8b6f5d"): RS,
                   ("Job", "batch", "nightly-report-29364480"): JOB})


def no_api(kind: str, ns: str, name: str) -> None:
    return None  # forbidden or unreachable


def test_deployment_through_its_replicaset() -> None:
    assert resolve_owners(CART, API) == {"k8s.replicaset.name": "cart-7c9d8b6f5d",
                                         "k8s.deployment.name": "cart"}


def test_deployment_from_pod_template_hash_when_api_says_nothing() -> None:
    assert resolve_owners(CART, no_api)["k8s.deployment.name"] == "cart"
    assert resolve_owners(CART, None)["k8s.deployment.name"] == "cart"


def test_bare_replicaset_is_no_deployment() -> None:
    pod = copy.deepcopy(CART)
    pod["metadata"]["labels"].pop("pod-template-hash")
    assert resolve_owners(pod, no_api) == {"k8s.replicaset.name": "cart-7c9d8b6f5d"}
    orphan = lookup_from({("ReplicaSet", "shop", "cart-7c9d8b6f5d"):
                          {"metadata": {"ownerReferences": []}}})
    assert resolve_owners(CART, orphan) == {"k8s.replicaset.name": "cart-7c9d8b6f5d"}


def test_statefulset_and_daemonset() -> None:
    assert resolve_owners(DB, API) == {"k8s.statefulset.name": "orders-db"}
    assert resolve_owners(FLUENT, API) == {"k8s.daemonset.name": "fluent-bit"}


def test_cronjob_through_its_job() -> None:
    want = {"k8s.job.name": "nightly-report-29364480", "k8s.cronjob.name": "nightly-report"}
    assert resolve_owners(REPORT, API) == want
    assert resolve_owners(REPORT, no_api) == want  # <cronjob>-<minute> naming


def test_plain_job_is_not_a_cronjob() -> None:
    pod = copy.deepcopy(REPORT)
    pod["metadata"]["ownerReferences"][0]["name"] = "migrate-db"
    assert resolve_owners(pod, no_api) == {"k8s.job.name": "migrate-db"}


def test_static_pod_owned_by_node_and_unowned_pod() -> None:
    assert resolve_owners(APISERVER, API) == {}
    pod = copy.deepcopy(DB)
    del pod["metadata"]["ownerReferences"]
    assert resolve_owners(pod, API) == {}


def test_pod_info_containers_and_attributes() -> None:
    info = pod_info(CART, API)
    assert info is not None
    sidecar = "84ad0790d137467a41a21d7fb29b4973f68d4d00e67390454d587da8e5cc292b"
    assert info.containers[sidecar] == "istio-proxy"
    assert len(info.containers) == 3  # init container too
    attrs = info.attributes(sidecar)
    assert attrs == {
        "k8s.pod.name": "cart-7c9d8b6f5d-x2x7q",
        "k8s.pod.uid": "5e3f1a2b-8c4d-4e6f-9a0b-1c2d3e4f5a6b",
        "k8s.namespace.name": "shop",
        "k8s.node.name": "worker-1",
        "k8s.replicaset.name": "cart-7c9d8b6f5d",
        "k8s.deployment.name": "cart",
        "k8s.container.name": "istio-proxy",
    }
    assert info.workload_name() == "cart"
    assert info.cgroup_uid == info.uid


def test_resource_annotations_only_keep_the_otel_prefix() -> None:
    info = pod_info(DB)
    assert info.resource_annotations() == {"service.name": "orders-database",
                                           "deployment.environment.name": "prod"}
    assert pod_info(CART).annotations == {}  # kubectl's restartedAt is not kept


def test_mirror_pod_is_known_by_its_config_hash() -> None:
    info = pod_info(APISERVER)
    assert info.uid == "3f0a9e1c-2b4d-4c5e-8f6a-7b8c9d0e1f2a"
    assert info.cgroup_uid == "9b1e2c8d4f3a5b6c7d8e9f0a1b2c3d4e"
    assert info.workload_name() == "worker-1"  # the Node: its controller


def test_malformed_pods_are_skipped() -> None:
    assert pod_info({}) is None
    assert pod_info({"metadata": {"name": "x"}}) is None


def test_signature_ignores_status_noise() -> None:
    a = pod_info(CART)
    pod = copy.deepcopy(CART)
    pod["metadata"]["resourceVersion"] = "99999"
    pod["status"]["conditions"][0]["lastProbeTime"] = "2026-10-30T10:00:00Z"
    assert pod_info(pod).signature() == a.signature()
    pod["metadata"]["labels"]["app.kubernetes.io/name"] = "basket"
    assert pod_info(pod).signature() != a.signature()


def test_strip_runtime() -> None:
    assert strip_runtime("containerd://abc") == "abc"
    assert strip_runtime("cri-o://abc") == "abc"
    assert strip_runtime("abc") == "abc"
