"""run-mode selection: criteria parsing, matching, and the per-pid Selector."""

from __future__ import annotations

import socket
from types import SimpleNamespace

import pytest

from ebpf_tracer.config import Config, Mode
from ebpf_tracer.conn.sockets import SockAddrs, socket_inode
from ebpf_tracer.k8s import PodStore
from ebpf_tracer.k8s.pods import pod_info
from ebpf_tracer.model import ConnMeta, Role
from ebpf_tracer.resources import ProcessInfo, ResourceCache
from ebpf_tracer.selection import (
    Criteria,
    PortSet,
    SelectionConfig,
    SelectionError,
    Selector,
    State,
    apply_run_options,
    decide,
    listening_ports,
)
from tests.k8s_fake import fixture

PODS = {p["metadata"]["name"]: p for p in fixture("pod_list.json")["items"]}
CART = pod_info(PODS["cart-7c9d8b6f5d-x2x7q"])
FLUENT = pod_info(PODS["fluent-bit-9k2xw"])


def proc(path: str = "/usr/sbin/nginx", pod_uid: str | None = None, pid: int = 10) -> ProcessInfo:
    return ProcessInfo(pid=pid, attrs={"process.executable.path": path,
                                       "process.executable.name": path.rsplit("/", 1)[-1]},
                       pod_uid=pod_uid)


def cfg(**sel) -> SelectionConfig:
    return SelectionConfig.from_mapping(sel)


# -- parsing ------------------------------------------------------------------------

def test_port_set() -> None:
    ps = PortSet.parse(["80,443", "8000-8002", 9090])
    assert all(p in ps for p in (80, 443, 8000, 8001, 8002, 9090))
    assert 8003 not in ps and 81 not in ps and None not in ps
    assert not PortSet.parse([])
    for bad in ("http", "0", "70000", "9-1", "1-x"):
        with pytest.raises(SelectionError):
            PortSet.parse([bad])


def test_yaml_mapping() -> None:
    c = SelectionConfig.from_mapping({
        "ports": [8080, "9000-9001"], "exe": "*/nginx",
        "k8s_namespaces": ["shop"], "k8s_pod_labels": {"app": "cart"},
        "exclude": {"k8s_namespaces": ["kube-system"], "ports": 22},
    })
    assert 9001 in c.include.ports and c.include.exe == ("*/nginx",)
    assert c.include.k8s_pod_labels == (("app", "cart"),)
    assert c.exclude.k8s_namespaces == ("kube-system",) and 22 in c.exclude.ports
    assert c.needs_pods
    assert not SelectionConfig.from_mapping(None)
    with pytest.raises(SelectionError, match="unknown selection keys: port"):
        SelectionConfig.from_mapping({"port": 80})
    with pytest.raises(SelectionError):
        SelectionConfig.from_mapping({"exclude": {"exclude": {}}})
    labels = Criteria.from_mapping({"k8s_pod_labels": ["app=cart", "tier = web"]})
    assert labels.k8s_pod_labels == (("app", "cart"), ("tier", "web"))


def test_flags_replace_the_file_per_kind() -> None:
    base = cfg(ports=[80], exe=["*/nginx"], exclude={"k8s_namespaces": ["kube-system"]})
    c = base.with_flags(ports=["8080"], k8s_pod_labels=["app=x"])
    assert 8080 in c.include.ports and 80 not in c.include.ports
    assert c.include.exe == ("*/nginx",)
    assert c.include.k8s_pod_labels == (("app", "x"),)
    assert c.exclude.k8s_namespaces == ("kube-system",)
    with pytest.raises(SelectionError):
        base.with_flags(k8s_pod_labels=["novalue"])


def test_apply_run_options() -> None:
    c = Config(mode=Mode.RUN)
    apply_run_options(c, {"selection": {"exe": ["python*"]},
                          "kubernetes": {"enabled": True, "node_name": "n1"}},
                      ports=("8080",), exes=(), k8s=None, k8s_node_name=None)
    assert c.selection.include.exe == ("python*",) and 8080 in c.selection.include.ports
    assert c.k8s is True and c.k8s_node_name == "n1"
    apply_run_options(c, None, k8s=False)
    assert c.k8s is False and not c.selection
    apply_run_options(c, {"kubernetes": {"enabled": "auto"}})
    assert c.k8s is None
    with pytest.raises(SelectionError):
        apply_run_options(c, {"kubernetes": {"enabled": "sometimes"}})


# -- decisions --------------------------------------------------------------------

def test_no_criteria_selects_everything() -> None:
    assert decide(SelectionConfig(), proc(), None) is State.YES


def test_exe_glob_on_path_or_name() -> None:
    assert decide(cfg(exe=["*/nginx"]), proc(), None) is State.YES
    assert decide(cfg(exe=["nginx"]), proc(), None) is State.YES  # no '/': the name
    assert decide(cfg(exe=["/usr/bin/*"]), proc(), None) is State.NO
    assert decide(cfg(exe=["python3*", "node"]), proc("/usr/bin/python3.11"), None) is State.YES


def test_kinds_are_anded() -> None:
    c = cfg(exe=["*/nginx"], k8s_namespaces=["shop"])
    assert decide(c, proc(pod_uid=CART.uid), CART) is State.YES
    assert decide(c, proc("/bin/sh", pod_uid=CART.uid), CART) is State.NO
    assert decide(c, proc(pod_uid=FLUENT.uid), FLUENT) is State.NO


def test_k8s_criteria() -> None:
    c = cfg(k8s_namespaces=["shop", "logging"])
    assert decide(c, proc(pod_uid=FLUENT.uid), FLUENT) is State.YES
    assert decide(c, proc(), None) is State.NO  # a host process is in no namespace
    assert decide(c, proc(pod_uid="not-yet"), None) is State.PENDING
    labels = cfg(k8s_pod_labels={"app.kubernetes.io/name": "ca*",
                                 "app.kubernetes.io/part-of": "shop"})
    assert decide(labels, proc(pod_uid=CART.uid), CART) is State.YES
    labels = cfg(k8s_pod_labels={"app.kubernetes.io/name": "cart", "tier": "web"})
    assert decide(labels, proc(pod_uid=CART.uid), CART) is State.NO  # all must match


def test_exclusions_win() -> None:
    c = cfg(exe=["*"], exclude={"exe": ["*/sshd"], "k8s_namespaces": ["kube-system", "logging"],
                                "ports": [22]})
    assert decide(c, proc("/usr/sbin/sshd"), None) is State.NO
    assert decide(c, proc(pod_uid=FLUENT.uid), FLUENT) is State.NO
    assert decide(c, proc(pod_uid=CART.uid), CART) is State.YES
    assert decide(c, proc(pod_uid="unknown-yet"), None) is State.PENDING
    assert decide(c, proc(), None, {22}) is State.NO
    assert decide(c, proc(), None, {80}) is State.YES


def test_ports_listening_or_per_connection() -> None:
    c = cfg(ports=["8080"])
    assert decide(c, proc(), None, {8080}) is State.YES
    assert decide(c, proc(), None, {9090}) is State.PORTS


# -- the Selector ------------------------------------------------------------------

def cache_of(infos: dict[int, ProcessInfo], pods: PodStore | None = None) -> ResourceCache:
    return ResourceCache(host={"host.name": "h"}, pods=pods, reader=lambda p, c=None: infos[p])


def test_selector_caches_and_forgets() -> None:
    calls = []
    infos = {1: proc(), 2: proc("/bin/sh")}

    def read(pid: int, comm: str | None) -> ProcessInfo:
        calls.append(pid)
        return infos[pid]

    res = ResourceCache(host={}, reader=read)
    sel = Selector(cfg(exe=["*/nginx"]), res, own_pid=999)
    assert sel.state(1) is State.YES and sel.state(2) is State.NO
    assert sel.state(1) is State.YES and calls == [1, 2]
    assert sel.excluded(2) and not sel.excluded(1)
    assert len(sel) == 2
    sel.forget(1)
    res.forget(1)
    assert len(sel) == 1
    sel.state(1)
    assert calls == [1, 2, 1]


def test_selector_never_selects_the_agent() -> None:
    sel = Selector(SelectionConfig(include=Criteria(exe=("*",))), cache_of({}), own_pid=77)
    assert sel.state(77) is State.NO


def test_selector_port_upgrade_on_first_matching_connection() -> None:
    sel = Selector(cfg(ports=[8080]), cache_of({5: proc()}), own_pid=1)
    client_elsewhere = ConnMeta(5, 3, 1, Role.CLIENT, peer_port=5432)
    served = ConnMeta(5, 4, 1, Role.SERVER, local_port=8080, peer_port=40000)
    assert not sel.allows(client_elsewhere)
    assert sel.allows(served)
    assert sel.state(5) is State.YES
    assert sel.allows(client_elsewhere)  # the whole process, from then on
    assert sel.excluded_spans == 1
    sel2 = Selector(cfg(ports=[8080]), cache_of({6: proc()}), own_pid=1)
    assert sel2.allows(ConnMeta(6, 3, 1, Role.CLIENT, peer_port=8080))  # connecting to it


def test_selector_pending_until_pod_arrives() -> None:
    store = PodStore()
    res = cache_of({9: proc(pod_uid=CART.uid)}, store)
    sel = Selector(cfg(k8s_namespaces=["shop"]), res, own_pid=1)
    meta = ConnMeta(9, 3, 1, Role.SERVER, local_port=80)
    assert sel.state(9) is State.PENDING
    assert not sel.allows(meta)
    store.put(CART)  # watcher thread
    assert sel.state(9) is State.YES
    assert sel.allows(meta)


def test_selector_bounded() -> None:
    infos = {p: proc(pid=p) for p in range(50)}
    sel = Selector(cfg(exe=["*"]), cache_of(infos), own_pid=-1, max_entries=8)
    for p in range(50):
        sel.state(p)
    assert len(sel) == 8


def test_listening_ports_of_a_real_process() -> None:
    with socket.socket() as srv, socket.socket() as cli:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        port = srv.getsockname()[1]
        cli.connect(("127.0.0.1", port))
        import os

        table = {socket_inode(os.getpid(), srv.fileno()): SockAddrs("127.0.0.1", port, "", 0),
                 socket_inode(os.getpid(), cli.fileno()):
                 SockAddrs("127.0.0.1", cli.getsockname()[1], "127.0.0.1", port)}
        assert listening_ports(os.getpid(), table.get) == {port}
    assert listening_ports(2**22 + 99, table.get) == set()


def test_agent_refuses_k8s_selection_outside_a_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    from ebpf_tracer.agent import Agent
    from ebpf_tracer.errors import TracerError

    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    c = Config(mode=Mode.RUN, selection=cfg(k8s_namespaces=["shop"]))
    with pytest.raises(TracerError, match="--k8s"):
        Agent(c, exporter=SimpleNamespace(export=lambda spans: None, shutdown=lambda: None))
