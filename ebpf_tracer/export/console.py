"""Human-readable exporter: one line per span, for watching traffic locally."""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Sequence
from typing import TextIO

from ..model import Span, SpanKind, StatusCode

log = logging.getLogger(__name__)


class ConsoleExporter:
    """Writes e.g. ``12:01:02.345 nginx SERVER GET /index.html?x=1 -> 200 1.23ms
    peer=127.0.0.1:53422 [abcd1234]`` per span, flushing after each batch.

    ``stream`` defaults to whatever ``sys.stdout`` is at export time.
    ``owns_stream`` closes it on shutdown (a file opened for us).
    """

    def __init__(self, stream: TextIO | None = None, *, owns_stream: bool = False) -> None:
        self._stream = stream
        self._owns_stream = owns_stream
        self._lock = threading.Lock()

    def export(self, spans: Sequence[Span]) -> bool:
        if not spans:
            return True
        text = "".join(format_span(span) + "\n" for span in spans)
        stream = self._stream or sys.stdout
        try:
            with self._lock:
                stream.write(text)
                stream.flush()
        except (OSError, ValueError) as exc:  # closed pipe (| head), closed file
            log.warning("console export of %d spans failed: %s", len(spans), exc)
            return False
        return True

    def shutdown(self) -> None:
        if self._owns_stream and self._stream is not None:
            self._stream.close()


def format_span(span: Span) -> str:
    attrs = span.attributes
    start_s, start_ns = divmod(span.start_time_ns, 1_000_000_000)
    clock = time.strftime("%H:%M:%S", time.localtime(start_s)) + f".{start_ns // 1_000_000:03d}"
    service = span.resource.get("service.name") or "-"
    kind = span.kind.name if isinstance(span.kind, SpanKind) else str(span.kind)
    parts = [clock, _safe(service), kind]

    method = attrs.get("http.request.method")
    if method:
        path = attrs.get("url.path")
        if path:
            query = attrs.get("url.query")
            target = f"{path}?{query}" if query else str(path)
        else:
            target = str(attrs.get("url.full") or "")
        parts.append(_safe(f"{method} {target}".rstrip()))
    else:
        parts.append(_safe(span.name))

    http_status = attrs.get("http.response.status_code")
    grpc_status = attrs.get("rpc.grpc.status_code")
    if http_status is not None:
        parts.append(f"-> {http_status}")
    elif grpc_status is not None:
        parts.append(f"-> grpc={grpc_status}")
    elif span.status_code == StatusCode.ERROR:
        parts.append("-> ERROR")

    parts.append(f"{(span.end_time_ns - span.start_time_ns) / 1e6:.2f}ms")

    peer = attrs.get("network.peer.address")
    if peer:
        peer = str(peer)
        port = attrs.get("network.peer.port")
        if port is not None:
            peer = f"[{peer}]:{port}" if ":" in peer else f"{peer}:{port}"
        parts.append(f"peer={_safe(peer)}")

    if span.status_code == StatusCode.ERROR and span.status_message:
        parts.append(f"error={_safe(span.status_message)!r}")
    parts.append(f"[{span.trace_id.hex()[:8]}]")
    return " ".join(parts)


def _safe(value: object) -> str:
    """Escape control characters: paths come from the network, and a hostile
    client must not be able to send escape sequences to the operator's terminal."""
    text = str(value)
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")
