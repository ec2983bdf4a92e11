"""`ebpf-tracer demo`: trace a bundled server and client, print their spans."""

from __future__ import annotations

import os
import shutil
import sys
import time

import click

from .agent import Agent
from .config import Config, Mode
from .errors import TracerError
from .launch import GatedProcess
from .loopback import free_port, wait_port


def client_script(port: int) -> str:
    base = f"http://127.0.0.1:{port}"
    if shutil.which("curl"):
        q = "curl -s -o /dev/null"
        return "; ".join([
            f"{q} {base}/",
            f"{q} '{base}/api/products?page=2'",
            f"{q} {base}/api/slow",
            f"{q} -X POST -H 'Content-Type: application/json' -d '{{\"item\":1}}' "
            f"{base}/api/orders",
            f"{q} {base}/missing",
        ])
    return (f"{sys.executable} -c \"import urllib.request as u; "
            f"[u.urlopen('{base}' + p).read() for p in ('/', '/api/products?page=2')]\"")


def run_demo() -> int:
    if os.geteuid() != 0:
        raise TracerError("the demo loads eBPF programs: run it as root (sudo make demo)")
    click.echo("ebpf-tracer demo: compiling and attaching the eBPF programs...", err=True)
    agent = Agent(Config(mode=Mode.ATTACH, exporter="console", batch_delay_s=0.2))
    agent.start()
    port = free_port()
    server = GatedProcess([sys.executable, "-m", "ebpf_tracer.demo_server", str(port)],
                          env={**os.environ, "OTEL_SERVICE_NAME": "demo-shop"})
    try:
        agent.add_pids([server.pid])
        server.release()
        try:
            wait_port(port, 10.0)
        except TimeoutError:
            raise TracerError(f"the demo server did not start on 127.0.0.1:{port}") from None
        click.echo(f"ebpf-tracer demo: server on 127.0.0.1:{port}; running the client "
                   "(curl: GET, GET with query, slow GET, POST, 404)\n", err=True)
        client = GatedProcess(["/bin/sh", "-c", client_script(port)])
        agent.add_pids([client.pid])
        client.release()
        agent.run(until=lambda: client.poll() is not None)
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            agent.poll(100)
    finally:
        server.proc.terminate()
        server.wait(5)
        agent.shutdown()
    click.echo(f"\nebpf-tracer demo: {agent.spans_produced} spans "
               "(SERVER from demo-shop, CLIENT from curl)", err=True)
    return 0
