"""Sans-IO parser for one direction of an HTTP/1.x connection (all requests or all responses).

Bytes arrive as data chunks and gaps (bytes known to exist but not copied). The parser
frames messages without keeping body bytes, reports each head and each message end to
its owner through callbacks, and resynchronises at the next message start when a gap
or garbage makes the framing unknowable.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Protocol

from .head import (
    CHUNKED,
    CLOSE,
    INVALID,
    LENGTH,
    NONE,
    SKIP,
    STOP,
    SYNC_METHOD_PREFIXES_B,
    SYNC_METHODS,
    SYNC_METHODS_B,
    Message,
    parse_head,
    plausible_start_prefix,
    valid_start_line,
)

# Parser states.
_HEAD = 0  # in sync: the next byte starts a message head
_SYNC = 1  # framing unknown: hunting for a message start
_BODY = 2  # Content-Length body
_CHUNK_SIZE = 3
_CHUNK_DATA = 4
_CHUNK_END = 5  # the CRLF after a chunk's data
_TRAILERS = 6
_CLOSE = 7  # body delimited by connection close
_DEAD = 8  # protocol switched or connection closed

MAX_CHUNK_LINE = 4096  # chunk-size line with extensions
MAX_SYNC_LINE = 8192  # longest request line we keep while hunting for a start

_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")
_SYNC_REQUEST = re.compile(
    rb"(?:" + b"|".join(sorted(SYNC_METHODS_B)) + rb") [^ \r\n]+ HTTP/1\.\d\r?\n"
)
_SYNC_STATUS = re.compile(rb"HTTP/1\.\d \d{3}(?:[ \t][^\r\n]*)?\r?\n")


class Counters(Protocol):
    parse_errors: int
    resyncs: int
    skipped_bytes: int
    oversized_heads: int


class MessageParser:
    """Frames the messages of one direction; see the module docstring."""

    __slots__ = (
        "is_request", "_stats", "_on_head", "_on_end", "_on_lost", "_max_head",
        "_state", "_buf", "_buf_ts", "_scan", "_line_ok", "_lost",
        "_remaining", "_trailer_bytes", "_msg", "_seen",
    )

    def __init__(
        self,
        is_request: bool,
        stats: Counters,
        on_head: Callable[[Message], int],
        on_end: Callable[[Message], None],
        on_lost: Callable[[], None] | None = None,
        max_head_bytes: int = 65536,
    ) -> None:
        self.is_request = is_request
        self._stats = stats
        self._on_head = on_head  # returns the body framing (head.NONE, LENGTH, ...)
        self._on_end = on_end  # message complete, or given up (msg.partial set)
        self._on_lost = on_lost  # framing lost: later messages may have vanished
        self._max_head = max(256, max_head_bytes)
        self._state = _HEAD
        self._buf = bytearray()  # only an incomplete head or line, never body bytes
        self._buf_ts = 0  # ts of the chunk that brought _buf's first byte
        self._scan = 0  # where to resume searching in _buf
        self._line_ok = False  # first line of the buffered head already checked
        self._lost = False  # in _SYNC after a gap or an error (not a mid-stream join)
        self._remaining = 0
        self._trailer_bytes = 0
        self._msg: Message | None = None  # message whose body is being framed (or lost)
        # False until a first message start: bytes before it are a mid-stream join,
        # not an error.
        self._seen = False

    # ----------------------------------------------------------------- input

    def feed(self, data: bytes, ts: int) -> None:
        if self._state == _DEAD:
            return
        buf = self._buf
        if buf:
            buflen = len(buf)
            buf += data
            data = buf  # type: ignore[assignment]  # bytearray; same read API
            self._buf = bytearray()
        else:
            buflen = 0
        pos = 0
        n = len(data)
        while pos < n:
            state = self._state
            if state == _HEAD:
                pos = self._head(data, pos, ts, buflen)
            elif state == _BODY or state == _CHUNK_DATA:
                msg = self._msg
                assert msg is not None
                rem = self._remaining
                avail = n - pos
                msg.end_ns = ts
                if avail < rem:
                    msg.body_size += avail
                    self._remaining = rem - avail
                    return
                msg.body_size += rem
                pos += rem
                self._remaining = 0
                if state == _BODY:
                    self._complete()
                else:
                    self._state = _CHUNK_END
            elif state == _CLOSE:
                msg = self._msg
                assert msg is not None
                msg.body_size += n - pos
                msg.end_ns = ts
                return
            elif state == _SYNC:
                pos = self._sync(data, pos, ts, buflen)
            elif state == _DEAD:
                return
            else:
                pos = self._chunk_line(data, pos, ts, buflen)

    def idle(self) -> bool:
        """Between messages, with nothing buffered."""
        return self._state == _HEAD and not self._buf

    def take_seen(self) -> None:
        """A whole bodyless message went by, framed elsewhere."""
        self._seen = True

    def take_head(self, msg: Message) -> bool:
        """A whole head parsed elsewhere (the kernel vouched for its bounds):
        frame it as if its bytes had been fed. False unless between messages."""
        if self._state != _HEAD or self._buf:
            return False
        self._seen = True
        self._begin_body(msg, self._on_head(msg))
        return True

    def gap(self, nbytes: int, ts: int) -> None:
        """``nbytes`` bytes went by uncopied (beyond the copy size, or lost events)."""
        state = self._state
        if state == _DEAD or nbytes <= 0:
            return
        msg = self._msg
        if self._buf:
            self._stats.skipped_bytes += len(self._buf)
            self._buf = bytearray()
        if state == _BODY or state == _CHUNK_DATA:
            assert msg is not None
            rem = self._remaining
            if nbytes <= rem:
                # Inside a known-length body a gap does not lose the framing.
                msg.body_size += nbytes
                msg.end_ns = ts
                self._remaining = rem - nbytes
                if self._remaining == 0:
                    if state == _BODY:
                        self._complete()
                    else:
                        self._state = _CHUNK_END
                return
            if state == _BODY:
                msg.body_size += rem
                msg.end_ns = ts
                self._complete()
                if self._state == _DEAD:
                    return
                msg = None  # the rest of the gap swallowed the start of the next message
            else:
                msg.body_size += nbytes
        elif state == _CLOSE:
            assert msg is not None
            msg.body_size += nbytes
            msg.end_ns = ts
            return
        elif state == _SYNC:
            if msg is not None:
                msg.body_size += nbytes
            self._lost = True
            if self._on_lost is not None:
                self._on_lost()
            return
        elif msg is not None:  # chunk-size line, chunk CRLF or trailers
            msg.body_size += nbytes
        self._lose()

    def close(self, ts: int) -> None:
        """The connection closed: finish a close-delimited body, give up the rest."""
        state = self._state
        msg = self._msg
        if msg is not None and state != _DEAD:
            if state == _CLOSE:
                self._complete()
            else:
                if msg.partial is None:
                    msg.partial = self._kind + "-truncated"
                self._msg = None
                self._on_end(msg)
        self.stop()

    def abandon(self) -> None:
        """Give up a message whose framing was lost: report it as it stands."""
        msg = self._msg
        if self._state == _SYNC and msg is not None:
            self._msg = None
            self._on_end(msg)

    def stop(self) -> None:
        self._state = _DEAD
        self._msg = None
        self._buf = bytearray()

    def reset(self) -> None:
        """Recover from an internal error: forget everything, hunt for a start."""
        self._msg = None
        self._buf = bytearray()
        self._state = _SYNC
        self._lost = True
        self._line_ok = False
        self._scan = 0

    @property
    def _kind(self) -> str:
        return "request" if self.is_request else "response"

    # ---------------------------------------------------------------- states

    def _head(self, data: bytes, pos: int, ts: int, buflen: int) -> int:
        n = len(data)
        # Empty lines before a message are allowed (RFC 9112 section 2.2).
        c = data[pos]
        while c == 13 or c == 10:
            pos += 1
            if pos == n:
                return n
            c = data[pos]
        start = pos
        scan = self._scan if (start == 0 and buflen) else start
        # The head ends at the first empty line, CRLF or bare LF.
        e = data.find(b"\n\r\n", scan)
        e2 = data.find(b"\n\n", scan, e + 1 if e >= 0 else n)
        if e2 >= 0:
            e, body = e2, e2 + 2
        elif e >= 0:
            body = e + 3
        else:
            return self._head_incomplete(data, start, scan, ts, buflen)
        msg = parse_head(data[start:e], self.is_request)
        if msg is None or (not self._seen and self.is_request and msg.method not in SYNC_METHODS):
            # Before the first message only trusted methods count: it may be mid-stream.
            return self._bad_start(start)
        msg.start_ns = self._buf_ts if start < buflen else ts
        msg.end_ns = ts
        self._scan = 0
        self._line_ok = False
        self._seen = True
        self._begin_body(msg, self._on_head(msg))
        return body

    def _head_incomplete(self, data: bytes, start: int, scan: int, ts: int, buflen: int) -> int:
        n = len(data)
        size = n - start
        if size > self._max_head:
            self._stats.oversized_heads += 1
            self._stats.skipped_bytes += size
            self._lose()
            return n
        if not self._line_ok:
            # Check the start line early, so garbage is not buffered up to the limit.
            nl = data.find(b"\n", scan)  # none before scan, or _line_ok would be set
            if nl < 0:
                ok = plausible_start_prefix(bytes(data[start : start + 33]), self.is_request)
            else:
                ok = valid_start_line(data[start:nl], self.is_request)
                self._line_ok = ok
            if not ok:
                return self._bad_start(start)
        self._keep(data, start, ts, buflen)
        self._scan = max(0, size - 2)
        return n

    def _bad_start(self, start: int) -> int:
        if self._seen:
            self._stats.parse_errors += 1
        self._lose(lost=self._seen)
        return start + 1  # hunt from the next byte

    def _begin_body(self, msg: Message, framing: int) -> None:
        if framing == NONE:
            self._state = _HEAD
            self._on_end(msg)
        elif framing == LENGTH:
            self._msg = msg
            self._remaining = msg.content_length or 0
            self._state = _BODY
        elif framing == CHUNKED:
            self._msg = msg
            self._trailer_bytes = 0
            self._state = _CHUNK_SIZE
        elif framing == CLOSE:
            self._msg = msg
            self._state = _CLOSE
        elif framing == STOP:
            self._state = _DEAD
            self._on_end(msg)
        elif framing == SKIP:
            self._lose(lost=False)
        else:  # INVALID
            assert framing == INVALID
            self._stats.parse_errors += 1
            self._msg = msg
            self._lose()

    def _complete(self) -> None:
        msg = self._msg
        assert msg is not None
        self._msg = None
        self._state = _HEAD
        self._on_end(msg)

    def _lose(self, lost: bool = True) -> None:
        """Framing lost here; hunt for the next message start (keeping an open message).

        ``lost`` is False when the bytes were never in sync (joined mid-stream).
        """
        msg = self._msg
        if msg is not None and msg.partial is None:
            msg.partial = self._kind + "-body-lost"
        self._state = _SYNC
        self._buf = bytearray()
        self._scan = 0
        self._line_ok = False
        self._lost = lost
        if lost and self._on_lost is not None:
            self._on_lost()

    def _chunk_line(self, data: bytes, pos: int, ts: int, buflen: int) -> int:
        """One line of chunked framing: a chunk size, the CRLF after data, or a trailer."""
        msg = self._msg
        assert msg is not None
        state = self._state
        nl = data.find(b"\n", pos)
        if nl < 0:
            limit = self._max_head if state == _TRAILERS else min(self._max_head, MAX_CHUNK_LINE)
            if len(data) - pos > limit:
                self._stats.parse_errors += 1
                self._lose()
                return pos
            self._keep(data, pos, ts, buflen)
            return len(data)
        line = data[pos:nl]
        if line[-1:] == b"\r":
            line = line[:-1]
        msg.end_ns = ts
        if state == _CHUNK_SIZE:
            size = line.split(b";", 1)[0].strip(b" \t")
            if _HEX.fullmatch(size) is None:
                self._stats.parse_errors += 1
                self._lose()
                return pos
            n = int(size, 16)
            if n:
                self._remaining = n
                self._state = _CHUNK_DATA
            else:
                self._state = _TRAILERS
        elif state == _CHUNK_END:
            if line:
                self._stats.parse_errors += 1
                self._lose()
                return pos
            self._state = _CHUNK_SIZE
        elif line:  # a trailer field: skipped, but bounded
            self._trailer_bytes += nl + 1 - pos
            if self._trailer_bytes > self._max_head:
                self._stats.oversized_heads += 1
                self._lose()
                return nl + 1
        else:
            self._complete()
        return nl + 1

    def _sync(self, data: bytes, pos: int, ts: int, buflen: int) -> int:
        n = len(data)
        # A read or write usually starts a message, so a chunk start counts as a line start.
        line_start = pos == 0 or pos == buflen or data[pos - 1] == 10
        boundary = buflen if buflen > pos else -1  # where this chunk starts, after _buf
        if self.is_request:
            scan = self._scan if (pos == 0 and buflen) else pos
            found = find_request_start(data, pos, scan, line_start, boundary)
        else:
            found = find_status_start(data, pos, line_start, boundary)
        msg = self._msg
        if found >= 0:
            if msg is not None:
                if found > pos:
                    msg.body_size += found - pos
                    msg.end_ns = self._buf_ts if found <= buflen else ts
                self._msg = None
                self._on_end(msg)
                if self._state == _DEAD:
                    return n
            else:
                self._stats.skipped_bytes += found - pos
            if self._lost:
                self._stats.resyncs += 1
                self._lost = False
            self._state = _HEAD
            self._scan = 0
            self._line_ok = False
            return found
        if msg is not None:
            msg.body_size += n - pos
            msg.end_ns = ts
            if msg.chunked and _ends_chunked_body(data, pos):
                # The last chunk closes the write: the message ended exactly here, only
                # its size is approximate. Later bytes are the next message.
                self._msg = None
                self._state = _HEAD
                self._on_end(msg)
                return n
        # Keep a trailing partial line that may still grow into a start line.
        nl = data.rfind(b"\n", pos)
        if nl >= 0:
            tail = nl + 1
        else:
            tail = pos if line_start else (boundary if boundary > pos else n)
        keep = tail < n and self._plausible_tail(data, tail)
        if msg is None:
            self._stats.skipped_bytes += (tail if keep else n) - pos
        elif keep:
            msg.body_size -= n - tail  # counted again when re-read
        if keep:
            self._keep(data, tail, ts, buflen)
            if self.is_request:
                self._scan = max(0, n - tail - 8)
        return n

    def _plausible_tail(self, data: bytes, tail: int) -> bool:
        size = len(data) - tail
        if self.is_request:
            if size > min(self._max_head, MAX_SYNC_LINE):
                return False
            sp = data.find(b" ", tail, tail + 16)
            if sp < 0:
                return size <= 15 and bytes(data[tail:]) in SYNC_METHOD_PREFIXES_B
            return bytes(data[tail:sp]) in SYNC_METHODS_B
        k = min(size, 7)
        return size <= 1024 and data[tail : tail + k] == b"HTTP/1."[:k]

    def _keep(self, data: bytes, pos: int, ts: int, buflen: int) -> None:
        """Hold data[pos:] (an incomplete head or line) until more bytes arrive."""
        if pos == 0 and buflen:
            self._buf = data  # type: ignore[assignment]  # already our bytearray
        else:
            self._buf = bytearray(memoryview(data)[pos:])
            if pos >= buflen:
                self._buf_ts = ts
        self._scan = 0


def find_request_start(
    data: bytes, pos: int, scan: int, line_start: bool, boundary: int = -1
) -> int:
    """Offset of the first request line at or after pos, or -1.

    It must begin a line (or at ``boundary``, where a read began).
    """
    i = scan
    while True:
        idx = data.find(b" HTTP/1.", i)
        if idx < 0:
            return -1
        nl = data.rfind(b"\n", pos, idx)
        ls = nl + 1 if nl >= 0 else (pos if line_start else -1)
        if ls >= 0 and _SYNC_REQUEST.match(data, ls):
            return ls
        if ls < boundary <= idx and _SYNC_REQUEST.match(data, boundary):
            return boundary
        i = idx + 1


def find_status_start(data: bytes, pos: int, line_start: bool, boundary: int = -1) -> int:
    """Offset of the first status line at or after pos, or -1 (same rule as requests)."""
    i = pos
    while True:
        idx = data.find(b"HTTP/1.", i)
        if idx < 0:
            return -1
        at_start = data[idx - 1] == 10 or idx == boundary if idx > pos else line_start
        if at_start and _SYNC_STATUS.match(data, idx):
            return idx
        i = idx + 1


def _ends_chunked_body(data: bytes, pos: int) -> bool:
    """Whether data[pos:] ends with a last chunk and empty trailer ("0" CRLF CRLF)."""
    end = len(data)
    if end - pos == 5:
        return data[pos:] == b"0\r\n\r\n"
    return end - pos > 5 and data[end - 6 :] == b"\n0\r\n\r\n"
