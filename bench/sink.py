#!/usr/bin/env python3
"""A counting OTLP/HTTP receiver: POST /v1/traces (protobuf, optionally gzip),
GET /count (spans so far), POST /reset. 127.0.0.1 only."""

from __future__ import annotations

import gzip
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

COUNT = 0
LOCK = threading.Lock()
OK = ExportTraceServiceResponse().SerializeToString()


class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a) -> None:  # noqa: ANN002
        pass

    def _reply(self, body: bytes, ctype: str = "application/x-protobuf") -> None:
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802
        self._reply(str(COUNT).encode(), "text/plain")

    def do_POST(self) -> None:  # noqa: N802
        global COUNT
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path.endswith("/reset"):
            with LOCK:
                COUNT = 0
            return self._reply(b"0", "text/plain")
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        req = ExportTraceServiceRequest.FromString(body)
        n = sum(len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans)
        with LOCK:
            COUNT += n
        self._reply(OK)


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
