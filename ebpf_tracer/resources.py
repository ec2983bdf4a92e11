"""Who produced a span: one Resource per traced process.

Everything about a process is read from /proc once, while it lives
(`ProcessInfo`); its Resource is that plus the host, its container and, in
Kubernetes, its pod's metadata. Pod metadata arrives asynchronously from the
watcher thread: a process seen before its pod is known gets a Resource with
the process attributes, and the next lookup after the pod arrives rebuilds it
(Resources are immutable; the cache entry is what changes).

service.name, first found wins (the order Beyla users expect):
  1. the process's OTEL_SERVICE_NAME, or service.name in its OTEL_RESOURCE_ATTRIBUTES
  2. pod annotation resource.opentelemetry.io/service.name
  3. pod label app.kubernetes.io/name
  4. the owning workload (Deployment, StatefulSet, DaemonSet, CronJob, Job), else the pod
  5. the executable name
"""

from __future__ import annotations

import os
import socket
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import unquote

from . import __version__
from .cgroup import read_cgroup
from .k8s.pods import PodInfo
from .model import AttrValue, Resource

SDK_ATTRS: dict[str, AttrValue] = {
    "telemetry.sdk.name": "ebpf-tracer",
    "telemetry.sdk.version": __version__,
    "telemetry.sdk.language": "python",
}

# What we observe about a process beats what its environment claims.
_OBSERVED_PREFIXES = ("process.", "telemetry.sdk.")


def parse_resource_attributes(value: str) -> dict[str, str]:
    """OTEL_RESOURCE_ATTRIBUTES: `k=v,k2=v2`, values percent-encoded."""
    out: dict[str, str] = {}
    for item in value.split(","):
        key, sep, val = item.partition("=")
        key = key.strip()
        if sep and key:
            out[key] = unquote(val.strip())
    return out


def read_environ(pid: int) -> dict[str, str]:
    """The process's OTEL_* variables (the rest of its environment is not kept)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            raw = f.read()
    except OSError:
        return {}
    env: dict[str, str] = {}
    for item in raw.split(b"\0"):
        k, sep, v = item.partition(b"=")
        if sep and k.startswith(b"OTEL_"):
            env[k.decode("utf-8", "replace")] = v.decode("utf-8", "replace")
    return env


def process_attributes(pid: int) -> dict[str, AttrValue]:
    attrs: dict[str, AttrValue] = {"process.pid": pid}
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
        attrs["process.executable.path"] = exe.removesuffix(" (deleted)")
        attrs["process.executable.name"] = os.path.basename(attrs["process.executable.path"])
    except OSError:
        pass
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = [a.decode("utf-8", "replace") for a in f.read().split(b"\0") if a]
        if args:
            attrs["process.command_line"] = " ".join(args)
            attrs.setdefault("process.executable.name", os.path.basename(args[0]))
    except OSError:
        pass
    if "process.executable.name" not in attrs:
        try:
            with open(f"/proc/{pid}/comm") as f:
                attrs["process.executable.name"] = f.read().strip()
        except OSError:
            pass
    return attrs


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    """What /proc says about one process, read once."""

    pid: int
    attrs: dict[str, AttrValue] = field(default_factory=dict)
    env_service_name: str | None = None
    env_attrs: dict[str, str] = field(default_factory=dict)
    container_id: str | None = None
    container_runtime: str | None = None
    pod_uid: str | None = None

    @property
    def exe_path(self) -> str:
        return str(self.attrs.get("process.executable.path") or "")

    @property
    def exe_name(self) -> str:
        return str(self.attrs.get("process.executable.name") or "")


def read_process(pid: int, comm: str | None = None) -> ProcessInfo:
    """`comm` (from the kernel) names a process that exited before we looked."""
    attrs = process_attributes(pid)
    if comm and "process.executable.name" not in attrs:
        attrs["process.executable.name"] = comm
    env = read_environ(pid)
    own = parse_resource_attributes(env.get("OTEL_RESOURCE_ATTRIBUTES", ""))
    cg = read_cgroup(pid)
    return ProcessInfo(
        pid=pid,
        attrs=attrs,
        env_service_name=env.get("OTEL_SERVICE_NAME") or own.get("service.name") or None,
        env_attrs=own,
        container_id=cg.container_id,
        container_runtime=cg.runtime,
        pod_uid=cg.pod_uid,
    )


def _first_line(paths: tuple[str, ...]) -> str | None:
    for p in paths:
        try:
            with open(p) as f:
                v = f.read().strip()
        except OSError:
            continue
        if v:
            return v
    return None


def host_attributes() -> dict[str, AttrValue]:
    """host.name, host.id, os.type of the node.

    In a pod the UTS hostname is the pod's, so the node name from the
    downward API (NODE_NAME) is preferred; host.id is the node's machine-id,
    read through /proc/1/root when the agent shares the host's PID namespace.
    """
    attrs: dict[str, AttrValue] = {"os.type": "linux"}
    attrs["host.name"] = (os.environ.get("EBPF_TRACER_HOST_NAME")
                          or os.environ.get("NODE_NAME") or socket.gethostname())
    mid = _first_line(("/proc/1/root/etc/machine-id", "/etc/machine-id",
                       "/var/lib/dbus/machine-id"))
    if mid:
        attrs["host.id"] = mid
    return attrs


def _pick(*candidates: str | None) -> str | None:
    for c in candidates:
        if c:
            return c
    return None


def build_resource(info: ProcessInfo, host: dict[str, AttrValue],
                   pod: PodInfo | None = None, node: dict[str, str] | None = None) -> Resource:
    """Combine process, container, pod and host attributes; see the module doc."""
    merged: dict[str, AttrValue] = dict(host)
    if info.container_id:
        merged["container.id"] = info.container_id
        if info.container_runtime:
            merged["container.runtime"] = info.container_runtime
    annotations: dict[str, str] = {}
    if pod is not None:
        merged.update(pod.attributes(info.container_id))
        if node:
            merged.update(node)
        annotations = pod.resource_annotations()
        merged.update(annotations)
    for k, v in info.env_attrs.items():
        if not k.startswith(_OBSERVED_PREFIXES):
            merged[k] = v
    merged.update(info.attrs)
    merged.update(SDK_ATTRS)

    labels = pod.labels if pod is not None else {}
    merged["service.name"] = _pick(
        info.env_service_name,
        annotations.get("service.name"),
        labels.get("app.kubernetes.io/name"),
        pod.workload_name() if pod is not None else None,
        info.exe_name,
    ) or f"pid-{info.pid}"
    namespace = _pick(
        info.env_attrs.get("service.namespace"),
        annotations.get("service.namespace"),
        labels.get("app.kubernetes.io/part-of"),
        pod.namespace if pod is not None else None,
    )
    if namespace:
        merged["service.namespace"] = namespace
    version = _pick(info.env_attrs.get("service.version"), annotations.get("service.version"),
                    labels.get("app.kubernetes.io/version"))
    if version:
        merged["service.version"] = version
    return Resource.from_dict(merged)


class PodSource(Protocol):
    """What the resource cache needs from the pod watcher's store."""

    listeners: list[Callable[[str], None]]
    node: dict[str, str]  # k8s.node.* attributes of this node

    def pod(self, uid: str | None) -> PodInfo | None: ...

    def pod_of_container(self, container_id: str | None) -> PodInfo | None: ...


def process_resource(pid: int, host_name: str | None = None, comm: str | None = None) -> Resource:
    """One process's Resource from /proc alone (no cache, no pod metadata)."""
    host = host_attributes()
    if host_name:
        host["host.name"] = host_name
    return build_resource(read_process(pid, comm), host)


class _Entry:
    __slots__ = ("info", "resource")

    def __init__(self, info: ProcessInfo) -> None:
        self.info = info
        self.resource: Resource | None = None


class ResourceCache:
    """pid -> ProcessInfo and Resource, read once per process; bounded.

    `forget(pid)` on exec and exit keeps it to the living processes; the
    bound caps it when exits are missed. Pod metadata changes arrive from the
    watcher thread through a deque (appends are atomic), and are applied on
    the capture thread at the next lookup, so lookups take no lock.
    """

    def __init__(self, max_entries: int = 16384, pods: PodSource | None = None,
                 host: dict[str, AttrValue] | None = None,
                 reader: Callable[[int, str | None], ProcessInfo] = read_process) -> None:
        self._entries: dict[int, _Entry] = {}
        self._by_pod: dict[str, set[int]] = {}
        self._max = max_entries
        self._host = host if host is not None else host_attributes()
        self._pods = pods
        self._read = reader
        self._changed: deque[str] = deque()
        self.listeners: list[Callable[[int], None]] = []  # told of pids whose pod changed
        self.rebuilt = 0
        if pods is not None:
            pods.listeners.append(self._changed.append)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, pid: int) -> bool:
        return pid in self._entries

    def info(self, pid: int, comm: str | None = None) -> ProcessInfo:
        if self._changed:
            self._apply_pod_changes()
        e = self._entries.get(pid)
        if e is None:
            e = self._add(pid, comm)
        return e.info

    def get(self, pid: int, comm: str | None = None) -> Resource:
        if self._changed:
            self._apply_pod_changes()
        e = self._entries.get(pid)
        if e is None:
            e = self._add(pid, comm)
        if e.resource is None:
            pod = self.pod_of(e.info)
            node = getattr(self._pods, "node", None) if pod is not None else None
            e.resource = build_resource(e.info, self._host, pod, node)
        return e.resource

    def refresh(self) -> None:
        """Apply pod metadata changes the watcher reported (cheap when none)."""
        if self._changed:
            self._apply_pod_changes()

    def pod_of(self, info: ProcessInfo) -> PodInfo | None:
        if self._pods is None or not (info.pod_uid or info.container_id):
            return None
        return self._pods.pod(info.pod_uid) or self._pods.pod_of_container(info.container_id)

    def forget(self, pid: int) -> None:
        e = self._entries.pop(pid, None)
        if e is not None and e.info.pod_uid:
            pids = self._by_pod.get(e.info.pod_uid)
            if pids is not None:
                pids.discard(pid)
                if not pids:
                    del self._by_pod[e.info.pod_uid]

    def _add(self, pid: int, comm: str | None) -> _Entry:
        if len(self._entries) >= self._max:
            self.forget(next(iter(self._entries)))  # the oldest: likely exited unseen
        e = self._entries[pid] = _Entry(self._read(pid, comm))
        if e.info.pod_uid:
            self._by_pod.setdefault(e.info.pod_uid, set()).add(pid)
        return e

    def _apply_pod_changes(self) -> None:
        while self._changed:
            uid = self._changed.popleft()
            for pid in list(self._by_pod.get(uid, ())):
                e = self._entries.get(pid)
                if e is not None and e.resource is not None:
                    e.resource = None
                    self.rebuilt += 1
                for cb in self.listeners:
                    cb(pid)
