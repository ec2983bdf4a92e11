"""End-to-end fixtures: the real agent (as a user runs it), real servers and
clients on 127.0.0.1, and a real OTLP receiver."""

from __future__ import annotations

import ast
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ebpf_tracer.loopback import free_port, wait_port  # noqa: F401 - tests import them here
from tests.otlp_receiver import OtlpReceiver

ROOT = Path(__file__).resolve().parents[2]
TRACER = ROOT / ".venv" / "bin" / "ebpf-tracer"
if not TRACER.exists():
    TRACER = Path(sys.executable).parent / "ebpf-tracer"


def _why_cannot_trace() -> str | None:
    if os.geteuid() != 0:
        return "cannot trace: not root"
    try:
        from ebpf_tracer.check import can_trace, run_checks
    except Exception as e:  # noqa: BLE001
        return f"cannot trace: {e}"
    checks = run_checks()
    if not can_trace(checks):
        bad = [f"{c.name}: {c.detail}" for c in checks if not c.ok and c.name != "btf"]
        return "cannot trace: " + "; ".join(bad)
    return None


_REASON: str | None = None
_CHECKED = False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    global _REASON, _CHECKED
    e2e = [i for i in items if "tests/e2e/" in str(i.fspath)]
    if not e2e:
        return
    if not _CHECKED:
        _REASON, _CHECKED = _why_cannot_trace(), True
    for item in e2e:
        item.add_marker(pytest.mark.e2e)
        if _REASON:
            item.add_marker(pytest.mark.skip(reason=_REASON))


def need(binary: str) -> str:
    path = shutil.which(binary) or (f"/usr/sbin/{binary}" if os.path.exists(
        f"/usr/sbin/{binary}") else None)
    if not path:
        pytest.fail(f"{binary} is not installed; `make setup` installs it")
    return path


def final_stats(stderr: str) -> dict:
    """The agent's counters, from its `-v` log's last "final stats" line."""
    m = re.findall(r"final stats (\{.*\})", stderr)
    assert m, f"no final stats in the agent's log:\n{stderr[-2000:]}"
    return ast.literal_eval(m[-1])


class AgentProc:
    """The tracer as a user runs it: the installed CLI in a subprocess."""

    def __init__(self, args: list[str], env: dict[str, str], tmp: Path,
                 stdout: int | None = subprocess.PIPE) -> None:
        # Debug logs (periodic and final stats) cost little and are what a
        # failure report needs: pytest_runtest_makereport attaches them.
        if "-v" not in args:
            args = [*args[:1], "-v", *args[1:]]
        self.ready = tmp / f"ready-{time.monotonic_ns()}"
        # stderr goes to a file: a pipe nobody reads until stop() would block
        # a verbose agent once 64 KiB of logs pile up.
        self.stderr_path = tmp / f"stderr-{time.monotonic_ns()}"
        with open(self.stderr_path, "w") as err:
            self.proc = subprocess.Popen(
                [str(TRACER), *args[:1], "--ready-file", str(self.ready), *args[1:]],
                env=env, stdout=stdout, stderr=err, text=True,
            )

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready.exists():
                return
            if self.proc.poll() is not None:
                self.proc.communicate()
                raise AssertionError(f"tracer exited {self.proc.returncode}: {self.stderr()}")
            time.sleep(0.05)
        raise AssertionError("tracer never became ready")

    def stop(self, timeout: float = 30.0) -> tuple[int, str, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out or "", self.stderr()


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as r:
        yield r


@pytest.fixture
def tmp(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def otlp_env(receiver: OtlpReceiver) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", None)
    env["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.grpc_endpoint
    env["OTEL_EXPORTER_OTLP_PROTOCOL"] = "grpc"
    return env


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> object:
    """A failed e2e test reports what its agents logged: stopped first, so the
    report has their final stats (connections joined, peers unknown, drops)."""
    report = yield
    agents: list[AgentProc] = getattr(item, "_agents", [])
    if report.when == "call" and report.failed:
        for i, a in enumerate(agents):
            if a.proc.poll() is None:
                a.proc.send_signal(signal.SIGTERM)
                try:
                    a.proc.wait(15)
                except subprocess.TimeoutExpired:
                    pass
            lines = a.stderr().splitlines()
            report.sections.append((f"agent {i} stderr (last 60 lines)", "\n".join(lines[-60:])))
    return report


@pytest.fixture
def start_agent(otlp_env: dict[str, str], tmp_path: Path,
                request: pytest.FixtureRequest) -> Iterator:
    agents: list[AgentProc] = []
    request.node._agents = agents

    def _start(*args: str, env: dict[str, str] | None = None) -> AgentProc:
        a = AgentProc(list(args), env or otlp_env, tmp_path)
        agents.append(a)
        a.wait_ready()
        return a

    yield _start
    for a in agents:
        if a.proc.poll() is None:
            a.proc.kill()
            a.proc.wait()
    # A record the agent could not handle is an exception it swallowed (a bug),
    # whatever the test itself checked.
    for a in agents:
        if "final stats" in (err := a.stderr()):
            errors = final_stats(err).get("decode_errors")
            assert errors == 0, f"the agent dropped {errors} records on exceptions:\n" + \
                "\n".join(err.splitlines()[-40:])


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen]]:
    started: list[subprocess.Popen] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()


@pytest.fixture
def python_server(procs: list[subprocess.Popen]) -> tuple[subprocess.Popen, int]:
    """Python's http.server (recv/send syscalls), HTTP/1.0 responses."""
    port = free_port()
    d = tempfile.mkdtemp()
    Path(d, "hello.txt").write_text("hello world\n")
    p = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind",
                          "127.0.0.1", "--directory", d],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs.append(p)
    wait_port(port)
    return p, port


NGINX_CONF = """
daemon off;
user root;
master_process on;
worker_processes 1;
error_log {prefix}/error.log warn;
pid {prefix}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    keepalive_requests 100000;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {prefix}/www;
        location = /created {{ return 201 "created\\n"; }}
        location = /boom {{ return 503 "unavailable\\n"; }}
    }}
}}
"""


@pytest.fixture
def nginx_server(procs: list[subprocess.Popen], tmp_path: Path) -> tuple[subprocess.Popen, int]:
    """nginx: writev for heads, sendfile for static bodies."""
    nginx = need("nginx")
    port = free_port()
    prefix = tmp_path / "nginx"
    (prefix / "www").mkdir(parents=True)
    (prefix / "www" / "index.html").write_text("<h1>hello</h1>\n" * 20)
    (prefix / "www" / "big.bin").write_bytes(os.urandom(100_000))
    conf = prefix / "nginx.conf"
    conf.write_text(NGINX_CONF.format(prefix=prefix, port=port))
    p = subprocess.Popen([nginx, "-c", str(conf), "-p", str(prefix)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    procs.append(p)
    wait_port(port)
    return p, port


NODE_SERVER = r"""
const http = require('http');
const server = http.createServer((req, res) => {
  let n = 0;
  req.on('data', (c) => { n += c.length; });
  req.on('end', () => {
    if (req.url.startsWith('/missing')) { res.writeHead(404); res.end('no'); return; }
    if (req.url.startsWith('/bigchunked')) {
      res.writeHead(200, {'Content-Type': 'text/plain'});
      res.end('z'.repeat(100000)); return;
    }
    if (req.url.startsWith('/chunked')) {
      res.writeHead(200, {'Content-Type': 'text/plain'});
      res.write('part one\n'); setTimeout(() => res.end('part two\n'), 5); return;
    }
    res.writeHead(200, {'Content-Type': 'application/json'});
    res.end(JSON.stringify({got: n}));
  });
});
server.listen(+process.argv[2], '127.0.0.1');
"""


@pytest.fixture
def node_server(procs: list[subprocess.Popen], tmp_path: Path) -> tuple[subprocess.Popen, int]:
    """Node.js http (libuv: accept4 with no sockaddr, writev)."""
    node = need("node")
    port = free_port()
    script = tmp_path / "server.js"
    script.write_text(NODE_SERVER)
    p = subprocess.Popen([node, str(script), str(port)], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    procs.append(p)
    wait_port(port)
    return p, port


def curl(*args: str) -> subprocess.CompletedProcess:
    """curl printing one status code per URL (bodies discarded)."""
    argv = [need("curl"), "-s", "-w", "%{http_code}\n"]
    for a in args:
        argv += ["-o", "/dev/null", a] if a.startswith("http") else [a]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True)
