"""HTTP/1 parser and stitcher: named scenarios through the public Http1Connection API."""

from __future__ import annotations

import pytest

from ebpf_tracer.model import Direction, Role
from ebpf_tracer.protocols import detect
from ebpf_tracer.protocols.http1 import Http1Connection, looks_like_http1

from .http1_util import IN, OUT, feed_all, summary

GET = b"GET /a?b=c HTTP/1.1\r\nHost: example.com\r\nUser-Agent: t/1\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello"
CHUNKED_OK = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n"
    b"5;name=value\r\nhello\r\n"
    b"7 ; ext\r\n, world\r\n"
    b"0\r\nX-Sum: 12\r\nX-Other: y\r\n\r\n"
)


def server() -> Http1Connection:
    return Http1Connection(Role.SERVER)


def exchange(conn: Http1Connection, request: bytes, response: bytes, t0: int = 100):
    return conn.feed(IN, request, t0) + conn.feed(OUT, response, t0 + 10)


# ------------------------------------------------------------- basic shapes


def test_simple_get_record_fields_and_timing() -> None:
    conn = server()
    assert conn.feed(IN, GET, 100) == []
    (rec,) = conn.feed(OUT, OK, 150)
    assert rec.method == "GET"
    assert rec.target == "/a?b=c"
    assert rec.request_version == "1.1"
    assert rec.request_headers == {"host": "example.com", "user-agent": "t/1"}
    assert rec.status == 200
    assert rec.response_version == "1.1"
    assert rec.response_headers["content-type"] == "text/plain"
    assert (rec.request_body_size, rec.response_body_size) == (0, 5)
    assert (rec.start_ns, rec.end_ns) == (100, 150)
    assert rec.partial is None
    assert conn.stats.records == 1
    assert conn.close(200) == []


def test_end_is_the_chunk_with_the_last_response_byte() -> None:
    conn = server()
    conn.feed(IN, GET, 100)
    assert conn.feed(OUT, OK[:-5], 110) == []  # writev of the head
    assert conn.feed(OUT, b"he", 120) == []
    (rec,) = conn.feed(OUT, b"llo", 130)
    assert (rec.start_ns, rec.end_ns) == (100, 130)


def test_start_is_the_chunk_with_the_first_request_byte() -> None:
    conn = server()
    conn.feed(IN, GET[:5], 90)
    conn.feed(IN, GET[5:], 95)
    (rec,) = conn.feed(OUT, OK, 150)
    assert rec.start_ns == 90


def test_client_role_reverses_directions() -> None:
    conn = Http1Connection(Role.CLIENT)
    assert conn.feed(OUT, GET, 100) == []
    (rec,) = conn.feed(IN, OK, 180)
    assert (rec.method, rec.status, rec.start_ns, rec.end_ns) == ("GET", 200, 100, 180)


@pytest.mark.parametrize("piece", [1, 2, 3, 7])
def test_fed_in_small_pieces(piece: int) -> None:
    conn = server()
    out = []
    for i in range(0, len(GET), piece):
        out += conn.feed(IN, GET[i : i + piece], 100 + i)
    for i in range(0, len(CHUNKED_OK), piece):
        out += conn.feed(OUT, CHUNKED_OK[i : i + piece], 1000 + i)
    assert summary(out) == [("GET", "/a?b=c", 200, 0, 12, None)]
    assert out[0].start_ns == 100
    assert out[0].end_ns == 1000 + (len(CHUNKED_OK) - 1) // piece * piece
    assert conn.stats.parse_errors == 0


def test_every_split_point_gives_the_same_record() -> None:
    req = b"POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nbody"
    for resp in (OK, CHUNKED_OK):
        for i in range(len(req) + 1):
            for j in range(0, len(resp) + 1, 3):
                conn = server()
                out = feed_all(conn, [
                    (IN, req[:i], 1), (IN, req[i:], 2), (OUT, resp[:j], 3), (OUT, resp[j:], 4),
                ])
                assert [(r.method, r.status, r.request_body_size) for r in out] == [
                    ("POST", 200, 4)
                ], (i, j)
                assert out[0].start_ns == (1 if i else 2)
                assert out[0].end_ns == (4 if j < len(resp) else 3)


def test_trailing_data_starts_the_next_message() -> None:
    conn = server()
    second = b"GET /two HTTP/1.1\r\nHost: h\r\n\r\n"
    conn.feed(IN, GET + second[:10], 100)  # the next request's first bytes ride along
    out = conn.feed(OUT, OK + b"HTTP/1.1 204 No", 110)
    assert summary(out) == [("GET", "/a?b=c", 200, 0, 5, None)]
    conn.feed(IN, second[10:], 120)
    out = conn.feed(OUT, b" Content\r\n\r\n", 130)
    assert summary(out) == [("GET", "/two", 204, 0, 0, None)]
    assert out[0].start_ns == 100
    assert conn.stats.parse_errors == 0


def test_keep_alive_sequence() -> None:
    conn = server()
    out = []
    for i in range(5):
        out += exchange(conn, GET.replace(b"/a", b"/%d" % i), OK, t0=i * 100)
    assert [r.target for r in out] == [f"/{i}?b=c" for i in range(5)]
    assert [(r.start_ns, r.end_ns) for r in out] == [(i * 100, i * 100 + 10) for i in range(5)]


# ----------------------------------------------------------------- bodies


def test_content_length_request_body() -> None:
    conn = server()
    req = b"PUT /x HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123456789"
    out = exchange(conn, req, OK)
    assert summary(out) == [("PUT", "/x", 200, 10, 5, None)]


def test_chunked_response_with_extensions_and_trailers() -> None:
    conn = server()
    out = exchange(conn, GET, CHUNKED_OK)
    assert summary(out) == [("GET", "/a?b=c", 200, 0, 12, None)]
    # trailers are skipped, not confused with the next message
    out = exchange(conn, GET, OK)
    assert summary(out) == [("GET", "/a?b=c", 200, 0, 5, None)]


def test_chunked_request_body() -> None:
    conn = server()
    req = (b"POST /up HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"3\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n")
    out = exchange(conn, req, OK)
    assert summary(out) == [("POST", "/up", 200, 19, 5, None)]


def test_transfer_encoding_wins_over_content_length() -> None:
    conn = server()
    resp = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n" \
           b"2\r\nhi\r\n0\r\n\r\n"
    assert summary(exchange(conn, GET, resp)) == [("GET", "/a?b=c", 200, 0, 2, None)]


def test_repeated_equal_content_length_is_accepted() -> None:
    conn = server()
    resp = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello"
    assert summary(exchange(conn, GET, resp)) == [("GET", "/a?b=c", 200, 0, 5, None)]


def test_invalid_content_length_gives_a_partial_record() -> None:
    conn = server()
    conn.feed(IN, GET, 1)
    assert conn.feed(OUT, b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\nhello", 2) == []
    out = conn.feed(IN, GET, 3)  # the next request ends the unframed response
    assert summary(out) == [("GET", "/a?b=c", 200, 0, 5, "response-body-lost")]
    assert conn.stats.parse_errors == 1


def test_head_response_has_no_body_despite_content_length() -> None:
    conn = server()
    head = b"HEAD /f HTTP/1.1\r\nHost: h\r\n\r\n"
    out = exchange(conn, head, b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
    assert summary(out) == [("HEAD", "/f", 200, 0, 0, None)]
    assert summary(exchange(conn, GET, OK)) == [("GET", "/a?b=c", 200, 0, 5, None)]


@pytest.mark.parametrize("status", [204, 304])
def test_204_and_304_have_no_body(status: int) -> None:
    conn = server()
    resp = b"HTTP/1.1 %d X\r\nContent-Length: 50\r\nETag: \"1\"\r\n\r\n" % status
    out = exchange(conn, GET, resp)
    assert summary(out) == [("GET", "/a?b=c", status, 0, 0, None)]
    assert summary(exchange(conn, GET, OK)) == [("GET", "/a?b=c", 200, 0, 5, None)]


def test_close_delimited_response_completes_on_close() -> None:
    conn = server()
    conn.feed(IN, b"GET / HTTP/1.0\r\n\r\n", 1)
    assert conn.feed(OUT, b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nabc", 2) == []
    assert conn.feed(OUT, b"defg", 3) == []
    (rec,) = conn.close(99)
    assert (rec.request_version, rec.response_version) == ("1.0", "1.0")
    assert (rec.status, rec.response_body_size, rec.partial) == (200, 7, None)
    assert (rec.start_ns, rec.end_ns) == (1, 3)  # the last byte, not the close


def test_connection_close_with_content_length_is_emitted_at_once() -> None:
    conn = server()
    conn.feed(IN, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", 1)
    resp = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
    (rec,) = conn.feed(OUT, resp, 2)
    assert rec.request_headers["connection"] == "close"
    assert conn.close(3) == []
    assert conn.stats.unmatched_requests == 0


def test_http10_request_and_response() -> None:
    conn = server()
    out = exchange(conn, b"GET /old HTTP/1.0\r\n\r\n",
                   b"HTTP/1.0 404 Not Found\r\nContent-Length: 3\r\n\r\nno\n")
    assert [(r.request_version, r.response_version, r.status) for r in out] == [
        ("1.0", "1.0", 404)
    ]


def test_response_truncated_by_close() -> None:
    conn = server()
    conn.feed(IN, GET, 1)
    conn.feed(OUT, OK[:-2], 2)
    (rec,) = conn.close(9)
    assert (rec.status, rec.response_body_size, rec.partial, rec.end_ns) == (
        200, 3, "response-truncated", 2
    )


# --------------------------------------------------------------- pipelining


def test_pipelined_requests_in_one_read_are_matched_in_order() -> None:
    conn = server()
    reqs = b"".join(b"GET /%d HTTP/1.1\r\nHost: h\r\n\r\n" % i for i in range(3))
    assert conn.feed(IN, reqs, 1) == []
    resps = [
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na",
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 500 Oops\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n",
    ]
    out = conn.feed(OUT, b"".join(resps), 2)
    assert [(r.target, r.status, r.response_body_size) for r in out] == [
        ("/0", 200, 1), ("/1", 404, 0), ("/2", 500, 1)
    ]
    assert all(r.start_ns == 1 and r.end_ns == 2 for r in out)


def test_pipelined_with_bodies() -> None:
    conn = server()
    one = b"POST /p HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"
    assert conn.feed(IN, one * 2 + GET, 1) == []
    out = conn.feed(OUT, OK * 3, 2)
    assert [(r.method, r.request_body_size) for r in out] == [("POST", 3), ("POST", 3), ("GET", 0)]


def test_pending_queue_is_bounded() -> None:
    conn = Http1Connection(Role.SERVER, max_pending=4)
    conn.feed(IN, b"".join(b"GET /%d HTTP/1.1\r\n\r\n" % i for i in range(6)), 1)
    assert conn.stats.dropped_requests == 2
    out = conn.feed(OUT, OK, 2)
    assert [r.target for r in out] == ["/2"]  # the oldest were forgotten
    conn.close(3)
    assert conn.stats.unmatched_requests == 3


# ------------------------------------------------------- interim and upgrade


def test_expect_100_continue() -> None:
    conn = server()
    head = b"POST /up HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 6\r\n\r\n"
    assert conn.feed(IN, head, 1) == []
    assert conn.feed(OUT, b"HTTP/1.1 100 Continue\r\n\r\n", 2) == []
    assert conn.feed(IN, b"abcdef", 3) == []
    (rec,) = conn.feed(OUT, b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n", 4)
    assert (rec.status, rec.request_body_size, rec.start_ns, rec.end_ns) == (201, 6, 1, 4)
    assert conn.stats.interim_responses == 1


def test_early_hints_then_final_response_in_one_write() -> None:
    conn = server()
    conn.feed(IN, GET, 1)
    out = conn.feed(OUT, b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n" + OK, 2)
    assert summary(out) == [("GET", "/a?b=c", 200, 0, 5, None)]


def test_final_response_before_the_request_body_ends() -> None:
    conn = server()
    conn.feed(IN, b"POST /big HTTP/1.1\r\nContent-Length: 1000\r\n\r\nabc", 1)
    (rec,) = conn.feed(OUT, b"HTTP/1.1 413 Too Large\r\nContent-Length: 0\r\n\r\n", 2)
    assert (rec.status, rec.request_body_size, rec.partial) == (413, 3, None)


def test_101_switching_protocols_stops_parsing() -> None:
    conn = server()
    conn.feed(IN, b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", 1)
    resp = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"
    out = conn.feed(OUT, resp + b"\x81\x05hello", 2)
    assert summary(out) == [("GET", "/ws", 101, 0, 0, None)]
    assert out[0].end_ns == 2
    assert conn.feed(IN, b"\x81\x85garbage GET / HTTP/1.1\r\n\r\n", 3) == []
    assert conn.feed(OUT, OK, 4) == []
    assert conn.close(5) == []
    assert conn.stats.upgrades == 1
    assert conn.stats.parse_errors == 0


def test_connect_tunnel_stops_parsing() -> None:
    conn = Http1Connection(Role.CLIENT)
    conn.feed(OUT, b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 1)
    out = conn.feed(IN, b"HTTP/1.1 200 Connection Established\r\n\r\n", 2)
    assert summary(out) == [("CONNECT", "example.com:443", 200, 0, 0, None)]
    assert conn.feed(OUT, b"\x16\x03\x01\x02\x00\x01", 3) == []
    assert conn.stats.parse_errors == 0


# ------------------------------------------------------------ header syntax


def test_header_names_are_case_insensitive_and_repeats_joined() -> None:
    conn = server()
    req = (b"GET / HTTP/1.1\r\nHOST: h\r\nAccept: a\r\naccept: b\r\nX-Empty:\r\n"
           b"Cookie: c=1\r\nCookie: d=2\r\n\r\n")
    (rec,) = exchange(conn, req, OK)
    assert rec.request_headers == {
        "host": "h", "accept": "a, b", "x-empty": "", "cookie": "c=1, d=2"
    }


def test_obs_fold_continuation_lines_are_tolerated() -> None:
    conn = server()
    req = b"GET / HTTP/1.1\r\nX-Long: one\r\n  two\r\n\tthree\r\nHost: h\r\n\r\n"
    (rec,) = exchange(conn, req, OK)
    assert rec.request_headers == {"x-long": "one two three", "host": "h"}


def test_lf_only_line_endings() -> None:
    conn = server()
    out = exchange(conn, b"GET /lf HTTP/1.1\nHost: h\n\n",
                   b"HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n3\nabc\n0\n\n")
    assert summary(out) == [("GET", "/lf", 200, 0, 3, None)]
    assert summary(exchange(conn, GET, OK)) == [("GET", "/a?b=c", 200, 0, 5, None)]


def test_empty_lines_between_messages_are_skipped() -> None:
    conn = server()
    req = b"POST /p HTTP/1.1\r\nContent-Length: 2\r\n\r\nab\r\n"  # stray CRLF after the body
    out = exchange(conn, req, OK) + exchange(conn, GET, OK)
    assert [r.method for r in out] == ["POST", "GET"]
    assert conn.stats.parse_errors == 0


def test_header_count_and_value_size_are_capped() -> None:
    conn = server()
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(200))
    big = b"X-Big: " + b"v" * 20000 + b"\r\n"
    req = b"GET / HTTP/1.1\r\n" + many + big + b"Content-Length: 0\r\n\r\n"
    (rec,) = exchange(conn, req, OK)
    assert len(rec.request_headers) == 65  # 64 kept, plus the framing header past the cap
    assert "content-length" in rec.request_headers


def test_other_methods_and_target_forms() -> None:
    conn = server()
    reqs = [b"OPTIONS * HTTP/1.1\r\n\r\n", b"PATCH /p HTTP/1.1\r\n\r\n",
            b"GET http://h:8080/x?y=1 HTTP/1.1\r\n\r\n", b"BREW /pot HTTP/1.1\r\n\r\n"]
    out = []
    for r in reqs:
        out += exchange(conn, r, OK)
    assert [(r.method, r.target) for r in out] == [
        ("OPTIONS", "*"), ("PATCH", "/p"), ("GET", "http://h:8080/x?y=1"), ("BREW", "/pot")
    ]


# ------------------------------------------------------------------- gaps


def test_gap_inside_content_length_body_is_exact() -> None:
    conn = server()
    conn.feed(IN, GET, 1)
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 10000\r\n\r\n"
    assert conn.feed(OUT, head + b"x" * 100, 2) == []
    (rec,) = conn.gap(OUT, 9900, 3)  # sendfile: never copied
    assert (rec.response_body_size, rec.partial, rec.end_ns) == (10000, None, 3)
    assert summary(exchange(conn, GET, OK)) == [("GET", "/a?b=c", 200, 0, 5, None)]
    assert conn.stats.resyncs == 0


def test_gap_inside_request_body_is_exact() -> None:
    conn = server()
    conn.feed(IN, b"POST /u HTTP/1.1\r\nContent-Length: 5000\r\n\r\n" + b"x" * 10, 1)
    conn.gap(IN, 4990, 1)
    (rec,) = conn.feed(OUT, OK, 2)
    assert (rec.request_body_size, rec.partial) == (5000, None)


def test_gap_within_one_chunk_is_exact() -> None:
    conn = server()
    conn.feed(IN, GET, 1)
    conn.feed(OUT, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1000\r\nabc", 2)
    conn.gap(OUT, 0x1000 - 3, 3)
    (rec,) = conn.feed(OUT, b"\r\n0\r\n\r\n", 4)
    assert (rec.response_body_size, rec.partial, rec.end_ns) == (0x1000, None, 4)


def test_gap_across_chunks_gives_a_partial_record_at_the_next_request() -> None:
    conn = server()
    conn.feed(IN, GET, 1)
    conn.feed(OUT, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n0123", 2)
    assert conn.gap(OUT, 500, 3) == []  # past the chunk: framing lost
    assert conn.feed(OUT, b"more body bytes\r\n", 4) == []
    out = conn.feed(IN, GET.replace(b"/a", b"/next"), 5)
    assert summary(out) == [("GET", "/a?b=c", 200, 0, 4 + 500 + 17, "response-body-lost")]
    assert out[0].end_ns == 4  # last byte seen, not the next request
    out = conn.feed(OUT, OK, 6)
    assert summary(out) == [("GET", "/next?b=c", 200, 0, 5, None)]
    assert conn.stats.partial_records == 1


def test_gap_across_chunks_then_close() -> None:
    conn = server()
    conn.feed(IN, GET, 1)
    conn.feed(OUT, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nab", 2)
    conn.gap(OUT, 100, 3)
    (rec,) = conn.close(9)
    assert (rec.partial, rec.end_ns) == ("response-body-lost", 2)


def test_lost_chunked_body_ends_at_a_written_last_chunk() -> None:
    conn = server()
    conn.feed(IN, GET, 1)
    conn.feed(OUT, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n800\r\nab", 2)
    conn.gap(OUT, 5000, 2)
    (rec,) = conn.feed(OUT, b"0\r\n\r\n", 3)  # the final write of the chunked body
    assert (rec.partial, rec.end_ns) == ("response-body-lost", 3)
    assert summary(exchange(conn, GET, OK)) == [("GET", "/a?b=c", 200, 0, 5, None)]


def test_lost_chunked_body_ends_at_the_next_pipelined_response() -> None:
    conn = server()
    conn.feed(IN, GET + GET, 1)
    conn.feed(OUT, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n800\r\nab", 2)
    conn.gap(OUT, 5000, 3)
    out = conn.feed(OUT, b"tail of body\r\n0\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n", 4)
    assert [(r.status, r.partial) for r in out] == [(200, "response-body-lost"), (204, None)]


def test_gap_in_request_head_resyncs_at_the_next_request() -> None:
    conn = server()
    conn.feed(IN, GET[:20], 1)
    conn.gap(IN, 30, 1)
    conn.feed(IN, b"rest of a head\r\n\r\n", 1)
    assert conn.feed(OUT, OK, 2) == []  # its request is unknown
    assert conn.stats.unmatched_responses == 1
    out = exchange(conn, b"GET /again HTTP/1.1\r\n\r\n", OK, 3)
    assert summary(out) == [("GET", "/again", 200, 0, 5, None)]
    assert conn.stats.resyncs == 1


def test_gap_in_response_head_drops_its_request() -> None:
    conn = server()
    conn.feed(IN, GET, 1)
    conn.feed(OUT, OK[:10], 2)
    conn.gap(OUT, 40, 2)
    conn.feed(OUT, b"ello", 2)
    out = exchange(conn, b"GET /two HTTP/1.1\r\n\r\n", OK, 3)
    assert summary(out) == [("GET", "/two", 200, 0, 5, None)]
    assert conn.stats.unmatched_requests == 1


def test_gap_past_a_content_length_body_loses_the_next_head() -> None:
    conn = server()
    conn.feed(IN, GET, 1)
    conn.feed(OUT, OK[:-5], 2)
    (rec,) = conn.gap(OUT, 5 + 20, 3)  # the body, then 20 bytes of the next response
    assert (rec.response_body_size, rec.partial) == (5, None)
    assert conn.stats.gaps == 1


def test_gap_between_messages_and_next_message_at_the_gap_end() -> None:
    conn = server()
    conn.feed(IN, b"POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", 1)
    conn.gap(IN, 10, 1)  # "cde\r\n0\r\n\r\n": framing lost but the next read starts a request
    conn.feed(OUT, OK, 2)
    out = exchange(conn, GET, OK, 3)
    assert summary(out) == [("GET", "/a?b=c", 200, 0, 5, None)]


# ------------------------------------------------- joins, garbage, limits


def test_join_mid_stream_skips_to_the_first_message_start() -> None:
    conn = server()
    assert conn.feed(IN, b"dy of an earlier request\r\n" + GET, 1) == []
    assert conn.feed(OUT, b"ong earlier response body", 2) == []
    (rec,) = conn.feed(OUT, OK, 3)
    assert (rec.target, rec.status) == ("/a?b=c", 200)
    assert conn.stats.parse_errors == 0
    assert conn.stats.skipped_bytes > 0


def test_join_mid_stream_response_without_request() -> None:
    conn = server()
    assert conn.feed(OUT, OK, 1) == []  # the request was read before we started
    assert conn.stats.unmatched_responses == 1
    assert summary(exchange(conn, GET, OK)) == [("GET", "/a?b=c", 200, 0, 5, None)]


def test_requests_without_responses_are_counted_at_close() -> None:
    conn = server()
    conn.feed(IN, GET, 1)
    conn.feed(IN, GET, 2)
    assert conn.close(3) == []
    assert conn.stats.unmatched_requests == 2
    assert conn.stats.records == 0


def test_oversized_head_is_abandoned_and_counted() -> None:
    conn = Http1Connection(Role.SERVER, max_head_bytes=65536)
    huge = b"GET /big HTTP/1.1\r\n" + b"X-Pad: " + b"a" * 70000 + b"\r\n\r\n"
    for i in range(0, len(huge), 4096):
        assert conn.feed(IN, huge[i : i + 4096], 1) == []
    assert conn.stats.oversized_heads == 1
    assert len(conn._req._buf) <= 65536
    conn.feed(OUT, OK, 2)
    assert summary(exchange(conn, GET, OK)) == [("GET", "/a?b=c", 200, 0, 5, None)]


def test_oversized_head_fed_whole() -> None:
    conn = server()
    huge = b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 20000  # 120 KB and no end
    assert conn.feed(IN, huge, 1) == []
    assert conn.stats.oversized_heads == 1


def test_garbage_then_valid_traffic() -> None:
    conn = server()
    out = exchange(conn, GET, OK)
    out += exchange(conn, b"\x00\xff garbage \x16\x03 not http\r\n\r\n", b"junk\r\n")
    out += exchange(conn, GET, OK)
    assert [r.status for r in out] == [200, 200]
    assert conn.stats.parse_errors >= 1


def test_invalid_request_line_resyncs() -> None:
    conn = server()
    exchange(conn, GET, OK)
    conn.feed(IN, b"GET / HTTP/9.9\r\n\r\n", 1)
    assert conn.stats.parse_errors == 1
    out = exchange(conn, GET, OK)
    assert len(out) == 1


def test_never_raises_on_odd_arguments() -> None:
    conn = server()
    assert conn.feed(IN, bytearray(GET), 1) == []
    assert len(conn.feed(OUT, memoryview(OK), 2)) == 1
    assert conn.feed(7, b"x", 3) == []  # type: ignore[arg-type]
    assert conn.gap(IN, -5, 4) == []
    assert conn.gap(IN, 0, 4) == []
    assert conn.feed(IN, b"", 5) == []


def test_feed_after_close_is_ignored() -> None:
    conn = server()
    conn.close(1)
    assert conn.feed(IN, GET, 2) == []
    assert conn.gap(IN, 10, 2) == []
    assert conn.close(3) == []


# --------------------------------------------------------------- role


@pytest.mark.parametrize(
    "direction,data,role",
    [
        (Direction.INGRESS, GET, Role.SERVER),
        (Direction.EGRESS, GET, Role.CLIENT),
        (Direction.INGRESS, OK, Role.CLIENT),
        (Direction.EGRESS, OK, Role.SERVER),
        (Direction.INGRESS, b"\r\n" + GET, Role.SERVER),
        (Direction.INGRESS, b"tail of a body\r\n" + GET, Role.SERVER),
        (Direction.INGRESS, b"tail of a body\r\n" + OK, Role.CLIENT),
    ],
)
def test_unknown_role_is_decided_by_the_first_message(
    direction: Direction, data: bytes, role: Role
) -> None:
    conn = Http1Connection()
    assert conn.role == Role.UNKNOWN
    conn.feed(direction, data, 1)
    assert conn.role == role


def test_unknown_role_waits_for_recognisable_bytes() -> None:
    conn = Http1Connection()
    conn.gap(IN, 100, 1)
    assert conn.feed(IN, b"\x16\x03\x01 not http", 1) == []
    assert conn.role == Role.UNKNOWN
    conn.feed(OUT, GET, 2)
    assert conn.role == Role.CLIENT
    (rec,) = conn.feed(IN, OK, 3)
    assert rec.status == 200


def test_looks_like_http1() -> None:
    for yes in (GET, OK, b"PATCH /x HTTP/1.1", b"OPTIONS * HTTP/1.1", b"CONNECT h:443 HTTP/1.1",
                b"TRACE / HTTP/1.1", b"HTTP/1.0 200 OK", b"DELETE /a"):
        assert looks_like_http1(yes), yes
    for no in (b"", b"GET", b"get / HTTP/1.1", b"PRI * HTTP/2.0\r\n", b"\x16\x03\x01",
               b"HTTP/2 200", b"FOO / HTTP/1.1"):
        assert not looks_like_http1(no), no
    assert detect(GET) is not None and detect(GET).name == "http1"
    assert detect(b"\x16\x03\x01") is None


def test_a_read_boundary_counts_as_a_message_start_when_hunting() -> None:
    conn = server()
    conn.feed(OUT, b"H", 1)  # the last byte of an earlier response, or a start?
    conn.feed(OUT, b"HTTP/1.1 2", 2)
    conn.feed(OUT, b"00 OK\r\nContent-Length: 0\r\n\r\n", 3)
    assert conn.stats.unmatched_responses == 1  # found, though its request was unseen
    assert summary(exchange(conn, GET, OK)) == [("GET", "/a?b=c", 200, 0, 5, None)]


def test_head_cache_gives_equal_independent_messages_and_stays_bounded() -> None:
    from ebpf_tracer.protocols.http1 import head as h

    raw = b"POST /x?a=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 5"
    a = h.parse_head(raw, True)
    b = h.parse_head(bytearray(raw), True)  # a buffered head: same answer
    assert a is not None and b is not None and a is not b
    assert (a.method, a.target, a.version, a.headers, a.content_length) == (
        b.method, b.target, b.version, b.headers, b.content_length) == (
        "POST", "/x?a=1", "1.1", {"host": "h", "content-length": "5"}, 5)
    a.start_ns, a.body_size = 7, 3  # per-message state is never shared
    assert (b.start_ns, b.body_size) == (0, 0)
    # Same bytes as a response head is another cache: invalid there.
    assert h.parse_head(raw, False) is None
    for i in range(h.HEAD_CACHE_MAX * 2):
        h.parse_head(b"GET /%d HTTP/1.1\r\nHost: h" % i, True)
    assert len(h._HEAD_CACHE[True]) <= h.HEAD_CACHE_MAX
    big = b"GET / HTTP/1.1\r\nX: " + b"v" * h.HEAD_CACHE_BYTES
    h._HEAD_CACHE[True].clear()
    assert h.parse_head(big, True) is not None
    assert h._HEAD_CACHE[True] == {}  # long heads are not kept
