"""One HTTP/2 stream while it is open, and the record it becomes."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ...model import Role
from .grpc import MessageCounter, is_grpc_content_type, parse_status


@dataclass(slots=True)
class Http2Record:
    """One stream (request and response) as seen on the wire; no body content.

    A field that is None was absent, unless its name is in ``unknown_fields``: then it was
    sent but could not be decoded (it named a dynamic-table entry added before the tracer
    joined, or its header block was lost in a gap). Nothing is ever guessed.
    """

    stream_id: int
    method: str | None
    scheme: str | None
    authority: str | None
    path: str | None  # :path as sent (path and query)
    status: int | None
    request_headers: dict[str, str]  # only content-type, user-agent
    response_headers: dict[str, str]  # only content-type, grpc-status, grpc-message
    grpc_status: int | None  # from trailers, or from the headers of a trailers-only response
    grpc_message: str | None
    request_body_size: int  # DATA payload bytes (padding excluded)
    response_body_size: int
    request_messages: int | None  # gRPC length-prefixed messages, if counted exactly
    response_messages: int | None
    start_ns: int  # first byte of the request's HEADERS frame
    end_ns: int  # last byte of the response's END_STREAM frame (or of the RST_STREAM)
    response_complete: bool  # the response's END_STREAM was seen
    reset_code: int | None = None  # RST_STREAM error code; -1: reset, code not captured
    reset_by: Role | None = None  # who sent the RST_STREAM
    goaway_code: int | None = None  # the stream was ended (refused, cut) by a GOAWAY
    unknown_fields: frozenset[str] = field(default_factory=frozenset)
    partial: str | None = None  # why the record may be incomplete; None when exact

    @property
    def is_grpc(self) -> bool:
        return (
            is_grpc_content_type(self.request_headers.get("content-type"))
            or is_grpc_content_type(self.response_headers.get("content-type"))
            or self.grpc_status is not None
        )


class Half:
    """What one direction of a stream carried."""

    __slots__ = ("fields", "unknown", "ended", "size", "counter", "last_ts", "blocks")

    def __init__(self) -> None:
        self.fields: dict[bytes, bytes] = {}
        self.unknown = False  # a header block had fields we could not decode
        self.ended = False
        self.size = 0
        self.counter: MessageCounter | None = None
        self.last_ts = 0
        self.blocks = 0


class Stream:
    __slots__ = (
        "sid", "start_ns", "req", "resp", "status", "final_seen", "reset_code", "reset_by",
        "goaway_code", "end_ns", "partial", "lost_fields",
    )

    def __init__(self, sid: int, start_ns: int) -> None:
        self.sid = sid
        self.start_ns = start_ns
        self.req = Half()
        self.resp = Half()
        self.status: int | None = None
        self.final_seen = False  # a final (non-1xx) response head, or one we could not read
        self.reset_code: int | None = None
        self.reset_by: Role | None = None
        self.goaway_code: int | None = None
        self.end_ns = 0
        self.partial: str | None = None
        self.lost_fields: set[str] = set()

    def mark_partial(self, reason: str) -> None:
        if self.partial is None:
            self.partial = reason


_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,32}")
_PATH = re.compile(rb"(?:/|\*$)[\x21-\x7e]*")  # no spaces, no controls
_AUTHORITY = re.compile(rb"[\x21-\x7e]{1,255}")
_SCHEME = re.compile(rb"[A-Za-z][A-Za-z0-9+.-]{0,15}")
_REQUEST = ((b":method", _TOKEN), (b":scheme", _SCHEME), (b":authority", _AUTHORITY),
            (b":path", _PATH))


def to_record(s: Stream, end_ns: int) -> Http2Record:
    """The record of a finished stream. Values that are not well formed are not kept."""
    req, resp = s.req, s.resp
    unknown = set(s.lost_fields)
    values: dict[bytes, str | None] = {}
    for name, pattern in _REQUEST:
        v = req.fields.get(name)
        if v is not None and pattern.fullmatch(v) is None:
            v = None
            unknown.add(name.decode())  # sent, but not a value we can trust
        elif v is None and req.unknown:
            unknown.add(name.decode())
        values[name] = v.decode("latin-1") if v is not None else None
    request_headers = _text(req.fields, (b"content-type", b"user-agent"))
    response_headers = _text(resp.fields, (b"content-type", b"grpc-status", b"grpc-message"))
    grpc_status = parse_status(response_headers.get("grpc-status"))
    grpc = (is_grpc_content_type(request_headers.get("content-type"))
            or is_grpc_content_type(response_headers.get("content-type"))
            or grpc_status is not None)
    ct_unknown = ("content-type" not in request_headers and req.unknown) or (
        "content-type" not in response_headers and resp.unknown)
    # gRPC calls are POSTs: for other methods content-type cannot change what a span is.
    maybe_grpc = grpc or (ct_unknown and values[b":method"] in (None, "POST"))
    if not grpc and maybe_grpc:
        unknown.add("content-type")  # gRPC or not cannot be told
    if grpc_status is None and resp.unknown and maybe_grpc:
        unknown.add("grpc-status")
    return Http2Record(
        s.sid, values[b":method"], values[b":scheme"], values[b":authority"], values[b":path"],
        s.status, request_headers, response_headers, grpc_status,
        response_headers.get("grpc-message"), req.size, resp.size,
        req.counter.count if req.counter is not None else None,
        resp.counter.count if resp.counter is not None else None,
        s.start_ns, max(end_ns, s.start_ns), resp.ended, s.reset_code, s.reset_by,
        s.goaway_code, frozenset(unknown), s.partial,
    )


def _text(fields: dict[bytes, bytes], names: tuple[bytes, ...]) -> dict[str, str]:
    out = {}
    for name in names:
        v = fields.get(name)
        if v is not None:
            out[name.decode()] = v.decode("latin-1")
    return out
