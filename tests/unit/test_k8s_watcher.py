"""The pod watcher against a local stand-in for the API server (list + watch)."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ebpf_tracer.k8s import ApiClient, ApiConfig, PodStore, PodWatcher
from ebpf_tracer.k8s.api import ApiError
from tests.k8s_fake import FakeApiServer, fixture, status

POD_LIST = fixture("pod_list.json")
CART_UID = "5e3f1a2b-8c4d-4e6f-9a0b-1c2d3e4f5a6b"
DB_UID = "a1b2c3d4-e5f6-4788-99aa-bbccddeeff00"
MIRROR_KEY = "9b1e2c8d4f3a5b6c7d8e9f0a1b2c3d4e"


def eventually(cond: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError("condition never became true")


def new_pod(name: str, uid: str, rv: str, node: str = "worker-1", **labels: str) -> dict:
    pod = copy.deepcopy(POD_LIST["items"][2])  # the DaemonSet pod's shape
    pod["metadata"].update(name=name, uid=uid, resourceVersion=rv,
                           labels={**pod["metadata"]["labels"], **labels})
    pod["spec"]["nodeName"] = node
    return pod


@pytest.fixture
def api(tmp_path: Path) -> Iterator[FakeApiServer]:
    other_node = new_pod("elsewhere", "ffffffff-0000-4000-8000-000000000000", "1", "worker-2")
    with FakeApiServer(POD_LIST["items"] + [other_node], resource_version="48320") as srv:
        srv.objects["/apis/apps/v1/namespaces/shop/replicasets/cart-7c9d8b6f5d"] = \
            fixture("replicaset_cart.json")
        srv.objects["/apis/batch/v1/namespaces/batch/jobs/nightly-report-29364480"] = \
            fixture("status_forbidden.json")
        srv.objects["/api/v1/nodes/worker-1"] = fixture("node.json")
        yield srv


@pytest.fixture
def watcher(api: FakeApiServer, tmp_path: Path) -> Iterator[PodWatcher]:
    token = tmp_path / "token"
    token.write_text("test-token\n")
    client = ApiClient(ApiConfig(api.url, token_file=str(token), timeout_s=5))
    w = PodWatcher(client, "worker-1", PodStore(), deleted_grace_s=0.0, max_backoff_s=0.2)
    changed: list[str] = []
    w.store.listeners.append(changed.append)
    w.changed = changed  # type: ignore[attr-defined]
    w.start()
    assert w.synced.wait(10), "never listed"
    yield w
    w.stop()


def test_lists_pods_of_this_node_with_pagination(watcher: PodWatcher, api: FakeApiServer):
    store = watcher.store
    assert len(store) == 5  # the pod on worker-2 is not ours
    cart = store.pod(CART_UID)
    assert cart.owners["k8s.deployment.name"] == "cart"  # via the ReplicaSet GET
    report = store.pod("77aa88bb-99cc-4ddd-8eee-ff0011223344")
    assert report.owners["k8s.cronjob.name"] == "nightly-report"  # 403: from the name
    assert store.pod(MIRROR_KEY).name == "kube-apiserver-worker-1"
    assert store.node == {"k8s.node.uid": "6a1f0c2e-3b4d-4e5f-8a9b-0c1d2e3f4a5b"}
    lists = [q for p, q in api.requests if p == "/api/v1/pods" and not q.get("watch")]
    assert len(lists) == 3  # 5 pods, pages of 2
    assert all(q["fieldSelector"] == ["spec.nodeName=worker-1"] for q in lists)
    eventually(lambda: api.watch_params())
    w = api.watch_params()[0]
    assert w["resourceVersion"] == ["48320"]
    assert w["allowWatchBookmarks"] == ["true"]
    assert w["fieldSelector"] == ["spec.nodeName=worker-1"]


def test_added_modified_deleted(watcher: PodWatcher, api: FakeApiServer):
    eventually(lambda: api.watch_params())
    uid = "12121212-3434-4565-8787-909090909090"
    api.push("ADDED", new_pod("web-1", uid, "48400", app="web"))
    eventually(lambda: watcher.store.pod(uid))
    assert watcher.store.pod(uid).labels["app"] == "web"
    assert watcher.resource_version == "48400"

    watcher.changed.clear()
    same = new_pod("web-1", uid, "48401", app="web")
    same["status"]["phase"] = "Running"
    api.push("MODIFIED", same)
    relabelled = new_pod("web-1", uid, "48402", app="web2")
    api.push("MODIFIED", relabelled)
    eventually(lambda: watcher.store.pod(uid).labels["app"] == "web2")
    assert watcher.changed == [uid]  # the no-op MODIFIED told nobody

    api.push("DELETED", relabelled)
    eventually(lambda: watcher.store.pod(uid) is None)
    assert watcher.changed[-1] == uid


def test_deleted_pod_kept_for_a_grace_period(api: FakeApiServer, tmp_path: Path):
    token = tmp_path / "token"
    token.write_text("test-token")
    w = PodWatcher(ApiClient(ApiConfig(api.url, token_file=str(token))), "worker-1",
                   deleted_grace_s=60.0)
    w.start()
    try:
        assert w.synced.wait(10)
        eventually(lambda: api.watch_params())
        api.push("DELETED", POD_LIST["items"][1])
        api.push("BOOKMARK", {"kind": "Pod", "apiVersion": "v1",
                              "metadata": {"resourceVersion": "48999"}})
        eventually(lambda: w.resource_version == "48999")
        assert w.store.pod(DB_UID) is not None  # still there for exiting processes
        w.store.purge(now=time.monotonic() + 61)
        assert w.store.pod(DB_UID) is None
    finally:
        w.stop()


def test_reconnects_from_last_version_after_a_drop(watcher: PodWatcher, api: FakeApiServer):
    eventually(lambda: api.watch_params())
    api.push("ADDED", new_pod("a", "aaaaaaaa-0000-4000-8000-000000000001", "48500"))
    eventually(lambda: watcher.resource_version == "48500")
    api.drop()
    eventually(lambda: len(api.watch_params()) >= 2)
    assert api.watch_params()[-1]["resourceVersion"] == ["48500"]
    assert api.list_count() == 1  # resumed, not relisted
    api.push("ADDED", new_pod("b", "bbbbbbbb-0000-4000-8000-000000000002", "48501"))
    eventually(lambda: watcher.store.pod("bbbbbbbb-0000-4000-8000-000000000002"))
    api.end()  # the server's timeoutSeconds: watch again, same version
    eventually(lambda: len(api.watch_params()) >= 3)
    assert api.watch_params()[-1]["resourceVersion"] == ["48501"]


def test_relists_when_version_expired(watcher: PodWatcher, api: FakeApiServer):
    eventually(lambda: api.watch_params())
    # While "disconnected", a pod went away and the version expired.
    gone = api.pods.pop(0)
    api.expire("48320")
    api.resource_version = "49000"
    api.drop()
    eventually(lambda: api.list_count() >= 2)
    eventually(lambda: watcher.resource_version == "49000")
    assert watcher.store.pod(gone["metadata"]["uid"]) is None  # grace 0 in this fixture
    assert watcher.store.pod(DB_UID) is not None
    eventually(lambda: api.watch_params()[-1]["resourceVersion"] == ["49000"])


def test_error_event_410_in_stream_relists(watcher: PodWatcher, api: FakeApiServer):
    eventually(lambda: api.watch_params())
    api.push_raw(fixture("watch_error_gone.json"))
    eventually(lambda: api.list_count() >= 2)


def test_unreachable_api_retries_without_blocking(tmp_path: Path):
    with FakeApiServer([]) as srv:
        url = srv.url
    # The server is gone: the watcher keeps retrying on its own thread.
    w = PodWatcher(ApiClient(ApiConfig(url, timeout_s=0.5)), "worker-1", max_backoff_s=0.1)
    t0 = time.monotonic()
    w.start()
    assert time.monotonic() - t0 < 0.5
    eventually(lambda: w.errors >= 2)
    assert w.store.pod(CART_UID) is None
    w.stop()


def test_unauthorized_is_an_api_error(api: FakeApiServer):
    client = ApiClient(ApiConfig(api.url))
    with pytest.raises(ApiError) as e:
        client.get("/api/v1/pods")
    assert e.value.status == 401


def test_status_body_message(api: FakeApiServer, tmp_path: Path):
    api.objects["/api/v1/nodes/x"] = status(403, "Forbidden", "nodes \"x\" is forbidden")
    token = tmp_path / "token"
    token.write_text("test-token")
    client = ApiClient(ApiConfig(api.url, token_file=str(token)))
    with pytest.raises(ApiError, match="forbidden") as e:
        client.get("/api/v1/nodes/x")
    assert e.value.status == 403


def test_uses_the_store_it_is_given_even_when_empty() -> None:
    store = PodStore()  # empty, hence falsy: must not be swapped for a new one
    w = PodWatcher(ApiClient(ApiConfig("http://127.0.0.1:9")), "worker-1", store)
    assert w.store is store
