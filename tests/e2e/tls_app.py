"""TLS servers and clients for tests/e2e/test_tls.py, all through Python's `ssl`
(the system's dynamically linked libssl, which the tracer hooks).

    python tls_app.py grpc-serve PORT CERT KEY
        HTTP/2 over TLS (ALPN h2, the `h2` library) answering gRPC: t.Greeter/SayHello
        (OK, one response message), t.Greeter/Missing (trailers-only NOT_FOUND),
        t.Greeter/Boom (INTERNAL in the trailers); any other path is plain HTTP/2.
    python tls_app.py grpc-call PORT GO
        waits for the file GO, then makes gRPC calls with an h2 client over `ssl`,
        then the same with `curl --http2 -k` (a child); prints a JSON summary.
    python tls_app.py https-serve TLS_PORT TLS_PORT2 PLAIN_PORT CERT KEY
        HTTP/1.1 keep-alive servers in one process, reading requests 16 bytes at a
        time (so OpenSSL hands most of a request out of its buffer, with no syscall).
    python tls_app.py https-call TLS_PORT TLS_PORT2 PLAIN_PORT GO
        waits for GO, then walks the SSL-object-to-fd cases (see `https_call`);
        prints a JSON summary.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time

# -- gRPC over TLS --------------------------------------------------------------


def _grpc_frame(msg: bytes) -> bytes:
    return b"\x00" + len(msg).to_bytes(4, "big") + msg


def grpc_serve(port: int, crt: str, key: str) -> None:
    import h2.config
    import h2.connection
    import h2.events

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(crt, key)
    ctx.set_alpn_protocols(["h2"])
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", port))
    ls.listen(8)

    def respond(conn, sid: int, headers: dict[str, str]) -> None:  # noqa: ANN001
        path = headers.get(":path", "")
        if headers.get("content-type", "").startswith("application/grpc"):
            grpc = [(":status", "200"), ("content-type", "application/grpc")]
            if path == "/t.Greeter/Missing":  # Trailers-Only
                conn.send_headers(sid, [*grpc, ("grpc-status", "5"),
                                        ("grpc-message", "no such greeting")], end_stream=True)
                return
            conn.send_headers(sid, grpc)
            if path == "/t.Greeter/SayHello":
                conn.send_data(sid, _grpc_frame(b"\x0a\x05hello"))
                conn.send_headers(sid, [("grpc-status", "0")], end_stream=True)
            else:
                conn.send_headers(sid, [("grpc-status", "13"), ("grpc-message", "boom")],
                                  end_stream=True)
            return
        body = b"plain h2\n"
        conn.send_headers(sid, [(":status", "200"), ("content-length", str(len(body)))])
        conn.send_data(sid, body, end_stream=True)

    def serve(sock: socket.socket) -> None:
        with ctx.wrap_socket(sock, server_side=True) as tls:
            assert tls.selected_alpn_protocol() == "h2"
            conn = h2.connection.H2Connection(
                h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
            conn.initiate_connection()
            tls.sendall(conn.data_to_send())
            reqs: dict[int, dict[str, str]] = {}
            while data := tls.recv(65535):
                for ev in conn.receive_data(data):
                    if isinstance(ev, h2.events.RequestReceived):
                        reqs[ev.stream_id] = dict(ev.headers)
                    elif isinstance(ev, h2.events.DataReceived):
                        conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    elif isinstance(ev, h2.events.StreamEnded):
                        respond(conn, ev.stream_id, reqs.pop(ev.stream_id))
                out = conn.data_to_send()
                if out:
                    tls.sendall(out)

    print("ready", flush=True)
    while True:
        sock, _ = ls.accept()
        threading.Thread(target=serve, args=(sock,), daemon=True).start()


def grpc_call(port: int, go: str) -> None:
    import h2.config
    import h2.connection
    import h2.events

    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    curl = shutil.which("curl")
    body = os.path.join(os.path.dirname(go), "grpc-request.bin")
    with open(body, "wb") as f:
        f.write(_grpc_frame(b"\x0a\x05world"))
    print("ready", flush=True)
    while not os.path.exists(go):
        time.sleep(0.01)

    sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)),
                           server_hostname="localhost")
    assert sock.selected_alpn_protocol() == "h2"
    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())

    def call(path: str, grpc: bool = True) -> str:
        sid = conn.get_next_available_stream_id()
        hdrs = [(":method", "POST" if grpc else "GET"), (":scheme", "https"), (":path", path),
                (":authority", f"localhost:{port}")]
        if grpc:
            conn.send_headers(sid, [*hdrs, ("content-type", "application/grpc"),
                                    ("te", "trailers")])
            conn.send_data(sid, _grpc_frame(b"\x0a\x05world"), end_stream=True)
        else:
            conn.send_headers(sid, hdrs, end_stream=True)
        sock.sendall(conn.data_to_send())
        got: dict[str, str] = {}
        while True:
            data = sock.recv(65535)
            assert data, "server closed"
            done = False
            for ev in conn.receive_data(data):
                if isinstance(ev, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
                    got.update(dict(ev.headers))
                elif isinstance(ev, h2.events.DataReceived):
                    conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id == sid:
                    done = True
            out = conn.data_to_send()
            if out:
                sock.sendall(out)
            if done:
                return got.get("grpc-status", got.get(":status", "?"))

    statuses = [call("/t.Greeter/SayHello"), call("/t.Greeter/Missing"),
                call("/plain", grpc=False)]
    conn.close_connection()
    sock.sendall(conn.data_to_send())
    sock.close()
    # The same service through curl (libcurl + nghttp2 + system OpenSSL): one
    # connection, two calls.
    argv = [curl, "-sk", "--http2", "-H", "content-type: application/grpc", "-H",
            "te: trailers", "--data-binary", f"@{body}", "-w", "%{http_version}\n"]
    for m in ("SayHello", "Boom"):
        argv += ["-o", "/dev/null", f"https://127.0.0.1:{port}/t.Greeter/{m}"]
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    out, _ = child.communicate(timeout=30)
    print(json.dumps({"statuses": statuses, "curl_pid": child.pid, "curl_rc": child.returncode,
                      "curl_out": out.split()}), flush=True)
    time.sleep(60)  # stay alive until the test is done with its pid


# -- HTTP/1 over TLS: the SSL object to fd mapping ----------------------------------


def https_serve(tls_port: int, tls_port2: int, plain_port: int, crt: str, key: str) -> None:
    import http.server

    class H(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        rbufsize = 16  # requests arrive in 16-byte SSL_read_ex calls

        def log_message(self, *a) -> None:  # noqa: ANN002
            pass

        def do_GET(self) -> None:  # noqa: N802
            body = f"body of {self.path}\n".encode()
            if self.path.startswith("/e"):  # head and body in one SSL_write
                head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n\r\n"
                self.wfile.write(head.encode() + body)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()  # the head, then the body: two SSL_write calls
            self.wfile.write(body)

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(crt, key)
    for port, tls in ((tls_port, True), (tls_port2, True), (plain_port, False)):
        s = http.server.ThreadingHTTPServer(("127.0.0.1", port), H)
        s.daemon_threads = True
        if tls:
            s.socket = ctx.wrap_socket(s.socket, server_side=True)
        threading.Thread(target=s.serve_forever, daemon=True).start()
    print("ready", flush=True)
    while True:
        time.sleep(3600)


def _read_responses(sock: socket.socket, n: int, chunk: int) -> list[bytes]:
    """Read n HTTP/1.1 responses with recv(chunk); return their bodies."""
    buf, bodies = b"", []
    while len(bodies) < n:
        head_end = buf.find(b"\r\n\r\n")
        if head_end >= 0:
            head = buf[:head_end].decode()
            length = int(head.lower().split("content-length:")[1].split("\r\n")[0])
            end = head_end + 4 + length
            if len(buf) >= end:
                assert head.startswith("HTTP/1.1 200 "), head
                bodies.append(buf[head_end + 4:end])
                buf = buf[end:]
                continue
        data = sock.recv(chunk)
        assert data, "server closed"
        buf += data
    assert buf == b""
    return bodies


def _get(path: str, port: int) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()


def https_call(tls_port: int, tls_port2: int, plain_port: int, go: str) -> None:
    """Every connection below gets the same fd number (the lowest free one):

    A  TLS  port 1: three pipelined requests in one SSL_write; the responses are
       read with recv(7): most SSL_read_ex calls are served from OpenSSL's buffer.
    B  TLS  port 2: reuses A's fd (and likely A's freed SSL object's address).
    C  TCP  plain port: a cleartext connection on the fd the TLS ones had.
    D  TLS  port 1: TLS again on the fd the cleartext one had.
    E  TLS  port 1: the fd is closed under a live SSL object that still holds
       buffered plaintext (the end of a response body); F (cleartext) gets the
       fd; E's buffered bytes are then read with no syscall: they must not land
       on F (nor stop F being traced).
    """
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    print("ready", flush=True)
    while not os.path.exists(go):
        time.sleep(0.01)
    conns: dict[str, dict] = {}

    def connect(name: str, port: int, tls: bool) -> socket.socket:
        raw = socket.create_connection(("127.0.0.1", port))
        s = ctx.wrap_socket(raw, server_hostname="localhost") if tls else raw
        conns[name] = {"fd": s.fileno(), "port": s.getsockname()[1]}
        return s

    a = connect("A", tls_port, True)
    a.sendall(b"".join(_get(p, tls_port) for p in ("/a1", "/a2", "/a3")))
    assert _read_responses(a, 3, 7) == [b"body of /a1\n", b"body of /a2\n", b"body of /a3\n"]
    a.close()

    b = connect("B", tls_port2, True)
    for p in ("/b1", "/b2"):
        b.sendall(_get(p, tls_port2))
        assert _read_responses(b, 1, 7) == [f"body of {p}\n".encode()]
    b.close()

    c = connect("C", plain_port, False)
    c.sendall(_get("/c1", plain_port))
    assert _read_responses(c, 1, 7) == [b"body of /c1\n"]
    c.close()

    d = connect("D", tls_port, True)
    d.sendall(_get("/d1", tls_port))
    assert _read_responses(d, 1, 7) == [b"body of /d1\n"]
    d.close()

    e = connect("E", tls_port, True)
    e.sendall(_get("/e1", tls_port))
    first = b""
    while b"\r\n\r\n" not in first:  # the head, and a little of the body
        first += e.recv(7)
    buffered = e.pending()  # the rest of the body: in OpenSSL's buffer
    assert buffered > 0 and len(first) + buffered == first.index(b"\r\n\r\n") + 4 + 12, (
        first, buffered)
    os.close(e.fileno())  # the SSL object lives on, its fd is gone
    f = connect("F", plain_port, False)
    f.sendall(_get("/f1", plain_port))  # F's request is out, its response not yet read
    stale = e.recv(buffered)  # only what OpenSSL holds: no syscall on F's socket
    assert len(stale) == buffered and (first + stale).endswith(b"body of /e1\n"), stale
    assert _read_responses(f, 1, 64) == [b"body of /f1\n"]
    f.close()
    e.detach()  # its fd number is not its own any more: do not close it again

    print(json.dumps(conns), flush=True)
    time.sleep(60)


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "grpc-serve":
        grpc_serve(int(args[0]), args[1], args[2])
    elif cmd == "grpc-call":
        grpc_call(int(args[0]), args[1])
    elif cmd == "https-serve":
        https_serve(int(args[0]), int(args[1]), int(args[2]), args[3], args[4])
    elif cmd == "https-call":
        https_call(int(args[0]), int(args[1]), int(args[2]), args[3])
    else:
        raise SystemExit(f"unknown command {cmd}")
