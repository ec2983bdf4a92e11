"""A Kubernetes API server stand-in on 127.0.0.1: pod list/watch, GETs by path.

Speaks what the pod watcher uses, with the real wire shapes: JSON lists with
`metadata.resourceVersion` and `continue`, a chunked watch stream of
`{"type", "object"}` lines, `Status` objects for errors. Tests script it:
`push(event)` sends a watch event, `drop()` cuts the watch connection,
`end()` ends the stream cleanly (as `timeoutSeconds` does), `expire(rv)`
makes a watch from that version answer 410.
"""

from __future__ import annotations

import json
import queue
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "k8s"

DROP = object()
END = object()


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


class FakeApiServer:
    def __init__(self, pods: list[dict[str, Any]] | None = None, resource_version: str = "100",
                 page_size: int = 2, token: str | None = "test-token") -> None:
        self.pods = list(pods or [])
        self.resource_version = resource_version
        self.page_size = page_size
        self.objects: dict[str, Any] = {}  # path -> JSON body (GET)
        self.expired: set[str] = set()
        self.requests: list[tuple[str, dict[str, list[str]]]] = []
        self.watch_connections = 0
        self._events: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                u = urlsplit(self.path)
                q = parse_qs(u.query)
                with server._lock:
                    server.requests.append((u.path, q))
                if token and self.headers.get("Authorization") != f"Bearer {token}":
                    return self._json(401, status(401, "Unauthorized", "Unauthorized"))
                if u.path == "/api/v1/pods" and q.get("watch") == ["1"]:
                    return self._watch(q)
                if u.path == "/api/v1/pods":
                    return self._list(q)
                if u.path in server.objects:
                    body = server.objects[u.path]
                    return self._json(int(body.get("code", 200)) if body.get("kind") == "Status"
                                      else 200, body)
                self._json(404, status(404, "NotFound", f"{u.path} not found"))

            def _json(self, code: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _list(self, q: dict[str, list[str]]) -> None:
                node = q.get("fieldSelector", [""])[0].removeprefix("spec.nodeName=")
                items = [p for p in server.pods if p["spec"].get("nodeName") == node]
                start = int(q.get("continue", ["0"])[0] or 0)
                limit = min(int(q.get("limit", ["500"])[0]), server.page_size)
                page = items[start:start + limit]
                meta: dict[str, Any] = {"resourceVersion": server.resource_version}
                if start + limit < len(items):
                    meta["continue"] = str(start + limit)
                self._json(200, {"kind": "PodList", "apiVersion": "v1", "metadata": meta,
                                 "items": page})

            def _watch(self, q: dict[str, list[str]]) -> None:
                rv = q.get("resourceVersion", [""])[0]
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                with server._lock:
                    server.watch_connections += 1
                if rv in server.expired:
                    self._chunk(fixture("watch_error_gone.json"))
                    self.wfile.write(b"0\r\n\r\n")
                    return
                while True:
                    try:
                        ev = server._events.get(timeout=0.1)
                    except queue.Empty:
                        if server._closing:
                            return
                        continue
                    if ev is DROP:
                        self.close_connection = True
                        self.connection.shutdown(2)  # mid-stream, no final chunk
                        return
                    if ev is END:
                        self.wfile.write(b"0\r\n\r\n")
                        return
                    self._chunk(ev)

            def _chunk(self, ev: Any) -> None:
                data = json.dumps(ev).encode() + b"\n"
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

        self._closing = False
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FakeApiServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing = True
        self.httpd.shutdown()
        self.httpd.server_close()

    # -- scripting -------------------------------------------------------------

    def push(self, type_: str, obj: dict[str, Any]) -> None:
        self._events.put({"type": type_, "object": obj})

    def push_raw(self, ev: dict[str, Any]) -> None:
        self._events.put(ev)

    def drop(self) -> None:
        self._events.put(DROP)

    def end(self) -> None:
        self._events.put(END)

    def expire(self, rv: str) -> None:
        self.expired.add(rv)

    def watch_params(self) -> list[dict[str, list[str]]]:
        with self._lock:
            return [q for p, q in self.requests if p == "/api/v1/pods" and q.get("watch")]

    def list_count(self) -> int:
        with self._lock:
            return sum(1 for p, q in self.requests if p == "/api/v1/pods"
                       and not q.get("watch") and "continue" not in q)
