"""Hypothesis: split-invariance on valid traffic, robustness and bounded memory on any input."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ebpf_tracer.model import Direction, Role
from ebpf_tracer.protocols.http1 import Http1Connection
from ebpf_tracer.protocols.http1.connection import Http1Stats

from .http1_util import IN, OUT, summary

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@dataclass
class Exchange:
    request: bytes
    response: bytes
    expected: tuple  # as summary() gives it


_token = st.text("abcdefghijklmnopqrstuvwxyz0123456789-_.~", min_size=1, max_size=12)
_header_names = st.sampled_from(
    ["Accept", "X-Trace", "Cache-Control", "ACCEPT-LANGUAGE", "x-forwarded-for", "Cookie"]
)


@st.composite
def _headers(draw: st.DrawFn, eol: bytes) -> bytes:
    out = b""
    for name in draw(st.lists(_header_names, max_size=4)):
        value = draw(_token).encode()
        out += name.encode() + b": " + value + eol
        if draw(st.booleans()) and draw(st.booleans()):
            out += b"  folded" + eol  # obs-fold
    return out


@st.composite
def _body(draw: st.DrawFn, eol: bytes) -> tuple[bytes, bytes, int]:
    """(framing header lines, body bytes, decoded size)."""
    kind = draw(st.sampled_from(["length", "chunked"]))
    if kind == "length":
        n = draw(st.integers(0, 300))
        return b"Content-Length: %d" % n + eol, b"x" * n, n
    sizes = draw(st.lists(st.integers(1, 300), max_size=4))
    body = b""
    for size in sizes:
        ext = b";a=b" if draw(st.booleans()) else b""
        body += b"%x" % size + ext + eol + b"y" * size + eol
    body += b"0" + eol
    if draw(st.booleans()):
        body += b"X-Trailer: t" + eol
    body += eol
    return b"Transfer-Encoding: chunked" + eol, body, sum(sizes)


@st.composite
def exchanges(draw: st.DrawFn) -> Exchange:
    eol = draw(st.sampled_from([b"\r\n", b"\r\n", b"\n"]))
    method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS"]))
    target = "/" + draw(_token)
    if draw(st.booleans()):
        target += "?q=" + draw(_token)
    version = draw(st.sampled_from(["1.1", "1.1", "1.0"]))
    req = f"{method} {target} HTTP/{version}".encode() + eol + b"Host: h" + eol
    req += draw(_headers(eol))
    req_body_size = 0
    if method in ("POST", "PUT", "PATCH"):
        framing, body, req_body_size = draw(_body(eol))
        req += framing + eol + body
    else:
        req += eol

    status = draw(st.sampled_from([200, 201, 204, 301, 304, 404, 500]))
    resp = b""
    if draw(st.integers(0, 5)) == 0:
        resp += b"HTTP/1.1 100 Continue" + eol + eol
    resp += f"HTTP/1.1 {status} Reason Phrase".encode() + eol + draw(_headers(eol))
    if method == "HEAD" or status in (204, 304):
        if draw(st.booleans()):
            resp += b"Content-Length: 42" + eol  # describes the entity, no body follows
        resp += eol
        resp_body_size = 0
    else:
        framing, body, resp_body_size = draw(_body(eol))
        resp += framing + eol + body
    return Exchange(req, resp, (method, target, status, req_body_size, resp_body_size, None))


@st.composite
def _split(draw: st.DrawFn, data: bytes) -> list[bytes]:
    cuts = sorted(set(draw(st.lists(st.integers(0, len(data)), max_size=6))))
    edges = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(edges, edges[1:], strict=False) if b > a]


def _feed_pieces(conn: Http1Connection, d: Direction, pieces: list[bytes], ts: int) -> list:
    out = []
    for i, p in enumerate(pieces):
        out += conn.feed(d, p, ts + i)
    return out


def _sane(stats: Http1Stats) -> None:
    assert stats.internal_errors == 0


@SETTINGS
@given(st.lists(exchanges(), min_size=1, max_size=5), st.data(), st.sampled_from(list(Role)[1:]))
def test_random_splits_give_the_same_records(
    xs: list[Exchange], data: st.DataObject, role: Role
) -> None:
    """Valid keep-alive traffic: whole or split anywhere, the records are the expected ones."""
    req_dir, resp_dir = (IN, OUT) if role == Role.SERVER else (OUT, IN)
    whole = Http1Connection(role)
    split = Http1Connection(role)
    got_whole, got_split = [], []
    for i, x in enumerate(xs):
        t = i * 1000
        got_whole += whole.feed(req_dir, x.request, t) + whole.feed(resp_dir, x.response, t + 500)
        got_split += _feed_pieces(split, req_dir, data.draw(_split(x.request)), t)
        got_split += _feed_pieces(split, resp_dir, data.draw(_split(x.response)), t + 500)
    got_whole += whole.close(10**9)
    got_split += split.close(10**9)
    want = [x.expected for x in xs]
    assert summary(got_whole) == want
    assert summary(got_split) == want
    assert [(r.start_ns, r.end_ns) for r in got_whole] == [
        (i * 1000, i * 1000 + 500) for i in range(len(xs))
    ]
    for conn in (whole, split):
        assert conn.stats.parse_errors == 0
        assert conn.stats.unmatched_requests == conn.stats.unmatched_responses == 0
        _sane(conn.stats)


@SETTINGS
@given(st.lists(exchanges(), min_size=1, max_size=6), st.data())
def test_pipelined_random_splits(xs: list[Exchange], data: st.DataObject) -> None:
    """All requests first (pipelined), then all responses: FIFO matching, any split."""
    conn = Http1Connection(Role.SERVER)
    out = _feed_pieces(conn, IN, data.draw(_split(b"".join(x.request for x in xs))), 0)
    out += _feed_pieces(conn, OUT, data.draw(_split(b"".join(x.response for x in xs))), 100)
    out += conn.close(10**6)
    assert summary(out) == [x.expected for x in xs]
    _sane(conn.stats)


_ops = st.lists(
    st.tuples(
        st.sampled_from([IN, OUT]),
        st.one_of(
            st.binary(max_size=300),
            st.integers(1, 5000),  # a gap
            st.sampled_from([
                b"GET / HTTP/1.1\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc",
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", b"5\r\nhello\r\n",
                b"0\r\n\r\n", b"\r\n", b"POST /p HTTP/1.1\r\nContent-Length: 10\r\n\r\n",
                b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 101 Switching\r\n\r\n",
                b"HTTP/1.0 200 OK\r\n\r\nbody", b"HEAD / HTTP/1.1\r\n\r\n", b"zz\r\n",
                b"HTTP/1.1 204 No\r\nContent-Length: 9\r\n\r\n", b"X-H: v\r\n", b" fold\r\n",
                b"GET /x HTTP/1.1\nHost: a\n\n", b"ffffffffffffffff\r\n",
                b"CONNECT a:1 HTTP/1.1\r\n\r\n",
            ]),
        ),
    ),
    max_size=40,
)


@settings(max_examples=500, deadline=None)
@given(_ops, st.sampled_from(list(Role)), st.integers(256, 2048), st.integers(1, 8))
def test_any_input_never_raises_and_memory_stays_bounded(
    ops: list, role: Role, max_head: int, max_pending: int
) -> None:
    conn = Http1Connection(role, max_head_bytes=max_head, max_pending=max_pending)
    n_requests = 0
    records = 0
    for i, (d, item) in enumerate(ops):
        if isinstance(item, int):
            records += len(conn.gap(d, item, i))
        else:
            n_requests += item.count(b" HTTP/1.")
            records += len(conn.feed(d, item, i))
        for parser in (conn._req, conn._resp):
            assert parser is None or len(parser._buf) <= max_head
        assert len(conn._pending) <= max_pending
    records += len(conn.close(len(ops)))
    assert records <= n_requests
    _sane(conn.stats)


@settings(max_examples=300, deadline=None)
@given(st.lists(exchanges(), min_size=1, max_size=4), st.data())
def test_random_gaps_in_valid_traffic(xs: list[Exchange], data: st.DataObject) -> None:
    """Gaps anywhere: no crash, never more records than exchanges, no invented messages.

    (When both a request and a response vanish, FIFO pairing can pair the wrong two:
    the bytes cannot tell, so only the parts are checked.)
    """
    conn = Http1Connection(Role.SERVER)
    out = []
    gaps = 0
    for i, x in enumerate(xs):
        for d, msg in ((IN, x.request), (OUT, x.response)):
            if data.draw(st.booleans()):
                a = data.draw(st.integers(0, len(msg)))
                b = data.draw(st.integers(a, len(msg)))
                out += conn.feed(d, msg[:a], i)
                out += conn.gap(d, b - a, i)
                out += conn.feed(d, msg[b:], i)
                gaps += b > a
            else:
                out += conn.feed(d, msg, i)
    out += conn.close(10**6)
    assert len(out) <= len(xs)
    requests = {x.expected[:2] for x in xs}
    statuses = {x.expected[2] for x in xs}
    for r in out:
        assert (r.method, r.target) in requests
        assert r.status in statuses
        assert r.end_ns >= r.start_ns
    if not gaps:
        assert summary(out) == [x.expected for x in xs]
    _sane(conn.stats)


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=2000), st.lists(exchanges(), min_size=1, max_size=3))
def test_garbage_prefix_then_valid_traffic(garbage: bytes, xs: list[Exchange]) -> None:
    """Joined mid-stream (any prefix): the observer recovers by the next exchanges."""
    conn = Http1Connection(Role.SERVER)
    conn.feed(IN, garbage, 0)
    conn.feed(OUT, garbage, 0)
    out = []
    for i, x in enumerate(xs):
        out += conn.feed(IN, x.request, i) + conn.feed(OUT, x.response, i)
    out += conn.close(10**6)
    # at most the first exchange can be disturbed by the unframed prefix
    if len(xs) > 1:
        assert summary(out)[-(len(xs) - 1) :] == [x.expected for x in xs][1:]
    assert len(out) <= len(xs)
    _sane(conn.stats)
