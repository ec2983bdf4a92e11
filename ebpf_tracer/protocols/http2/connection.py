"""One HTTP/2 connection: frames from two byte streams, HPACK, streams -> records.

Sans-IO like HTTP/1: ``feed`` bytes, report ``gap``s, ``close``; each returns the records
finished by that call. A connection seen from its preface is decoded exactly. One joined
late (the tracer started after it opened) is framed from the first plausible frame header
and its header fields decoded as far as HPACK allows: what needs a dynamic-table entry
added before we joined is reported unknown, never guessed (see headers.py).

An ``Upgrade: h2c`` request is detected here too: the HTTP/1.1 prelude is watched until the
server answers; ``101`` continues in HTTP/2 with the request as stream 1, anything else
hands the connection to an Http1Connection whose records are returned from then on.
"""

from __future__ import annotations

from ...model import Direction, Role
from ..http1 import Http1Connection, Http1Record, looks_like_http1
from ..http1.head import plausible_start_prefix
from .frames import (
    DEFAULT_MAX_FRAME,
    HEADER,
    MAX_FRAME_LIMIT,
    PREFACE,
    SETTINGS,
    plausible,
)
from .framing import Framing, chain
from .headers import HeaderDecoder
from .side import DEAD, HEAD, S_PREFACE, START, SYNC, Http2Stats, Side
from .stream import Http2Record, Stream
from .streams import StreamBook
from .upgrade import DECLINED, UNDECIDED, UPGRADED, H2cPrelude, looks_like_h2c_upgrade


def looks_like_http2(data: bytes) -> bool:
    """Whether a stream's first bytes are HTTP/2: the preface, an h2c upgrade request, or
    frames that parse plausibly (a connection opened before the tracer)."""
    k = min(len(data), len(PREFACE))
    if k >= 4 and data[:k] == PREFACE[:k]:
        return True
    if looks_like_http1(data):
        return not data.startswith(b"HTTP/") and looks_like_h2c_upgrade(data)
    count, exact, failed = chain(data, 0, len(data), DEFAULT_MAX_FRAME, False)
    return not failed and (exact or count >= 2)


class Http2Connection(Framing, StreamBook):
    """Feeds the two directions of an HTTP/2 connection and returns finished records.

    For a SERVER, requests are INGRESS; for a CLIENT, EGRESS. An UNKNOWN role is decided
    by the preface, the h2c request, or the first header block with pseudo-header fields.
    After an h2c upgrade is declined, records are Http1Records.
    """

    __slots__ = (
        "role", "stats", "unparseable", "_sides", "_req_dir", "_streams", "_out", "_closed",
        "_max_streams", "_max_block", "_prelude", "_h1", "_goaway", "_orphan_max", "_fresh",
    )

    def __init__(
        self,
        role: Role = Role.UNKNOWN,
        *,
        max_header_list_size: int = 65536,
        max_streams: int = 512,
        max_table_size: int = 65536,
    ) -> None:
        self.role = Role.UNKNOWN
        self.stats = Http2Stats()
        self.unparseable: str | None = None  # why the connection was given up
        self._max_block = max(1024, max_header_list_size)
        self._max_streams = max(1, max_streams)
        self._sides = tuple(
            Side(d, HeaderDecoder(max_table_size=max_table_size,
                                   max_header_list_size=self._max_block))
            for d in (Direction.INGRESS, Direction.EGRESS)
        )
        self._req_dir = Direction.INGRESS
        self._streams: dict[int, Stream] = {}
        self._out: list = []
        self._closed = False
        self._prelude: H2cPrelude | None = None
        self._h1: Http1Connection | None = None
        self._goaway: int | None = None  # error code of a GOAWAY that ends the connection
        self._orphan_max = 0
        self._fresh = False  # seen from its preface (or h2c upgrade): every stream start seen
        if role != Role.UNKNOWN:
            self._set_role(role)

    # ------------------------------------------------------------------ API

    def feed(
        self, direction: Direction, data: bytes, ts_ns: int
    ) -> list[Http2Record | Http1Record]:
        out: list = []
        if self._closed or not data:
            return out
        if self._h1 is not None:
            return self._h1.feed(direction, data, ts_ns)
        self._out = out
        try:
            if type(data) is not bytes:
                data = bytes(data)
            if self._prelude is not None:
                self._prelude_input(direction, data, ts_ns)
            else:
                self._feed_side(self._sides[direction], data, ts_ns)
        except Exception:
            self._internal_error(direction)
        return out

    def gap(
        self, direction: Direction, nbytes: int, ts_ns: int
    ) -> list[Http2Record | Http1Record]:
        out: list = []
        if self._closed or nbytes <= 0:
            return out
        if self._h1 is not None:
            return self._h1.gap(direction, nbytes, ts_ns)
        self._out = out
        try:
            self.stats.gaps += 1
            self.stats.gap_bytes += nbytes
            if self._prelude is not None:
                self._prelude_input(direction, nbytes, ts_ns)
            else:
                self._gap_side(self._sides[direction], nbytes, ts_ns)
        except Exception:
            self._internal_error(direction)
        return out

    def close(self, ts_ns: int) -> list[Http2Record | Http1Record]:
        out: list = []
        if self._closed:
            return out
        self._closed = True
        self._out = out
        if self._prelude is not None:
            self._fallback()
        if self._h1 is not None:
            return out + self._h1.close(ts_ns)
        try:
            for stream in list(self._streams.values()):
                self._flush(stream, ts_ns)
        except Exception:
            self._internal_error(None)
        self._streams.clear()
        return out

    # ------------------------------------------------------------ bookkeeping

    def _set_role(self, role: Role) -> None:
        self.role = role
        self._req_dir = Direction.INGRESS if role == Role.SERVER else Direction.EGRESS

    def _internal_error(self, direction: Direction | None) -> None:
        # Never let a parser bug escape into the agent's poll loop.
        self.stats.parse_errors += 1
        self.stats.internal_errors += 1
        if direction is not None and self.unparseable is None:
            try:
                self._lose(self._sides[direction])
            except Exception:
                self._fail("internal error")

    def _fail(self, reason: str) -> None:
        """Give the connection up: not HTTP/2, or broken beyond trusting what follows."""
        if self.unparseable is not None:
            return
        self.unparseable = reason
        self.stats.unparseable = 1
        self.stats.parse_errors += 1
        self.stats.dropped_streams += len(self._streams)
        self._streams.clear()
        for side in self._sides:
            side.state = DEAD
            side.buf = bytearray()
            side.block = None

    def _error(self, side: Side, reason: str) -> None:
        """A protocol violation: fatal on an exact connection, a lost sync otherwise."""
        if side.strict and not side.probation:
            self._fail(reason)
        else:
            self.stats.parse_errors += 1
            self._lose(side)

    def _lose(self, side: Side) -> None:
        """Framing lost on one side: hunt for the next frame; everything open is partial."""
        if side.state == DEAD:
            return
        side.state = SYNC
        side.buf = bytearray()
        side.strict = False
        side.clean = False
        side.half = side.stream = None
        if side.block is not None:
            self._lost_block(side)
        side.hpack.lose()  # a header block may have gone by: every index may have shifted
        self.stats.hpack_tables_lost += 1
        for stream in self._streams.values():
            stream.mark_partial("framing-lost")

    def _lost_block(self, side: Side) -> None:
        stream = self._streams.get(side.block_sid)
        side.block = None
        if stream is not None and side.dir == self._req_dir and not stream.req.blocks:
            stream.req.unknown = True
            stream.mark_partial("headers-lost")

    # ------------------------------------------------------------ start

    def _start(self, side: Side, data: bytes, pos: int, ts: int) -> int:
        """A side's first bytes: the preface, an h2c request, or frames."""
        if not side.buf:
            side.buf_ts = ts
        take = len(PREFACE) - len(side.buf)  # enough to tell; the rest is read in its state
        side.buf += data[pos : pos + take]
        pos = min(len(data), pos + take)
        head = bytes(side.buf)
        may_be_client = self.role == Role.UNKNOWN or side.dir == self._req_dir
        if may_be_client:
            k = min(len(head), len(PREFACE))
            if head[:k] == PREFACE[:k]:
                if k < len(PREFACE):
                    return self._start_wait(side, data, pos)
                return self._start_as(side, S_PREFACE, data, pos, ts)
            if head.startswith(PREFACE[:14]):  # "PRI * HTTP/2.0" and then not the preface
                self._fail("bad preface")
                return len(data)
            if looks_like_http1(head) and not head.startswith(b"HTTP/"):
                return self._start_h1(side, data, pos, ts)
            if plausible_start_prefix(head, True) and b" " not in head and len(head) < len(PREFACE):
                return self._start_wait(side, data, pos)  # may still be a request line
        if len(head) < 9:
            return self._start_wait(side, data, pos)
        side.head16 = head[:16]
        hi, lo, ftype, flags, sid = HEADER.unpack_from(head)
        if plausible(hi << 8 | lo, ftype, flags, sid, MAX_FRAME_LIMIT, False):
            # A side's first byte is where a write began: a frame boundary if it is one.
            side.first = ftype
            return self._start_as(side, HEAD, data, pos, ts)
        if side.expect_settings:  # the other side sent the preface: this one must be HTTP/2
            self._fail("peer is not HTTP/2")
            return len(data)
        return self._start_as(side, SYNC, data, pos, ts)

    def _start_wait(self, side: Side, data: bytes, pos: int) -> int:
        return pos  # every byte of data is in side.buf (decisions need fewer than 24)

    def _start_as(self, side: Side, state: int, data: bytes, pos: int, ts: int) -> int:
        """Leave START: re-read the buffered first bytes in the new state."""
        head = bytes(side.buf)
        side.buf = bytearray()
        side.head16 = side.head16 or head[:16]
        side.state = state
        self._feed_side(side, head, side.buf_ts)
        return pos

    def _start_h1(self, side: Side, data: bytes, pos: int, ts: int) -> int:
        if self.role == Role.UNKNOWN:
            self._set_role(Role.SERVER if side.dir == Direction.INGRESS else Role.CLIENT)
        head = bytes(side.buf)
        side.buf = bytearray()
        self._prelude = H2cPrelude(side.dir)
        self._prelude_input(side.dir, head, side.buf_ts)
        if pos < len(data) and self._prelude is not None:
            self._prelude_input(side.dir, data[pos:], ts)
        elif pos < len(data) and self._h1 is not None:
            self._out += self._h1.feed(side.dir, data[pos:], ts)
        elif pos < len(data):
            self._feed_side(side, data[pos:], ts)
        return len(data)

    def _preface(self, side: Side, data: bytes, pos: int, ts: int) -> int:
        if side.h1_body:  # the rest of an h2c request's body comes first
            take = min(side.h1_body, len(data) - pos)
            side.h1_body -= take
            stream = self._streams.get(1)
            if stream is not None:
                stream.req.size += take
            return pos + take
        k = min(len(PREFACE) - side.preface_pos, len(data) - pos)
        if data[pos : pos + k] != PREFACE[side.preface_pos : side.preface_pos + k]:
            self._fail("bad preface")
            return len(data)
        side.preface_pos += k
        if side.preface_pos == len(PREFACE):
            side.state = HEAD
            self._on_preface(side)
        return pos + k

    def _on_preface(self, side: Side) -> None:
        """The client preface: the connection is new, both sides decode exactly."""
        if self.role == Role.UNKNOWN:
            self._set_role(Role.SERVER if side.dir == Direction.INGRESS else Role.CLIENT)
        elif side.dir != self._req_dir:
            self._fail("preface from the server side")
            return
        side.synced = True
        self._fresh = True
        self._exact(side)
        side.expect_settings = True
        other = self._sides[1 - side.dir]
        if other.state == START:
            other.expect_settings = True  # its first frame tells whether we saw its start
        elif other.clean and other.first == SETTINGS:
            self._exact(other)

    def _exact(self, side: Side) -> None:
        side.hpack.mark_exact()
        side.strict = True

    # ------------------------------------------------------------ h2c prelude

    def _prelude_input(self, direction: Direction, item: bytes | int, ts: int) -> None:
        prelude = self._prelude
        assert prelude is not None
        if isinstance(item, int):
            verdict = prelude.gap(direction, item, ts)
        else:
            verdict = prelude.feed(direction, item, ts)
        if verdict == UNDECIDED:
            return
        if verdict == DECLINED:
            self._fallback()
            return
        assert verdict == UPGRADED
        self._prelude = None
        self.stats.upgrades += 1
        req = prelude.request
        assert req is not None
        stream = Stream(1, prelude.req_ts)
        fields = stream.req.fields
        fields[b":method"] = req.method.encode("latin-1")
        fields[b":scheme"] = b"http"
        fields[b":path"] = req.target.encode("latin-1")
        for name, key in ((b":authority", "host"), (b"content-type", "content-type"),
                          (b"user-agent", "user-agent")):
            if key in req.headers:
                fields[name] = req.headers[key].encode("latin-1")
        stream.req.size = req.body_size
        stream.req.ended = True
        stream.req.blocks = 1
        self._streams[1] = stream
        client, server = self._sides[self._req_dir], self._sides[1 - self._req_dir]
        client.last_sid = 1
        for ident, value in prelude.settings():
            self._setting(client, ident, value)
        client.state = S_PREFACE
        client.h1_body = prelude.body_left
        server.state = HEAD
        self._fresh = True
        self._exact(client)
        self._exact(server)
        server.expect_settings = True
        if prelude.resp_tail:
            self._feed_side(server, prelude.resp_tail, ts)
        if prelude.req_tail:
            self._feed_side(client, prelude.req_tail, prelude.req_tail_ts)

    def _fallback(self) -> None:
        """The upgrade was declined (or never asked): this is an HTTP/1 connection."""
        prelude = self._prelude
        self._prelude = None
        self.stats.http1_fallbacks += 1
        h1 = self._h1 = Http1Connection(self.role)
        if prelude is None:
            return
        for direction, item, ts in prelude.log:
            if isinstance(item, int):
                self._out += h1.gap(direction, item, ts)
            else:
                self._out += h1.feed(direction, item, ts)

