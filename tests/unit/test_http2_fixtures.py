"""Real HTTP/2 traffic captured between real peers (tests/fixtures/capture_http2.py), replayed.

Each capture is replayed into a SERVER and a CLIENT connection: whole, in small pieces,
split at every offset of every frame-bearing chunk, joined mid-connection at every chunk
boundary, with gaps where the kernel would not copy, and with a frame-aware capture that
copies only frame headers and header blocks.
"""

from __future__ import annotations

import pytest

from ebpf_tracer.model import Role
from ebpf_tracer.protocols.http1 import Http1Record
from ebpf_tracer.protocols.http2 import Http2Connection, Http2Record
from ebpf_tracer.protocols.http2.frames import DATA, HEADER, PREFACE

from .http1_util import Chunk
from .http2_util import IN, OUT, load_capture, replay, summary

GREETER = "/helloworld.Greeter/"
HELLO = (GREETER + "SayHello", 200, 0, 10, 16, None)

# (stream, method, path, :status, grpc-status, request DATA, response DATA, partial)
EXPECTED: dict[str, list[tuple]] = {
    # grpcio client -> grpcio server: three unary calls on one channel, one of 40 kB
    "grpc_unary": [
        (1, "POST", *HELLO),
        (3, "POST", GREETER + "SayHello", 200, 0, 40005, 40011, None),
        (5, "POST", *HELLO),
    ],
    # server streaming: three messages, one of 20 kB over several DATA frames
    "grpc_server_streaming": [
        (1, "POST", GREETER + "ListFeatures", 200, 0, 9, 20055, None),
    ],
    "grpc_client_streaming": [
        (1, "POST", GREETER + "RecordRoute", 200, 0, 30, 10, None),
    ],
    "grpc_bidi": [(1, "POST", GREETER + "RouteChat", 200, 0, 21, 36, None)],
    # NOT_FOUND via abort and UNIMPLEMENTED: trailers-only; INTERNAL after a message
    "grpc_errors": [
        (1, "POST", GREETER + "Fail", 200, 5, 6, 0, None),
        (3, "POST", GREETER + "Nope", 200, 12, 6, 0, None),
        (5, "POST", GREETER + "StreamThenFail", 200, 13, 6, 8, None),
        (7, "POST", *HELLO),
    ],
    # client streaming ended by the server after one message: trailers then RST_STREAM(0)
    "grpc_early_abort": [(1, "POST", GREETER + "Enough", 200, 3, 7, 0, None)],
    # cancelled by the client, then cut by the client's deadline: RST_STREAM CANCEL both
    "grpc_cancel": [
        (1, "POST", GREETER + "Slow", 200, None, 6, 11, None),
        (3, "POST", GREETER + "Slow", 200, None, 6, 44, None),
        (5, "POST", *HELLO),
    ],
    # nghttp -> nghttpd: streams 3-11 are nghttp's PRIORITY-only placeholders
    "nghttpd_nghttp": [
        (13, "GET", "/hello.txt", 200, None, 0, 13, None),
        (15, "GET", "/big.bin", 200, None, 0, 10240, None),
        (17, "GET", "/missing", 404, None, 0, 148, None),
    ],
    "nghttpd_curl": [(1, "POST", "/text.txt?a=1&b=2", 200, None, 3000, 10800, None)],
    # h2load -m 10: twenty requests, ten streams at a time
    "h2load_multiplexed": [
        (sid, "GET", "/hello.txt", 200, None, 0, 13, None) for sid in range(1, 40, 2)
    ],
    # Node http2 client and server; the last request is cancelled by the client
    "node_h2c": [
        (1, "GET", "/", 200, None, 0, 11, None),
        (3, "POST", "/echo", 201, None, 5000, 14, None),
        (5, "GET", "/missing", 404, None, 0, 9, None),
        (7, "GET", "/slow", 200, None, 0, 10, None),
    ],
    # curl --http2: HTTP/1.1 request upgraded (stream 1), then a second request
    "h2c_upgrade": [
        (1, "GET", "/hello.txt", 200, None, 0, 15, None),
        (3, "GET", "/missing", 404, None, 0, 5, None),
    ],
}
# (request messages, response messages, RST_STREAM code, reset by) per record
GRPC_DETAILS: dict[str, list[tuple]] = {
    "grpc_unary": [(1, 1, None, None)] * 3,
    "grpc_server_streaming": [(1, 3, None, None)],
    "grpc_client_streaming": [(4, 1, None, None)],
    "grpc_bidi": [(3, 3, None, None)],
    "grpc_errors": [(1, 0, None, None), (1, 0, None, None), (1, 1, None, None),
                    (1, 1, None, None)],
    "grpc_cancel": [(1, 1, 8, Role.CLIENT), (1, 4, 8, Role.CLIENT), (1, 1, None, None)],
    "grpc_early_abort": [(1, 0, 0, Role.SERVER)],
}
ROLES = [Role.SERVER, Role.CLIENT]
NAMES = sorted(EXPECTED)


def _check_clean(conn: Http2Connection) -> None:
    assert conn.unparseable is None
    assert conn.stats.parse_errors == 0
    assert conn.stats.internal_errors == 0


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r.name)
@pytest.mark.parametrize("name", NAMES)
def test_capture_whole(name: str, role: Role) -> None:
    records, conn = replay(load_capture(name), role)
    assert summary(records) == EXPECTED[name]
    assert conn.role == role
    _check_clean(conn)
    assert conn.stats.unmatched_requests == conn.stats.orphan_streams == 0
    assert all(not r.unknown_fields for r in records)
    if name in GRPC_DETAILS:
        assert [(r.request_messages, r.response_messages, r.reset_code, r.reset_by)
                for r in records] == GRPC_DETAILS[name]
        assert all(r.is_grpc for r in records)
    else:
        assert not any(r.is_grpc for r in records)


def test_capture_details() -> None:
    (rec, *_), _ = replay(load_capture("grpc_unary"), Role.SERVER)
    assert rec.scheme == "http"
    assert rec.authority.startswith("127.0.0.1:")
    assert rec.request_headers["content-type"] == "application/grpc"
    assert rec.request_headers["user-agent"].startswith("grpc-python/")
    assert rec.response_headers == {"content-type": "application/grpc", "grpc-status": "0",
                                    "grpc-message": ""}
    assert rec.response_complete
    errors, _ = replay(load_capture("grpc_errors"), Role.SERVER)
    assert [r.grpc_message for r in errors] == [
        "no such feature", "Method not found!", "broke mid-stream", ""]
    node, _ = replay(load_capture("node_h2c"), Role.SERVER)
    assert node[-1].reset_code == 8 and not node[-1].response_complete
    assert node[1].request_headers == {"content-type": "text/plain"}


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r.name)
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("piece", [1, 5])
def test_capture_in_pieces(name: str, role: Role, piece: int) -> None:
    whole, _ = replay(load_capture(name), role)
    records, conn = replay(load_capture(name), role, piece=piece)
    assert summary(records) == EXPECTED[name]
    assert [(r.start_ns, r.end_ns) for r in records] == [(r.start_ns, r.end_ns) for r in whole]
    _check_clean(conn)


@pytest.mark.parametrize("name", NAMES)
def test_capture_split_at_every_offset(name: str) -> None:
    """Every chunk up to 600 bytes (frame heads, header blocks) cut in two at every offset."""
    chunks = load_capture(name)
    for k, c in enumerate(chunks):
        if len(c.data) > 600:
            continue
        for i in range(1, len(c.data)):
            cut = [*chunks[:k], Chunk(c.direction, c.data[:i], c.ts),
                   Chunk(c.direction, c.data[i:], c.ts), *chunks[k + 1 :]]
            records, conn = replay(cut, Role.SERVER)
            assert summary(records) == EXPECTED[name], (k, i)
            assert conn.stats.parse_errors == 0


@pytest.mark.parametrize("name", NAMES)
def test_capture_with_trailing_partial_frames(name: str) -> None:
    """Bytes of a frame that never completes, after everything: nothing invented."""
    chunks = load_capture(name)
    tail = [Chunk(IN, b"\x00\x00\x10\x01\x04\x00\x00", chunks[-1].ts + 1),
            Chunk(OUT, b"\x00\x00\x05\x00", chunks[-1].ts + 2)]
    records, conn = replay(chunks + tail, Role.SERVER)
    assert summary(records) == EXPECTED[name]
    _check_clean(conn)


def test_capture_timing() -> None:
    """SERVER: first request byte read -> last response byte written (trailers included)."""
    chunks = load_capture("grpc_server_streaming")
    (rec,), _ = replay(chunks, Role.SERVER)
    request_ts = [c.ts for c in chunks if c.direction == IN]
    response_ts = [c.ts for c in chunks if c.direction == OUT]
    # the client's first HEADERS is in the chunk after the preface and SETTINGS
    first_headers = next(c.ts for c in chunks if c.direction == IN and b"ListFeatures" in c.data)
    assert rec.start_ns == first_headers
    assert rec.end_ns == max(c.ts for c in chunks if c.direction == OUT and b"grpc-status"
                             in c.data)
    assert rec.end_ns in response_ts
    (crec,), _ = replay(chunks, Role.CLIENT)
    assert (crec.start_ns, crec.end_ns) == (rec.start_ns, rec.end_ns)
    assert rec.start_ns in request_ts


@pytest.mark.parametrize("name", NAMES)
def test_capture_joined_mid_connection(name: str) -> None:
    """Starting at any chunk: fields are exact or unknown, never wrong; nothing invented."""
    chunks = load_capture(name)
    truth = EXPECTED[name]
    by_sid = {t[0]: t for t in truth}
    methods = {t[1] for t in truth}
    paths = {t[2] for t in truth}
    for role in ROLES:
        for skip in range(1, len(chunks)):
            records, conn = replay(chunks[skip:], role)
            assert conn.stats.internal_errors == 0
            assert conn.unparseable is None, (skip, conn.unparseable)
            for r in records:
                assert isinstance(r, Http2Record)
                want = by_sid[r.stream_id]
                assert r.method in methods or (r.method is None and ":method" in r.unknown_fields)
                assert r.path in paths or (r.path is None and ":path" in r.unknown_fields)
                assert r.method in (want[1], None) and r.path in (want[2], None), (skip, r)
                assert r.status in (want[3], None)
                assert r.grpc_status in (want[4], None)
                if r.grpc_status is None and want[4] is not None and r.partial is None:
                    assert "grpc-status" in r.unknown_fields
            assert len(records) <= len(truth)


def _frame_boundaries(chunks: list[Chunk]) -> list[tuple[int, int]]:
    """(chunk index, offset) of every frame start, in both directions."""
    out = []
    for d in (IN, OUT):
        stream = b"".join(c.data for c in chunks if c.direction == d)
        pos = len(PREFACE) if stream.startswith(PREFACE) else 0
        starts = set()
        while pos + 9 <= len(stream):
            starts.add(pos)
            hi, lo, *_ = HEADER.unpack_from(stream, pos)
            pos += 9 + (hi << 8 | lo)
        base = 0
        for k, c in enumerate(chunks):
            if c.direction != d:
                continue
            out += [(k, p - base) for p in sorted(starts) if base <= p < base + len(c.data)]
            base += len(c.data)
    return sorted(out)


@pytest.mark.parametrize("name", [n for n in NAMES if n != "h2c_upgrade"])
def test_capture_joined_at_every_frame_boundary(name: str) -> None:
    """Starting at any frame (mid-chunk too): exact or unknown, never wrong."""
    chunks = load_capture(name)
    by_sid = {t[0]: t for t in EXPECTED[name]}
    for k, off in _frame_boundaries(chunks):
        if k == 0 and off == 0:
            continue
        c = chunks[k]
        cut = [Chunk(c.direction, c.data[off:], c.ts), *chunks[k + 1 :]]
        records, conn = replay(cut, Role.SERVER)
        assert conn.unparseable is None and conn.stats.internal_errors == 0, (k, off)
        for r in records:
            want = by_sid[r.stream_id]
            assert r.method in (want[1], None) and r.path in (want[2], None), (k, off, r)
            assert r.status in (want[3], None) and r.grpc_status in (want[4], None)
            if r.method is None:
                assert ":method" in r.unknown_fields
            if r.path is None:
                assert ":path" in r.unknown_fields


def test_joined_after_the_first_exchange_recovers_known_fields() -> None:
    """grpc_errors joined after its first call: later calls' paths are literals, so exact."""
    chunks = load_capture("grpc_errors")
    start = next(i for i, c in enumerate(chunks) if b"Nope" in c.data)
    records, conn = replay(chunks[start:], Role.SERVER)
    assert [(r.stream_id, r.method, r.path, r.grpc_status) for r in records] == [
        (3, "POST", GREETER + "Nope", 12), (5, "POST", GREETER + "StreamThenFail", 13),
        (7, "POST", GREETER + "SayHello", 0)]
    # :authority was indexed in the dynamic table before we joined
    assert all(r.unknown_fields == {":authority"} and r.authority is None for r in records)
    assert conn.stats.unknown_field_records == 3


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r.name)
@pytest.mark.parametrize("name", NAMES)
def test_frame_aware_capture_is_exact(name: str, role: Role) -> None:
    """A kernel copying frame headers and header blocks but no DATA payload loses nothing
    but message counts: every DATA payload is a gap inside a frame whose header was seen."""
    chunks = load_capture(name)
    conn = Http2Connection(role)
    records: list = []
    for d, item, ts in _frame_aware(chunks):
        d = d if role == Role.SERVER else (OUT if d == IN else IN)
        records += conn.gap(d, item, ts) if isinstance(item, int) else conn.feed(d, item, ts)
    records += conn.close(chunks[-1].ts + 1)
    assert summary(records) == EXPECTED[name]
    _check_clean(conn)


def _frame_aware(chunks: list[Chunk]) -> list[tuple]:
    """(direction, bytes or gap length, ts): DATA payloads of each chunk become gaps."""
    out: list[tuple] = []
    state = {IN: [0, 0, b""], OUT: [0, 0, b""]}  # [payload bytes to skip, bytes to copy, head]
    if chunks[0].data.startswith(PREFACE) or chunks[1].data.startswith(PREFACE):
        state[IN][1] = len(PREFACE)
    for c in chunks:
        st = state[c.direction]
        data, pos = c.data, 0
        while pos < len(data):
            if st[0]:  # inside a DATA payload: not copied
                n = min(st[0], len(data) - pos)
                out.append((c.direction, n, c.ts))
                st[0] -= n
                pos += n
            elif st[1]:  # inside a payload we copy (or the preface)
                n = min(st[1], len(data) - pos)
                out.append((c.direction, data[pos : pos + n], c.ts))
                st[1] -= n
                pos += n
            else:
                head = st[2] + data[pos : pos + 9 - len(st[2])]
                pos += len(head) - len(st[2])
                if len(head) < 9:
                    st[2] = head
                    continue
                st[2] = b""
                out.append((c.direction, head, c.ts))
                hi, lo, ftype, _, _ = HEADER.unpack(head)
                length = hi << 8 | lo
                if ftype == DATA:
                    st[0] = length
                else:
                    st[1] = length
    return [(d, x, ts) for d, x, ts in out if x != b""]


def test_h2c_upgrade_declined_is_parsed_as_http1() -> None:
    """curl --http2 to nginx: the upgrade is ignored; the records are HTTP/1 ones."""
    for role in ROLES:
        records, conn = replay(load_capture("h2c_declined"), role)
        assert all(isinstance(r, Http1Record) for r in records)
        assert [(r.method, r.target, r.status) for r in records] == [
            ("GET", "/hello.txt", 200), ("GET", "/missing", 404)]
        assert conn.stats.http1_fallbacks == 1
        records, conn = replay(load_capture("h2c_declined"), role, piece=3)
        assert [(r.method, r.status) for r in records] == [("GET", 200), ("GET", 404)]


def test_h2c_upgrade_stream_one_is_the_http1_request() -> None:
    chunks = load_capture("h2c_upgrade")
    (one, three), conn = replay(chunks, Role.SERVER)
    assert conn.stats.upgrades == 1
    assert (one.method, one.scheme, one.path) == ("GET", "http", "/hello.txt")
    assert one.authority.startswith("127.0.0.1:")
    assert one.request_headers["user-agent"].startswith("curl/")
    assert one.start_ns == chunks[0].ts  # the HTTP/1.1 request's first byte
    assert one.response_headers == {"content-type": "text/plain"}
    assert three.unknown_fields == frozenset()


@pytest.mark.parametrize("cap", [2048, 512, 100, 30])
@pytest.mark.parametrize("name", NAMES)
def test_capture_with_copy_limits(name: str, cap: int) -> None:
    """Bytes beyond a per-chunk copy limit become gaps: records stay true, marked partial
    or unknown where something was lost."""
    truth = {t[0]: t for t in EXPECTED[name]}
    records, conn = replay(load_capture(name), Role.SERVER, copy_cap=cap)
    assert conn.stats.internal_errors == 0
    assert len(records) <= len(truth)
    for r in records:
        want = truth[r.stream_id]
        assert r.method in (want[1], None) and r.path in (want[2], None)
        assert r.status in (want[3], None) and r.grpc_status in (want[4], None)
        if r.partial is None and not r.unknown_fields:
            assert summary([r])[0] == want


def test_copy_limit_2048_keeps_small_exchanges_exact() -> None:
    for name in ("grpc_errors", "grpc_bidi", "h2load_multiplexed", "node_h2c"):
        records, _ = replay(load_capture(name), Role.SERVER, copy_cap=2048)
        assert summary(records) == EXPECTED[name], name
