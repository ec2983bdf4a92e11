"""Pods on this node, kept current by a list-then-watch loop on its own thread.

The capture loop only ever reads the store (plain dict lookups, no lock, no
I/O). The thread lists pods with `spec.nodeName=<node>`, watches from the
list's resourceVersion, resumes after disconnects from the last version it
saw, and lists again when the server says that version is gone (410).
Listeners hear the uid of each pod whose metadata changed, so cached
resources can be rebuilt.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from .api import ApiClient, ApiError
from .pods import PodInfo, cgroup_uid_of, pod_info

log = logging.getLogger(__name__)

_OWNER_PATHS = {
    "ReplicaSet": "/apis/apps/v1/namespaces/{ns}/replicasets/{name}",
    "Job": "/apis/batch/v1/namespaces/{ns}/jobs/{name}",
}


class _Gone(Exception):
    """The watch's resourceVersion is too old: list again."""


class PodStore:
    """cgroup uid -> PodInfo, written by the watcher thread, read by anyone."""

    def __init__(self, max_pods: int = 10000) -> None:
        self._pods: dict[str, PodInfo] = {}
        self._by_container: dict[str, str] = {}
        self._deleted: OrderedDict[str, float] = OrderedDict()  # uid -> when
        self._max = max_pods
        self.node: dict[str, str] = {}  # k8s.node.* attributes, once known
        self._lock = threading.Lock()  # writers only
        self.listeners: list[Callable[[str], None]] = []

    def __len__(self) -> int:
        return len(self._pods)

    def pod(self, uid: str | None) -> PodInfo | None:
        return self._pods.get(uid) if uid else None

    def pod_of_container(self, container_id: str | None) -> PodInfo | None:
        if not container_id:
            return None
        return self.pod(self._by_container.get(container_id))

    def uids(self) -> set[str]:
        return set(self._pods)

    def put(self, info: PodInfo) -> bool:
        """Insert or replace; True (and listeners told) if anything changed."""
        key = info.cgroup_uid
        with self._lock:
            old = self._pods.get(key)
            self._deleted.pop(key, None)
            if old is not None and old.signature() == info.signature():
                return False
            if old is None and len(self._pods) >= self._max:
                return False
            if old is not None:
                for cid in old.containers:
                    self._by_container.pop(cid, None)
            for cid in info.containers:
                self._by_container[cid] = key
            self._pods[key] = info
        self._notify(key)
        return True

    def delete(self, uid: str, grace_s: float) -> None:
        """Forget a deleted pod after `grace_s`: its processes may still be exiting."""
        with self._lock:
            if uid in self._pods:
                self._deleted[uid] = time.monotonic() + grace_s
        self.purge()

    def purge(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        gone = []
        with self._lock:
            while self._deleted:
                uid, when = next(iter(self._deleted.items()))
                if when > now:
                    break
                del self._deleted[uid]
                info = self._pods.pop(uid, None)
                if info:
                    for cid in info.containers:
                        self._by_container.pop(cid, None)
                    gone.append(uid)
        for uid in gone:
            self._notify(uid)

    def _notify(self, uid: str) -> None:
        for cb in self.listeners:
            try:
                cb(uid)
            except Exception:  # noqa: BLE001 - a listener must not stop the watch
                log.debug("pod listener failed", exc_info=True)


class PodWatcher:
    """Runs the list/watch loop for pods on `node_name` on a daemon thread."""

    def __init__(self, client: ApiClient, node_name: str, store: PodStore | None = None, *,
                 watch_timeout_s: int = 300, deleted_grace_s: float = 30.0,
                 max_backoff_s: float = 30.0) -> None:
        self.client = client
        self.node_name = node_name
        self.store = store if store is not None else PodStore()  # an empty store is falsy
        self.watch_timeout_s = watch_timeout_s
        self.deleted_grace_s = deleted_grace_s
        self.max_backoff_s = max_backoff_s
        self._owner_cache: OrderedDict[tuple[str, str, str], list | None] = OrderedDict()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: Any = None
        self.resource_version: str | None = None
        self.lists = 0
        self.watches = 0
        self.errors = 0
        self.synced = threading.Event()  # set after the first successful list

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="k8s-pod-watcher", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 2.0) -> None:
        self._stop.set()
        conn = self._conn
        if conn is not None and conn.sock is not None:
            try:  # unblock a readline() waiting for the next event
                import socket

                conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread:
            self._thread.join(timeout_s)

    def _run(self) -> None:
        self._fetch_node()
        backoff = 0.5
        while not self._stop.is_set():
            try:
                if self.resource_version is None:
                    self._list()
                self._watch()
                backoff = 0.5
            except _Gone:
                log.debug("pod watch: resourceVersion expired, listing again")
                self.resource_version = None
            except Exception as e:  # noqa: BLE001 - API down, network, bad JSON
                if self._stop.is_set():
                    break
                self.errors += 1
                level = logging.WARNING if self.errors in (1, 10, 100) else logging.DEBUG
                log.log(level, "pod watch failed (%s); retrying in %.1fs", e, backoff)
                self._stop.wait(backoff * random.uniform(0.8, 1.2))
                backoff = min(backoff * 2, self.max_backoff_s)
            self.store.purge()

    # -- API -------------------------------------------------------------------

    def _selector(self) -> str:
        return f"spec.nodeName={self.node_name}"

    def _fetch_node(self) -> None:
        try:
            node = self.client.get(f"/api/v1/nodes/{self.node_name}")
        except Exception as e:  # noqa: BLE001 - optional: only adds k8s.node.uid
            log.debug("node %s: %s", self.node_name, e)
            return
        uid = (node.get("metadata") or {}).get("uid")
        if uid:
            self.store.node = {"k8s.node.uid": uid}

    def _list(self) -> None:
        seen: set[str] = set()
        cont: str | None = None
        while True:
            page = self.client.get("/api/v1/pods", {
                "fieldSelector": self._selector(), "limit": 500, "continue": cont})
            for item in page.get("items") or []:
                info = pod_info(item, self._owner_lookup)
                if info:
                    seen.add(info.cgroup_uid)
                    self.store.put(info)
            meta = page.get("metadata") or {}
            cont = meta.get("continue")
            if not cont:
                rv = meta.get("resourceVersion")
                break
        for uid in self.store.uids() - seen:  # deleted while we were not watching
            self.store.delete(uid, self.deleted_grace_s)
        self.resource_version = rv
        self.lists += 1
        self.synced.set()
        log.debug("pods on %s: %d (resourceVersion %s)", self.node_name, len(seen), rv)

    def _watch(self) -> None:
        self.watches += 1
        params = {
            "fieldSelector": self._selector(),
            "resourceVersion": self.resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": self.watch_timeout_s,
        }
        try:
            events = self.client.watch("/api/v1/pods", params, self.watch_timeout_s + 30,
                                       on_open=self._opened)
            for ev in events:
                if self._stop.is_set():
                    return
                self._on_event(ev)
        except ApiError as e:
            if e.status == 410:
                raise _Gone() from None
            raise
        finally:
            self._conn = None

    def _opened(self, conn: Any) -> None:
        self._conn = conn

    def _on_event(self, ev: dict[str, Any]) -> None:
        kind = ev.get("type")
        obj = ev.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise _Gone()
            raise ApiError(int(obj.get("code") or 500), str(obj.get("message", "")))
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        if kind in ("ADDED", "MODIFIED"):
            info = pod_info(obj, self._owner_lookup)
            if info:
                self.store.put(info)
        elif kind == "DELETED":
            uid = cgroup_uid_of(obj)
            if uid:
                self.store.delete(uid, self.deleted_grace_s)
        if rv:  # BOOKMARK carries only this
            self.resource_version = rv

    def _owner_lookup(self, kind: str, ns: str, name: str) -> list | None:
        """ownerReferences of a ReplicaSet or Job, cached (they never change)."""
        key = (kind, ns, name)
        if key in self._owner_cache:
            self._owner_cache.move_to_end(key)
            return self._owner_cache[key]
        path = _OWNER_PATHS.get(kind)
        if path is None:
            return None
        try:
            obj = self.client.get(path.format(ns=ns, name=name))
            refs: list | None = (obj.get("metadata") or {}).get("ownerReferences") or []
        except ApiError as e:
            # Forbidden (RBAC without this kind) or gone: fall back to names.
            log.debug("owner of %s %s/%s: %s", kind, ns, name, e)
            refs = None
        except Exception as e:  # noqa: BLE001 - network trouble: don't cache
            log.debug("owner of %s %s/%s: %s", kind, ns, name, e)
            return None
        self._owner_cache[key] = refs
        if len(self._owner_cache) > 4096:
            self._owner_cache.popitem(last=False)
        return refs
