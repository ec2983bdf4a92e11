"""HTTP/2 and gRPC: sans-IO framing, HPACK that admits what it missed, stream records."""

from .connection import Http2Connection, Http2Stats, looks_like_http2
from .stream import Http2Record

__all__ = ["Http2Connection", "Http2Record", "Http2Stats", "looks_like_http2"]
