"""Pod metadata as the tracer needs it, built from the API server's JSON.

Pure functions: no I/O except through the `lookup` callable handed to
`resolve_owners`, so owner resolution is testable without a cluster.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# Annotations with this prefix are resource attributes, per the OpenTelemetry
# Kubernetes conventions (e.g. resource.opentelemetry.io/service.name).
RESOURCE_ANNOTATION = "resource.opentelemetry.io/"
MIRROR_ANNOTATION = "kubernetes.io/config.mirror"

# kind -> attribute, most specific workload first: service.name takes the first.
WORKLOAD_ATTRS = (
    ("Deployment", "k8s.deployment.name"),
    ("StatefulSet", "k8s.statefulset.name"),
    ("DaemonSet", "k8s.daemonset.name"),
    ("CronJob", "k8s.cronjob.name"),
    ("Job", "k8s.job.name"),
    ("ReplicaSet", "k8s.replicaset.name"),
    ("ReplicationController", "k8s.replicationcontroller.name"),
)
_ATTR_OF_KIND = dict(WORKLOAD_ATTRS)

# The CronJob controller names a Job `<cronjob>-<scheduled minute since epoch>`.
_CRONJOB_JOB = re.compile(r"^(?P<cron>.+)-(?P<ts>\d{8,10})$")

# (kind, namespace, name) -> that object's ownerReferences, or None if unknown
# (not found, forbidden, API down). Provided by the watcher; cached there.
OwnerLookup = Callable[[str, str, str], list[dict[str, Any]] | None]


@dataclass(frozen=True, slots=True)
class PodInfo:
    """What one pod contributes to the resources of its processes."""

    uid: str
    name: str
    namespace: str
    node_name: str = ""
    labels: dict[str, str] = field(default_factory=dict, compare=False, hash=False)
    annotations: dict[str, str] = field(default_factory=dict, compare=False, hash=False)
    # container id (runtime prefix stripped) -> container name
    containers: dict[str, str] = field(default_factory=dict, compare=False, hash=False)
    owners: dict[str, str] = field(default_factory=dict, compare=False, hash=False)
    owner_name: str = ""  # the direct controller's name, whatever its kind
    # Static pods: the kubelet names cgroups after the config hash, which the
    # API's mirror pod carries in an annotation (its own uid differs).
    config_hash: str = ""

    @property
    def cgroup_uid(self) -> str:
        """The uid as it appears in the pod's cgroup path."""
        return self.config_hash or self.uid

    def signature(self) -> tuple:
        """Everything a resource is built from: equal signatures, equal resources."""
        return (self.uid, self.name, self.namespace, self.node_name,
                tuple(sorted(self.labels.items())), tuple(sorted(self.annotations.items())),
                tuple(sorted(self.containers.items())), tuple(sorted(self.owners.items())),
                self.owner_name, self.config_hash)

    def workload_name(self) -> str:
        """The owning workload (Deployment via ReplicaSet, ...), else the pod name."""
        for _, attr in WORKLOAD_ATTRS:
            if attr in self.owners:
                return self.owners[attr]
        return self.owner_name or self.name

    def attributes(self, container_id: str | None = None) -> dict[str, str]:
        """k8s.* resource attributes for a process in this pod."""
        out = {
            "k8s.pod.name": self.name,
            "k8s.pod.uid": self.uid,
            "k8s.namespace.name": self.namespace,
        }
        if self.node_name:
            out["k8s.node.name"] = self.node_name
        out.update(self.owners)
        if container_id and container_id in self.containers:
            out["k8s.container.name"] = self.containers[container_id]
        return out

    def resource_annotations(self) -> dict[str, str]:
        n = len(RESOURCE_ANNOTATION)
        return {k[n:]: v for k, v in self.annotations.items()
                if k.startswith(RESOURCE_ANNOTATION) and len(k) > n}


def strip_runtime(container_id: str) -> str:
    """`containerd://abc...` (as in containerStatuses) -> `abc...` (as in cgroups)."""
    return container_id.partition("://")[2] or container_id


def controller_ref(meta: dict[str, Any]) -> dict[str, Any] | None:
    refs = meta.get("ownerReferences") or []
    for r in refs:
        if r.get("controller"):
            return r
    return refs[0] if refs else None


def resolve_owners(pod: dict[str, Any], lookup: OwnerLookup | None = None) -> dict[str, str]:
    """k8s.<workload>.name attributes of a pod, walking up one level where needed.

    ReplicaSet -> Deployment and Job -> CronJob ask `lookup` for the
    intermediate object's owner; without an answer the names the controllers
    generate are recognised instead (`<deployment>-<pod-template-hash>`,
    `<cronjob>-<minute>`), as the OpenTelemetry collector does.
    """
    meta = pod.get("metadata") or {}
    ns = meta.get("namespace", "")
    ref = controller_ref(meta)
    if not ref:
        return {}
    kind, name = ref.get("kind", ""), ref.get("name", "")
    out: dict[str, str] = {}
    attr = _ATTR_OF_KIND.get(kind)
    if attr:
        out[attr] = name
    if kind == "ReplicaSet":
        parent = _parent(lookup, "ReplicaSet", ns, name)
        if parent is not None:
            if parent[0] == "Deployment":
                out["k8s.deployment.name"] = parent[1]
        else:
            h = (meta.get("labels") or {}).get("pod-template-hash")
            if h and name.endswith("-" + h) and len(name) > len(h) + 1:
                out["k8s.deployment.name"] = name[: -len(h) - 1]
    elif kind == "Job":
        parent = _parent(lookup, "Job", ns, name)
        if parent is not None:
            if parent[0] == "CronJob":
                out["k8s.cronjob.name"] = parent[1]
        else:
            m = _CRONJOB_JOB.match(name)
            if m:
                out["k8s.cronjob.name"] = m.group("cron")
    return out


def _parent(lookup: OwnerLookup | None, kind: str, ns: str, name: str) -> tuple[str, str] | None:
    """(kind, name) of the object's controller; ("", "") if it has none; None if unknown."""
    if lookup is None:
        return None
    refs = lookup(kind, ns, name)
    if refs is None:
        return None
    ref = controller_ref({"ownerReferences": refs})
    return (ref.get("kind", ""), ref.get("name", "")) if ref else ("", "")


def pod_info(pod: dict[str, Any], lookup: OwnerLookup | None = None) -> PodInfo | None:
    """A PodInfo from one item of a pod list or watch event; None if malformed."""
    meta = pod.get("metadata") or {}
    uid = meta.get("uid")
    if not uid or not meta.get("name"):
        return None
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    containers: dict[str, str] = {}
    for key in ("initContainerStatuses", "containerStatuses", "ephemeralContainerStatuses"):
        for cs in status.get(key) or []:
            cid = cs.get("containerID")
            if cid and cs.get("name"):
                containers[strip_runtime(cid)] = cs["name"]
    ref = controller_ref(meta)
    annotations = meta.get("annotations") or {}
    return PodInfo(
        uid=uid,
        name=meta["name"],
        namespace=meta.get("namespace", ""),
        node_name=spec.get("nodeName", ""),
        labels=dict(meta.get("labels") or {}),
        annotations={k: v for k, v in annotations.items()
                     if k.startswith(RESOURCE_ANNOTATION)},
        containers=containers,
        owners=resolve_owners(pod, lookup),
        owner_name=(ref or {}).get("name", ""),
        config_hash=str(annotations.get(MIRROR_ANNOTATION) or ""),
    )


def cgroup_uid_of(pod: dict[str, Any]) -> str | None:
    """The key a pod's processes know it by (see PodInfo.cgroup_uid)."""
    meta = pod.get("metadata") or {}
    return (meta.get("annotations") or {}).get(MIRROR_ANNOTATION) or meta.get("uid")
