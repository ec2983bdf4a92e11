"""One traced connection: its facts, its two byte streams, its protocol."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from ..model import ConnMeta, Direction, Role
from ..protocols.http1.connection import Http1Connection, framed_exchange


class ProtocolConnection(Protocol):
    """What every sans-IO protocol connection offers (http1, http2)."""

    role: Role

    def feed(self, direction: Direction, data: bytes, ts_ns: int) -> list: ...
    def gap(self, direction: Direction, nbytes: int, ts_ns: int) -> list: ...
    def close(self, ts_ns: int) -> list: ...


@dataclass(slots=True)
class ConnTracker:
    meta: ConnMeta
    parser: ProtocolConnection | None = None  # chosen by the first bytes
    last_seen_ns: int = 0
    # By Direction: where the stream's next byte should start (gaps show up
    # here); -1 until its first byte (new, or joined mid-stream).
    expected: list[int] = field(default_factory=lambda: [-1, -1])
    addresses_resolved: bool = False
    gaps: int = 0  # stretches lost: records the kernel counted but we never received
    skipped: int = 0  # bytes the HTTP/2 frame walk chose not to copy: not a loss
    framed: int = 0  # exchanges the kernel framed before there was a parser

    def on_data(
        self, direction: Direction, pos: int, length: int, data: bytes, ts_ns: int,
        tail: bytes = b"",
    ) -> list:
        """Feed one syscall's bytes; missing bytes before or after become gaps.

        `data` is the syscall's first bytes and `tail` its last ones; what lies
        between was not copied and is a gap of known size.
        """
        self.last_seen_ns = ts_ns
        exp = self.expected
        want = exp[direction]
        if (want < 0 or pos <= want) and not tail and length and len(data) == length:
            exp[direction] = pos + length  # the common case: all of it copied, none lost
            return self.parser.feed(direction, data, ts_ns)
        out: list = []
        if want >= 0 and pos > want:
            # Lost events: the kernel counted bytes we never received.
            self.gaps += 1
            out += self.parser.gap(direction, pos - want, ts_ns)
        exp[direction] = pos + length
        if data:
            out += self.parser.feed(direction, data, ts_ns)
        missing = length - len(data) - len(tail)
        if missing > 0:
            out += self.parser.gap(direction, missing, ts_ns)
        if tail:
            out += self.parser.feed(direction, tail, ts_ns)
        return out

    def on_h1_request(self, pos: int, length: int, data: bytes, ts_ns: int) -> list:
        """A request read the kernel found to be exactly one GET/HEAD head."""
        self.last_seen_ns = ts_ns
        fast = getattr(self.parser, "fast_request", None)
        exp = self.expected
        if fast is None or (exp[0] >= 0 and pos != exp[0]):
            return self.on_data(Direction.INGRESS, pos, length, data, ts_ns)
        exp[0] = pos + length
        return fast(data, ts_ns)

    def on_h1_response(self, pos: int, length: int, ts_ns: int, status: int, minor: int,
                       body: int, partial: int,
                       req: tuple[int, int, bytes, int] | None = None) -> list:
        """A response the kernel framed: [pos, pos + length) of the egress stream;
        `req` (pos, length, bytes, ts) its request when it comes along."""
        self.last_seen_ns = ts_ns
        exp = self.expected
        in_step = False
        if req is not None:
            rpos, rlen, data, rts = req
            in_step = (exp[0] < 0 or rpos == exp[0]) and (exp[1] < 0 or pos == exp[1])
            if in_step and self.parser is None and not partial:
                # No parser yet, every exchange so far framed whole (a connection
                # per request: accept, one exchange, close): none is needed.
                rec = framed_exchange(data, rts, status, minor, body, ts_ns)
                if rec is not None:
                    self.framed += 1
                    exp[0] = rpos + rlen
                    exp[1] = pos + length
                    return [rec]
        if self.parser is None:
            # The kernel frames only plain HTTP/1 exchanges it saw accepted.
            self.set_parser(Http1Connection(Role.SERVER))
        if req is not None:
            exchange = getattr(self.parser, "fast_exchange", None)
            if exchange is not None and in_step:
                # The common case: both streams in step, one call.
                exp[0] = rpos + rlen
                exp[1] = pos + length
                return exchange(data, rts, status, minor, body, ts_ns, partial)
            out: list = self.on_h1_request(rpos, rlen, data, rts)
            self.last_seen_ns = ts_ns
        else:
            out = []
        fast = getattr(self.parser, "fast_response", None)
        want = exp[1]
        if want >= 0 and pos > want:
            self.gaps += 1  # records lost before it: the parser resyncs
            out += self.parser.gap(Direction.EGRESS, pos - want, ts_ns)
        exp[1] = pos + length
        if fast is not None:
            out += fast(status, minor, body, ts_ns, partial)
        return out

    def on_segments(
        self, direction: Direction, pos: int, length: int, segs: list[tuple[int, bytes]],
        ts_ns: int,
    ) -> list:
        """Feed one record of the kernel's HTTP/2 frame walk: [pos, pos + length) as
        (bytes not copied, bytes copied) pairs, in order; anything after them was not
        copied either. The uncopied bytes are DATA payloads the kernel skipped on
        purpose: gaps of known size at known places, not losses."""
        self.last_seen_ns = ts_ns
        exp = self.expected
        parser = self.parser
        out: list = []
        if exp[direction] >= 0 and pos > exp[direction]:
            self.gaps += 1  # a record lost on the way (ring buffer full)
            out += parser.gap(direction, pos - exp[direction], ts_ns)
        exp[direction] = pos + length
        rest = length
        for skip, data in segs:
            if skip:
                out += parser.gap(direction, skip, ts_ns)
                self.skipped += skip
            if data:
                out += parser.feed(direction, data, ts_ns)
            rest -= skip + len(data)
        if rest > 0:
            out += parser.gap(direction, rest, ts_ns)
            self.skipped += rest
        return out

    def set_parser(self, parser: ProtocolConnection) -> None:
        self.parser = parser
        if self.framed:
            after = getattr(parser, "after_framed", None)
            if after is not None:
                after(self.framed)

    def on_close(self, ts_ns: int) -> list:
        return self.parser.close(ts_ns) if self.parser is not None else []
