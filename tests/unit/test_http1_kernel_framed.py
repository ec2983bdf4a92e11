"""Exchanges the kernel framed (EVF_H1_REQ requests, EVT_H1_RESP summaries) give
the records the parser gives for the same bytes, and hand over cleanly when the
kernel gives a connection back to the parser."""

from __future__ import annotations

import re
import socket

import pytest

from ebpf_tracer.conn.manager import ConnManager
from ebpf_tracer.events import OpenInfo
from ebpf_tracer.model import ConnMeta, Role
from ebpf_tracer.protocols.http1 import Http1Connection, connection
from ebpf_tracer.spans import http1_span
from tests.unit.http1_util import IN, OUT, load_capture, replay

GONE = 2**22 + 1000  # a pid that does not exist: /proc lookups find nothing
_SIMPLE = re.compile(rb"(GET|HEAD) [^\r\n]+\r\n(?:[^\r\n]+\r\n)*\r\n\Z")


def _summary(head_only: bool, data: bytes) -> tuple[int, int, int] | None:
    """What the kernel sends for a response whose whole head is in `data`:
    (status, minor, body), or None where it leaves the response to the parser."""
    head, sep, _ = data.partition(b"\r\n\r\n")
    if not sep:
        return None
    lines = head.split(b"\r\n")
    status, minor = int(lines[0][9:12]), int(lines[0][7:8])
    fields = {k.strip().lower(): v.strip() for k, _, v in (x.partition(b":") for x in lines[1:])}
    if status < 200 or b"transfer-encoding" in fields:
        return None
    if head_only or status in (204, 304):
        return status, minor, 0
    if b"content-length" not in fields:
        return None
    return status, minor, int(fields[b"content-length"])


def _kernel_framed(name: str, hold: bool) -> tuple[list, Http1Connection]:
    """Replay a capture as the kernel would send it: simple exchanges framed, their
    requests sent at once (EVF_H1_REQ) or, with `hold`, with their responses."""
    conn = Http1Connection(Role.SERVER)
    out: list = []
    chunks = load_capture(name)
    fast, head_only, body_left, summary, last, held = False, False, 0, None, 0, None
    for c in chunks:
        last = c.ts
        if c.direction == IN:
            fast = bool(_SIMPLE.match(c.data))
            head_only = c.data.startswith(b"HEAD ")
            if fast and hold:
                held = (c.data, c.ts)
            else:
                out += conn.fast_request(c.data, c.ts) if fast else conn.feed(IN, c.data, c.ts)
            summary = None
            continue
        if fast and summary is None:
            summary = _summary(head_only, c.data)
            if summary is None:
                fast = False  # the parser takes over from this response
                if held:  # the held request goes out first, as the record it was
                    out += conn.fast_request(*held)
                    held = None
            else:
                body_left = summary[2] - (len(c.data) - c.data.index(b"\r\n\r\n") - 4)
        elif fast:
            body_left -= len(c.data)
        if not fast:
            out += conn.feed(OUT, c.data, c.ts)
        elif body_left == 0:
            if held:
                out += conn.fast_exchange(*held, *summary, c.ts, 0)
                held = None
            else:
                out += conn.fast_response(*summary, c.ts, 0)
    out += conn.close(last + 1)
    return out, conn


def _same(framed: list, parsed: list) -> None:
    """Equal records but for response header values no span reads (a framed
    response carries only whether it had a Content-Length), and equal spans."""
    assert len(framed) == len(parsed) and parsed
    meta = ConnMeta(1, 3, 1, Role.SERVER)
    for f, p in zip(framed, parsed, strict=True):
        assert ("content-length" in f.response_headers) == ("content-length" in
                                                             p.response_headers)
        f.response_headers = p.response_headers
        assert f == p
        assert http1_span(f, meta, {}).attributes == http1_span(p, meta, {}).attributes


@pytest.mark.parametrize("hold", [False, True])
def test_nginx_records_equal_the_parsed_ones(hold):
    parsed, _ = replay(load_capture("nginx_keepalive"))
    connection._FAST_HEADS.clear()
    # Twice: first parsing each held request, then from the cache of exchange heads.
    cached = []
    for _ in range(2):
        framed, conn = _kernel_framed("nginx_keepalive", hold)
        _same(framed, parsed)
        assert conn.stats.records == len(parsed) and conn.stats.parse_errors == 0
        cached.append(dict(connection._FAST_HEADS))
    assert cached[0] == cached[1] and bool(cached[0]) == hold


@pytest.mark.parametrize("hold", [False, True])
def test_node_chunked_responses_go_to_the_parser_after_a_framed_request(hold):
    parsed, _ = replay(load_capture("node_chunked"))
    framed, _ = _kernel_framed("node_chunked", hold)
    _same(framed, parsed)


@pytest.mark.parametrize("seen", [False, True], ids=["first", "remembered"])
def test_an_exchange_the_shortcut_does_not_vouch_for_goes_the_long_way(seen):
    two = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n"
    with_body = b"GET /q HTTP/1.1\r\nContent-Length: 3\r\n\r\n"
    connection._FAST_HEADS.clear()
    if seen:  # the cache of exchange heads remembers them as not simple
        Http1Connection(Role.SERVER).fast_exchange(two, 1, 200, 1, 2, 2, 0)
        Http1Connection(Role.SERVER).fast_exchange(with_body, 1, 200, 1, 2, 2, 0)
        assert connection._FAST_HEADS == {two: (), with_body: ()}
    conn = Http1Connection(Role.SERVER)
    out = conn.fast_exchange(two, 1, 200, 1, 2, 2, 0)  # two heads: /b stays pending
    out += conn.fast_response(404, 1, 0, 3, 0)
    assert [(r.target, r.status) for r in out] == [("/a", 200), ("/b", 404)]
    # A body announced, answered before it came (as the parser would report it);
    # the body that follows is framed as one, not taken for a request.
    out = conn.fast_exchange(with_body, 4, 400, 1, 0, 5, 0)
    assert [(r.target, r.status, r.request_body_size) for r in out] == [("/q", 400, 0)]
    assert conn.feed(IN, b"abc", 6) == [] and conn.stats.parse_errors == 0


def test_two_heads_in_one_read_are_parsed_as_two_requests():
    conn = Http1Connection(Role.SERVER)
    two = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n"
    assert conn.fast_request(two, 1) == []
    out = conn.fast_response(200, 1, 2, 2, 0) + conn.fast_response(404, 1, 0, 3, 0)
    assert [(r.target, r.status) for r in out] == [("/a", 200), ("/b", 404)]


def test_a_get_with_a_body_is_framed_by_its_head():
    conn = Http1Connection(Role.SERVER)
    conn.fast_request(b"GET /q HTTP/1.1\r\nContent-Length: 3\r\n\r\n", 1)
    assert conn.feed(IN, b"abc", 2) == []  # the body, not a new message
    out = conn.feed(OUT, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 3)
    assert [(r.target, r.request_body_size, r.response_body_size) for r in out] == [("/q", 3, 2)]
    assert conn.stats.parse_errors == 0


def test_a_summary_without_its_request_is_counted_not_reported():
    conn = Http1Connection(Role.SERVER)
    assert conn.fast_response(200, 1, 5, 1, 0) == []
    assert conn.stats.unmatched_responses == 1


def test_bodies_cut_short_say_how():
    conn = Http1Connection(Role.SERVER)
    conn.fast_request(b"GET /a HTTP/1.1\r\n\r\n", 1)
    conn.fast_request(b"GET /b HTTP/1.1\r\n\r\n", 2)
    out = conn.fast_response(200, 1, 10, 3, 1) + conn.fast_response(200, 0, 10, 4, 2)
    assert [(r.partial, r.response_version) for r in out] == [
        ("response-truncated", "1.1"), ("response-body-lost", "1.0")]
    assert conn.stats.partial_records == 2


def test_bytes_that_are_not_a_request_are_left_to_the_parser():
    conn = Http1Connection(Role.SERVER)
    assert conn.fast_request(b"\x16\x03\x01 not http\r\n\r\n", 1) == []
    assert conn.fast_response(200, 1, 0, 2, 0) == []
    assert conn.stats.unmatched_responses == 1


def test_bytes_after_framed_exchanges_are_no_mid_stream_join():
    """Exchanges the kernel framed count as messages seen: garbage after them is
    a parse error, where on a fresh connection it is a join mid-stream."""
    after = Http1Connection(Role.SERVER)
    after.fast_exchange(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 1, 200, 1, 2, 2, 0)
    fresh = Http1Connection(Role.SERVER)
    for conn in (after, fresh):
        assert conn.feed(IN, b"BREW /pot HTCPCP/1.0\r\n\r\n", 3) == []
    assert (after.stats.parse_errors, fresh.stats.parse_errors) == (1, 0)


def _exchanges(name: str) -> list[tuple[bytes, int, bytes, int]]:
    """(request, its ts, response, its ts) of a capture's simple exchanges, each
    response whole in one chunk."""
    chunks = load_capture(name)
    out = []
    for req, resp in zip(chunks, chunks[1:], strict=False):
        if not (req.direction == IN and resp.direction == OUT and _SIMPLE.match(req.data)):
            continue
        summary = _summary(req.data.startswith(b"HEAD "), resp.data)
        if summary and len(resp.data) == resp.data.index(b"\r\n\r\n") + 4 + summary[2]:
            out.append((req.data, req.ts, resp.data, resp.ts))
    return out


def _open(m, fd: int, gen: int) -> None:  # noqa: ANN001
    m.on_open(GONE, fd, gen, 2, 100, OpenInfo(socket.AF_INET, 40000 + gen, -1,
                                              socket.inet_aton("127.0.0.1") + bytes(12), b"t\0"))


def _respond(m, fd: int, gen: int, ex: tuple, rpos: int = 0, pos: int = 0,  # noqa: ANN001
             partial: int = 0) -> list:
    req, rts, resp, ts = ex
    status, minor, body = _summary(req.startswith(b"HEAD "), resp)
    return m.on_h1_response(GONE, fd, gen, pos, len(resp), ts, status, minor, body, partial,
                            (rpos, len(req), req, rts))


def test_a_connection_per_request_builds_no_parser():
    """accept, one exchange the kernel framed whole, close (gunicorn's sync worker):
    the record the parser would give, and no parser made or summed."""
    done = []
    m = ConnManager(on_parser_done=done.append)
    for gen, ex in enumerate(_exchanges("nginx_keepalive"), 1):
        _open(m, 7, gen)
        out = _respond(m, 7, gen, ex)
        assert m._conns[(GONE, 7)].parser is None
        expected = Http1Connection(Role.SERVER).fast_exchange(
            ex[0], ex[1], *_summary(ex[0].startswith(b"HEAD "), ex[2]), ex[3], 0)
        assert [r for _, r in out] == expected and len(expected) == 1
        assert m.on_close(GONE, 7, gen, ex[3] + 1) == []
    assert gen > 1 and done == []


def test_exchanges_in_step_on_a_kept_alive_connection_need_no_parser_either():
    m = ConnManager()
    _open(m, 7, 1)
    rpos = pos = 0
    for ex in _exchanges("nginx_keepalive"):
        assert len(_respond(m, 7, 1, ex, rpos, pos)) == 1
        rpos, pos = rpos + len(ex[0]), pos + len(ex[2])
    assert m._conns[(GONE, 7)].parser is None


def test_what_framed_exchanges_cannot_vouch_for_goes_to_a_parser():
    ex = _exchanges("nginx_keepalive")
    # Out of step (records lost between): the parser, and a gap counted.
    m = ConnManager()
    _open(m, 7, 1)
    _respond(m, 7, 1, ex[0])
    out = _respond(m, 7, 1, ex[1], rpos=len(ex[0]) + 50, pos=len(ex[0][2]) + 50)
    t = m._conns[(GONE, 7)]
    assert isinstance(t.parser, Http1Connection) and t.gaps == 1 and len(out) == 1
    # A response cut short: the parser, which counts the partial record.
    m = ConnManager()
    _open(m, 7, 1)
    (_, rec), = _respond(m, 7, 1, ex[0], partial=1)
    parser = m._conns[(GONE, 7)].parser
    assert rec.partial == "response-truncated" and parser.stats.partial_records == 1
    # A head that is not one plain GET/HEAD: the parser too.
    m = ConnManager()
    _open(m, 7, 1)
    brew = (b"BREW /pot HTCPCP/1.0\r\n\r\n", 1, b"HTTP/1.1 204 No Content\r\n\r\n", 2)
    _respond(m, 7, 1, brew)
    assert m._conns[(GONE, 7)].parser is not None


def test_bytes_after_parserless_exchanges_are_no_mid_stream_join():
    """As with a parser that saw the exchanges: garbage next is a parse error."""
    m = ConnManager()
    _open(m, 7, 1)
    ex = _exchanges("nginx_keepalive")[0]
    _respond(m, 7, 1, ex)
    m.on_data(GONE, 7, 1, 2, 0, len(ex[0]), 25, b"BREW /pot HTCPCP/1.0\r\n\r\n", 3)
    t = m._conns[(GONE, 7)]
    assert t.framed == 1 and t.parser.stats.parse_errors == 1
