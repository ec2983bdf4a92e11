#!/usr/bin/env python3
"""The agent's per-request Python cost on real records: capture, then replay on one core.

    .venv/bin/python bench/replay.py [nginx|grpc ...]

Loads the real eBPF programs (root), traces nginx under wrk (keep-alive) or the grpcio
test service under bench/grpc_load.py for a few seconds, keeps every ring-buffer record
as the kernel wrote it, then feeds them to Agent._on_record in a tight loop (decode ->
conn manager -> tracker -> parser -> stitch -> span; export not included). Unlike
micro.py's synthetic records these carry real addresses, changing Date headers and
grpcio's own framing (PING, WINDOW_UPDATE, trailers); unlike the in-place figures
they exclude sharing the CPU with the traced server and its load generator.
"""

from __future__ import annotations

import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    Proc,
    children,
    free_port,
    start_nginx,
    table,
    wait_port,
    write_result,
    wrk,
)
from bench.micro import _NullExporter  # noqa: E402
from bench.run import GRPC_APP, _grpc_load  # noqa: E402
from ebpf_tracer.agent import Agent  # noqa: E402
from ebpf_tracer.config import Config  # noqa: E402
from ebpf_tracer.loader import LoaderConfig, Probes  # noqa: E402


def capture(target: str, seconds: float = 3) -> tuple[int, list[bytes]]:
    """(requests the client completed, records) from tracing `target` under load."""
    recs: list[bytes] = []
    probes = Probes(LoaderConfig())
    probes.open_ring_buffer(lambda v: recs.append(bytes(v)))
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            probes.poll(50)

    if target == "nginx":
        server, port = start_nginx()
        probes.trace_pid(children(server.pid)[0])

        def load() -> int:
            return wrk(f"http://127.0.0.1:{port}/", seconds, 20, 1, 2.0)["requests"]
    else:
        port = free_port()
        server = Proc([sys.executable, str(GRPC_APP), "serve", str(port)])
        wait_port(port)
        probes.trace_pid(server.pid)

        def load() -> int:
            return _grpc_load(port, 1000, seconds)["requests"]
    poller = threading.Thread(target=poll)
    poller.start()
    try:
        n = load()
        time.sleep(0.5)  # the last records
    finally:
        stop.set()
        poller.join()
        server.stop()
        probes.close()
    return n, recs


def replay(n: int, recs: list[bytes], rounds: int = 5) -> tuple[float, int]:
    """Median us per request over `rounds` fresh agents; spans made by the last."""
    per = []
    spans: list = []
    views = [memoryview(r) for r in recs]
    for _ in range(rounds):
        agent = Agent(Config(), exporter=_NullExporter())
        spans = []
        agent.batcher.on_end_many = spans.extend
        t = time.perf_counter()
        for i, v in enumerate(views, 1):
            agent._on_record(v)
            if not i % 64:  # as the poll loop does once per poll
                agent.flush_spans()
        agent.flush_spans()
        per.append((time.perf_counter() - t) / n * 1e6)
    return statistics.median(per), len(spans)


def main(targets: list[str]) -> dict:
    rows, result = [], {}
    for target in targets:
        n, recs = capture(target)
        us, spans = replay(n, recs)
        result[target] = {"requests": n, "records": len(recs), "spans": spans,
                          "us_per_request": us}
        rows.append([target, n, len(recs) / n if n else None, spans, us])
    table("real records replayed (median of 5 rounds, export excluded)",
          ["traffic", "requests", "records/req", "spans", "us/request"], rows)
    write_result("replay", result)
    return result


if __name__ == "__main__":
    main(sys.argv[1:] or ["nginx", "grpc"])
