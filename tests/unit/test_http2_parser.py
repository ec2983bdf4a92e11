"""HTTP/2 framing and streams: named scenarios through the public Http2Connection API,
with traffic made by the `h2` library or frame by frame with `hyperframe`."""

from __future__ import annotations

import pytest
from hpack import Encoder
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from ebpf_tracer.model import Role
from ebpf_tracer.protocols import detect
from ebpf_tracer.protocols.http1 import Http1Record
from ebpf_tracer.protocols.http2 import Http2Connection, looks_like_http2
from ebpf_tracer.protocols.http2.frames import PREFACE
from ebpf_tracer.protocols.http2.grpc import MessageCounter

from .http2_util import IN, OUT, H2Pair, replay, summary

GRPC_REQ = [("content-type", "application/grpc"), ("te", "trailers"), ("user-agent", "g/1")]


def frames(*fs: object) -> bytes:
    return b"".join(f.serialize() for f in fs)  # type: ignore[attr-defined]


def headers(sid: int, block: bytes, *flags: str, **attrs: object) -> HeadersFrame:
    f = HeadersFrame(sid)
    f.data = block
    for flag in {"END_HEADERS", *flags} - ({"END_HEADERS", "NO_END"} if "NO_END" in flags
                                          else set()):
        f.flags.add(flag)
    for k, v in attrs.items():
        setattr(f, k, v)
    return f


def data(sid: int, payload: bytes, *flags: str, pad: int = 0) -> DataFrame:
    f = DataFrame(sid, payload)
    for flag in flags:
        f.flags.add(flag)
    if pad:
        f.flags.add("PADDED")
        f.pad_length = pad
    return f


class Raw:
    """An exact connection fed hand-made frames: client encoder, server encoder."""

    def __init__(self, role: Role = Role.SERVER) -> None:
        self.conn = Http2Connection(role)
        self.cenc, self.senc = Encoder(), Encoder()
        self.req, self.resp = (IN, OUT) if role == Role.SERVER else (OUT, IN)
        self.out: list = []
        self.ts = 0
        self.send_req(PREFACE + SettingsFrame(0).serialize())
        self.send_resp(SettingsFrame(0).serialize())

    def send_req(self, b: bytes) -> list:
        self.ts += 10
        got = self.conn.feed(self.req, b, self.ts)
        self.out += got
        return got

    def send_resp(self, b: bytes) -> list:
        self.ts += 10
        got = self.conn.feed(self.resp, b, self.ts)
        self.out += got
        return got

    def req_block(self, path: str = "/p", method: str = "GET", extra: list | None = None) -> bytes:
        return self.cenc.encode([(":method", method), (":scheme", "http"),
                                 (":authority", "h:8080"), (":path", path), *(extra or [])])

    def resp_block(self, status: int = 200, extra: list | None = None) -> bytes:
        return self.senc.encode([(":status", str(status)), *(extra or [])])


# ------------------------------------------------------------- basic shapes


def test_get_record_fields_and_timing() -> None:
    p = H2Pair()
    sid = p.request("/a/b?c=d", headers=[("user-agent", "t/1"), ("authorization", "secret")])
    p.respond(sid, 200, b"hello", headers=[("content-type", "text/plain"), ("set-cookie", "x")])
    (rec,), conn = replay(p.chunks, Role.SERVER)
    assert summary([rec]) == [(1, "GET", "/a/b?c=d", 200, None, 0, 5, None)]
    assert (rec.scheme, rec.authority) == ("http", "example.com")
    assert rec.request_headers == {"user-agent": "t/1"}
    assert rec.response_headers == {"content-type": "text/plain"}
    req_chunk = next(c for c in p.chunks if c.direction == IN and c.data[3] == 1)  # HEADERS
    assert rec.start_ns == req_chunk.ts
    assert rec.end_ns == p.chunks[-1].ts
    assert rec.response_complete and rec.unknown_fields == frozenset()
    assert conn.stats.records == 1 and conn.unparseable is None


def test_timing_is_first_request_byte_to_last_response_byte() -> None:
    r = Raw()
    hdr = frames(headers(1, r.req_block(), "END_STREAM"))
    r.send_req(hdr[:3])  # frame header split: the first byte's chunk counts
    start = r.ts
    r.send_req(hdr[3:])
    r.send_resp(frames(headers(1, r.resp_block())))
    r.send_resp(frames(data(1, b"abc")))
    (rec,) = r.send_resp(frames(data(1, b"", "END_STREAM")))
    assert (rec.start_ns, rec.end_ns) == (start, r.ts)


def test_client_role_reverses_directions() -> None:
    p = H2Pair()
    p.respond(p.request("/x"), 204)
    (rec,), conn = replay(p.chunks, Role.CLIENT)
    assert (rec.method, rec.path, rec.status) == ("GET", "/x", 204)
    assert conn.role == Role.CLIENT


@pytest.mark.parametrize("role", [Role.SERVER, Role.CLIENT])
def test_unknown_role_is_decided_by_the_preface(role: Role) -> None:
    p = H2Pair()
    p.respond(p.request("/x"), 200, b"ok")
    (rec,), conn = replay(p.chunks, role, conn=Http2Connection(Role.UNKNOWN))
    assert conn.role == role and rec.path == "/x"


def test_unknown_role_joined_late_is_decided_by_pseudo_headers() -> None:
    p = H2Pair()
    p.respond(p.request("/first"), 200, b"ok")
    n = len(p.chunks)
    p.respond(p.request("/second"), 200, b"ok")
    for role in (Role.SERVER, Role.CLIENT):
        recs, conn = replay(p.chunks[n:], role, conn=Http2Connection(Role.UNKNOWN))
        assert conn.role == role
        assert [(r.method, r.path) for r in recs] == [("GET", "/second")]


def test_multiplexed_streams_interleaved() -> None:
    p = H2Pair()
    a, b, c = (p.request(f"/{i}") for i in range(3))
    p.respond(c, 200, b"c" * 3)
    p.respond(a, 404, b"a")
    p.respond(b, 500)
    recs, _ = replay(p.chunks, Role.SERVER)
    assert [(r.stream_id, r.path, r.status, r.response_body_size) for r in recs] == [
        (5, "/2", 200, 3), (1, "/0", 404, 1), (3, "/1", 500, 0)]


# ----------------------------------------------------------------- frames


def test_padded_and_priority_headers_and_padded_data() -> None:
    r = Raw()
    r.send_req(frames(headers(1, r.req_block("/pad", "POST"), "PADDED", "PRIORITY",
                              pad_length=7, depends_on=0, stream_weight=200),
                      data(1, b"12345", pad=9), data(1, b"678", "END_STREAM", pad=1)))
    r.send_resp(frames(headers(1, r.resp_block(), "PADDED", pad_length=3),
                       data(1, b"xy", "END_STREAM", pad=250)))
    (rec,) = r.out
    assert summary([rec]) == [(1, "POST", "/pad", 200, None, 8, 2, None)]


def test_continuation_frames() -> None:
    r = Raw()
    block = r.req_block("/cont", extra=[("x-big", "v" * 3000), ("user-agent", "ua")])
    h = headers(1, block[:100], "END_STREAM", "NO_END")
    c1 = ContinuationFrame(1, block[100:1500])
    c2 = ContinuationFrame(1, block[1500:])
    c2.flags.add("END_HEADERS")
    r.send_req(frames(h, c1, c2))
    r.send_resp(frames(headers(1, r.resp_block(), "END_STREAM")))
    (rec,) = r.out
    assert (rec.path, rec.request_headers, rec.status) == ("/cont", {"user-agent": "ua"}, 200)


def test_h2_splits_big_header_blocks_into_continuations() -> None:
    p = H2Pair()
    p.respond(p.request("/big", headers=[("x-big", "v" * 40000)]), 200)
    (rec,), conn = replay(p.chunks, Role.SERVER, conn=Http2Connection(
        Role.SERVER, max_header_list_size=1 << 17))
    assert rec.path == "/big" and conn.unparseable is None


def test_control_frames_are_ignored() -> None:
    r = Raw()
    r.send_req(frames(PingFrame(0, b"12345678"), WindowUpdateFrame(0, 1000),
                      PriorityFrame(3), headers(1, r.req_block(), "END_STREAM"),
                      WindowUpdateFrame(1, 5)))
    r.send_resp(frames(PingFrame(0, b"12345678"), headers(1, r.resp_block(), "END_STREAM")))
    assert summary(r.out) == [(1, "GET", "/p", 200, None, 0, 0, None)]
    assert r.conn.stats.parse_errors == 0


def test_unknown_frame_types_are_skipped() -> None:
    r = Raw()
    r.send_req(b"\x00\x00\x03\x0a\x00\x00\x00\x00\x00abc"  # ALTSVC-like extension
               + frames(headers(1, r.req_block(), "END_STREAM")))
    r.send_resp(frames(headers(1, r.resp_block(), "END_STREAM")))
    assert len(r.out) == 1 and r.conn.stats.parse_errors == 0


def test_grpc_trailers_and_message_counts() -> None:
    p = H2Pair()
    sid = p.request("/pkg.Svc/M", method="POST", headers=GRPC_REQ,
                    body=b"\x00\x00\x00\x00\x03abc" * 2)
    p.respond(sid, 200, b"\x00\x00\x00\x00\x01z",
              headers=[("content-type", "application/grpc+proto")],
              trailers=[("grpc-status", "7"), ("grpc-message", "denied")])
    (rec,), _ = replay(p.chunks, Role.SERVER, piece=1)
    assert (rec.grpc_status, rec.grpc_message) == (7, "denied")
    assert (rec.request_messages, rec.response_messages) == (2, 1)
    assert rec.is_grpc


def test_grpc_trailers_only() -> None:
    p = H2Pair()
    sid = p.request("/pkg.Svc/M", method="POST", headers=GRPC_REQ, body=b"\0\0\0\0\0")
    p.respond(sid, 200, headers=[("content-type", "application/grpc"), ("grpc-status", "5")])
    (rec,), _ = replay(p.chunks, Role.SERVER)
    assert (rec.status, rec.grpc_status, rec.response_messages) == (200, 5, 0)


def test_informational_response_then_final() -> None:
    p = H2Pair()
    sid = p.request("/up", method="POST", body=b"x" * 10, headers=[("expect", "100-continue")])
    p.server.send_headers(sid, [(":status", "100")])
    p.pump()
    p.respond(sid, 201, b"ok")
    (rec,), _ = replay(p.chunks, Role.SERVER)
    assert (rec.status, rec.response_body_size) == (201, 2)


def test_header_table_size_settings_and_updates() -> None:
    import h2.settings
    for size in (0, 100, 65536):
        p = H2Pair()
        p.server.update_settings({h2.settings.SettingCodes.HEADER_TABLE_SIZE: size})
        p.client.update_settings({h2.settings.SettingCodes.HEADER_TABLE_SIZE: size})
        p.pump()
        for i in range(30):
            sid = p.request(f"/p{i % 4}", headers=[("user-agent", "u" * (i % 3 * 50))])
            p.respond(sid, 200, headers=[("content-type", f"t/{i % 5}")])
        recs, conn = replay(p.chunks, Role.SERVER)
        assert [r.path for r in recs] == [f"/p{i % 4}" for i in range(30)], size
        assert [r.response_headers["content-type"] for r in recs] == [
            f"t/{i % 5}" for i in range(30)]
        assert conn.unparseable is None and not any(r.unknown_fields for r in recs)


def test_server_push_is_decoded_for_hpack_not_reported() -> None:
    p = H2Pair()
    sid = p.request("/index.html")
    p.server.push_stream(sid, 2, [(":method", "GET"), (":scheme", "http"),
                                  (":authority", "example.com"), (":path", "/style.css")])
    p.server.send_headers(2, [(":status", "200"), ("content-type", "text/css")])
    p.server.send_data(2, b"css", end_stream=True)
    p.respond(sid, 200, b"html", headers=[("content-type", "text/css")])
    (rec,), conn = replay(p.chunks, Role.SERVER)
    assert (rec.path, rec.response_headers) == ("/index.html", {"content-type": "text/css"})
    assert conn.stats.pushed_streams == 1 and conn.unparseable is None


# ------------------------------------------------------------- ends


def test_rst_stream_from_the_client_before_the_response() -> None:
    p = H2Pair()
    sid = p.request("/slow")
    p.client.reset_stream(sid, 8)
    p.pump()
    (rec,), conn = replay(p.chunks, Role.SERVER)
    assert (rec.reset_code, rec.reset_by, rec.response_complete) == (8, Role.CLIENT, False)
    assert rec.status is None and conn.stats.reset_streams == 1


def test_rst_stream_from_the_server() -> None:
    p = H2Pair()
    sid = p.request("/x", method="POST", headers=GRPC_REQ)
    p.server.reset_stream(sid, 7)
    p.pump()
    (rec,), _ = replay(p.chunks, Role.CLIENT)
    assert (rec.reset_code, rec.reset_by) == (7, Role.SERVER)


def test_early_response_then_rst_no_error_is_complete() -> None:
    """A server answering before the upload ends stops it with RST_STREAM(NO_ERROR)."""
    r = Raw()
    r.send_req(frames(headers(1, r.req_block("/upload", "POST")), data(1, b"x" * 100)))
    r.send_resp(frames(headers(1, r.resp_block(413)), data(1, b"too big", "END_STREAM")))
    assert r.out == []  # the request may still send DATA
    (rec,) = r.send_resp(frames(RstStreamFrame(1, 0)))
    assert (rec.status, rec.response_complete, rec.reset_code) == (413, True, 0)
    assert rec.end_ns == r.ts - 10  # the response's last byte, not the RST
    assert rec.request_body_size == 100


def test_goaway_refuses_streams_above_its_last_stream_id() -> None:
    r = Raw()
    r.send_req(frames(headers(1, r.req_block("/a"), "END_STREAM"),
                      headers(3, r.req_block("/b"), "END_STREAM")))
    g = GoAwayFrame(0)
    g.last_stream_id = 1
    g.error_code = 0
    (refused,) = r.send_resp(frames(g))
    assert (refused.stream_id, refused.goaway_code) == (3, 0)
    (done,) = r.send_resp(frames(headers(1, r.resp_block(), "END_STREAM")))
    assert (done.stream_id, done.goaway_code) == (1, None)
    assert r.conn.stats.refused_streams == 1


def test_close_flushes_open_streams() -> None:
    r = Raw()
    r.send_req(frames(headers(1, r.req_block("/a"), "END_STREAM"),
                      headers(3, r.req_block("/b"), "END_STREAM")))
    r.send_resp(frames(headers(1, r.resp_block()), data(1, b"partial")))
    recs = r.conn.close(r.ts + 1)
    assert summary(recs) == [(1, "GET", "/a", 200, None, 0, 7, "response-truncated")]
    assert r.conn.stats.unmatched_requests == 1
    assert r.conn.close(r.ts + 2) == [] and r.conn.feed(IN, b"x", 0) == []


def test_goaway_with_error_then_close_marks_open_streams() -> None:
    r = Raw()
    r.send_req(frames(headers(1, r.req_block("/a"), "END_STREAM")))
    g = GoAwayFrame(0)
    g.last_stream_id = 1
    g.error_code = 2
    r.send_resp(frames(g))
    (rec,) = r.conn.close(r.ts + 1)
    assert rec.goaway_code == 2 and not rec.response_complete


def test_max_streams_bounds_memory() -> None:
    conn = Http2Connection(Role.SERVER, max_streams=8)
    r = Raw()
    r.conn = conn
    conn.feed(IN, PREFACE + SettingsFrame(0).serialize(), 0)
    for i in range(100):
        conn.feed(IN, frames(headers(2 * i + 1, r.req_block(f"/{i}"), "END_STREAM")), i)
        assert len(conn._streams) <= 8
    assert conn.stats.dropped_streams == 92


# ----------------------------------------------------------------- gaps


def test_gap_inside_data_is_exact() -> None:
    r = Raw()
    r.send_req(frames(headers(1, r.req_block("/up", "POST", GRPC_REQ))))
    body = frames(data(1, b"\x00\x00\x00\x00\x64" + b"x" * 100, "END_STREAM"))
    r.send_req(body[:20])
    r.conn.gap(IN, len(body) - 20, r.ts)  # beyond the copy size: inside one message
    r.send_resp(frames(headers(1, r.resp_block(200, [("content-type", "application/grpc")])),
                       headers(1, r.senc.encode([("grpc-status", "0")]), "END_STREAM")))
    (rec,) = r.out
    assert (rec.request_body_size, rec.request_messages, rec.partial) == (105, 1, None)
    assert rec.grpc_status == 0


def test_gap_over_a_message_prefix_makes_the_count_unknown() -> None:
    r = Raw()
    r.send_req(frames(headers(1, r.req_block("/up", "POST", GRPC_REQ))))
    body = frames(data(1, (b"\x00\x00\x00\x00\x02ab") * 5, "END_STREAM"))
    r.send_req(body[:12])
    r.conn.gap(IN, len(body) - 12, r.ts)
    r.send_resp(frames(headers(1, r.resp_block(), "END_STREAM")))
    (rec,) = r.out
    assert (rec.request_body_size, rec.request_messages) == (35, None)


def test_gap_inside_a_header_block_keeps_its_prefix_and_framing() -> None:
    r = Raw()
    block = r.req_block("/cut", extra=[("user-agent", "x" * 300)])
    hdr = frames(headers(1, block, "END_STREAM"))
    r.send_req(hdr[:40])
    r.conn.gap(IN, len(hdr) - 40, r.ts)
    r.send_resp(frames(headers(1, r.resp_block(), "END_STREAM")))
    (rec,) = r.out
    assert (rec.method, rec.path, rec.partial) == ("GET", "/cut", "headers-lost")
    assert "user-agent" not in rec.request_headers
    # the client's table is lost: its next request's indexed fields are unknown
    r.send_req(frames(headers(3, r.req_block("/cut", extra=[("user-agent", "x" * 300)]),
                              "END_STREAM")))
    (nxt,) = r.send_resp(frames(headers(3, r.resp_block(), "END_STREAM")))
    assert nxt.method == "GET" and nxt.path is None and ":path" in nxt.unknown_fields
    assert nxt.partial is None


def test_gap_at_a_frame_boundary_resyncs_at_the_next_write() -> None:
    r = Raw()
    r.send_req(frames(headers(1, r.req_block("/a"), "END_STREAM")))
    r.conn.gap(IN, 50, r.ts)  # whole frames lost: framing and HPACK state gone
    r.send_resp(frames(headers(1, r.resp_block(), "END_STREAM")))
    r.send_req(frames(headers(5, r.cenc.encode([(":method", "GET"), (":path", "/new-one")]),
                              "END_STREAM")))
    r.send_resp(frames(headers(5, r.resp_block(), "END_STREAM")))
    assert [(x.stream_id, x.path, x.partial) for x in r.out] == [
        (1, "/a", "framing-lost"), (5, "/new-one", None)]
    assert r.conn.stats.resyncs == 1 and r.conn.unparseable is None


def test_resync_inside_a_chunk_skips_garbage() -> None:
    r = Raw()
    r.conn.gap(IN, 10, r.ts)
    f = frames(headers(1, r.cenc.encode([(":method", "GET"), (":path", "/x")]), "END_STREAM"),
               PingFrame(0, b"12345678"))
    r.send_req(b"\x17garbage" + f)
    r.send_resp(frames(headers(1, r.resp_block(), "END_STREAM")))
    assert [(x.path, x.status) for x in r.out] == [("/x", 200)]
    assert r.conn.stats.skipped_bytes >= 8


# ----------------------------------------------------------------- bad input


@pytest.mark.parametrize("client_bytes, server_bytes, reason", [
    (b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n", b"", "bad preface"),
    (PREFACE + SettingsFrame(0).serialize(), b"HTTP/1.1 400 Bad Request\r\n\r\n",
     "peer is not HTTP/2"),
    (PREFACE + b"\x00\x00\x05\x04\x00\x00\x00\x00\x00hello", b"", "bad SETTINGS"),
    (PREFACE + PingFrame(0).serialize(), b"", "no SETTINGS"),
    (PREFACE + SettingsFrame(0).serialize() + b"\x00\x00\x01\x01\x05\x00\x00\x00\x01\x80", b"",
     "hpack"),
    (PREFACE + SettingsFrame(0).serialize() + b"\x00\x00\x04\x03\x00\x00\x00\x00\x00\0\0\0\0",
     b"", "RST_STREAM"),
    (PREFACE + SettingsFrame(0).serialize() + b"\x02\x00\x00\x01\x00\x00\x00\x00\x01", b"",
     "too large"),
])
def test_bad_input_makes_the_connection_unparseable(
    client_bytes: bytes, server_bytes: bytes, reason: str
) -> None:
    conn = Http2Connection(Role.SERVER)
    out = conn.feed(IN, client_bytes, 1) + conn.feed(OUT, server_bytes, 2)
    assert out == []
    assert conn.unparseable is not None and reason in conn.unparseable
    assert conn.stats.unparseable == 1 and conn.stats.internal_errors == 0
    assert conn.feed(IN, b"\x00" * 100, 3) == [] and conn.close(4) == []


def test_invalid_values_are_never_reported() -> None:
    r = Raw()
    block = r.cenc.encode([(":method", "G E T"), (":scheme", "http"), (":path", "no slash"),
                           (":authority", "a b")])
    r.send_req(frames(headers(1, block, "END_STREAM")))
    r.send_resp(frames(headers(1, r.resp_block(), "END_STREAM")))
    (rec,) = r.out
    assert (rec.method, rec.path, rec.authority) == (None, None, None)
    assert {":method", ":path", ":authority"} <= rec.unknown_fields


def test_a_joined_header_block_tail_is_skipped() -> None:
    conn = Http2Connection(Role.SERVER)
    c = ContinuationFrame(1, b"\x82\x84")
    c.flags.add("END_HEADERS")
    assert conn.feed(IN, c.serialize(), 1) == []
    assert conn.unparseable is None


# ----------------------------------------------------------------- h2c


UPGRADE = (b"GET /up?x=1 HTTP/1.1\r\nHost: h:80\r\nConnection: Upgrade, HTTP2-Settings\r\n"
           b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\nUser-Agent: c/1\r\n\r\n")
SWITCH = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"


def test_h2c_upgrade_in_pieces() -> None:
    senc = Encoder()
    server = SWITCH + frames(SettingsFrame(0), headers(1, senc.encode([(":status", "200")])),
                             data(1, b"hi", "END_STREAM"))
    for piece in (1, 7, 1000):
        conn = Http2Connection(Role.UNKNOWN)
        out = []
        for i in range(0, len(UPGRADE), piece):
            out += conn.feed(IN, UPGRADE[i : i + piece], 1)
        for i in range(0, len(server), piece):
            out += conn.feed(OUT, server[i : i + piece], 2)
        out += conn.feed(IN, PREFACE + SettingsFrame(0).serialize(), 3)
        assert conn.role == Role.SERVER
        assert summary(out) == [(1, "GET", "/up?x=1", 200, None, 0, 2, None)]
        assert out[0].authority == "h:80" and out[0].start_ns == 1


def test_h2c_upgrade_with_100_continue_and_a_body() -> None:
    req = UPGRADE.replace(b"GET", b"POST").replace(b"\r\n\r\n", b"\r\nContent-Length: 6\r\n\r\n")
    conn = Http2Connection(Role.SERVER)
    out = conn.feed(IN, req + b"abc", 1)
    out += conn.feed(OUT, b"HTTP/1.1 100 Continue\r\n\r\n", 2)
    out += conn.feed(IN, b"def", 3)
    out += conn.feed(OUT, SWITCH + frames(SettingsFrame(0),
                                         headers(1, Encoder().encode([(":status", "204")]),
                                                 "END_STREAM")), 4)
    assert summary(out) == [(1, "POST", "/up?x=1", 204, None, 6, 0, None)]


def test_h2c_declined_becomes_http1() -> None:
    conn = Http2Connection(Role.SERVER)
    out = conn.feed(IN, UPGRADE, 1)
    out += conn.feed(OUT, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 2)
    out += conn.feed(IN, b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n", 3)
    out += conn.feed(OUT, b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", 4)
    assert all(isinstance(r, Http1Record) for r in out)
    assert [(r.method, r.target, r.status) for r in out] == [
        ("GET", "/up?x=1", 200), ("GET", "/next", 404)]


def test_plain_http1_request_falls_back_at_once() -> None:
    conn = Http2Connection(Role.SERVER)
    out = conn.feed(IN, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", 1)
    out += conn.feed(OUT, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 2)
    assert [(r.method, r.status) for r in out] == [("GET", 200)]


def test_detection() -> None:
    assert looks_like_http2(PREFACE) and looks_like_http2(PREFACE[:10])
    assert looks_like_http2(UPGRADE)
    assert not looks_like_http2(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert not looks_like_http2(b"HTTP/1.1 200 OK\r\n\r\n")
    assert looks_like_http2(frames(SettingsFrame(0), PingFrame(0, b"12345678")))
    assert not looks_like_http2(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # TLS
    assert detect(PREFACE).name == "http2"
    assert detect(UPGRADE).name == "http2"
    assert detect(b"GET / HTTP/1.1\r\n\r\n").name == "http1"


# ----------------------------------------------------------------- gRPC framing


def test_message_counter_across_frames_and_gaps() -> None:
    msgs = b"".join(b"\x00" + len(p).to_bytes(4, "big") + p for p in (b"a", b"", b"xyz" * 9))
    for step in (1, 2, 3, 5, 100):
        mc = MessageCounter()
        for i in range(0, len(msgs), step):
            piece = msgs[i : i + step]
            mc.feed(piece, 0, len(piece))
        assert mc.count == 3
    mc = MessageCounter()
    mc.feed(msgs, 0, 8)  # inside the second prefix
    mc.skip(3)
    assert mc.count is None
