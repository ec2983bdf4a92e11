"""Real traffic captured between real peers (tests/fixtures/capture_http1.py), replayed.

Each capture is replayed into a SERVER and a CLIENT connection, whole, one byte at a
time, and with the kernel's 2048-byte copy limit (the rest of a chunk becomes a gap).
"""

from __future__ import annotations

import pytest

from ebpf_tracer.model import Role

from .http1_util import IN, OUT, load_capture, replay, summary

HELLO = ("GET", "/hello.txt", 200, 0, 13, None)
NGINX_404 = 153  # nginx's built-in 404 page

EXPECTED: dict[str, list[tuple]] = {
    # curl -> Python http.server; HTTP/1.0 response without Content-Length
    "python_close_delimited": [("GET", "/stream", 200, 0, 21, None)],
    # curl -> Python SimpleHTTPRequestHandler, HTTP/1.1 keep-alive
    "python_keepalive": [
        HELLO,
        ("HEAD", "/hello.txt", 200, 0, 0, None),
        ("GET", "/hello.txt", 304, 0, 0, None),
        ("GET", "/big.bin?x=1&y=2", 200, 0, 10240, None),
        ("GET", "/missing", 404, 0, 335, None),
    ],
    # curl -> Node: chunked response + trailer, chunked upload, 100-continue upload, 204
    "node_chunked": [
        ("GET", "/chunked", 200, 0, 3005, None),
        ("POST", "/upload", 201, 5000, 15, None),
        ("POST", "/upload", 201, 5000, 15, None),
        ("GET", "/empty", 204, 0, 0, None),
    ],
    # curl --http1.0 -> Node: streamed body ends with the connection
    "node_http10_close": [("GET", "/stream", 200, 0, 18, None)],
    # curl -> Node: WebSocket upgrade, then a frame that must not be parsed
    "node_upgrade": [("GET", "/ws", 101, 0, 0, None)],
    # curl -> nginx, one connection: static, HEAD, conditional, 204, POST, 404, big, gzip
    "nginx_keepalive": [
        HELLO,
        ("HEAD", "/hello.txt", 200, 0, 0, None),
        HELLO,
        ("GET", "/nocontent", 204, 0, 0, None),
        ("POST", "/echo", 200, 7, 3, None),
        ("GET", "/missing?q=1", 404, 0, NGINX_404, None),
        ("GET", "/big.bin", 200, 0, 10240, None),
        ("GET", "/text.txt", 200, 0, 131, None),  # gzip, chunked: decoded size
    ],
    # wrk pipelining 4 requests per write -> nginx, 5 writes
    "wrk_pipelined": [
        HELLO,
        ("GET", "/nocontent", 204, 0, 0, None),
        ("GET", "/missing", 404, 0, NGINX_404, None),
        ("POST", "/echo", 200, 4, 3, None),
    ] * 5,
}

# With the 2048-byte copy limit, Content-Length bodies stay exact; a chunked body
# cut inside its framing is reported partial.
CAPPED_PARTIAL = {
    "node_chunked": {0: "response-body-lost", 1: "request-body-lost"},
}

ROLES = [Role.SERVER, Role.CLIENT]


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r.name)
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_capture_whole(name: str, role: Role) -> None:
    chunks = load_capture(name)
    records, conn = replay(chunks, role)
    assert summary(records) == EXPECTED[name]
    assert conn.role == role
    assert conn.stats.parse_errors == 0
    assert conn.stats.unmatched_requests == 0
    assert conn.stats.unmatched_responses == 0


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r.name)
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_capture_byte_by_byte(name: str, role: Role) -> None:
    records, conn = replay(load_capture(name), role, piece=1)
    assert summary(records) == EXPECTED[name]
    assert conn.stats.parse_errors == 0


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r.name)
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_capture_with_copy_limit(name: str, role: Role) -> None:
    records, _ = replay(load_capture(name), role, copy_cap=2048)
    partial = CAPPED_PARTIAL.get(name, {})
    assert [r.partial for r in records] == [partial.get(i) for i in range(len(records))]
    # what a partial record still knows exactly
    assert [s[:3] for s in summary(records)] == [e[:3] for e in EXPECTED[name]]
    for i, (got, want) in enumerate(zip(summary(records), EXPECTED[name], strict=True)):
        if i not in partial:
            assert got == want


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r.name)
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_capture_timing(name: str, role: Role) -> None:
    """Spans run from the first request byte's chunk to the last response byte's chunk."""
    chunks = load_capture(name)
    records, _ = replay(chunks, role)
    request_ts = [c.ts for c in chunks if c.direction == IN]
    response_ts = [c.ts for c in chunks if c.direction == OUT]
    for r in records:
        assert r.start_ns in request_ts
        assert r.end_ns in response_ts
        assert r.end_ns >= r.start_ns


def test_capture_timing_exact_for_a_close_delimited_body() -> None:
    chunks = load_capture("node_http10_close")
    (rec,), _ = replay(chunks, Role.SERVER)
    assert rec.start_ns == chunks[0].ts
    assert rec.end_ns == chunks[-1].ts  # the second write, not the head's


def test_pipelined_capture_fed_as_one_stream_per_direction() -> None:
    chunks = load_capture("wrk_pipelined")
    records, _ = replay(
        [c for c in chunks if c.direction == IN] + [c for c in chunks if c.direction == OUT],
        Role.SERVER,
    )
    assert summary(records) == EXPECTED["wrk_pipelined"]


def test_capture_joined_mid_stream() -> None:
    """Starting the tracer after a few chunks loses at most the cut exchange."""
    chunks = load_capture("nginx_keepalive")
    for skip in range(1, len(chunks)):
        records, conn = replay(chunks[skip:], Role.SERVER)
        want = EXPECTED["nginx_keepalive"][(skip + 1) // 2 :]
        assert summary(records) == want, skip
        assert conn.stats.parse_errors == 0
        assert conn.stats.unmatched_responses == skip % 2


def test_capture_fed_to_an_unknown_role() -> None:
    from ebpf_tracer.protocols.http1 import Http1Connection

    chunks = load_capture("python_keepalive")
    records, conn = replay(chunks, Role.SERVER, conn=Http1Connection(Role.UNKNOWN))
    assert conn.role == Role.SERVER
    assert summary(records) == EXPECTED["python_keepalive"]
    assert OUT != IN


@pytest.mark.parametrize("cap", [16, 64, 100, 256, 1000])
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_capture_with_tiny_copy_limits(name: str, cap: int) -> None:
    """Heads cut by the copy limit are lost, never invented; the parser stays sane."""
    records, conn = replay(load_capture(name), Role.SERVER, copy_cap=cap)
    want = EXPECTED[name]
    assert len(records) <= len(want)
    assert {s[:2] for s in summary(records)} <= {w[:2] for w in want}
    assert {s[2] for s in summary(records)} <= {w[2] for w in want}
    assert conn.stats.internal_errors == 0
