"""One HTTP/1.x connection: two message parsers and the request/response stitcher."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from ...model import Direction, Role
from .head import (
    HEAD_CACHE_BYTES,
    NONE,
    SKIP,
    STOP,
    SYNC_METHODS,
    SYNC_METHODS_B,
    Message,
    parse_head,
    request_framing,
    response_framing,
)
from .parser import MessageParser, find_request_start, find_status_start


@dataclass(slots=True)
class Http1Record:
    """One request and its response, as seen on the wire (no body content)."""

    method: str
    target: str
    request_version: str
    request_headers: dict[str, str]
    status: int | None
    response_version: str | None
    response_headers: dict[str, str]
    request_body_size: int
    response_body_size: int
    start_ns: int
    end_ns: int
    partial: str | None = None


@dataclass(slots=True)
class Http1Stats:
    records: int = 0
    partial_records: int = 0  # records whose framing was not exact (see Http1Record.partial)
    gaps: int = 0
    gap_bytes: int = 0
    resyncs: int = 0  # message starts found again after lost framing
    skipped_bytes: int = 0  # bytes dropped while hunting for a message start
    parse_errors: int = 0
    oversized_heads: int = 0
    unmatched_requests: int = 0  # no response seen (closed, or its response was lost)
    unmatched_responses: int = 0  # no request seen (joined mid-stream, lost request)
    dropped_requests: int = 0  # pending queue full: oldest request forgotten
    interim_responses: int = 0  # 1xx before a final response
    upgrades: int = 0  # 101 or CONNECT tunnel: HTTP/1 parsing stopped
    internal_errors: int = 0  # a bug caught at the API boundary (also in parse_errors)


def looks_like_http1(data: bytes) -> bool:
    """Whether a stream's first bytes start an HTTP/1.x request or response."""
    if data[:7] == b"HTTP/1.":
        return True
    sp = data.find(b" ", 0, 12)
    return sp > 0 and bytes(data[:sp]) in SYNC_METHODS_B and len(data) > sp + 1


def _is_request_start(data: bytes) -> bool:
    return not data.startswith(b"HTTP/1.") and looks_like_http1(data)


class Http1Connection:
    """Feeds the two directions of a connection and returns finished records.

    For a SERVER, requests are INGRESS and responses EGRESS; for a CLIENT the reverse.
    An UNKNOWN role is decided by the first recognisable message start.
    """

    __slots__ = (
        "role", "stats", "_max_pending", "_max_head", "_pending", "_req", "_resp", "_dirs",
        "_out", "_closed", "_suspects",
    )

    def __init__(
        self, role: Role = Role.UNKNOWN, *, max_head_bytes: int = 65536, max_pending: int = 64
    ) -> None:
        self.role = role
        self.stats = Http1Stats()
        self._max_pending = max(1, max_pending)
        self._max_head = max_head_bytes
        self._pending: deque[Message] = deque()  # requests awaiting a final response, FIFO
        # The message parsers are made on first need: a connection whose every
        # exchange the kernel framed (fast_exchange) never needs them.
        self._req: MessageParser | None = None
        self._resp: MessageParser | None = None
        self._dirs: tuple[MessageParser, MessageParser] | None = None  # by Direction
        self._out: list[Http1Record] = []
        self._closed = False
        # Requests at the queue head whose responses may have vanished in a gap.
        self._suspects = 0

    # ------------------------------------------------------------------ API

    def feed(self, direction: Direction, data: bytes, ts_ns: int) -> list[Http1Record]:
        out: list[Http1Record] = []
        if self._closed or not data:
            return out
        self._out = out
        try:
            if type(data) is not bytes:
                data = bytes(data)
            dirs = self._dirs
            if dirs is None:
                dirs = (self._guess_role(direction, data) if self.role == _UNKNOWN
                        else self._directions())
                if dirs is None:
                    self.stats.skipped_bytes += len(data)
                    return out
            parser = dirs[direction]
            try:
                parser.feed(data, ts_ns)
            except Exception:
                self._internal_error()
                parser.reset()
        except Exception:
            self._internal_error()
        return out

    # -------------------------------------------- exchanges framed in the kernel

    def fast_request(self, data: bytes, ts_ns: int) -> list[Http1Record]:
        """A server's request read that is exactly one GET/HEAD head (the kernel's
        EVF_H1_REQ): queued for its response without scanning it again."""
        if self._closed:
            return []
        if self.role == _UNKNOWN:
            self.role = _SERVER
        msg = None
        head = _one_head(data) if self.role == _SERVER else None
        if head is not None:
            msg = parse_head(head, True)
        if msg is not None and msg.method in SYNC_METHODS:
            msg.start_ns = msg.end_ns = ts_ns
            self._out = out = []
            req = self._directions()[0]  # a server's: INGRESS carries requests
            try:
                if req.take_head(msg):
                    return out
            except Exception:
                self._internal_error()
                req.reset()
                return out
        return self.feed(Direction.INGRESS, data, ts_ns)  # not what the kernel said: frame it

    def fast_response(self, status: int, minor: int, body: int, end_ns: int,
                      partial: int) -> list[Http1Record]:
        """A response the kernel framed (EVT_H1_RESP): its status and body size."""
        if self._closed or self.role != _SERVER:
            return []
        pending = self._pending
        if not pending:
            self.stats.unmatched_responses += 1
            return []
        req = pending.popleft()
        if self._suspects:
            self._suspects -= 1
        return [self._framed(req.method, req.target, req.version, req.headers, req.body_size,
                             req.start_ns, req.partial, status, minor, body, end_ns, partial)]

    def after_framed(self, n: int) -> None:
        """`n` exchanges the kernel framed went by before this parser was made
        (conn.tracker.framed_exchange): messages were seen, so bytes that follow
        are no join mid-stream."""
        self.stats.records += n

    def fast_exchange(self, data: bytes, ts_ns: int, status: int, minor: int, body: int,
                      end_ns: int, partial: int) -> list[Http1Record]:
        """A whole exchange the kernel framed: a GET/HEAD head it held back and
        its response's summary (EVT_H1_RESP with the request) in one record."""
        req = self._req
        if (not self._pending and not self._closed and self.role == _SERVER
                and (req is None or (req.idle() and self._resp.idle()))):
            head = _exchange_head(data)
            if head:
                if req is not None:
                    req.take_seen()  # (without parsers stats.records says so: _directions)
                self._suspects = 0
                method, target, version, headers = head
                return [self._framed(method, target, version, headers, 0, ts_ns, None,
                                     status, minor, body, end_ns, partial)]
        # Anything the shortcut does not vouch for goes the long way.
        return self.fast_request(data, ts_ns) + self.fast_response(status, minor, body, end_ns,
                                                                   partial)

    def _framed(self, method: str, target: str, version: str, headers: dict[str, str],
                body_size: int, start_ns: int, req_partial: str | None, status: int,
                minor: int, body: int, end_ns: int, partial: int) -> Http1Record:
        """The record of a request (its fields) and a response the kernel framed."""
        rec = _framed_record(method, target, version, headers, body_size, start_ns,
                             req_partial, status, minor, body, end_ns, partial)
        self.stats.records += 1
        if rec.partial is not None:
            self.stats.partial_records += 1
        return rec

    def gap(self, direction: Direction, nbytes: int, ts_ns: int) -> list[Http1Record]:
        out: list[Http1Record] = []
        if self._closed:
            return out
        self._out = out
        try:
            if nbytes <= 0:
                return out
            self.stats.gaps += 1
            self.stats.gap_bytes += nbytes
            dirs = self._dirs
            if dirs is None and self.role != _UNKNOWN:
                dirs = self._directions()
            if dirs is not None:
                parser = dirs[direction]
                try:
                    parser.gap(nbytes, ts_ns)
                except Exception:
                    self._internal_error()
                    parser.reset()
        except Exception:
            self._internal_error()
        return out

    def close(self, ts_ns: int) -> list[Http1Record]:
        out: list[Http1Record] = []
        if self._closed:
            return out
        self._closed = True
        self._out = out
        if self._req is None:  # nothing was ever mid-message
            self.stats.unmatched_requests += len(self._pending)
            return out
        for parser in (self._resp, self._req):
            try:
                parser.close(ts_ns)
            except Exception:
                self._internal_error()
                parser.stop()
        self.stats.unmatched_requests += len(self._pending)
        self._pending.clear()
        return out

    # ------------------------------------------------------------ internals

    def _internal_error(self) -> None:
        # Never let a parser bug escape into the agent's poll loop.
        self.stats.parse_errors += 1
        self.stats.internal_errors += 1

    def _directions(self) -> tuple[MessageParser, MessageParser]:
        """The parsers by Direction for the role (known by now), made if need be."""
        dirs = self._dirs
        if dirs is None:
            req = self._req
            if req is None:
                req = self._req = MessageParser(
                    True, self.stats, self._on_request_head, _ignore, None, self._max_head
                )
                self._resp = MessageParser(
                    False, self.stats, self._on_response_head, self._on_response_end,
                    self._on_response_lost, self._max_head,
                )
                if self.stats.records:  # exchanges the kernel framed went by
                    req.take_seen()
            # INGRESS=0 carries a server's requests, a client's responses.
            dirs = self._dirs = (req, self._resp) if self.role == _SERVER else (self._resp, req)
        return dirs

    def _guess_role(
        self, direction: Direction, data: bytes
    ) -> tuple[MessageParser, MessageParser] | None:
        start = data.lstrip(b"\r\n")
        if looks_like_http1(start):
            is_request = _is_request_start(start)
        else:
            # Joined mid-stream: the earliest message start further in decides.
            r = find_request_start(data, 0, 0, True)
            s = find_status_start(data, 0, True)
            if r < 0 and s < 0:
                return None
            is_request = s < 0 or 0 <= r < s
        reads = direction == Direction.INGRESS
        self.role = Role.SERVER if reads == is_request else Role.CLIENT
        return self._directions()

    def _on_request_head(self, req: Message) -> int:
        # Non-pipelined traffic: a new request means a response that lost its
        # framing is over, and requests whose responses fell into a gap never get one.
        self._resp.abandon()
        pending = self._pending
        if self._suspects:
            for _ in range(min(self._suspects, len(pending))):
                pending.popleft()
                self.stats.unmatched_requests += 1
            self._suspects = 0
        if len(pending) >= self._max_pending:
            pending.popleft()
            self.stats.dropped_requests += 1
        pending.append(req)
        return request_framing(req)

    def _on_response_head(self, resp: Message) -> int:
        status = resp.status
        pending = self._pending
        if status < 200 and status != 101:
            # Interim (100 Continue, 103 Early Hints): the final response follows.
            self.stats.interim_responses += 1
            return response_framing(resp, None)
        if pending:
            req = resp.peer = pending.popleft()
            if self._suspects:
                self._suspects -= 1
        else:
            # Joined mid-stream or the request was lost: count it, emit nothing. Its
            # body length depends on the unknown request (HEAD?), so resync instead.
            self.stats.unmatched_responses += 1
            return STOP if status == 101 else SKIP
        return response_framing(resp, req)

    def _on_response_end(self, resp: Message) -> None:
        status = resp.status
        if status < 200 and status != 101:
            return
        req = resp.peer
        resp.peer = None
        if status == 101 or (req is not None and req.method == "CONNECT" and status < 300):
            # The connection now speaks another protocol (or is a tunnel).
            self.stats.upgrades += 1
            self._req.stop()
            self._resp.stop()
        if req is None:
            return
        partial = resp.partial or req.partial
        self._out.append(
            Http1Record(
                req.method, req.target, req.version, req.headers,
                status, resp.version, resp.headers,
                req.body_size, resp.body_size,
                req.start_ns, max(resp.end_ns, req.start_ns), partial,
            )
        )
        self.stats.records += 1
        if partial is not None:
            self.stats.partial_records += 1

    def _on_response_lost(self) -> None:
        self._suspects = len(self._pending)


_NO_FIELDS: dict[str, str] = {}  # shared, read-only
# Module constants: Enum class attribute lookups are slow.
_SERVER, _UNKNOWN = Role.SERVER, Role.UNKNOWN

# Exchange requests by their exact bytes (head and blank line): (method, target,
# version, headers) of a bodyless GET/HEAD the parser would end exactly there, or
# () if it is not one. Repeated heads (a client polling one URL) then cost a dict
# lookup; heads that differ every time (trace context, cookies) pay the parse
# anyway. Bounded like parse_head's cache; the headers dict is shared, read-only.
_FAST_HEADS: dict[bytes, tuple] = {}
_FAST_HEADS_MAX = 512


def framed_exchange(data: bytes, ts_ns: int, status: int, minor: int, body: int,
                    end_ns: int) -> Http1Record | None:
    """`Http1Connection.fast_exchange` for a connection that has no parser yet
    (its every exchange so far framed by the kernel): the record of a whole,
    complete exchange whose request is a plain GET/HEAD head; None for anything
    that needs a parser. A connection per request then never builds one."""
    head = _exchange_head(data)
    if not head:
        return None
    method, target, version, headers = head
    return _framed_record(method, target, version, headers, 0, ts_ns, None, status, minor,
                          body, end_ns, 0)


def _framed_record(method: str, target: str, version: str, headers: dict[str, str],
                   body_size: int, start_ns: int, req_partial: str | None, status: int,
                   minor: int, body: int, end_ns: int, partial: int) -> Http1Record:
    """A request (its fields) and a response the kernel framed (no response head:
    of its fields only whether it had a Content-Length)."""
    why = None if not partial else ("response-truncated" if partial == 1
                                    else "response-body-lost")
    return Http1Record(
        method, target, version, headers, status,
        _VERSIONS[minor] if minor < 10 else f"1.{minor}",
        _NO_FIELDS if status == 204 or status == 304 else {"content-length": str(body)},
        body_size, body, start_ns, end_ns if end_ns > start_ns else start_ns,
        why or req_partial,
    )


def _one_head(data: bytes) -> bytes | None:
    """The bytes the parser would pass to parse_head if `data` is exactly one
    head, ending at its first empty line; else None."""
    end = len(data) - 3
    if data.find(b"\n\r\n") == end and data.find(b"\n\n") < 0:
        return data[:end]
    return None


def _exchange_head(data: bytes) -> tuple:
    """(method, target, version, headers) of a held-back request that is one
    plain bodyless head, or (): from the cache, else parsed (_fast_head)."""
    head = _FAST_HEADS.get(data)
    return _fast_head(data) if head is None else head


def _fast_head(data: bytes) -> tuple:
    """Parse (and remember) a held-back request for fast_exchange."""
    head: tuple = ()
    one = _one_head(data)
    if one is not None:
        req = parse_head(one, True)
        if (req is not None and req.method in SYNC_METHODS and request_framing(req) == NONE
                and req.partial is None):
            head = (req.method, req.target, req.version, req.headers)
    if len(data) <= HEAD_CACHE_BYTES:
        if len(_FAST_HEADS) >= _FAST_HEADS_MAX:
            _FAST_HEADS.clear()
        _FAST_HEADS[data] = head
    return head
_VERSIONS = tuple(f"1.{minor}" for minor in range(10))


def _ignore(msg: Message) -> None:
    """Request ends need no action: requests are queued when their head is known."""
