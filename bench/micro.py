#!/usr/bin/env python3
"""Parser microbenchmarks: the agent's per-record path on a synthetic ring-buffer stream.

    .venv/bin/python bench/micro.py [requests]

Records are packed with events.HDR exactly as the kernel writes them (an nginx-like
keep-alive exchange: one read of the request, one write of head+body), then fed to
Agent._on_record (decode -> conn manager -> tracker -> HTTP/1 parser -> stitch ->
span -> batcher); and the same exchange as the kernel sends it when it frames it
itself (one EVT_H1_RESP record: the response's summary and the request's bytes).
Also: the OTLP encoder per span (batches of 512) and the HTTP/2
parser (bench/http2_parser.py does it in detail).
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import table, write_result  # noqa: E402
from ebpf_tracer import events  # noqa: E402
from ebpf_tracer.agent import Agent  # noqa: E402
from ebpf_tracer.config import Config  # noqa: E402
from ebpf_tracer.export.encoder import encode_request_bytes  # noqa: E402

REQ = b"GET /c HTTP/1.1\r\nHost: 127.0.0.1:18090\r\nUser-Agent: wrk\r\n\r\n"
RESP = (b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sun, 22 Nov 2026 22:49:03 GMT\r\n"
        b"Content-Type: application/octet-stream\r\nContent-Length: 3\r\n"
        b"Connection: keep-alive\r\n\r\nok\n")


class _NullExporter:
    def export(self, spans) -> bool:  # noqa: ANN001
        return True

    def shutdown(self) -> None:
        pass


def _request(i: int, unique: bool) -> bytes:
    """REQ, or with a traceparent of its own (as an instrumented client sends):
    no two heads alike, so no head cache ever hits."""
    if not unique:
        return REQ
    return REQ[:-2] + b"traceparent: 00-%032x-%016x-01\r\n\r\n" % (i + 1, i + 1)


def _open(fd: int, gen: int, port: int, ts: int) -> memoryview:
    """An accept()ed connection from 127.0.0.1:port, as the kernel reports it."""
    return memoryview(events.HDR.pack(events.EventType.OPEN, 0, 2, 0, 100, 100, fd, gen, ts,
                                      0, 0, 0, 0, 0)
                      + events.OPEN_INFO.pack(2, port, 3, bytes([127, 0, 0, 1]) + bytes(12),
                                              b"nginx"))


def per_connection(n: int) -> list[memoryview]:
    """A connection per request (gunicorn's sync worker, HTTP/1.0 clients): accept,
    the kernel-framed exchange, close; the fd is reused, its generation is not."""
    out = []
    head_len = RESP.index(b"\r\n\r\n") + 4
    for i in range(n):
        ts = 1000 + i * 10
        out.append(_open(9, i + 1, 30000 + i % 30000, ts))
        out.append(memoryview(
            events.HDR.pack(events.EventType.H1_RESP, 1, 2, 0, 100, 100, 9, i + 1, ts + 5, 0,
                            len(RESP), 0, 0, 0)
            + events.H1_RESP.pack(ts + 3, len(RESP) - head_len, head_len, 200, 1, 0, ts + 1,
                                  0, len(REQ), len(REQ)) + REQ))
        out.append(memoryview(events.HDR.pack(events.EventType.CLOSE, 0, 2, 0, 100, 100, 9,
                                              i + 1, ts + 6, 0, 0, 0, 0, 0)))
    return out


def records(n: int, conns: int = 8, kernel_framed: bool = False,
            unique: bool = False) -> list[memoryview]:
    """Both records of each exchange; `kernel_framed`: the one record the kernel
    sends for a simple exchange it frames itself (EVT_H1_RESP with the request);
    `unique`: every request head different."""
    # Each connection opens first (accept: the peer's address), as in the kernel.
    out = [_open(5 + c, 1, 40000 + c, 900) for c in range(conns)]
    pos = {c: [0, 0] for c in range(conns)}
    head_len = RESP.index(b"\r\n\r\n") + 4
    for i in range(n):
        c = i % conns
        p = pos[c]
        req = _request(i, unique)
        if kernel_framed:  # one record: the response's summary, its request held back
            out.append(memoryview(
                events.HDR.pack(events.EventType.H1_RESP, 1, 2, 0, 100, 100, 5 + c, 1,
                                1005 + i * 10, p[1], len(RESP), 0, 0, 0)
                + events.H1_RESP.pack(1003 + i * 10, len(RESP) - head_len, head_len, 200, 1, 0,
                                      1000 + i * 10, p[0], len(req), len(req)) + req))
            p[0] += len(req)
        else:
            out.append(memoryview(events.HDR.pack(1, 0, 2, 0, 100, 100, 5 + c, 1, 1000 + i * 10,
                                                  p[0], len(req), len(req), 0, 0) + req))
            p[0] += len(req)
            out.append(memoryview(events.HDR.pack(1, 1, 2, 0, 100, 100, 5 + c, 1, 1005 + i * 10,
                                                  p[1], len(RESP), len(RESP), 0, 0) + RESP))
        p[1] += len(RESP)
    return out


def pipeline(n: int, rounds: int = 5, kernel_framed: bool = False,
             unique: bool = False, per_conn: bool = False) -> tuple[float, list]:
    per = []
    spans: list = []
    for _ in range(rounds):
        a = Agent(Config(), exporter=_NullExporter())
        spans = []
        a.batcher.on_end_many = spans.extend
        a.resources.get(100)
        recs = (per_connection(n) if per_conn
                else records(n, kernel_framed=kernel_framed, unique=unique))
        t = time.perf_counter()
        for i, m in enumerate(recs, 1):
            a._on_record(m)
            if not i % 64:  # as the poll loop does once per poll
                a.flush_spans()
        a.flush_spans()
        per.append((time.perf_counter() - t) / n * 1e6)
        assert len(spans) == n and a.decode_errors == 0, (len(spans), a.decode_errors)
    return statistics.median(per), spans


def encode(spans: list, rounds: int = 5) -> float:
    per = []
    for _ in range(rounds):
        t = time.perf_counter()
        for i in range(0, len(spans), 512):
            encode_request_bytes(spans[i : i + 512])
        per.append((time.perf_counter() - t) / len(spans) * 1e6)
    return statistics.median(per)


def main(n: int = 20000) -> dict:
    pipe_us, spans = pipeline(n)
    framed_us, _ = pipeline(n, kernel_framed=True)
    unique_us, _ = pipeline(n, kernel_framed=True, unique=True)
    conn_us, _ = pipeline(n, per_conn=True)
    enc_us = encode(spans)
    rows = [["http1 record->span (us/request)", pipe_us],
            ["http1 kernel-framed record->span (us/request)", framed_us],
            ["... every request head different (traceparent)", unique_us],
            ["... a connection per request (accept, exchange, close)", conn_us],
            ["otlp encode (us/span, batch 512)", enc_us],
            ["sum, kernel-framed (us/request)", framed_us + enc_us]]
    result = {"requests": n, "http1_pipeline_us_per_request": pipe_us,
              "http1_kernel_framed_us_per_request": framed_us,
              "http1_kernel_framed_unique_heads_us_per_request": unique_us,
              "http1_connection_per_request_us": conn_us,
              "otlp_encode_us_per_span": enc_us}
    try:
        from bench import http2_parser as h2
        from ebpf_tracer.model import Role
        from ebpf_tracer.protocols.http2 import Http2Connection

        calls = 2000
        per, _ = h2.run(lambda: Http2Connection(Role.SERVER), h2.grpc_traffic(calls), calls)
        result["http2_grpc_parse_us_per_call"] = per
        rows.append(["http2/gRPC parse+stitch (us/call)", result["http2_grpc_parse_us_per_call"]])
    except Exception as e:  # noqa: BLE001 - the HTTP/2 API may move; report, don't fail
        result["http2_error"] = repr(e)
    table("parser microbenchmarks (median of rounds)", ["what", "value"], rows)
    write_result("micro", result)
    return result


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20000)
