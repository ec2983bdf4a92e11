"""Per-direction state of an HTTP/2 connection, and the connection's counters."""

from __future__ import annotations

from dataclasses import dataclass

from ...model import Direction
from .frames import DEFAULT_MAX_FRAME, HEADERS
from .headers import HeaderDecoder
from .stream import Half, Stream

# Side states.
START = 0  # nothing decided: preface, h2c request, or frames (joined late)?
S_PREFACE = 1  # inside the client preface
HEAD = 2  # the next byte starts a frame header
BUF = 3  # collecting a payload we read (side.need bytes still wanted)
S_DATA = 4  # inside a DATA payload
SKIP = 5  # inside a payload we do not read
SYNC = 6  # framing lost: hunting for a frame header
DEAD = 7

MAX_SETTINGS = 600  # payload bytes of SETTINGS read (100 settings); the rest is skipped
MAX_BLIND_BYTES = 1 << 20  # no frame found in this much: not HTTP/2
PROBATION = 8  # frames after a resync during which an error means a false resync


@dataclass(slots=True)
class Http2Stats:
    records: int = 0
    partial_records: int = 0  # records whose framing was not exact (Http2Record.partial)
    unknown_field_records: int = 0  # records with fields we could not decode (joined late)
    frames: int = 0
    gaps: int = 0
    gap_bytes: int = 0
    resyncs: int = 0  # frame boundaries found again after lost framing
    skipped_bytes: int = 0  # bytes dropped while hunting for a frame header
    parse_errors: int = 0
    unparseable: int = 0  # 1 once the connection was given up (Http2Connection.unparseable)
    hpack_tables_lost: int = 0  # header decoding state lost (gap, error): fields may be unknown
    orphan_streams: int = 0  # streams opened before we joined, or whose start was lost
    unmatched_requests: int = 0  # no response by the close
    dropped_streams: int = 0  # over max_streams, or open when the connection was given up
    reset_streams: int = 0
    refused_streams: int = 0  # ended by a GOAWAY
    pushed_streams: int = 0  # server push: decoded for HPACK, not reported
    late_frames: int = 0  # frames of streams already reported
    upgrades: int = 0  # h2c upgrades followed
    http1_fallbacks: int = 0  # h2c upgrade declined: parsed as HTTP/1
    internal_errors: int = 0  # a bug caught at the API boundary (also in parse_errors)


class Side:
    """One direction's byte stream: framing state and the sender's HPACK encoder mirror."""

    __slots__ = (
        "dir", "state", "buf", "buf_ts", "ftype", "flags", "sid", "length", "need",
        "remaining", "pad", "frame_ts", "lost", "stream", "half", "hpack", "block",
        "block_sid", "block_ts", "block_end", "block_kind", "block_lost", "max_frame",
        "preface_pos", "clean", "first", "head16", "strict", "probation", "last_sid",
        "expect_settings", "h1_body", "good", "blind", "synced",
    )

    def __init__(self, direction: Direction, hpack: HeaderDecoder) -> None:
        self.dir = direction
        self.state = START
        self.buf = bytearray()  # a partial frame header, or a payload being collected
        self.buf_ts = 0  # ts of the chunk that brought buf's first byte
        self.ftype = self.flags = self.sid = self.length = 0  # current frame
        self.need = 0  # payload bytes still to collect into buf
        self.remaining = 0  # payload bytes still to come (DATA, skipped, or after need)
        self.pad = 0  # DATA padding at the payload's end (-1: pad length byte pending)
        self.frame_ts = 0  # ts of the chunk with the current frame's first byte
        self.lost = False  # a gap cut the current frame's payload
        self.stream: Stream | None = None  # stream of the current DATA frame
        self.half: Half | None = None
        self.hpack = hpack
        self.block: bytearray | None = None  # header block awaiting CONTINUATION
        self.block_sid = 0
        self.block_ts = 0
        self.block_end = False  # END_STREAM of the HEADERS that began the block
        self.block_kind = HEADERS
        self.block_lost = False
        self.max_frame = DEFAULT_MAX_FRAME  # as the receiver's SETTINGS allow
        self.preface_pos = 0
        self.clean = True  # no gap or skipped byte since this side's first byte
        self.first = -1  # type of the first frame, when it started the side's first bytes
        self.head16 = b""  # first bytes of the side (to recognise a non-HTTP/2 peer)
        self.strict = False  # exact since the connection start: a violation is an error
        self.probation = 0
        self.last_sid = 0  # highest stream this side opened
        self.expect_settings = False  # the next frame starts the connection: SETTINGS
        self.h1_body = 0  # HTTP/1 request body bytes before the preface (h2c)
        self.good = 0  # frames parsed
        self.blind = 0  # bytes skipped while hunting
        self.synced = False  # framing was found once (later hunts count as resyncs)
