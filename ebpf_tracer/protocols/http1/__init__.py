"""HTTP/1.x: sans-IO message framing and request/response stitching."""

from .connection import Http1Connection, Http1Record, Http1Stats, looks_like_http1

__all__ = ["Http1Connection", "Http1Record", "Http1Stats", "looks_like_http1"]
