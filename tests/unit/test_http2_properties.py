"""Hypothesis: split-invariance on valid HTTP/2 traffic, truth under gaps and late joins,
robustness and bounded memory on any input."""

from __future__ import annotations

import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ebpf_tracer.model import Direction, Role
from ebpf_tracer.protocols.http2 import Http2Connection
from ebpf_tracer.protocols.http2.frames import PREFACE

from .http1_util import Chunk
from .http2_util import IN, OUT, H2Pair, replay, summary

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

_path = st.text("abcdefghij/-._~0123456789", min_size=0, max_size=20).map(lambda s: "/" + s)
_hvalue = st.text("abcdefghijklmnopqrstuvwxyz0123456789 ", min_size=0, max_size=60)


@st.composite
def conversations(draw: st.DrawFn) -> tuple[list[Chunk], list[tuple]]:
    """Chunks of an h2 conversation (possibly gRPC-like), and the records it must give."""
    import h2.settings

    p = H2Pair()
    if draw(st.booleans()):
        size = draw(st.sampled_from([0, 64, 256, 1024, 8192]))
        p.server.update_settings({h2.settings.SettingCodes.HEADER_TABLE_SIZE: size})
        p.client.update_settings({h2.settings.SettingCodes.HEADER_TABLE_SIZE: size})
        p.pump()
    want = []
    pending: list[tuple] = []
    for _ in range(draw(st.integers(1, 6))):
        grpc = draw(st.booleans())
        path = draw(_path)
        method = "POST" if grpc else draw(st.sampled_from(["GET", "POST", "PUT", "DELETE"]))
        extra = [("user-agent", draw(_hvalue)), ("x-filler", draw(_hvalue))]
        if grpc:
            extra.append(("content-type", "application/grpc"))
        body = b""
        if method != "GET" and draw(st.booleans()):
            n = draw(st.integers(0, 3))
            body = b"".join(b"\x00" + struct.pack(">I", k) + b"m" * k for k in range(n)) or b"b"
        sid = p.request(path, method=method, body=body, headers=extra)
        pending.append((sid, method, path, grpc, len(body)))
        if draw(st.booleans()) or len(pending) > 2:  # answer some now, some later
            order = draw(st.permutations(pending))
            for sid_, method_, path_, grpc_, blen in order:
                status = draw(st.sampled_from([200, 201, 204, 404, 500]))
                rbody = b"r" * draw(st.integers(0, 40)) if status != 204 else b""
                trailers = [("grpc-status", str(draw(st.integers(0, 16))))] if grpc_ else None
                hdrs = [("content-type", "application/grpc" if grpc_ else "text/plain"),
                        ("server", draw(_hvalue))]
                p.respond(sid_, status, rbody, headers=hdrs, trailers=trailers)
                gs = int(trailers[0][1]) if trailers else None
                want.append((sid_, method_, path_, status, gs, blen, len(rbody), None))
            pending = []
    return p.chunks, want  # requests never answered are not reported


@st.composite
def _splits(draw: st.DrawFn, chunks: list[Chunk]) -> list[Chunk]:
    out = []
    for c in chunks:
        cuts = sorted(set(draw(st.lists(st.integers(1, max(1, len(c.data) - 1)), max_size=3))))
        edges = [0, *[x for x in cuts if x < len(c.data)], len(c.data)]
        out += [Chunk(c.direction, c.data[a:b], c.ts) for a, b in zip(edges, edges[1:],
                                                                       strict=False) if b > a]
    return out


@SETTINGS
@given(conversations(), st.data(), st.sampled_from([Role.SERVER, Role.CLIENT]))
def test_random_conversations_any_split(conv: tuple, data: st.DataObject, role: Role) -> None:
    chunks, want = conv
    whole, conn = replay(chunks, role)
    assert summary(whole) == want
    assert conn.unparseable is None and conn.stats.parse_errors == 0
    split, conn = replay(data.draw(_splits(chunks)), role)
    assert summary(split) == want
    assert [(r.start_ns, r.end_ns) for r in split] == [(r.start_ns, r.end_ns) for r in whole]


@SETTINGS
@given(conversations(), st.data())
def test_random_joins_and_gaps_never_give_a_wrong_field(conv: tuple, data: st.DataObject) -> None:
    """Start anywhere, lose any bytes: each field is the true one or unknown/absent."""
    chunks, want = conv
    truth = {w[0]: w for w in want}
    start = data.draw(st.integers(0, len(chunks) - 1))
    conn = Http2Connection(Role.SERVER)
    out: list = []
    for c in chunks[start:]:
        if data.draw(st.integers(0, 4)) == 0:
            a = data.draw(st.integers(0, len(c.data)))
            b = data.draw(st.integers(a, len(c.data)))
            out += conn.feed(c.direction, c.data[:a], c.ts)
            out += conn.gap(c.direction, b - a, c.ts)
            out += conn.feed(c.direction, c.data[b:], c.ts)
        else:
            out += conn.feed(c.direction, c.data, c.ts)
    out += conn.close(10**12)
    assert conn.stats.internal_errors == 0
    for r in out:
        w = truth.get(r.stream_id)
        assert w is not None, r
        assert r.method in (w[1], None) and r.path in (w[2], None)
        assert r.status in (w[3], None) and r.grpc_status in (w[4], None)
        if r.path is None and r.partial is None:
            assert ":path" in r.unknown_fields
    if start == 0 and conn.stats.gaps == 0:
        assert summary(out) == want


_frame_types = st.integers(0, 12)


@st.composite
def _random_frame(draw: st.DrawFn) -> bytes:
    payload = draw(st.binary(max_size=60))
    length = len(payload) if draw(st.integers(0, 5)) else draw(st.integers(0, 70000))
    head = struct.pack(">I", length)[1:] + bytes([draw(_frame_types), draw(st.integers(0, 255))])
    return head + struct.pack(">I", draw(st.sampled_from([0, 1, 2, 3, 5, 2**31 + 1]))) + payload


_ops = st.lists(
    st.tuples(
        st.sampled_from([IN, OUT]),
        st.one_of(
            st.binary(max_size=200),
            st.integers(1, 3000),  # a gap
            _random_frame(),
            st.sampled_from([PREFACE, PREFACE[:7], b"\x00\x00\x00\x04\x00\x00\x00\x00\x00",
                             b"GET / HTTP/1.1\r\nUpgrade: h2c\r\nHost: h\r\n\r\n",
                             b"HTTP/1.1 101 Switching\r\n\r\n", b"\x82\x86\x84\xbe\xbf"]),
        ),
    ),
    max_size=40,
)


@settings(max_examples=400, deadline=None)
@given(_ops, st.sampled_from(list(Role)), st.integers(1, 8), st.sampled_from([1024, 4096]))
def test_any_input_never_raises_and_memory_stays_bounded(
    ops: list, role: Role, max_streams: int, max_block: int
) -> None:
    conn = Http2Connection(role, max_streams=max_streams, max_header_list_size=max_block,
                           max_table_size=2048)
    for i, (d, item) in enumerate(ops):
        if isinstance(item, int):
            conn.gap(d, item, i)
        else:
            conn.feed(d, item, i)
        assert len(conn._streams) <= max_streams
        for side in conn._sides:
            assert len(side.buf) <= max(max_block, 600) + 9
            assert side.block is None or len(side.block) <= max_block
            assert side.hpack.size <= 2048
    conn.close(len(ops))
    assert conn.stats.internal_errors == 0


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=3000), conversations())
def test_garbage_then_valid_traffic(garbage: bytes, conv: tuple) -> None:
    """Bytes before a connection's real traffic (a late join): nothing wrong comes out."""
    chunks, want = conv
    truth = {w[0]: w for w in want}
    conn = Http2Connection(Role.SERVER)
    out = conn.feed(Direction.INGRESS, garbage, 0) + conn.feed(OUT, garbage[::-1], 0)
    for c in chunks:
        out += conn.feed(c.direction, c.data, c.ts)
    out += conn.close(10**12)
    assert conn.stats.internal_errors == 0
    for r in out:
        w = truth.get(r.stream_id)
        assert w is not None
        assert r.method in (w[1], None) and r.path in (w[2], None)
