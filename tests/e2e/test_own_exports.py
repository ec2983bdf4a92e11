"""The agent never traces its own exports, and only those: a traced server's
client that happens to use the same local port as the agent's exporter is an
ordinary client. Linux gives one ephemeral port to several connections when
their destinations differ, so on a busy node this happens by chance (about one
connection in 30,000 per open export connection); a network namespace with a
one-port ephemeral range makes it happen every time."""

from __future__ import annotations

import contextlib
import ctypes
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import need
from tests.otlp_receiver import OtlpReceiver

CLONE_NEWNET = 0x40000000
PORT = 40000  # the namespace's only ephemeral port


@pytest.fixture
def netns() -> Iterator[str]:
    ip = need("ip")
    name = f"ebpf-tracer-test-{os.getpid()}"
    subprocess.run([ip, "netns", "add", name], check=True)
    try:
        subprocess.run([ip, "-n", name, "link", "set", "lo", "up"], check=True)
        subprocess.run([ip, "netns", "exec", name, "sysctl", "-qw",
                        f"net.ipv4.ip_local_port_range={PORT} {PORT}"], check=True)
        yield name
    finally:
        subprocess.run([ip, "netns", "del", name], check=False)


@contextlib.contextmanager
def inside(netns: str) -> Iterator[None]:
    """This thread (and what it starts: sockets, processes) in `netns`."""
    libc = ctypes.CDLL(None, use_errno=True)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    there = os.open(f"/run/netns/{netns}", os.O_RDONLY)
    try:
        if libc.setns(there, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns")
        yield
    finally:
        if libc.setns(home, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns back")
        os.close(home)
        os.close(there)


def get(port: int, path: str, source: str | None = None) -> tuple[int, bytes]:
    """One HTTP/1.0 GET, from `source` if given; returns the local port used and
    the response. Without `source` the port is chosen by connect(), which may
    share it with connections to other destinations (bind() would not)."""
    with socket.socket() as s:
        if source:
            s.bind((source, 0))
        s.connect(("127.0.0.1", port))
        local = s.getsockname()[1]
        s.sendall(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
        body = b""
        while chunk := s.recv(65536):
            body += chunk
    return local, body


def export_ports(agent_pid: int, receiver_port: int) -> set[int]:
    """Local ports of the agent's connections to the receiver (its netns's /proc/net/tcp)."""
    ports = set()
    for line in Path(f"/proc/{agent_pid}/net/tcp").read_text().splitlines()[1:]:
        local, remote, state = line.split()[1:4]
        if state == "01" and int(remote.split(":")[1], 16) == receiver_port:
            ports.add(int(local.split(":")[1], 16))
    return ports


def test_a_client_sharing_the_exporters_port_is_traced(netns, start_agent, procs):
    d = tempfile.mkdtemp()
    Path(d, "hello.txt").write_text("hello\n")
    # Fixed ports: the namespace has a single ephemeral one.
    with inside(netns), OtlpReceiver(grpc_port=4317, http_port=4318) as receiver:
        server_port = 8080
        srv = subprocess.Popen([sys.executable, "-m", "http.server", str(server_port), "--bind",
                                "127.0.0.1", "--directory", d],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(srv)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", server_port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "http.server did not start"
                time.sleep(0.05)
        env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.http_endpoint,
               "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}
        env.pop("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", None)
        # The receiver (this process) is traced too: the agent's exports to it
        # must not come back as spans.
        agent = start_agent("attach", "--pid", str(srv.pid), "--pid", str(os.getpid()),
                            "--bsp-schedule-delay", "100", env=env)
        # A first request from another address: its span opens the exporter's
        # kept-alive connection, which takes the namespace's one port.
        get(server_port, "/hello.txt?first", source="127.0.0.2")
        receiver.wait_for(lambda s: s.attributes.get("url.query") == "first", timeout=15)
        assert export_ports(agent.proc.pid, receiver.http_port) == {PORT}
        # The same local port again, to the server this time.
        local, body = get(server_port, "/hello.txt?shared-port")
        assert local == PORT and body.startswith(b"HTTP/1.0 200")
        [span] = receiver.wait_for(lambda s: s.attributes.get("url.query") == "shared-port"
                                   and s.resource.get("process.pid") == srv.pid, timeout=15)
        assert span.attributes["client.port"] == PORT
        # The agent's own exports still never come back as spans.
        time.sleep(1.0)
        own = [s for s in receiver.spans if s.attributes.get("url.path") == "/v1/traces"]
        assert own == []
