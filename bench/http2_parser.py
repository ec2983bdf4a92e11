#!/usr/bin/env python3
"""Per-stream CPU cost of the HTTP/2 parser (and, side by side, the HTTP/1 one).

    .venv/bin/python bench/http2_parser.py [calls]

Traffic is made once with the `h2` library, shaped like grpcio's: per unary call one
client write (HEADERS + DATA) and one server write (HEADERS + DATA + trailers), on one
long-lived connection; then replayed into Http2Connection, timed. Also: the same calls with
a frame-aware capture (DATA payloads as gaps), a connection joined late, and HTTP/1
keep-alive exchanges of a similar size through Http1Connection.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ebpf_tracer.model import Direction, Role  # noqa: E402
from ebpf_tracer.protocols.http1 import Http1Connection  # noqa: E402
from ebpf_tracer.protocols.http2 import Http2Connection  # noqa: E402
from tests.unit.http2_util import H2Pair  # noqa: E402

GRPC = [("content-type", "application/grpc"), ("te", "trailers"),
        ("user-agent", "grpc-python/1.85.1 grpc-c/50.0.0 (linux; chttp2)"),
        ("grpc-accept-encoding", "identity,deflate,gzip"), ("grpc-timeout", "9999m")]


def grpc_traffic(calls: int, methods: int = 8) -> list:
    p = H2Pair()
    for i in range(calls):
        body = b"\x00\x00\x00\x00\x20" + b"q" * 32
        p.request(f"/bench.Service/Method{i % methods}", method="POST", body=body, headers=GRPC)
        sid = p.client.get_next_available_stream_id() - 2
        p.respond(sid, 200, b"\x00\x00\x00\x00\x40" + b"r" * 64,
                  headers=[("content-type", "application/grpc")],
                  trailers=[("grpc-status", "0"), ("grpc-message", "")])
    return [(c.direction, c.data, c.ts) for c in p.chunks]


def http1_traffic(calls: int) -> list:
    out = []
    for i in range(calls):
        req = (f"POST /bench/method{i % 8} HTTP/1.1\r\nHost: svc:8080\r\n"
               "User-Agent: bench/1.0\r\nContent-Type: application/json\r\n"
               "Content-Length: 37\r\n\r\n").encode() + b"q" * 37
        resp = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Length: 69\r\n\r\n" + b"r" * 69)
        out += [(Direction.INGRESS, req, 2 * i), (Direction.EGRESS, resp, 2 * i + 1)]
    return out


def frame_aware(chunks: list) -> list:
    from tests.unit.http1_util import Chunk
    from tests.unit.test_http2_fixtures import _frame_aware
    return _frame_aware([Chunk(d, b, t) for d, b, t in chunks])


def run(make, chunks: list, calls: int, repeat: int = 5) -> tuple[float, int]:
    best = float("inf")
    for _ in range(repeat):
        conn = make()
        n = 0
        t0 = time.perf_counter()
        for d, item, ts in chunks:
            n += len(conn.gap(d, item, ts) if isinstance(item, int) else conn.feed(d, item, ts))
        best = min(best, time.perf_counter() - t0)
    return best / calls * 1e6, n


def main() -> int:
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    h2 = grpc_traffic(calls)
    h1 = http1_traffic(calls)
    h2_us, n = run(lambda: Http2Connection(Role.SERVER), h2, calls)
    assert n == calls, n
    fa_us, n = run(lambda: Http2Connection(Role.SERVER), frame_aware(h2), calls)
    assert n == calls
    skip = next(i for i, c in enumerate(h2) if i > 10 and c[0] == Direction.INGRESS)
    join_us, _ = run(lambda: Http2Connection(Role.SERVER), h2[skip:], calls)
    h1_us, n = run(lambda: Http1Connection(Role.SERVER), h1, calls)
    assert n == calls
    print(f"{calls} unary gRPC calls on one connection ({sum(len(c[1]) for c in h2)} bytes)")
    print(f"  HTTP/2 + HPACK, whole bytes:        {h2_us:6.1f} us/stream")
    print(f"  HTTP/2, frame-aware capture:        {fa_us:6.1f} us/stream")
    print(f"  HTTP/2, joined late:                {join_us:6.1f} us/stream")
    print(f"  HTTP/1 exchange of similar size:    {h1_us:6.1f} us/exchange")
    print(f"  ratio HTTP/2 / HTTP/1:              {h2_us / h1_us:6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
