"""HTTP/2 streams of a connection: header blocks and ends in, records out."""

from __future__ import annotations

from ...model import Direction, Role
from .frames import PUSH_PROMISE
from .grpc import MessageCounter, is_grpc_content_type
from .headers import HpackError
from .side import Side
from .stream import Half, Stream, to_record


class StreamBook:
    """Mixin of Http2Connection: the open streams and the records they become.

    Relies on the connection's ``stats``, ``role``, ``_sides``, ``_streams``, ``_req_dir``,
    ``_out``, ``_fresh``, ``_goaway``, ``_orphan_max``, ``_max_streams``, ``_set_role``
    and ``_fail``.
    """

    __slots__ = ()

    def _unknown_stream(self, side: Side, sid: int) -> None:
        if side.dir != self._req_dir and sid & 1 and sid > self._orphan_max:
            if sid > self._sides[self._req_dir].last_sid or not self._sides[self._req_dir].synced:
                self.stats.orphan_streams += 1
            self._orphan_max = sid

    def _open(self, side: Side, sid: int, ts: int) -> Stream:
        side.last_sid = sid
        streams = self._streams
        if len(streams) >= self._max_streams:
            oldest = streams[next(iter(streams))]
            if oldest.resp.ended:
                self._emit(oldest, oldest.resp.last_ts)
            else:
                del streams[oldest.sid]
                self.stats.dropped_streams += 1
        stream = streams[sid] = Stream(sid, ts)
        return stream

    def _header_block(
        self, side: Side, sid: int, block: bytes | bytearray, lost: bool, end_stream: bool,
        kind: int, start_ts: int, ts: int,
    ) -> None:
        try:
            fields, unknown = side.hpack.decode(block, lost)
        except HpackError as e:
            if side.strict and not side.probation:
                self._fail("hpack: " + str(e))
                return
            self.stats.parse_errors += 1
            side.hpack.lose()
            fields, unknown, lost = {}, 1, True
        if lost:
            self.stats.hpack_tables_lost += 1
        if kind == PUSH_PROMISE:
            self.stats.pushed_streams += 1
            return
        if self.role == Role.UNKNOWN:
            if b":method" in fields or b":path" in fields or b":scheme" in fields:
                is_req = True
            elif b":status" in fields:
                is_req = False
            else:
                return  # cannot tell who is who yet
            reads = side.dir == Direction.INGRESS
            self._set_role(Role.SERVER if reads == is_req else Role.CLIENT)
        if not sid & 1:
            return  # a pushed stream
        stream = self._streams.get(sid)
        if side.dir == self._req_dir:
            if stream is None:
                if sid <= side.last_sid:
                    self.stats.late_frames += 1
                    return
                stream = self._open(side, sid, start_ts)
            half = stream.req
            if not half.blocks:
                if not self._fresh and not (
                        b":method" in fields or b":path" in fields or b":scheme" in fields):
                    # Joined late, nothing says this opens a stream (trailers of an older
                    # one look the same): not reported rather than reported as nothing.
                    del self._streams[sid]
                    self.stats.orphan_streams += 1
                    return
                half.fields = fields
                if is_grpc_content_type(_latin(fields.get(b"content-type"))):
                    half.counter = MessageCounter()
            if unknown or lost:
                half.unknown = True
                if lost:
                    stream.mark_partial("headers-lost")
            half.blocks += 1
            half.last_ts = ts
            if end_stream:
                self._end_half(stream, half, ts)
        elif stream is None:
            self._unknown_stream(side, sid)
        else:
            self._response_block(stream, fields, bool(unknown or lost), end_stream, ts)

    def _response_block(
        self, stream: Stream, fields: dict, unknown: bool, end_stream: bool, ts: int
    ) -> None:
        resp = stream.resp
        status = fields.get(b":status")
        if status is not None:
            code = int(status) if len(status) == 3 and status.isdigit() else None
            if code is not None and code < 200:
                resp.last_ts = ts  # informational (100, 103): the final head follows
                return
            stream.status = code
            stream.final_seen = True
            if code is None:
                stream.lost_fields.add(":status")
            else:
                stream.lost_fields.discard(":status")
        elif not stream.final_seen:
            stream.final_seen = True
            if unknown:
                stream.lost_fields.add(":status")  # in an entry we never saw
        rf = resp.fields
        for name in (b"content-type", b"grpc-status", b"grpc-message"):
            v = fields.get(name)
            if v is not None:
                rf[name] = v
        if not resp.blocks and is_grpc_content_type(_latin(rf.get(b"content-type"))):
            resp.counter = MessageCounter()
        if unknown:
            resp.unknown = True
        resp.blocks += 1
        resp.last_ts = ts
        if end_stream:
            self._end_half(stream, resp, ts)

    def _end_half(self, stream: Stream, half: Half, ts: int) -> None:
        half.ended = True
        half.last_ts = ts
        # Reported once both sides ended: the request's last DATA may follow the response.
        if stream.resp.ended and stream.req.ended:
            self._emit(stream, stream.resp.last_ts)

    def _reset(self, side: Side, sid: int, code: int, ts: int) -> None:
        stream = self._streams.get(sid)
        if stream is None:
            return
        self.stats.reset_streams += 1
        stream.reset_code = code
        stream.reset_by = Role.CLIENT if side.dir == self._req_dir else Role.SERVER
        if code < 0:
            stream.mark_partial("reset-code-lost")
        self._emit(stream, stream.resp.last_ts if stream.resp.ended else ts)

    def _goaway_frame(self, side: Side, last: int, code: int, ts: int) -> None:
        if code:
            self._goaway = code
        if side.dir == self._req_dir:
            return  # the client refuses server pushes: not tracked
        # Streams above last_sid were not and will not be processed by the server.
        for stream in [s for s in self._streams.values() if s.sid > last]:
            self.stats.refused_streams += 1
            stream.goaway_code = code
            self._emit(stream, ts)

    def _flush(self, stream: Stream, ts: int) -> None:
        """The connection closed with the stream open."""
        if stream.resp.ended:
            self._emit(stream, stream.resp.last_ts)
        elif stream.resp.blocks:
            stream.mark_partial("response-truncated")
            stream.goaway_code = self._goaway
            self._emit(stream, stream.resp.last_ts)
        elif self._goaway is not None:
            stream.goaway_code = self._goaway
            self._emit(stream, ts)
        else:
            self.stats.unmatched_requests += 1

    def _emit(self, stream: Stream, end_ns: int) -> None:
        self._streams.pop(stream.sid, None)
        rec = to_record(stream, end_ns)
        self.stats.records += 1
        if rec.partial is not None:
            self.stats.partial_records += 1
        if rec.unknown_fields:
            self.stats.unknown_field_records += 1
        self._out.append(rec)


def _latin(v: bytes | None) -> str | None:
    return v.decode("latin-1") if v is not None else None
