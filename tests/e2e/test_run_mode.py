"""`run` mode (the DaemonSet mode) on this machine: processes that start after
the tracer, their service identity, selection flags, and memory under churn.

Other engineers' tests may run on this machine at the same time and `run`
sees their processes too: every assertion filters by the pids we started.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.e2e.conftest import curl, final_stats, free_port, wait_port
from tests.e2e.test_http1 import of_pid, settle

SERVER, CLIENT = 2, 3

# One request from a fresh process: each is a new pid the agent must learn and forget.
CLIENT_SCRIPT = (
    "import http.client, sys\n"
    "c = http.client.HTTPConnection('127.0.0.1', int(sys.argv[1]), timeout=10)\n"
    "c.request('GET', '/hello.txt'); r = c.getresponse(); r.read(); c.close()\n"
    "sys.exit(0 if r.status == 200 else 1)\n"
)


def start_server(procs: list, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, int]:
    port = free_port()
    d = tempfile.mkdtemp()
    Path(d, "hello.txt").write_text("hello world\n")
    p = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                          "--directory", d], env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    procs.append(p)
    wait_port(port)
    return p, port


def rss_kib(pid: int) -> int:
    """Resident KiB, less the eBPF ring buffer's mapping: its pages become
    resident as the kernel's write position goes round (up to twice its size,
    it is mapped twice) whatever the agent's own memory does."""
    total = ring = 0
    name = ""
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split(None, 6)
            if "-" in head[0] and len(head) >= 5 and not line.startswith(("Rss", "Pss")):
                name = head[5].strip() if len(head) > 5 else ""
            elif line.startswith("Rss:"):
                kib = int(head[1])
                total += kib
                if name.startswith("anon_inode:bpf"):
                    ring += kib
    return total - ring


def settled_rss(pid: int, quiet_s: float = 1.5) -> int:
    """RSS once the agent has caught up (its RSS stops moving for a moment)."""
    last, stable_since = rss_kib(pid), time.monotonic()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = rss_kib(pid)
        if abs(now - last) > 256:
            last, stable_since = now, time.monotonic()
        elif time.monotonic() - stable_since >= quiet_s:
            break
    return rss_kib(pid)


def churn(port: int, n_true: int, n_clients: int, parallel: int = 4) -> list[int]:
    """n_true fork+exec of `true`, then n_clients one-request python processes."""
    subprocess.run(["sh", "-c", f"i=0; while [ $i -lt {n_true} ]; do /bin/true; "
                    "i=$((i+1)); done"], check=True, timeout=300)
    pids: list[int] = []
    running: list[subprocess.Popen] = []
    for _ in range(n_clients):
        while len(running) >= parallel:
            running.pop(0).wait(timeout=60)
        p = subprocess.Popen([sys.executable, "-S", "-c", CLIENT_SCRIPT, str(port)])
        pids.append(p.pid)
        running.append(p)
    for p in running:
        p.wait(timeout=60)
    return pids


def test_server_started_after_the_tracer_gets_its_own_service_name(start_agent, receiver,
                                                                     procs):
    agent = start_agent("run")
    env = dict(os.environ, OTEL_SERVICE_NAME="late-svc",
               OTEL_RESOURCE_ATTRIBUTES="service.namespace=e2e,team=tracing%20crew")
    srv, port = start_server(procs, env)
    assert curl(f"http://127.0.0.1:{port}/hello.txt").stdout.strip() == "200"
    assert curl(f"http://127.0.0.1:{port}/nope").stdout.strip() == "404"
    spans = settle(receiver, srv.pid, 2)
    rc, _, err = agent.stop()
    assert rc == 0, err
    assert [s.attributes["url.path"] for s in spans] == ["/hello.txt", "/nope"]
    for s in spans:
        assert s.kind == SERVER
        r = s.resource
        assert r["service.name"] == "late-svc"
        assert r["service.namespace"] == "e2e"
        assert r["team"] == "tracing crew"
        assert r["process.pid"] == srv.pid
        assert r["os.type"] == "linux"
        assert r["host.name"]
        if os.path.exists("/etc/machine-id"):
            assert r["host.id"] == Path("/etc/machine-id").read_text().strip()
    # curl has no OTEL_* of its own: named after its executable.
    clients = [s for s in receiver.spans if s.kind == CLIENT
               and s.attributes.get("server.port") == port]
    assert clients and all(s.resource["service.name"] == "curl" for s in clients)


def test_port_selection(start_agent, receiver, procs):
    wanted, w_port = start_server(procs)
    other, o_port = start_server(procs)
    agent = start_agent("run", "--port", str(w_port), "--exclude-port", str(o_port),
                        "--exclude-exe", "*/sleep")
    assert curl(f"http://127.0.0.1:{w_port}/hello.txt").stdout.strip() == "200"
    for _ in range(3):  # excluded: the kernel stops sending the server's records
        assert curl(f"http://127.0.0.1:{o_port}/hello.txt").stdout.strip() == "200"
    assert len(settle(receiver, wanted.pid, 1)) == 1
    rc, _, err = agent.stop()
    assert rc == 0, err
    assert of_pid(receiver, other.pid, 1, timeout=0.5) == []
    by_port = {}
    for s in receiver.spans:
        if s.kind == CLIENT:
            by_port.setdefault(s.attributes.get("server.port"), []).append(s)
    assert len(by_port.get(w_port, [])) == 1, "curl connecting to a selected port is selected"
    assert o_port not in by_port


def test_memory_stays_flat_under_process_churn(start_agent, receiver, procs):
    srv, port = start_server(procs)
    # Only our server and its clients are reported, so other tests running on
    # this machine do not fill the span queue while we measure; it also puts
    # every churned client through the selection cache.
    agent = start_agent("run", "-v", "--port", str(port))
    pid = agent.proc.pid
    # Warm up: first connections import pyroute2, fill the exporter, etc.
    started = churn(port, 300, 20)
    base = settled_rss(pid)
    samples = []
    for _ in range(3):
        started += churn(port, 1000, 60)
        samples.append(settled_rss(pid))
    n_requests = len(started)
    spans = settle(receiver, srv.pid, n_requests)
    rc, _, err = agent.stop()
    assert rc == 0, err[-3000:]
    stats = final_stats(err)

    # Every short-lived client was picked up as it started...
    traced_clients = {s.resource["process.pid"] for s in receiver.spans if s.kind == CLIENT}
    assert len(set(started) & traced_clients) >= 0.95 * len(started)
    assert len(spans) >= 0.95 * n_requests
    # ...and forgotten when it exited: per-pid caches hold only the living.
    assert stats["processes_cached"] < 60, stats
    assert stats["selection_cached"] < 60, stats
    assert stats["connections_tracked"] < 60, stats
    # RSS: a plateau after warm-up, not a slope with the number of processes
    # (a leak of one Resource per client would be ~0.5 MiB a round; allocator
    # noise here is a few MiB either way, so these bounds catch only slopes
    # much steeper than that: the cache sizes above are the exact check).
    print(f"agent RSS KiB: warm {base}, after each churn round {samples}")
    assert samples[-1] - samples[0] < 8 * 1024, (base, samples)
    assert max(samples) - base < 24 * 1024, (base, samples)
