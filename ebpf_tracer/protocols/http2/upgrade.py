"""The HTTP/1.1 exchange that may switch a connection to h2c (RFC 7540 section 3.2).

The client sends an HTTP/1.1 request with ``Upgrade: h2c``; a server that accepts answers
``101 Switching Protocols`` and continues in HTTP/2, answering that request on stream 1,
while the client sends the connection preface. A server that declines answers in HTTP/1.1
and the connection stays HTTP/1. The prelude decides which, keeping a bounded log of what
it saw so an HTTP/1 parser can replay it when the upgrade is declined.
"""

from __future__ import annotations

import base64
import re

from ...model import Direction
from ..http1.head import Message, parse_head
from .frames import SETTING

UNDECIDED, UPGRADED, DECLINED = 0, 1, 2
MAX_PRELUDE_BYTES = 65536


class H2cPrelude:
    __slots__ = (
        "req_dir", "log", "logged", "_req_buf", "req_ts", "request", "body_left",
        "req_tail", "req_tail_ts", "_resp_buf", "resp_tail", "status",
    )

    def __init__(self, req_dir: Direction) -> None:
        self.req_dir = req_dir
        self.log: list[tuple[Direction, bytes | int, int]] = []  # feeds and gaps, in order
        self.logged = 0
        self._req_buf = bytearray()
        self.req_ts = 0  # ts of the first request byte
        self.request: Message | None = None
        self.body_left = 0  # request body bytes still to come after the head
        self.req_tail = b""  # request-side bytes after the HTTP/1 request (the preface)
        self.req_tail_ts = 0
        self._resp_buf = bytearray()
        self.resp_tail = b""  # response-side bytes after the 101 head (HTTP/2 frames)
        self.status = UNDECIDED

    def feed(self, direction: Direction, data: bytes, ts: int) -> int:
        """Take one chunk; returns UNDECIDED, UPGRADED or DECLINED."""
        self.log.append((direction, data, ts))
        self.logged += len(data)
        if self.logged > MAX_PRELUDE_BYTES:
            return self._decide(DECLINED)
        if direction == self.req_dir:
            self._request_bytes(data, ts)
        else:
            self._resp_buf += data
        if self.status == UNDECIDED and self.request is not None:
            self._response_head()
        return self.status

    def gap(self, direction: Direction, nbytes: int, ts: int) -> int:
        self.log.append((direction, nbytes, ts))
        return self._decide(DECLINED)  # lost framing: leave it to the HTTP/1 parser

    def settings(self) -> list[tuple[int, int]]:
        """The client's SETTINGS from its HTTP2-Settings header (base64url, unpadded)."""
        assert self.request is not None
        value = self.request.headers.get("http2-settings", "").strip()
        try:
            raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        except ValueError:
            return []
        return [SETTING.unpack_from(raw, i) for i in range(0, len(raw) - 5, 6)]

    # ------------------------------------------------------------ internals

    def _decide(self, status: int) -> int:
        self.status = status
        if status == UPGRADED:
            self.log = []
        return status

    def _request_bytes(self, data: bytes, ts: int) -> None:
        if self.request is None:
            if not self._req_buf:
                self.req_ts = ts
            self._req_buf += data
            buf = self._req_buf
            end, body = _head_end(buf)
            if end < 0:
                return
            req = parse_head(bytes(buf[:end]), True)
            if req is None or not _asks_h2c(req) or req.chunked or req.te_other or req.bad_length:
                self._decide(DECLINED)
                return
            self.request = req
            self.body_left = req.content_length or 0
            data = bytes(buf[body:])
            self._req_buf = bytearray()
        if self.body_left:
            take = min(self.body_left, len(data))
            self.request.body_size += take
            self.body_left -= take
            data = data[take:]
        if data:
            if not self.req_tail:
                self.req_tail_ts = ts
            self.req_tail += data

    def _response_head(self) -> None:
        while True:
            end, body = _head_end(self._resp_buf)
            if end < 0:
                return
            resp = parse_head(bytes(self._resp_buf[:end]), False)
            if resp is None:
                self._decide(DECLINED)
                return
            if resp.status == 101:
                self.resp_tail = bytes(self._resp_buf[body:])
                self._resp_buf = bytearray()
                self._decide(UPGRADED)
                return
            if resp.status >= 200:
                self._decide(DECLINED)
                return
            del self._resp_buf[:body]  # 100 Continue and friends: the answer follows


def _head_end(buf: bytearray) -> tuple[int, int]:
    """(end of the head, start of the body) or (-1, -1)."""
    e = buf.find(b"\r\n\r\n")
    e2 = buf.find(b"\n\n", 0, e + 1 if e >= 0 else len(buf))
    if e2 >= 0:
        return e2, e2 + 2
    if e >= 0:
        return e, e + 4
    return -1, -1


def _asks_h2c(req: Message) -> bool:
    upgrade = req.headers.get("upgrade", "")
    return any(t.strip().lower() == "h2c" for t in upgrade.split(","))


_H2C_TOKEN = re.compile(rb"h2c", re.IGNORECASE)


def looks_like_h2c_upgrade(data: bytes) -> bool:
    """Whether a request head (first bytes of a connection) asks for an h2c upgrade."""
    # Every new HTTP/1 connection comes through here: skip the head parse unless
    # the token can be there at all (header values are case-insensitive).
    if _H2C_TOKEN.search(data, 0, MAX_PRELUDE_BYTES) is None:
        return False
    end, _ = _head_end(bytearray(data[:MAX_PRELUDE_BYTES]))
    head = data[:end] if end >= 0 else data[:MAX_PRELUDE_BYTES]
    req = parse_head(bytes(head), True)
    return req is not None and _asks_h2c(req)
