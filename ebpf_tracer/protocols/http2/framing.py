"""HTTP/2 framing of one direction: frame headers, payloads, gaps, and finding a frame
boundary again (after a gap, or when the tracer joined a connection late)."""

from __future__ import annotations

from ...model import Role
from .frames import (
    ACK,
    CANDIDATE,
    CANDIDATE_ANY_LENGTH,
    CONTINUATION,
    DATA,
    DEFAULT_MAX_FRAME,
    END_HEADERS,
    END_STREAM,
    GOAWAY,
    HEADER,
    HEADERS,
    MAX_FRAME_LIMIT,
    PADDED,
    PING,
    PRIORITY,
    PRIORITY_FLAG,
    PUSH_PROMISE,
    RST_STREAM,
    SETTINGS,
    SETTINGS_HEADER_TABLE_SIZE,
    SETTINGS_MAX_FRAME_SIZE,
    U32,
    WINDOW_UPDATE,
    parse_settings,
    plausible,
)
from .side import (
    BUF,
    DEAD,
    HEAD,
    MAX_BLIND_BYTES,
    MAX_SETTINGS,
    PROBATION,
    S_DATA,
    S_PREFACE,
    SKIP,
    START,
    SYNC,
    Side,
)


class Framing:
    """Mixin of Http2Connection: bytes and gaps of one side -> frames -> its handlers.

    Relies on the connection's ``stats``, ``role``, ``_sides``, ``_streams``, ``_req_dir``,
    its error handling (``_error``, ``_lose``, ``_fail``) and its stream handlers.
    """

    __slots__ = ()

    def _feed_side(self, side: Side, data: bytes, ts: int) -> None:
        pos = 0
        n = len(data)
        while pos < n:
            st = side.state
            if st == HEAD:
                if side.buf:  # a frame header split across chunks
                    buf = side.buf
                    take = 9 - len(buf)
                    buf += data[pos : pos + take]
                    pos += take
                    if len(buf) < 9:
                        return
                    side.buf = bytearray()
                    hi, lo, ftype, flags, sid = HEADER.unpack_from(buf)
                    self._frame(side, hi << 8 | lo, ftype, flags, sid, side.buf_ts, ts)
                    continue
                if n - pos < 9:
                    side.buf = bytearray(data[pos:])
                    side.buf_ts = ts
                    return
                hi, lo, ftype, flags, sid = HEADER.unpack_from(data, pos)
                pos += 9
                length = hi << 8 | lo
                self._frame(side, length, ftype, flags, sid, ts, ts)
                if side.state == BUF and n - pos >= side.need:
                    # The whole payload is in view: no copy into buf (the common case).
                    end = pos + side.need
                    self._payload_in_view(side, data[pos:end], ts)
                    pos = end
            elif st == S_DATA:
                pos = self._data(side, data, pos, ts)
            elif st == SKIP:
                take = min(side.remaining, n - pos)
                pos += take
                side.remaining -= take
                if not side.remaining:
                    side.state = HEAD
                    if side.lost:
                        self._lost_payload(side, ts)
            elif st == BUF:
                take = min(side.need, n - pos)
                side.buf += data[pos : pos + take]
                pos += take
                side.need -= take
                if not side.need:
                    payload = bytes(side.buf)
                    side.buf = bytearray()
                    self._payload_in_view(side, payload, ts)
            elif st == SYNC:
                pos = self._sync(side, data, pos, ts)
            elif st == S_PREFACE:
                pos = self._preface(side, data, pos, ts)
            elif st == START:
                pos = self._start(side, data, pos, ts)
            else:  # DEAD
                return

    def _payload_in_view(self, side: Side, payload: bytes, ts: int) -> None:
        if side.remaining:  # a GOAWAY's debug data, SETTINGS beyond what we read
            side.state = SKIP
        else:
            side.state = HEAD
        self._payload(side, payload, ts)

    def _lost_payload(self, side: Side, ts: int) -> None:
        """A frame cut by a gap ended: handle what came before the gap."""
        payload = bytes(side.buf)
        side.buf = bytearray()
        self._payload(side, payload, ts)

    def _gap_side(self, side: Side, nbytes: int, ts: int) -> None:
        st = side.state
        if st == DEAD:
            return
        side.clean = False
        if st == S_DATA:
            if side.pad < 0:  # the pad length byte is lost: padding unknown
                side.pad = 0
                if side.stream is not None:
                    side.stream.mark_partial("padding-lost")
            take = min(nbytes, side.remaining)
            half = side.half
            if half is not None:
                content = min(take, side.remaining - side.pad)
                if content > 0:
                    half.size += content
                    if half.counter is not None:
                        half.counter.skip(content)
            side.remaining -= take
            nbytes -= take
            if not side.remaining:
                side.state = HEAD
                self._data_done(side, ts)
        elif st == SKIP:
            take = min(nbytes, side.remaining)
            side.remaining -= take
            nbytes -= take
            if not side.remaining:
                side.state = HEAD
                if side.lost:
                    self._lost_payload(side, ts)
        elif st == BUF:
            # The frame's length is known: its end is not lost, only its content.
            side.lost = True
            side.remaining += side.need
            side.need = 0
            side.state = SKIP
            take = min(nbytes, side.remaining)
            side.remaining -= take
            nbytes -= take
            if not side.remaining:
                side.state = HEAD
                self._lost_payload(side, ts)
        elif st == SYNC:
            side.buf = bytearray()
            self.stats.skipped_bytes += nbytes
            return
        if nbytes > 0 and side.state != DEAD:
            self.stats.skipped_bytes += nbytes
            self._lose(side)

    def _frame(
        self, side: Side, length: int, ftype: int, flags: int, sid: int, frame_ts: int, ts: int
    ) -> None:
        """A frame header was read; set up how its payload is consumed."""
        sid &= 0x7FFFFFFF
        self.stats.frames += 1
        side.good += 1
        if side.probation:
            side.probation -= 1
        if side.expect_settings:
            # A connection starts with SETTINGS from each side. A server side not starting
            # so was joined late (its first bytes went by before the tracer): not exact.
            side.expect_settings = False
            if ftype == SETTINGS and not flags & ACK:
                self._exact(side)
            elif side.strict:
                self._fail("no SETTINGS at the connection start")
                return
        if side.block is not None and (ftype != CONTINUATION or sid != side.block_sid):
            self._error(side, "header block interrupted")
            if side.state != HEAD:
                return
        side.ftype, side.flags, side.sid, side.length = ftype, flags, sid, length
        side.frame_ts = frame_ts
        side.lost = False
        if ftype == DATA:
            if sid == 0:
                self._error(side, "DATA on stream 0")
                return
            stream = self._streams.get(sid)
            half = None
            if stream is not None:
                half = stream.req if side.dir == self._req_dir else stream.resp
                if half.ended:
                    half = None
                    self.stats.late_frames += 1
            else:
                self._unknown_stream(side, sid)
            side.stream, side.half = stream, half
            if length:
                side.state = S_DATA
                side.remaining = length
                side.pad = -1 if flags & PADDED else 0
            else:
                self._data_done(side, ts)
            return
        if ftype == HEADERS or ftype == CONTINUATION or ftype == PUSH_PROMISE:
            if sid == 0:
                self._error(side, "header block on stream 0")
                return
            held = len(side.block) if side.block is not None else 0
            if length + held > self._max_block:
                self._error(side, "header block too large")
                return
            if (ftype == HEADERS and side.dir == self._req_dir and self.role != Role.UNKNOWN
                    and sid & 1 and sid > side.last_sid):
                self._open(side, sid, frame_ts)  # the request starts with this byte
            keep, skip = length, 0
        elif ftype == SETTINGS:
            if sid != 0 or length % 6 or (flags & ACK and length):
                self._error(side, "bad SETTINGS frame")
                return
            if flags & ACK:
                return
            keep = min(length, MAX_SETTINGS)
            skip = length - keep
        elif ftype == RST_STREAM:
            if sid == 0 or length != 4:
                self._error(side, "bad RST_STREAM frame")
                return
            keep, skip = 4, 0
        elif ftype == GOAWAY:
            if sid != 0 or length < 8:
                self._error(side, "bad GOAWAY frame")
                return
            keep, skip = 8, length - 8
        else:
            if ((ftype == PING and (length != 8 or sid)) or (ftype == WINDOW_UPDATE and length != 4)
                    or (ftype == PRIORITY and (length != 5 or not sid))):
                self._error(side, "bad frame length")
                return
            if length:  # PING, WINDOW_UPDATE, PRIORITY and unknown types: not read
                side.state = SKIP
                side.remaining = length
            return
        if keep:
            side.state = BUF
            side.need = keep
            side.remaining = skip
            side.buf = bytearray()
        else:
            self._payload(side, b"", ts)

    def _payload(self, side: Side, payload: bytes, ts: int) -> None:
        """The payload of a frame we read (or its part before a gap, when side.lost)."""
        ftype = side.ftype
        lost = side.lost
        side.lost = False
        if ftype == HEADERS or ftype == PUSH_PROMISE:
            frag = self._fragment(side, payload, lost)
            if frag is None:
                return
            if side.flags & END_HEADERS:
                self._header_block(side, side.sid, frag, lost, bool(side.flags & END_STREAM),
                                   ftype, side.frame_ts, ts)
            else:
                side.block = bytearray(frag)
                side.block_sid = side.sid
                side.block_ts = side.frame_ts
                side.block_end = bool(side.flags & END_STREAM)
                side.block_kind = ftype
                side.block_lost = lost
        elif ftype == CONTINUATION:
            block = side.block
            if block is None:
                # Joined (or resynced) inside a header block: its start is lost.
                if side.strict:
                    self._error(side, "CONTINUATION without HEADERS")
                else:
                    side.hpack.lose()
                    self.stats.hpack_tables_lost += 1
                return
            if not side.block_lost:
                block += payload
            side.block_lost = side.block_lost or lost
            if side.flags & END_HEADERS:
                side.block = None
                self._header_block(side, side.block_sid, block, side.block_lost, side.block_end,
                                   side.block_kind, side.block_ts, ts)
        elif ftype == SETTINGS:
            if not lost:
                for ident, value in parse_settings(payload):
                    self._setting(side, ident, value)
        elif ftype == RST_STREAM:
            self._reset(side, side.sid, U32.unpack(payload)[0] if not lost else -1, ts)
        elif ftype == GOAWAY:
            if not lost:
                last = U32.unpack_from(payload)[0] & 0x7FFFFFFF
                self._goaway_frame(side, last, U32.unpack_from(payload, 4)[0], ts)

    def _fragment(self, side: Side, payload: bytes, lost: bool) -> bytes | None:
        """The header block fragment of a HEADERS or PUSH_PROMISE payload."""
        flags = side.flags
        off = pad = 0
        if flags & PADDED:
            if not payload:
                return b"" if lost else None
            pad = payload[0]
            off = 1
        if side.ftype == HEADERS and flags & PRIORITY_FLAG:
            off += 5
        if side.ftype == PUSH_PROMISE:
            off += 4
        end = side.length - pad
        if end < off:
            self._error(side, "bad padding")
            return None
        return payload[off:end]

    def _setting(self, side: Side, ident: int, value: int) -> None:
        # A setting describes its sender's receiving end: it bounds what the peer sends.
        peer = self._sides[1 - side.dir]
        if ident == SETTINGS_HEADER_TABLE_SIZE:
            peer.hpack.allow_table_size(value)
        elif ident == SETTINGS_MAX_FRAME_SIZE and DEFAULT_MAX_FRAME <= value <= MAX_FRAME_LIMIT:
            peer.max_frame = max(peer.max_frame, value)

    def _data(self, side: Side, data: bytes, pos: int, ts: int) -> int:
        if side.pad < 0:
            side.pad = data[pos]
            pos += 1
            side.remaining -= 1
            if side.pad > side.remaining:
                self._error(side, "bad padding")
                return pos
        rem = side.remaining
        take = min(rem, len(data) - pos)
        half = side.half
        if half is not None:
            content = min(take, rem - side.pad)
            if content > 0:
                half.size += content
                if half.counter is not None:
                    half.counter.feed(data, pos, pos + content)
        side.remaining = rem - take
        if not side.remaining:
            side.state = HEAD
            self._data_done(side, ts)
        return pos + take

    def _data_done(self, side: Side, ts: int) -> None:
        half = side.half
        if half is not None:
            half.last_ts = ts
            if side.flags & END_STREAM and side.stream is not None:
                self._end_half(side.stream, half, ts)
        side.half = side.stream = None

    def _sync(self, side: Side, data: bytes, pos: int, ts: int) -> int:
        """Hunt for a frame header; framing resumes there."""
        if side.buf:
            d = bytes(side.buf) + data[pos:]
            boundary = len(side.buf)
            start = 0
            ts_first = side.buf_ts
        else:
            d, boundary, start, ts_first = data, (pos if pos == 0 else -1), pos, ts
        n = len(d)
        odd = self.role != Role.UNKNOWN and side.dir == self._req_dir
        max_frame = side.max_frame
        pattern = CANDIDATE if max_frame <= DEFAULT_MAX_FRAME else CANDIDATE_ANY_LENGTH
        for m in pattern.finditer(d, start):
            p = m.start()
            if n - p < 9:
                break
            count, exact, failed = chain(d, p, n, max_frame, odd)
            if failed or not (exact or count >= 2 or p == boundary):
                continue
            self.stats.skipped_bytes += p - start
            side.blind += p - start
            if side.synced:
                self.stats.resyncs += 1
                side.probation = PROBATION
            side.synced = True
            side.buf = bytearray()
            side.state = HEAD
            if d is data:
                return p
            if p < boundary:  # the header began in the kept tail
                self._feed_side(side, d[p:boundary], ts_first)
                self._feed_side(side, d[boundary:], ts)
            else:
                self._feed_side(side, d[p:], ts)
            return len(data)
        keep = min(8, n - start)  # a header may straddle into the next chunk
        self.stats.skipped_bytes += n - start - keep
        side.blind += n - start - keep
        side.buf = bytearray(d[n - keep :])
        side.buf_ts = ts
        if side.blind > MAX_BLIND_BYTES and side.good == 0:
            self._fail("no HTTP/2 frames found")
        return len(data)


def chain(d: bytes, p: int, n: int, max_frame: int, odd: bool) -> tuple[int, bool, bool]:
    """Plausible frames from p: (count, the last ends exactly at n, an implausible one)."""
    q = p
    count = 0
    while q + 9 <= n and count < 4:
        hi, lo, ftype, flags, sid = HEADER.unpack_from(d, q)
        length = hi << 8 | lo
        if not plausible(length, ftype, flags, sid, max_frame, odd):
            return count, False, True
        count += 1
        q += 9 + length
    return count, q == n, False
