"""deploy/: manifests valid against the Kubernetes schema, the Helm chart
rendering the same objects, the least-privilege contract, the start script's
header discovery, and the image recipe."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
MANIFESTS = sorted((DEPLOY / "kubernetes").glob("*.yaml"))
CHART = DEPLOY / "helm" / "ebpf-tracer"
# Oldest API we document (appArmorProfile is 1.30+) and the newest bundled.
K8S_VERSIONS = ("1.30.0", "1.37.0")
LEAST_CAPS = {"BPF", "PERFMON", "SYS_PTRACE", "DAC_READ_SEARCH", "SYS_RESOURCE"}


def load_all(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]


def plain(name: str) -> dict:
    (doc,) = load_all((DEPLOY / "kubernetes" / name).read_text())
    return doc


def container(ds: dict) -> dict:
    (c,) = ds["spec"]["template"]["spec"]["containers"]
    return c


# -- schema ---------------------------------------------------------------------

@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_manifest_validates_strictly(path: Path, version: str) -> None:
    kv = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")
    docs = load_all(path.read_text())
    assert docs
    for doc in docs:
        kv.validate(doc, version, strict=True)  # raises on any unknown or wrong field


def test_validation_is_strict_and_offline() -> None:
    kv = pytest.importorskip("kubernetes_validate")
    ds = plain("daemonset-privileged.yaml")
    container(ds)["securityContext"]["privilegd"] = True
    with pytest.raises(kv.ValidationError):
        kv.validate(ds, "1.37.0", strict=True)


# -- what a node-wide eBPF tracer needs ---------------------------------------------

@pytest.mark.parametrize("name", ["daemonset-privileged.yaml", "daemonset-least-privilege.yaml"])
def test_daemonset_carries_what_the_agent_needs(name: str) -> None:
    ds = plain(name)
    pod = ds["spec"]["template"]["spec"]
    c = container(ds)
    assert pod["hostPID"] is True
    assert not pod.get("hostNetwork")
    assert {"operator": "Exists"} in pod["tolerations"]
    env = {e["name"]: e for e in c["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"]["valueFrom"]["configMapKeyRef"]["key"] == \
        "otlp-endpoint"
    assert env["OTEL_EXPORTER_OTLP_HEADERS"]["valueFrom"]["secretKeyRef"]["optional"] is True
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    for path in ("/host/lib/modules", "/host/usr/src", "/sys/kernel/tracing",
                 "/sys/kernel/debug", "/etc/ebpf-tracer"):
        assert mounts[path].get("readOnly") is True, path
    assert "/lib/modules" in mounts  # the writable emptyDir the start script links into
    assert c["livenessProbe"]["httpGet"]["port"] == "metrics"
    assert c["resources"]["requests"]["memory"] and c["resources"]["limits"]["memory"]
    assert c["args"][:3] == ["run", "--config", "/etc/ebpf-tracer/config.yaml"]


def test_least_privilege_is_exactly_five_capabilities_each_justified() -> None:
    text = (DEPLOY / "kubernetes" / "daemonset-least-privilege.yaml").read_text()
    sc = container(plain("daemonset-least-privilege.yaml"))["securityContext"]
    assert sc["privileged"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert set(sc["capabilities"]["add"]) == LEAST_CAPS
    assert "SYS_ADMIN" not in sc["capabilities"]["add"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    lines = text.splitlines()
    for cap in LEAST_CAPS:
        i = next(n for n, line in enumerate(lines) if line.strip() == f"- {cap}")
        assert lines[i - 1].strip().startswith("#"), f"{cap} has no comment saying why"
    assert "Not SYS_ADMIN" in text


def test_privileged_variant() -> None:
    sc = container(plain("daemonset-privileged.yaml"))["securityContext"]
    assert sc["privileged"] is True


def test_rbac_is_read_only_and_minimal() -> None:
    role = plain("clusterrole.yaml")
    verbs = {v for r in role["rules"] for v in r["verbs"]}
    assert verbs <= {"get", "list", "watch"}
    by_res = {res: set(r["verbs"]) for r in role["rules"] for res in r["resources"]}
    assert by_res == {"pods": {"get", "list", "watch"}, "nodes": {"get"},
                      "replicasets": {"get"}, "jobs": {"get"}}


def test_configmap_config_is_understood_by_the_agent() -> None:
    from ebpf_tracer.selection import SelectionConfig

    cm = plain("configmap.yaml")
    conf = yaml.safe_load(cm["data"]["config.yaml"])
    sel = SelectionConfig.from_mapping(conf["selection"])
    assert sel.exclude.k8s_namespaces == ("kube-system",)
    assert conf["metrics"]["port"] == container(
        plain("daemonset-least-privilege.yaml"))["ports"][0]["containerPort"]


def test_configmap_config_loads_through_the_cli(tmp_path: Path) -> None:
    """The whole file, as `ebpf-tracer run --config` reads it."""
    from ebpf_tracer.export.config import load_config_file
    from ebpf_tracer.selection import load_run_sections

    f = tmp_path / "config.yaml"
    f.write_text(plain("configmap.yaml")["data"]["config.yaml"])
    assert set(load_run_sections(str(f))) == {"selection", "kubernetes"}
    conf = load_config_file(str(f))
    assert conf.metrics_port is not None


# -- Helm -------------------------------------------------------------------------

HELM_ONLY_LABELS = {"app.kubernetes.io/instance", "app.kubernetes.io/managed-by", "helm.sh/chart"}


def normalise(doc: dict) -> dict:
    """Drop what only Helm adds; compare the config file by content, not text."""
    labels = doc.get("metadata", {}).get("labels", {})
    for k in HELM_ONLY_LABELS:
        labels.pop(k, None)
    if doc["kind"] == "DaemonSet":
        doc["spec"]["template"]["metadata"].pop("annotations", None)
    if doc["kind"] == "ConfigMap":
        doc["data"]["config.yaml"] = yaml.safe_load(doc["data"]["config.yaml"])
    return doc


def render(values: dict) -> dict[tuple[str, str], dict]:
    helm = pytest.importorskip(
        "helm_python", reason="helm is not installable from Debian; pip install helm-python-sdk")
    with helm.Chart.load(str(CHART)) as chart:
        out = chart.render(values, name="ebpf-tracer", namespace="ebpf-tracer")
    docs = [d for text in out.values() for d in load_all(text)]
    return {(d["kind"], d["metadata"]["name"]): normalise(d) for d in docs}


def plain_objects(daemonset: str) -> dict[tuple[str, str], dict]:
    out = {}
    for p in MANIFESTS:
        if p.name.startswith("daemonset-") and p.name != daemonset:
            continue
        for d in load_all(p.read_text()):
            out[(d["kind"], d["metadata"]["name"])] = normalise(d)
    return out


@pytest.mark.parametrize("mode,daemonset", [("leastPrivilege", "daemonset-least-privilege.yaml"),
                                            ("privileged", "daemonset-privileged.yaml")])
def test_helm_renders_the_plain_manifests(mode: str, daemonset: str) -> None:
    rendered = render({"securityMode": mode, "namespace": {"create": True}})
    want = plain_objects(daemonset)
    assert set(rendered) == set(want)
    for key, obj in want.items():
        assert rendered[key] == obj, key


def test_helm_values_reach_the_objects() -> None:
    kv = pytest.importorskip("kubernetes_validate")
    rendered = render({
        "otlp": {"endpoint": "https://otlp.example:4318", "protocol": "http/protobuf",
                 "headersSecret": {"name": "h", "key": "k", "create": True,
                                   "value": "authorization=Bearer%20x"}},
        "selection": {"ports": ["8080"], "k8s_pod_labels": {"app": "shop"}},
        "resources": {"requests": {"memory": "300Mi"}},
        "extraArgs": ["-v"],
    })
    cm = rendered[("ConfigMap", "ebpf-tracer")]
    assert cm["data"]["otlp-endpoint"] == "https://otlp.example:4318"
    assert cm["data"]["config.yaml"]["selection"] == {  # merged over the defaults
        "ports": ["8080"], "k8s_pod_labels": {"app": "shop"},
        "exclude": {"k8s_namespaces": ["kube-system"]}}
    assert rendered[("Secret", "h")]["stringData"] == {"k": "authorization=Bearer%20x"}
    c = container(rendered[("DaemonSet", "ebpf-tracer")])
    assert c["args"][-1] == "-v"
    assert c["resources"]["requests"]["memory"] == "300Mi"
    assert ("Namespace", "ebpf-tracer") not in rendered  # off by default
    for obj in rendered.values():
        kv.validate(obj if obj["kind"] != "ConfigMap" else
                    {**obj, "data": {**obj["data"], "config.yaml": "x"}}, "1.37.0", strict=True)


# -- the start script ---------------------------------------------------------------

def run_start(tmp: Path, host: Path, packaged: list[Path] | None = None) -> tuple[str, Path]:
    modules = tmp / "modules"
    modules.mkdir(exist_ok=True)
    listing = tmp / "packaged"
    listing.write_text("".join(f"{p}\n" for p in packaged or []))
    env = dict(os.environ, EBPF_TRACER_HOST_ROOT=str(host),
               EBPF_TRACER_KERNEL_RELEASE="6.8.0-1-test", EBPF_TRACER_MODULES_DIR=str(modules),
               EBPF_TRACER_PACKAGED_HEADERS=str(listing), EBPF_TRACER_BIN="echo")
    p = subprocess.run(["sh", str(DEPLOY / "start.sh"), "run", "--k8s"], env=env,
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "run --k8s"  # exec'd the agent with the arguments
    return p.stderr, modules / "6.8.0-1-test"


def headers(d: Path) -> Path:
    (d / "include" / "linux").mkdir(parents=True)
    return d


def test_start_uses_host_headers_through_absolute_symlinks(tmp_path: Path) -> None:
    host = tmp_path / "host"
    headers(host / "usr/src/linux-headers-6.8.0-1-test")
    mod = host / "lib/modules/6.8.0-1-test"
    mod.mkdir(parents=True)
    (mod / "build").symlink_to("/usr/src/linux-headers-6.8.0-1-test")  # a host path
    err, moddir = run_start(tmp_path, host)
    assert "the host's" in err
    assert (moddir / "build").resolve() == (host / "usr/src/linux-headers-6.8.0-1-test")
    assert (moddir / "build" / "include" / "linux").is_dir()


def test_start_uses_host_usr_src_without_modules_link(tmp_path: Path) -> None:
    host = tmp_path / "host"
    headers(host / "usr/src/linux-headers-6.8.0-1-test")
    err, moddir = run_start(tmp_path, host)
    assert (moddir / "build" / "include").is_dir()


def test_start_falls_back_to_packaged_headers_and_says_so(tmp_path: Path) -> None:
    host = tmp_path / "host"
    host.mkdir()
    arch = headers(tmp_path / "img/linux-headers-6.1.0-28-amd64")
    common = headers(tmp_path / "img/linux-headers-6.1.0-28-common")
    err, moddir = run_start(tmp_path, host, [arch, common])
    assert "no kernel headers for 6.8.0-1-test on this node" in err
    assert "falling back to the image's packaged linux-headers-6.1.0-28-amd64" in err
    assert (moddir / "build").resolve() == arch.resolve()
    assert (moddir / "source").resolve() == common.resolve()


def test_start_says_when_there_are_no_headers_at_all(tmp_path: Path) -> None:
    host = tmp_path / "host"
    host.mkdir()
    err, _ = run_start(tmp_path, host)
    assert "loading will fail" in err and "linux-headers-6.8.0-1-test" in err


# -- the image ------------------------------------------------------------------------

def test_dockerfile_recipe() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^FROM debian:bookworm", text, re.M)
    for pkg in ("bpfcc-tools", "python3-bpfcc", "linux-headers-"):
        assert pkg in text
    assert "EBPF_TRACER_BPF_DIR=/opt/ebpf-tracer/bpf" in text
    for src in re.findall(r"^COPY (.+) \S+$", text, re.M):
        for part in src.split():
            assert (ROOT / part).exists(), f"COPY {part}: not in the repository"


def test_bpf_dir_override(tmp_path: Path) -> None:
    """The image's layout: the package installed away from bpf/."""
    import shutil
    import sys

    shutil.copytree(ROOT / "bpf", tmp_path / "bpf")
    p = subprocess.run([sys.executable, "-c", "from ebpf_tracer import events; "
                        "print(events.BPF_DIR, events.EventType.PROC_EXEC)"],
                       env=dict(os.environ, EBPF_TRACER_BPF_DIR=str(tmp_path / "bpf")),
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith(str(tmp_path / "bpf"))
