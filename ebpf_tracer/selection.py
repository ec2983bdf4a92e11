"""Which processes `run` mode reports: selection by port, executable and pod.

Decided once per process (cached by pid, forgotten on exec and exit) from
what the resource cache already read from /proc, so the per-span cost is one
dict lookup. Semantics follow Beyla's discovery:

- include: every given kind must match (AND); within a kind any value may
  match (OR), except pod labels, which all must match like a label selector.
  No include criteria: every process is included.
- exclude: any one matching criterion excludes; exclusion beats inclusion.
  The tracer itself is always excluded.

Ports select "processes listening on, or connecting to, these ports": a
process listening on one when first seen is in; otherwise each connection's
server or peer port is checked, and the first match includes the process
from then on.

YAML (the `selection:` key of the config file; flags replace a kind given in
both):

    selection:
      ports: [8080, "9000-9100"]
      exe: ["*/nginx", "java"]       # glob on the executable path (or name)
      k8s_namespaces: [shop]
      k8s_pod_labels: {app.kubernetes.io/part-of: shop}
      exclude:
        exe: ["*/sshd"]
        ports: [22]
        k8s_namespaces: [kube-system]
"""

from __future__ import annotations

import enum
import fnmatch
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from .conn.sockets import socket_inode
from .export.config import RUN_SECTIONS, read_config_yaml
from .export.errors import ExportConfigError
from .k8s.pods import PodInfo
from .model import ConnMeta, Role
from .resources import ProcessInfo, ResourceCache


class SelectionError(ValueError):
    """A selection flag or config value that cannot be understood."""


@dataclass(frozen=True, slots=True)
class PortSet:
    """Ports and inclusive ranges, e.g. `80,443,8000-8999`."""

    ranges: tuple[tuple[int, int], ...] = ()

    def __bool__(self) -> bool:
        return bool(self.ranges)

    def __contains__(self, port: object) -> bool:
        if not isinstance(port, int):
            return False
        return any(lo <= port <= hi for lo, hi in self.ranges)

    @classmethod
    def parse(cls, values: Iterable[str | int]) -> PortSet:
        out: list[tuple[int, int]] = []
        for v in values:
            for part in str(v).split(","):
                part = part.strip()
                if not part:
                    continue
                lo, sep, hi = part.partition("-")
                try:
                    a = int(lo)
                    b = int(hi) if sep else a
                except ValueError:
                    raise SelectionError(f"not a port or port range: {part!r}") from None
                if not (0 < a <= b <= 65535):
                    raise SelectionError(f"port range out of 1-65535: {part!r}")
                out.append((a, b))
        return cls(tuple(out))


def parse_label(value: str) -> tuple[str, str]:
    key, sep, val = value.partition("=")
    if not sep or not key.strip():
        raise SelectionError(f"pod label must be key=value, got {value!r}")
    return key.strip(), val.strip()


@dataclass(frozen=True, slots=True)
class Criteria:
    ports: PortSet = field(default_factory=PortSet)
    exe: tuple[str, ...] = ()
    k8s_namespaces: tuple[str, ...] = ()
    k8s_pod_labels: tuple[tuple[str, str], ...] = ()

    def __bool__(self) -> bool:
        return bool(self.ports or self.exe or self.k8s_namespaces or self.k8s_pod_labels)

    @property
    def needs_pods(self) -> bool:
        return bool(self.k8s_namespaces or self.k8s_pod_labels)

    @classmethod
    def from_mapping(cls, d: Mapping[str, Any]) -> Criteria:
        unknown = set(d) - {"ports", "exe", "k8s_namespaces", "k8s_pod_labels", "exclude"}
        if unknown:
            raise SelectionError(f"unknown selection keys: {', '.join(sorted(unknown))}")
        labels = d.get("k8s_pod_labels") or {}
        if isinstance(labels, Mapping):
            pairs = tuple((str(k), str(v)) for k, v in labels.items())
        else:
            pairs = tuple(parse_label(str(x)) for x in _as_list(labels))
        return cls(
            ports=PortSet.parse(_as_list(d.get("ports"))),
            exe=tuple(str(x) for x in _as_list(d.get("exe"))),
            k8s_namespaces=tuple(str(x) for x in _as_list(d.get("k8s_namespaces"))),
            k8s_pod_labels=pairs,
        )


def _as_list(v: Any) -> list:
    if v is None:
        return []
    if isinstance(v, (list, tuple)):
        return list(v)
    return [v]


@dataclass(frozen=True, slots=True)
class SelectionConfig:
    include: Criteria = field(default_factory=Criteria)
    exclude: Criteria = field(default_factory=Criteria)

    def __bool__(self) -> bool:
        return bool(self.include or self.exclude)

    @property
    def needs_pods(self) -> bool:
        return self.include.needs_pods or self.exclude.needs_pods

    @classmethod
    def from_mapping(cls, d: Mapping[str, Any] | None) -> SelectionConfig:
        """The `selection:` section of the YAML config."""
        if not d:
            return cls()
        if not isinstance(d, Mapping):
            raise SelectionError("selection: must be a mapping")
        exclude = d.get("exclude") or {}
        if not isinstance(exclude, Mapping) or "exclude" in exclude:
            raise SelectionError("selection.exclude: must be a mapping of criteria")
        return cls(Criteria.from_mapping(d), Criteria.from_mapping(exclude))

    def with_flags(self, *, ports: Iterable[str] = (), exe: Iterable[str] = (),
                   k8s_namespaces: Iterable[str] = (), k8s_pod_labels: Iterable[str] = (),
                   exclude_ports: Iterable[str] = (), exclude_exe: Iterable[str] = (),
                   exclude_k8s_namespaces: Iterable[str] = ()) -> SelectionConfig:
        """Command-line flags on top of the file: a kind given as a flag replaces it."""
        inc, exc = self.include, self.exclude
        ports, exe, nss, labels = list(ports), list(exe), list(k8s_namespaces), \
            list(k8s_pod_labels)
        if ports:
            inc = replace(inc, ports=PortSet.parse(ports))
        if exe:
            inc = replace(inc, exe=tuple(exe))
        if nss:
            inc = replace(inc, k8s_namespaces=tuple(nss))
        if labels:
            inc = replace(inc, k8s_pod_labels=tuple(parse_label(x) for x in labels))
        ex_ports, ex_exe, ex_nss = list(exclude_ports), list(exclude_exe), \
            list(exclude_k8s_namespaces)
        if ex_ports:
            exc = replace(exc, ports=PortSet.parse(ex_ports))
        if ex_exe:
            exc = replace(exc, exe=tuple(ex_exe))
        if ex_nss:
            exc = replace(exc, k8s_namespaces=tuple(ex_nss))
        return SelectionConfig(inc, exc)


def exe_matches(patterns: tuple[str, ...], info: ProcessInfo) -> bool:
    """Glob on the executable path; a pattern without '/' may match the name alone."""
    path, name = info.exe_path, info.exe_name
    for p in patterns:
        if path and fnmatch.fnmatchcase(path, p):
            return True
        if "/" not in p and name and fnmatch.fnmatchcase(name, p):
            return True
    return False


def labels_match(want: tuple[tuple[str, str], ...], labels: Mapping[str, str]) -> bool:
    for k, v in want:
        have = labels.get(k)
        if have is None or not fnmatch.fnmatchcase(have, v):
            return False
    return True


class State(enum.IntEnum):
    NO = 0
    YES = 1
    PORTS = 2  # everything else matched; waiting for a connection on a selected port
    PENDING = 3  # needs the pod's metadata, not known yet


def decide(cfg: SelectionConfig, info: ProcessInfo, pod: PodInfo | None,
           listening: set[int] | frozenset[int] = frozenset()) -> State:
    """The pure decision for one process (see the module doc)."""
    exc, inc = cfg.exclude, cfg.include
    if exc.exe and exe_matches(exc.exe, info):
        return State.NO
    if exc.ports and any(p in exc.ports for p in listening):
        return State.NO
    pending = False
    if exc.k8s_namespaces and info.pod_uid:
        if pod is None:
            pending = True
        elif pod.namespace in exc.k8s_namespaces:
            return State.NO
    if inc.exe and not exe_matches(inc.exe, info):
        return State.NO
    if inc.needs_pods:
        if not info.pod_uid and pod is None:
            return State.NO  # a host process is in no namespace
        if pod is None:
            return State.PENDING
        if inc.k8s_namespaces and pod.namespace not in inc.k8s_namespaces:
            return State.NO
        if inc.k8s_pod_labels and not labels_match(inc.k8s_pod_labels, pod.labels):
            return State.NO
    if pending:
        return State.PENDING
    if inc.ports and not any(p in inc.ports for p in listening):
        return State.PORTS
    return State.YES


def listening_ports(pid: int, lookup: Any) -> set[int]:
    """Local ports of pid's sockets that have no peer (listening), via `lookup(inode)`."""
    out: set[int] = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return out
    for fd in fds:
        inode = socket_inode(pid, int(fd))
        if inode is None:
            continue
        a = lookup(inode)
        if a is not None and not a.peer_port and a.local_port:
            out.add(a.local_port)
    return out


class Selector:
    """Per-process decisions for the agent, cached by pid; bounded."""

    def __init__(self, cfg: SelectionConfig, resources: ResourceCache, *,
                 socket_lookup: Any = None, own_pid: int | None = None,
                 max_entries: int = 16384) -> None:
        self.cfg = cfg
        self.resources = resources
        self._lookup = socket_lookup
        self._own = own_pid if own_pid is not None else os.getpid()
        self._state: dict[int, State] = {}
        self._max = max_entries
        self.excluded_spans = 0
        resources.listeners.append(self.forget)  # the pod arrived or changed: decide again

    def __len__(self) -> int:
        return len(self._state)

    def state(self, pid: int, comm: str | None = None) -> State:
        self.resources.refresh()
        s = self._state.get(pid)
        if s is None:
            s = self._decide(pid, comm)
        return s

    def excluded(self, pid: int) -> bool:
        """Definitely not reported: its connections need not be followed."""
        return self.state(pid) is State.NO

    def allows(self, meta: ConnMeta) -> bool:
        """Report this connection's spans? Called before each span is built."""
        self.resources.refresh()
        s = self._state.get(meta.pid)
        if s is None:
            s = self._decide(meta.pid, None)
        if s is State.YES:
            return True
        if s is State.PORTS:
            port = meta.local_port if meta.role is Role.SERVER else meta.peer_port
            if port in self.cfg.include.ports:
                self._state[meta.pid] = State.YES
                return True
        self.excluded_spans += 1
        return False

    def forget(self, pid: int) -> None:
        self._state.pop(pid, None)

    def _decide(self, pid: int, comm: str | None) -> State:
        if pid == self._own:
            s = State.NO
        else:
            info = self.resources.info(pid, comm)
            pod = self.resources.pod_of(info)
            ports: set[int] = set()
            if (self.cfg.include.ports or self.cfg.exclude.ports) and self._lookup:
                ports = listening_ports(pid, self._lookup)
            s = decide(self.cfg, info, pod, ports)
        # PENDING is cached too: the resource cache tells us (forget) when the
        # pod's metadata arrives.
        if len(self._state) >= self._max:
            self._state.pop(next(iter(self._state)))
        self._state[pid] = s
        return s


def apply_run_options(cfg: Any, file_config: Mapping[str, Any] | None = None,
                      **flags: Any) -> None:
    """Set cfg.selection / cfg.k8s / cfg.k8s_node_name from the YAML config's
    `selection:` and `kubernetes:` sections, then the `run` flags on top.

        kubernetes:
          enabled: auto        # auto (in a cluster) | true | false
          node_name: ""        # default: $NODE_NAME
    """
    file_config = file_config or {}
    sel = SelectionConfig.from_mapping(file_config.get("selection"))
    cfg.selection = sel.with_flags(
        ports=flags.get("ports") or (), exe=flags.get("exes") or (),
        k8s_namespaces=flags.get("k8s_namespaces") or (),
        k8s_pod_labels=flags.get("k8s_pod_labels") or (),
        exclude_ports=flags.get("exclude_ports") or (),
        exclude_exe=flags.get("exclude_exes") or (),
        exclude_k8s_namespaces=flags.get("exclude_k8s_namespaces") or (),
    )
    k8s = file_config.get("kubernetes") or {}
    if not isinstance(k8s, Mapping):
        raise SelectionError("kubernetes: must be a mapping")
    enabled = k8s.get("enabled", "auto")
    if enabled not in ("auto", True, False, None):
        raise SelectionError(f"kubernetes.enabled must be auto, true or false, not {enabled!r}")
    cfg.k8s = None if enabled in ("auto", None) else bool(enabled)
    if flags.get("k8s") is not None:
        cfg.k8s = flags["k8s"]
    cfg.k8s_node_name = flags.get("k8s_node_name") or k8s.get("node_name") or None


def load_run_sections(path: str) -> dict[str, Any]:
    """The `selection:` and `kubernetes:` sections of a --config YAML file
    (the export layer reads the rest of the same file)."""
    try:
        data = read_config_yaml(path)
    except ExportConfigError as e:
        raise SelectionError(str(e)) from None
    if not isinstance(data, Mapping):
        return {}
    out = {k: data[k] for k in RUN_SECTIONS if data.get(k) is not None}
    try:
        SelectionConfig.from_mapping(out.get("selection"))
    except SelectionError as e:
        raise SelectionError(f"{path}: selection: {e}") from None
    return out
