"""HTTP/1 exchanges the kernel frames itself (bpf/include/events.h, h1_resp_info):
the spans must be the ones the agent's own parser gives, whichever way each
exchange went, and the kernel must actually have framed the simple ones."""

from __future__ import annotations

import socket

from tests.e2e.conftest import final_stats
from tests.e2e.test_http1 import A, _nginx_worker, settle

# What differs between two runs by nature: times, ports, ids.
_SAME = ("http.request.method", "url.path", "url.query", "http.response.status_code",
         "http.request.body.size", "http.response.body.size", "network.protocol.version",
         "ebpf_tracer.partial", "error.type", "server.address")


def _read_response(s: socket.socket, buf: bytes, head_only: bool) -> tuple[bytes, bytes]:
    """Read one response from `s` (after `buf`): (its head, what is left over)."""
    while b"\r\n\r\n" not in buf:
        buf += s.recv(65536)
    head, _, rest = buf.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if head_only or status in (204, 304):
        length = 0
    while len(rest) < length:
        rest += s.recv(65536)
    return head, rest[length:]


def _traffic(port: int) -> int:
    """One kept-alive connection through every case; returns the exchanges."""
    host = f"Host: 127.0.0.1:{port}\r\n".encode()
    steps = [
        (b"GET /index.html HTTP/1.1\r\n" + host + b"User-Agent: t/1\r\n\r\n", [False]),
        (b"HEAD /index.html HTTP/1.1\r\n" + host + b"\r\n", [True]),
        (b"GET /big.bin?x=1 HTTP/1.1\r\n" + host + b"\r\n", [False]),  # sendfile body
        (b"GET /nope HTTP/1.1\r\n" + host + b"\r\n", [False]),
        (b"GET /index.html HTTP/1.1\r\n" + host + b"If-None-Match: ETAG\r\n\r\n", [False]),
        (b"GET /boom HTTP/1.1\r\n" + host + b"\r\n", [False]),
        # Pipelined: the kernel hands this connection back to the agent's parser.
        (b"GET /index.html?p=1 HTTP/1.1\r\n" + host + b"\r\n"
         + b"GET /created?p=2 HTTP/1.1\r\n" + host + b"\r\n", [False, False]),
        (b"POST /created HTTP/1.1\r\n" + host + b"Content-Length: 3\r\n\r\nabc", [False]),
        (b"GET /index.html?after=1 HTTP/1.1\r\n" + host + b"\r\n", [False]),
    ]
    n = 0
    with socket.create_connection(("127.0.0.1", port)) as s:
        rest, etag = b"", b""
        for req, heads in steps:
            s.sendall(req.replace(b"ETAG", etag))  # the first response's: a 304
            for head_only in heads:
                head, rest = _read_response(s, rest, head_only)
                etag = etag or next(v.strip() for k, _, v in (
                    line.partition(b":") for line in head.split(b"\r\n")[1:])
                    if k.lower() == b"etag")
                n += 1
    # A second connection that stays simple all along.
    with socket.create_connection(("127.0.0.1", port)) as s:
        rest = b""
        for k in range(3):
            s.sendall(b"GET /index.html?k=%d HTTP/1.1\r\n" % k + host + b"\r\n")
            _, rest = _read_response(s, rest, False)
            n += 1
    return n


def _run(start_agent, receiver, otlp_env, nginx_server, kernel: str) -> tuple[list, dict]:
    srv, port = nginx_server
    worker = _nginx_worker(srv.pid)
    receiver.clear()
    agent = start_agent("attach", "--pid", str(srv.pid),
                        env={**otlp_env, "EBPF_TRACER_KERNEL_HTTP1": kernel})
    n = _traffic(port)
    spans = settle(receiver, worker, n)
    rc, _, err = agent.stop()
    assert rc == 0, err
    assert len(spans) == n, [(s.name, A(s).get("url.path")) for s in spans]
    return [{k: A(s).get(k) for k in _SAME} for s in spans], final_stats(err)


def test_kernel_framed_spans_equal_the_parsers(start_agent, receiver, otlp_env, nginx_server):
    framed, on = _run(start_agent, receiver, otlp_env, nginx_server, "1")
    parsed, off = _run(start_agent, receiver, otlp_env, nginx_server, "0")
    assert framed == parsed
    # The first connection's first six exchanges and the second connection's
    # three are simple; the pipelined pair turns the first connection over to
    # the parser for good (the POST and the GET after it are parsed).
    assert on["kernel_h1_exchanges"] == 9, on
    assert off["kernel_h1_exchanges"] == 0, off
    codes = [s["http.response.status_code"] for s in framed]
    assert codes[:6] == [200, 200, 200, 404, 304, 503]
    assert framed[2]["http.response.body.size"] == 100_000
    assert framed[1]["http.response.body.size"] is None  # HEAD: no body
    assert framed[4]["http.response.body.size"] is None  # 304: no body
