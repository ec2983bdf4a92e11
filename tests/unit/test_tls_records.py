"""Plaintext records from the OpenSSL probes (EVF_TLS) take the one code path:
same tracker, same parsers, positions on the plaintext stream, scheme https.

The SSL-object-to-socket mapping itself lives in the kernel (bpf/tls.c: the
nested syscall's fd, else the last fd of that SSL object checked against the
connection's generation); what reaches the agent is exercised here.
"""

from __future__ import annotations

import socket

from ebpf_tracer.conn.manager import ConnManager
from ebpf_tracer.events import EVF_EXISTING, EVF_TLS, OpenInfo
from ebpf_tracer.model import ConnMeta, Resource, Role
from ebpf_tracer.spans import record_span

GONE = 2**22 + 2000  # a pid that does not exist: /proc lookups find nothing
IN, OUT = 0, 1
REQ = b"GET /a?b=1 HTTP/1.1\r\nHost: example.test\r\nAuthorization: Bearer TOPSECRET\r\n\r\n"
RESP = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nSet-Cookie: s=SECRETCOOKIE\r\n\r\nhello"


def client(m: ConnManager, fd: int = 7, gen: int = 1) -> None:
    info = OpenInfo(socket.AF_INET, 443, -1, socket.inet_aton("127.0.0.1") + bytes(12), b"c\0")
    assert m.on_open(GONE, fd, gen, int(Role.CLIENT), 100, info) == []


def data(m: ConnManager, d: int, pos: int, payload: bytes, *, fd: int = 7, gen: int = 1,
         length: int | None = None, flags: int = EVF_TLS, ts: int = 200) -> list:
    n = len(payload) if length is None else length
    return m.on_data(GONE, fd, gen, int(Role.CLIENT), d, pos, n, payload, ts, b"", flags)


def span_of(meta: ConnMeta, rec):  # noqa: ANN001, ANN201
    return record_span(rec, meta, Resource(()))


def test_tls_records_make_https_spans_without_secrets() -> None:
    m = ConnManager()
    client(m)
    assert data(m, OUT, 0, REQ) == []
    out = data(m, IN, 0, RESP, ts=300)
    assert len(out) == 1
    meta, rec = out[0]
    assert meta.tls
    s = span_of(meta, rec)
    assert s.attributes["url.scheme"] == "https"
    assert s.attributes["url.full"] == "https://example.test/a?b=1"
    assert s.attributes["http.response.status_code"] == 200
    assert "TOPSECRET" not in repr(s) and "SECRETCOOKIE" not in repr(s)


def test_buffered_reads_continue_the_plaintext_stream() -> None:
    """Several SSL_reads served from one TLS record (no syscall in between)
    arrive as consecutive plaintext positions: no gap."""
    m = ConnManager()
    client(m)
    data(m, OUT, 0, REQ)
    recs = []
    for i in range(0, len(RESP), 7):
        recs += data(m, IN, i, RESP[i : i + 7])
    assert len(recs) == 1 and recs[0][1].partial is None
    assert m.trackers() == [] or all(t.gaps == 0 for t in m.trackers())


def test_lost_plaintext_is_a_gap_on_the_plaintext_positions() -> None:
    m = ConnManager()
    client(m)
    data(m, OUT, 0, REQ)
    head = RESP[:-5]
    assert data(m, IN, 0, head) == []
    # The body's 5 bytes were lost (ring buffer full): the next record starts later.
    out = data(m, OUT, len(REQ) + 3, REQ)  # a request after a lost one
    out += data(m, IN, len(RESP) + 10, RESP)
    t = m.trackers()[0]
    assert t.gaps >= 1
    assert [r.status for _, r in out][-1:] == [200]


def test_uncopied_middle_of_a_large_ssl_write_is_skipped_exactly() -> None:
    body = b"x" * 10_000
    resp = b"HTTP/1.1 200 OK\r\nContent-Length: 10000\r\n\r\n" + body
    m = ConnManager()
    client(m)
    data(m, OUT, 0, REQ)
    # head 2048 bytes copied, the rest a gap of known size, tail 256 bytes.
    out = m.on_data(GONE, 7, 1, int(Role.CLIENT), IN, 0, len(resp), resp[:2048], 300,
                    resp[-256:], EVF_TLS)
    assert len(out) == 1
    _, rec = out[0]
    assert rec.status == 200 and rec.partial is None
    assert span_of(out[0][0], rec).attributes["http.response.body.size"] == 10_000


def test_fd_reuse_starts_a_new_tls_connection() -> None:
    """A new generation on the same fd (the kernel saw a new accept/connect,
    or a TLS connection older than the tracer) never merges with the old."""
    m = ConnManager()
    client(m, gen=1)
    data(m, OUT, 0, REQ, gen=1)  # no response: the connection was closed unseen
    client(m, gen=2)
    data(m, OUT, 0, REQ, gen=2)
    out = data(m, IN, 0, RESP, gen=2)
    assert [(meta.generation, r.status) for meta, r in out] == [(2, 200)]


def test_existing_tls_connection_joined_mid_stream() -> None:
    m = ConnManager(on_not_socket=lambda pid, fd, gen: None)
    out = data(m, OUT, 5000, REQ, fd=9, gen=5, flags=EVF_TLS | EVF_EXISTING)
    out += data(m, IN, 7000, RESP, fd=9, gen=5, flags=EVF_TLS | EVF_EXISTING)
    assert [r.status for _, r in out] == [200]
    assert out[0][0].tls
