"""Container and pod identity from /proc/PID/cgroup.

One parser for every layout we meet on nodes: cgroup v1 (a line per
hierarchy) and v2 (the single ``0::`` line), with the systemd driver
(``kubepods-burstable-pod<uid_with_underscores>.slice/cri-containerd-<id>.scope``,
``crio-<id>.scope``, ``docker-<id>.scope``, ``libpod-<id>.scope``) or the
cgroupfs driver (``/kubepods/burstable/pod<uid>/<id>``, ``/docker/<id>``).
Container ids are 64 hex digits everywhere; the deepest one wins because
nested runtimes (kind, Docker-in-Docker) put the node's container first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# A container id as a whole path component, bare or wrapped by a runtime's
# systemd scope name. conmon (CRI-O's monitor) shares the id but is not the
# container, so its scope is matched and then ignored.
_CONTAINER = re.compile(
    r"(?:^|/)(?P<prefix>(?:[a-z][a-z0-9]*-)*?)(?P<id>[0-9a-f]{64})(?:\.scope)?(?=/|$)"
)
# A pod uid (dashes, or underscores under the systemd driver); a static pod's
# cgroup carries its 32-hex config hash instead, which its API mirror pod
# shows in the kubernetes.io/config.mirror annotation.
_POD = re.compile(
    r"pod(?P<uid>[0-9a-f]{8}([-_]?)[0-9a-f]{4}\2[0-9a-f]{4}\2[0-9a-f]{4}\2[0-9a-f]{12})"
    r"(?:\.slice)?(?=/|$)"
)

_RUNTIMES = {
    "cri-containerd-": "containerd",
    "containerd-": "containerd",
    "crio-": "cri-o",
    "docker-": "docker",
    "libpod-": "podman",
    "": None,
}


@dataclass(frozen=True, slots=True)
class CgroupInfo:
    container_id: str | None = None
    pod_uid: str | None = None
    runtime: str | None = None  # from the scope prefix when the path says; else None
    path: str = ""  # the cgroup path the ids came from (v2 line if any)


def cgroup_paths(text: str) -> list[str]:
    """The path of each `hierarchy-ID:controllers:path` line, v2 first."""
    v2: list[str] = []
    v1: list[str] = []
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        (v2 if parts[0] == "0" and parts[1] == "" else v1).append(parts[2])
    return v2 + v1


def parse_path(path: str) -> CgroupInfo:
    cid = runtime = None
    for m in _CONTAINER.finditer(path):
        prefix = m.group("prefix")
        if "conmon" in prefix:
            continue
        cid = m.group("id")
        runtime = _RUNTIMES.get(prefix)
        if runtime is None and path[: m.start()].endswith("/docker"):
            runtime = "docker"  # cgroupfs driver: /docker/<id>
    pod = None
    for m in _POD.finditer(path):
        pod = m.group("uid").replace("_", "-")
    return CgroupInfo(cid, pod, runtime, path)


def parse_cgroup(text: str) -> CgroupInfo:
    """Container id and pod uid of a process from its /proc/PID/cgroup text.

    On hybrid hosts the v2 line may be `0::/` while a v1 hierarchy holds the
    container path, so every line is tried and the first with an id wins.
    """
    best = CgroupInfo()
    for path in cgroup_paths(text):
        info = parse_path(path)
        if info.container_id:
            if not info.pod_uid and best.pod_uid:
                info = CgroupInfo(info.container_id, best.pod_uid, info.runtime, info.path)
            return info
        if info.pod_uid and not best.pod_uid:
            best = info
    return best


def read_cgroup(pid: int) -> CgroupInfo:
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            return parse_cgroup(f.read())
    except OSError:
        return CgroupInfo()
