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

from tests.e2e.conftest import need, wait_port
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


SERVER_PORT = 8080
OWN_ACCEPT_WINDOW_S = 3.0  # bpf/tracer.c: how long a connection's far end is awaited


@pytest.fixture
def scene(netns: str, procs: list) -> Iterator[tuple[subprocess.Popen, OtlpReceiver, dict]]:
    """In the namespace: a traced http.server, an OTLP receiver (fixed ports: the
    namespace has a single ephemeral one), the agent's environment. Tests list
    start_agent before it, so that fixture's own receiver is made outside."""
    d = tempfile.mkdtemp()
    Path(d, "hello.txt").write_text("hello\n")
    with inside(netns), OtlpReceiver(grpc_port=4317, http_port=4318) as receiver:
        srv = subprocess.Popen([sys.executable, "-m", "http.server", str(SERVER_PORT),
                                "--bind", "127.0.0.1", "--directory", d],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(srv)
        wait_port(SERVER_PORT)
        env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.http_endpoint,
               "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}
        env.pop("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", None)
        yield srv, receiver, env


def _open_the_export_connection(agent, receiver: OtlpReceiver) -> None:  # noqa: ANN001
    """A first request from another address: its span opens the exporter's
    kept-alive connection, which takes the namespace's one port."""
    get(SERVER_PORT, "/hello.txt?first", source="127.0.0.2")
    receiver.wait_for(lambda s: s.attributes.get("url.query") == "first", timeout=15)
    assert export_ports(agent.proc.pid, receiver.http_port) == {PORT}


def _shared_port_request_is_traced(srv: subprocess.Popen, receiver: OtlpReceiver) -> None:
    local, body = get(SERVER_PORT, "/hello.txt?shared-port")
    assert local == PORT and body.startswith(b"HTTP/1.0 200")
    [span] = receiver.wait_for(lambda s: s.attributes.get("url.query") == "shared-port"
                               and s.resource.get("process.pid") == srv.pid, timeout=15)
    assert span.attributes["client.port"] == PORT


def test_a_client_sharing_the_exporters_port_is_traced(start_agent, scene):
    """The receiver is not traced: nothing ever accepts the exporter's connection
    where the kernel looks, and the client comes after the accept window."""
    srv, receiver, env = scene
    agent = start_agent("attach", "--pid", str(srv.pid), "--bsp-schedule-delay", "100",
                        env=env)
    _open_the_export_connection(agent, receiver)
    time.sleep(OWN_ACCEPT_WINDOW_S + 0.5)
    _shared_port_request_is_traced(srv, receiver)


def test_exports_to_a_traced_receiver_never_come_back_as_spans(start_agent, scene):
    """The receiver (this process) is traced too: its accept of the exporter's
    connection is recognised, and only that one: a client sharing the port
    right after is traced."""
    srv, receiver, env = scene
    agent = start_agent("attach", "--pid", str(srv.pid), "--pid", str(os.getpid()),
                        "--bsp-schedule-delay", "100", env=env)
    _open_the_export_connection(agent, receiver)
    _shared_port_request_is_traced(srv, receiver)
    time.sleep(1.0)  # the export carrying that span, and the next
    own = [s for s in receiver.spans if s.attributes.get("url.path") == "/v1/traces"]
    assert own == []
    assert any(s.resource.get("process.pid") == os.getpid() for s in receiver.spans), \
        "this process was not traced: the check above proves nothing"
