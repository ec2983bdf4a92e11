"""One HTTP/1.x message: its head (start line and header fields) and body framing."""

from __future__ import annotations

import re

# Methods with semantic-convention names; anything else is reported as _OTHER.
KNOWN_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)
# Methods trusted when hunting for a message start in unframed bytes (after a gap,
# or joining mid-stream): an unknown token there is more likely body bytes.
SYNC_METHODS = KNOWN_METHODS | {
    "PROPFIND", "PROPPATCH", "MKCOL", "COPY", "MOVE", "LOCK", "UNLOCK", "REPORT", "SEARCH",
    "PURGE", "QUERY",
}
SYNC_METHODS_B = frozenset(m.encode() for m in SYNC_METHODS)
# Every proper prefix of a sync method, to keep a request line split across reads.
SYNC_METHOD_PREFIXES_B = frozenset(m[:i] for m in SYNC_METHODS_B for i in range(1, len(m) + 1))

MAX_HEADERS = 64  # distinct names kept per message (framing headers always kept)
MAX_VALUE = 4096  # characters kept per header value (repeats stop growing past it)
_ALWAYS_KEEP = frozenset({"content-length", "transfer-encoding", "connection", "host"})

_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_REQUEST_LINE = re.compile(rf"({_TOKEN}) +(\S+) +HTTP/1\.(\d)\s*", re.ASCII)
_STATUS_LINE = re.compile(r"HTTP/1\.(\d) +(\d{3})(?:[ \t].*)?\s*", re.ASCII)
_TOKEN_PREFIX = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,32}(?: |$)")
_DIGITS = re.compile(r"\d{1,18}", re.ASCII)

# Body framing (RFC 9112 section 6.3), decided once the head is known.
NONE = 0  # no body
LENGTH = 1  # Content-Length bytes
CHUNKED = 2  # chunked transfer coding
CLOSE = 3  # until the connection closes
STOP = 4  # protocol switched (101, CONNECT tunnel): stop parsing HTTP/1
INVALID = 5  # head known, body length unknowable (bad Content-Length)
SKIP = 6  # unknowable without the request (was it HEAD?): hunt for the next message


class Message:
    """A request or response seen on the wire; body content is never kept."""

    __slots__ = (
        "is_request", "method", "target", "version", "status", "headers",
        "content_length", "chunked", "te_other", "bad_length",
        "start_ns", "end_ns", "body_size", "partial", "peer",
    )

    def __init__(self, is_request: bool) -> None:
        self.is_request = is_request
        self.method = ""
        self.target = ""
        self.version = ""
        self.status = 0
        self.headers: dict[str, str] = {}
        self.content_length: int | None = None
        self.chunked = False
        self.te_other = False  # Transfer-Encoding present, chunked not last
        self.bad_length = False
        self.start_ns = 0
        self.end_ns = 0
        self.body_size = 0
        self.partial: str | None = None
        self.peer: Message | None = None  # for a response: the request it answers


def valid_start_line(line: bytes, is_request: bool) -> bool:
    """Whether one start line (without its LF) can begin a message."""
    text = line.decode("latin-1")
    pat = _REQUEST_LINE if is_request else _STATUS_LINE
    return pat.fullmatch(text) is not None


def plausible_start_prefix(head: bytes, is_request: bool) -> bool:
    """Whether ``head`` (no LF yet) can still grow into a valid start line."""
    if is_request:
        return _TOKEN_PREFIX.match(head[:33]) is not None
    k = min(len(head), 7)
    return head[:k] == b"HTTP/1."[:k]


# Recently parsed heads, by their exact bytes, per kind. Traffic repeats heads
# (the same client asking the same path; a server's responses within one Date
# second): a hit costs a dict lookup instead of a parse. Bounded (cleared when
# full); only short heads; holds nothing a live connection does not.
_HEAD_CACHE: tuple[dict[bytes, tuple], dict[bytes, tuple]] = ({}, {})
HEAD_CACHE_MAX = 512
HEAD_CACHE_BYTES = 1024


def parse_head(head: bytes, is_request: bool) -> Message | None:
    """Parse a head (start line plus fields, without the blank line); None if invalid.

    The returned message's ``headers`` dict may be shared with other messages
    of the same bytes: treat it as read-only."""
    if type(head) is not bytes:
        head = bytes(head)  # a buffered head arrives as a bytearray slice
    cache = _HEAD_CACHE[is_request]
    hit = cache.get(head)
    msg = Message(is_request)
    if hit is not None:
        (msg.method, msg.target, msg.version, msg.status, msg.headers, msg.content_length,
         msg.chunked, msg.te_other, msg.bad_length) = hit
        return msg
    text = head.decode("latin-1")
    nl = text.find("\n")
    first = text if nl < 0 else text[:nl]
    if is_request:
        m = _REQUEST_LINE.fullmatch(first)
        if m is None:
            return None
        msg.method, msg.target, minor = m.group(1, 2, 3)
    else:
        m = _STATUS_LINE.fullmatch(first)
        if m is None:
            return None
        minor = m.group(1)
        msg.status = int(m.group(2))
    msg.version = "1." + minor
    if nl >= 0:
        msg.headers = _fields(text, nl + 1)
        _framing(msg)
    if len(head) <= HEAD_CACHE_BYTES:
        if len(cache) >= HEAD_CACHE_MAX:
            cache.clear()
        cache[head] = (msg.method, msg.target, msg.version, msg.status, msg.headers,
                              msg.content_length, msg.chunked, msg.te_other, msg.bad_length)
    return msg


def _fields(text: str, start: int) -> dict[str, str]:
    # Fast path (hot): no folding, no repeats, no odd lines, within the caps.
    if "\n " not in text and "\n\t" not in text:
        headers: dict[str, str] = {}
        count = 0
        for line in text[start:].split("\n"):
            name, sep, value = line.partition(":")
            if not sep or not name or name[-1] in " \t" or name[0] == "\r":
                break  # not a plain field line: let the slow path decide
            count += 1
            headers[name.lower()] = value.strip()
        else:
            if len(headers) == count and count <= MAX_HEADERS and (
                len(text) <= MAX_VALUE or max(map(len, headers.values()), default=0) <= MAX_VALUE
            ):
                return headers
    return _fields_slow(text[start:].split("\n"))


def _fields_slow(lines: list[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    prev: str | None = None
    for line in lines:
        if not line:
            continue
        if line[0] in " \t":
            # obs-fold: a continuation of the previous field's value
            if prev is not None and len(headers[prev]) < MAX_VALUE:
                folded = line.strip()
                if folded:
                    headers[prev] = headers[prev] + " " + folded
            continue
        name, sep, value = line.partition(":")
        if not sep:
            continue  # not a field; tolerated
        name = name.strip().lower()
        if not name:
            continue
        value = value.strip()
        old = headers.get(name)
        if old is None:
            if len(headers) >= MAX_HEADERS and name not in _ALWAYS_KEEP:
                prev = None
                continue
            headers[name] = value[:MAX_VALUE]
        elif len(old) < MAX_VALUE:
            headers[name] = old + ", " + value
        prev = name
    return headers


def _framing(msg: Message) -> None:
    headers = msg.headers
    te = headers.get("transfer-encoding")
    if te is not None:
        if te.rsplit(",", 1)[-1].strip().lower() == "chunked":
            msg.chunked = True
        else:
            msg.te_other = True
        return  # Transfer-Encoding overrides Content-Length
    cl = headers.get("content-length")
    if cl is None:
        return
    # "Content-Length: 5, 5" (a repeated header) is fine; differing values are not.
    values = {v.strip() for v in cl.split(",")}
    if len(values) == 1:
        v = values.pop()
        if _DIGITS.fullmatch(v):
            msg.content_length = int(v)
            return
    msg.bad_length = True


def request_framing(msg: Message) -> int:
    if msg.chunked:
        return CHUNKED
    if msg.te_other:
        return CLOSE  # unknowable (RFC 9112 6.3): the server will close
    if msg.bad_length:
        return INVALID
    return LENGTH if msg.content_length else NONE


def response_framing(msg: Message, request: Message | None) -> int:
    status = msg.status
    if status < 200:
        return STOP if status == 101 else NONE
    method = request.method if request is not None else ""
    if method == "CONNECT" and status < 300:
        return STOP
    if method == "HEAD" or status == 204 or status == 304:
        return NONE
    if msg.chunked:
        return CHUNKED
    if msg.te_other:
        return CLOSE
    if msg.bad_length:
        return INVALID
    if msg.content_length is None:
        return CLOSE
    return LENGTH if msg.content_length else NONE
