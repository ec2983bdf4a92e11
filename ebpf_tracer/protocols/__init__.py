"""Protocol parsers, one folder each, plus this registry for first-bytes detection."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .http1 import Http1Connection, looks_like_http1
from .http2 import Http2Connection, looks_like_http2


@dataclass(frozen=True, slots=True)
class ProtocolInfo:
    name: str
    detect: Callable[[bytes], bool]  # does a stream starting with these bytes speak it?
    connection: type  # sans-IO connection class: feed(), gap(), close()


# HTTP/2 first: it claims the preface, frames, and HTTP/1 requests asking for h2c.
PROTOCOLS: tuple[ProtocolInfo, ...] = (
    ProtocolInfo("http2", looks_like_http2, Http2Connection),
    ProtocolInfo("http1", looks_like_http1, Http1Connection),
)


def detect(data: bytes) -> ProtocolInfo | None:
    """The first registered protocol recognising a stream's first bytes."""
    for proto in PROTOCOLS:
        if proto.detect(data):
            return proto
    return None
