"""Kernel map hygiene with the real programs: what the agent puts in, the kernel
takes out when processes and threads end."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ebpf_tracer.loader import LoaderConfig, Probes

# Starts 50 threads (each a fork event the kernel sees), then a child process.
CHILD = """
import subprocess, sys, threading
sys.stdin.readline()
ts = [threading.Thread(target=lambda: None) for _ in range(50)]
for t in ts: t.start()
for t in ts: t.join()
kid = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.readline()"],
                       stdin=subprocess.PIPE)
print(kid.pid, flush=True)
sys.stdin.readline()
kid.stdin.close(); kid.wait()
print("done", flush=True)
sys.stdin.readline()
"""


@pytest.fixture(scope="module")
def probes():
    p = Probes(LoaderConfig(ringbuf_pages=16, max_conns=1024))
    yield p
    p.close()


def traced(probes: Probes) -> set[int]:
    return probes.traced_pids()


def test_threads_and_exited_children_leave_the_traced_set(probes: Probes) -> None:
    proc = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        probes.trace_pid(proc.pid)
        proc.stdin.write("\n")
        proc.stdin.flush()
        kid = int(proc.stdout.readline())
        # The threads are gone; the child process is traced while it lives.
        assert traced(probes) == {proc.pid, kid}
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "done"
        assert traced(probes) == {proc.pid}
    finally:
        proc.stdin.close()
        proc.wait(10)
    assert traced(probes) == set()


NOT_HTTP = """
import socket, sys, threading
srv = socket.create_server(("127.0.0.1", 0))
def echo():
    while True:
        c, _ = srv.accept()
        c.sendall(c.recv(100))
        c.close()
threading.Thread(target=echo, daemon=True).start()
port = srv.getsockname()[1]
print("ready", flush=True)
sys.stdin.readline()
for _ in range(20):  # a database-like protocol: client and server are traced
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"\\x00\\x00\\x00\\x08PING\\r\\n")
        s.recv(100)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # DNS-like: connect() on UDP
u.connect(("127.0.0.1", 9))
u.close()
print("done", flush=True)
sys.stdin.readline()
"""


def test_connections_that_are_not_http_never_reach_the_agent(start_agent, procs):
    """accept/connect facts wait in the kernel until the first bytes say HTTP."""
    import re

    app = subprocess.Popen([sys.executable, "-c", NOT_HTTP], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, text=True)
    procs.append(app)
    assert app.stdout.readline() == "ready\n"
    agent = start_agent("attach", "-v", "--pid", str(app.pid))
    app.stdin.write("\n")
    app.stdin.flush()
    assert app.stdout.readline() == "done\n"
    rc, _, err = agent.stop()
    assert rc == 0, err
    final = next(line for line in err.splitlines() if "final stats" in line)
    stats = {k: int(v) for k, v in re.findall(r"'(\w+)': (\d+)", final)}
    assert stats["kernel_conns_opened"] >= 40  # 20 connects + 20 accepts (+ UDP)
    assert stats["events"] == 0, final  # not one record: no OPEN, no data, no CLOSE
    assert stats["conn_opened"] == 0 and stats["connections_tracked"] == 0
