"""The demo's workload server: a tiny shop API on Python's http.server.

It knows nothing about tracing; `ebpf-tracer demo` traces it from outside.
"""

from __future__ import annotations

import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class ShopHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path == "/":
            self._send(200, b"<h1>demo shop</h1>\n", "text/html")
        elif self.path.startswith("/api/products"):
            self._send(200, json.dumps([{"id": 1, "name": "kettle"}]).encode())
        elif self.path == "/api/slow":
            time.sleep(0.05)
            self._send(200, b'{"slow": true}')
        else:
            self._send(404, b'{"error": "not found"}')

    def do_POST(self) -> None:  # noqa: N802
        n = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(n)
        self._send(201, b'{"order": 1001}')

    def log_message(self, *args: object) -> None:
        pass  # keep the demo's terminal for spans


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8080
    ThreadingHTTPServer(("127.0.0.1", port), ShopHandler).serve_forever()


if __name__ == "__main__":
    main()
