"""TLS end to end: OpenSSL uprobes give plaintext spans for HTTPS, h2 and gRPC
over TLS; the SSL-object-to-fd mapping holds for buffered reads and fd reuse;
statically linked TLS (grpcio's BoringSSL) is reported as not visible."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import TRACER, free_port, need, wait_port
from tests.e2e.test_http1 import _nginx_worker, of_pid, settle

SERVER, CLIENT = 2, 3


def A(span) -> dict:  # noqa: N802
    return span.attributes


@pytest.fixture
def cert(tmp: Path) -> tuple[Path, Path]:
    key, crt = tmp / "key.pem", tmp / "cert.pem"
    subprocess.run([need("openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                    "-keyout", str(key), "-out", str(crt), "-days", "2", "-subj", "/CN=localhost"],
                   check=True, capture_output=True, timeout=60)
    return crt, key


HTTPS_SERVER = r"""
import http.server, ssl, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_GET(self):
        body = b"hello tls\n"
        self.send_response(404 if self.path.startswith("/missing") else 200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Set-Cookie", "session=SECRETCOOKIE")
        self.end_headers()
        self.wfile.write(body)
s = http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[2], sys.argv[3])
s.socket = ctx.wrap_socket(s.socket, server_side=True)
print("ready", flush=True)
s.serve_forever()
"""


def test_python_https_server_and_exec_curl(start_agent, receiver, procs, tmp, cert, otlp_env):
    """The issue's 'done': exec -- curl -k against an attached Python HTTPS server."""
    port = free_port()
    script = tmp / "https.py"
    script.write_text(HTTPS_SERVER)
    srv = subprocess.Popen([sys.executable, str(script), str(port), *map(str, cert)],
                           stdout=subprocess.PIPE, text=True)
    procs.append(srv)
    assert srv.stdout.readline() == "ready\n"
    agent = start_agent("attach", "--pid", str(srv.pid))
    base = f"https://127.0.0.1:{port}"
    # One connection, two requests (keep-alive); a secret header that must not leak.
    p = subprocess.run(
        [str(TRACER), "exec", "-v", "--", need("curl"), "-sk",
         "-H", "Authorization: Bearer TOPSECRET",
         "-o", "/dev/null", "-w", "%{http_code}\n", f"{base}/hello?lang=en",
         "-o", "/dev/null", f"{base}/missing"],
        env=otlp_env, capture_output=True, text=True, timeout=120,
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["200", "404"]
    assert "TLS visible through OpenSSL libssl" in p.stderr, p.stderr
    cli = receiver.wait_for(lambda s: s.resource.get("service.name") == "curl", count=2,
                            timeout=15)
    srv_spans = settle(receiver, srv.pid, 2)
    rc, _, err = agent.stop()
    assert rc == 0, err
    assert "TLS visible through OpenSSL libssl" in err
    time.sleep(0.5)
    assert len(receiver.spans) == 4, [(s.name, A(s)) for s in receiver.spans]
    cli = sorted(cli, key=lambda s: s.start_time_unix_nano)
    assert [s.kind for s in cli] == [CLIENT, CLIENT]
    assert [A(s)["url.full"] for s in cli] == [f"{base}/hello?lang=en", f"{base}/missing"]
    assert [A(s)["http.response.status_code"] for s in cli] == [200, 404]
    assert all(A(s)["url.scheme"] == "https" for s in cli)
    assert A(cli[0])["network.peer.port"] == port
    assert [s.kind for s in srv_spans] == [SERVER, SERVER]
    assert [A(s)["url.path"] for s in srv_spans] == ["/hello", "/missing"]
    assert A(srv_spans[0])["url.query"] == "lang=en"
    assert [A(s)["http.response.status_code"] for s in srv_spans] == [200, 404]
    assert all(A(s)["url.scheme"] == "https" for s in srv_spans)
    assert A(srv_spans[0])["server.port"] == port
    assert A(srv_spans[0])["http.response.body.size"] == len("hello tls\n")
    assert A(srv_spans[0])["user_agent.original"].startswith("curl/")
    # Decrypted secrets never leave the agent (spans or -v logs).
    dump = repr([(s.name, A(s)) for s in receiver.spans]) + p.stderr + err
    assert "TOPSECRET" not in dump and "SECRETCOOKIE" not in dump


NGINX_TLS_CONF = """
daemon off;
user root;
master_process on;
worker_processes 1;
error_log {prefix}/error.log warn;
pid {prefix}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    keepalive_requests 100000;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {crt};
        ssl_certificate_key {key};
        root {prefix}/www;
        location = /created {{ return 201 "created\\n"; }}
        location = /boom {{ return 503 "unavailable\\n"; }}
    }}
}}
"""


def test_nginx_tls_keepalive(start_agent, receiver, procs, tmp, cert):
    nginx = need("nginx")
    port = free_port()
    prefix = tmp / "nginx"
    (prefix / "www").mkdir(parents=True)
    (prefix / "www" / "index.html").write_text("<h1>hello</h1>\n" * 20)
    (prefix / "www" / "big.bin").write_bytes(b"b" * 100_000)
    conf = prefix / "nginx.conf"
    conf.write_text(NGINX_TLS_CONF.format(prefix=prefix, port=port, crt=cert[0], key=cert[1]))
    srv = subprocess.Popen([nginx, "-c", str(conf), "-p", str(prefix)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    procs.append(srv)
    wait_port(port)
    agent = start_agent("attach", "--pid", str(srv.pid))
    base = f"https://127.0.0.1:{port}"
    paths = ["/index.html", "/big.bin", "/boom", "/created", "/index.html", "/nope"]
    argv = [need("curl"), "-sk", "-w", "%{http_code}\n"]
    for path in paths:  # one curl, one connection, six requests
        argv += ["-o", "/dev/null", base + path]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True)
    assert out.stdout.split() == ["200", "200", "503", "201", "200", "404"]
    worker = _nginx_worker(srv.pid)
    spans = settle(receiver, worker, 6)
    rc, _, err = agent.stop()
    assert rc == 0, err
    assert [A(s)["url.path"] for s in spans] == paths
    assert [A(s)["http.response.status_code"] for s in spans] == [200, 200, 503, 201, 200, 404]
    assert all(A(s)["url.scheme"] == "https" and s.kind == SERVER for s in spans)
    assert A(spans[1])["http.response.body.size"] == 100_000
    assert A(spans[0])["http.response.body.size"] == len("<h1>hello</h1>\n" * 20)
    assert len({A(s)["client.port"] for s in spans}) == 1, "one keep-alive connection"
    assert len(receiver.spans) == 6


def test_http2_over_tls_nghttpd_and_curl(start_agent, receiver, procs, tmp, cert, otlp_env):
    nghttpd = need("nghttpd")
    port = free_port()
    www = tmp / "www"
    www.mkdir()
    (www / "index.html").write_text("<h1>h2</h1>\n" * 10)
    srv = subprocess.Popen([nghttpd, "-d", str(www), "-a", "127.0.0.1", str(port),
                            str(cert[1]), str(cert[0])],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs.append(srv)
    wait_port(port)
    agent = start_agent("attach", "--pid", str(srv.pid))
    base = f"https://127.0.0.1:{port}"
    p = subprocess.run(
        [str(TRACER), "exec", "--", need("curl"), "-sk", "--http2", "-w", "%{http_version} "
         "%{http_code}\n", "-o", "/dev/null", f"{base}/index.html?x=1", "-o", "/dev/null",
         f"{base}/missing"],
        env=otlp_env, capture_output=True, text=True, timeout=120,
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["2", "200", "2", "404"], "ALPN h2"
    srv_spans = settle(receiver, srv.pid, 2)
    cli = receiver.wait_for(lambda s: s.resource.get("service.name") == "curl", count=2,
                            timeout=15)
    rc, _, err = agent.stop()
    assert rc == 0, err
    for spans, kind in ((srv_spans, SERVER), (sorted(cli, key=lambda s: s.start_time_unix_nano),
                                              CLIENT)):
        assert [s.kind for s in spans] == [kind, kind], [(s.name, A(s)) for s in spans]
        assert [A(s)["url.path"] for s in spans] == ["/index.html", "/missing"]
        assert [A(s)["http.response.status_code"] for s in spans] == [200, 404]
        assert all(A(s)["network.protocol.version"] == "2" for s in spans)
        assert all(A(s)["url.scheme"] == "https" for s in spans)
    assert A(srv_spans[0])["http.response.body.size"] == len("<h1>h2</h1>\n" * 10)
    time.sleep(0.5)
    assert len(receiver.spans) == 4


GRPC_TLS = r"""
import os, sys, time
from concurrent import futures
import grpc
crt, key = open(sys.argv[1], "rb").read(), open(sys.argv[2], "rb").read()
server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
h = grpc.unary_unary_rpc_method_handler(lambda req, ctx: b"hello " + req)
server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("t.G", {"Hi": h}),))
port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([(key, crt)]))
server.start()
print("ready", flush=True)
while not os.path.exists(sys.argv[3]):
    time.sleep(0.02)
creds = grpc.ssl_channel_credentials(root_certificates=crt)
opts = (("grpc.ssl_target_name_override", "localhost"),)
with grpc.secure_channel(f"127.0.0.1:{port}", creds, opts) as ch:
    for _ in range(3):
        assert ch.unary_unary("/t.G/Hi")(b"w", timeout=10) == b"hello w"
print("done", flush=True)
time.sleep(30)
"""


def test_grpcio_tls_is_reported_not_visible(start_agent, receiver, procs, tmp, cert):
    script = tmp / "grpc_tls.py"
    script.write_text(GRPC_TLS)
    go = tmp / "go"
    app = subprocess.Popen([sys.executable, str(script), str(cert[0]), str(cert[1]), str(go)],
                           stdout=subprocess.PIPE, text=True)
    procs.append(app)
    assert app.stdout.readline() == "ready\n"
    agent = start_agent("attach", "--pid", str(app.pid))
    go.touch()
    assert app.stdout.readline() == "done\n"
    time.sleep(1.5)
    rc, _, err = agent.stop()
    assert rc == 0, err
    line = next((x for x in err.splitlines() if f"pid {app.pid} " in x), "")
    assert "NOT visible" in line and "BoringSSL" in line and "cygrpc" in line, err
    # Its ciphertext never becomes spans.
    assert of_pid(receiver, app.pid, 1, timeout=0.5) == []


def test_check_lists_tls_libraries():
    p = subprocess.run([str(TRACER), "check"], capture_output=True, text=True, timeout=120)
    out = p.stdout + p.stderr
    assert "libssl.so.3" in out, out
    assert "grpcio" in out and "not" in out, out


APP = Path(__file__).with_name("tls_app.py")


def _dump(receiver) -> str:
    return "\n".join(f"pid {s.resource.get('process.pid')} kind {s.kind} {s.name} {A(s)}"
                     for s in sorted(receiver.spans, key=lambda s: s.start_time_unix_nano))


def _started(procs, *argv: str) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, str(APP), *argv], stdout=subprocess.PIPE, text=True)
    procs.append(p)
    assert p.stdout.readline() == "ready\n"
    return p


def test_grpc_over_tls_h2_server_python_and_curl_clients(start_agent, receiver, procs, tmp,
                                                         cert):
    """gRPC over TLS through the system libssl on both ends: an `h2` server on
    Python's `ssl` (ALPN h2), called by an h2 client on `ssl` and by curl."""
    port = free_port()
    srv = _started(procs, "grpc-serve", str(port), *map(str, cert))
    go = tmp / "go"
    cli = _started(procs, "grpc-call", str(port), str(go))
    agent = start_agent("attach", "-v", "--pid", str(srv.pid), "--pid", str(cli.pid))
    go.touch()
    summary = json.loads(cli.stdout.readline())
    assert summary["statuses"] == ["0", "5", "200"]
    assert summary["curl_rc"] == 0 and summary["curl_out"] == ["2", "2"], summary
    curl_pid = summary["curl_pid"]
    srv_spans = settle(receiver, srv.pid, 5)
    py_spans = of_pid(receiver, cli.pid, 3)
    curl_spans = of_pid(receiver, curl_pid, 2)
    rc, _, err = agent.stop()
    assert rc == 0, err
    time.sleep(0.5)
    dump = _dump(receiver)
    assert len(receiver.spans) == 10, dump
    for pid in (srv.pid, cli.pid):
        assert any(f"pid {pid} " in x and "TLS visible through OpenSSL libssl" in x
                   for x in err.splitlines()), err

    def grpc_ok(s, kind, method, code):
        assert s.kind == kind, (s.name, A(s))
        assert s.name == f"t.Greeter/{method}"
        assert A(s)["rpc.system"] == "grpc"
        assert A(s)["rpc.service"] == "t.Greeter" and A(s)["rpc.method"] == method
        assert A(s)["rpc.grpc.status_code"] == code
        assert A(s)["server.port"] == port
        assert A(s)["network.protocol.version"] == "2"
        assert A(s)["ebpf_tracer.rpc.request.messages"] == 1
        if kind == CLIENT:
            assert A(s)["network.peer.port"] == port
        assert "ebpf_tracer.unknown_fields" not in A(s) and "ebpf_tracer.partial" not in A(s)

    # The Python h2 client: two calls and a plain HTTP/2 request, one connection.
    assert len(py_spans) == 3, dump
    grpc_ok(py_spans[0], CLIENT, "SayHello", 0)
    assert A(py_spans[0])["server.address"] == "localhost"
    assert A(py_spans[0])["ebpf_tracer.rpc.response.messages"] == 1
    grpc_ok(py_spans[1], CLIENT, "Missing", 5)
    assert py_spans[1].status_code == 2 and A(py_spans[1])["error.type"] == "NOT_FOUND"
    assert A(py_spans[1])["ebpf_tracer.rpc.response.messages"] == 0, "Trailers-Only"
    plain = py_spans[2]
    assert plain.kind == CLIENT and plain.name == "GET"
    assert A(plain)["url.full"] == f"https://localhost:{port}/plain"
    assert A(plain)["url.scheme"] == "https" and A(plain)["http.response.status_code"] == 200
    assert "rpc.system" not in A(plain)
    # curl: two calls on one connection.
    assert [s.resource.get("service.name") for s in curl_spans] == ["curl", "curl"]
    grpc_ok(curl_spans[0], CLIENT, "SayHello", 0)
    grpc_ok(curl_spans[1], CLIENT, "Boom", 13)
    assert A(curl_spans[0])["server.address"] == "127.0.0.1"
    assert curl_spans[1].status_code == 2 and A(curl_spans[1])["error.type"] == "INTERNAL"
    assert A(curl_spans[1])["ebpf_tracer.rpc.response.messages"] == 0
    # The server: all five, on two connections (the Python client's, then curl's).
    assert len(srv_spans) == 5, dump
    grpc_ok(srv_spans[0], SERVER, "SayHello", 0)
    grpc_ok(srv_spans[1], SERVER, "Missing", 5)
    assert srv_spans[1].status_code == 0, "NOT_FOUND is not a server error"
    assert srv_spans[2].kind == SERVER and A(srv_spans[2])["url.path"] == "/plain"
    assert A(srv_spans[2])["url.scheme"] == "https"
    assert A(srv_spans[2])["http.response.body.size"] == len("plain h2\n")
    grpc_ok(srv_spans[3], SERVER, "SayHello", 0)
    grpc_ok(srv_spans[4], SERVER, "Boom", 13)
    assert srv_spans[4].status_code == 2, "INTERNAL is a server error"
    # (Once seen without client.port: the agent's final stats say how the
    # connection was joined and whether its peer was resolved.)
    stats = [x for x in err.splitlines() if "final stats" in x]
    py_port = {A(s).get("client.port") for s in srv_spans[:3]}
    curl_port = {A(s).get("client.port") for s in srv_spans[3:]}
    assert None not in py_port | curl_port, (dump, stats)
    assert len(py_port) == 1 and len(curl_port) == 1 and py_port != curl_port


def test_ssl_to_fd_mapping_buffered_reads_and_fd_reuse(start_agent, receiver, procs, tmp, cert):
    """SSL_read_ex calls served from OpenSSL's buffer (no nested syscall), on
    both ends; one fd number reused TLS->TLS, TLS->cleartext, cleartext->TLS,
    and reused while a live SSL object still hands out buffered plaintext."""
    tls1, tls2, plain = free_port(), free_port(), free_port()
    ports = [str(p) for p in (tls1, tls2, plain)]
    srv = _started(procs, "https-serve", *ports, *map(str, cert))
    go = tmp / "go"
    cli = _started(procs, "https-call", *ports, str(go))
    agent = start_agent("attach", "--pid", str(srv.pid), "--pid", str(cli.pid))
    go.touch()
    conns = json.loads(cli.stdout.readline())
    assert len({c["fd"] for c in conns.values()}) == 1, f"one fd number for all: {conns}"
    srv_spans = settle(receiver, srv.pid, 9)
    cli_spans = of_pid(receiver, cli.pid, 9)
    rc, _, err = agent.stop()
    assert rc == 0, err
    time.sleep(0.5)
    dump = _dump(receiver)
    # Exactly one span per request on each end: no span from handshakes or
    # ciphertext, none twice.
    assert len(receiver.spans) == 18, dump
    paths = ["/a1", "/a2", "/a3", "/b1", "/b2", "/c1", "/d1", "/e1", "/f1"]
    conn_of = {p: p[1].upper() for p in paths}
    port_of = {"A": tls1, "B": tls2, "C": plain, "D": tls1, "E": tls1, "F": plain}
    assert [A(s)["url.path"] for s in srv_spans] == paths, dump
    for s in srv_spans:
        c = conn_of[A(s)["url.path"]]
        assert s.kind == SERVER and A(s)["http.response.status_code"] == 200, (c, A(s))
        assert A(s)["client.port"] == conns[c]["port"], (c, A(s))
        assert A(s)["server.port"] == port_of[c], (c, A(s))
        assert A(s)["url.scheme"] == ("http" if port_of[c] == plain else "https"), (c, A(s))
        assert A(s)["http.response.body.size"] == len(f"body of {A(s)['url.path']}\n")
        assert "ebpf_tracer.partial" not in A(s), (c, A(s))
    assert [A(s)["url.path"] for s in cli_spans] == paths, dump
    for s in cli_spans:
        c = conn_of[A(s)["url.path"]]
        scheme = "http" if port_of[c] == plain else "https"
        assert s.kind == CLIENT, (c, A(s))
        assert A(s)["network.peer.port"] == port_of[c], (c, A(s))
        assert A(s)["url.full"] == f"{scheme}://127.0.0.1:{port_of[c]}{A(s)['url.path']}"
        if c == "E":
            # Its fd was closed with the body half read: a truncated span;
            # the rest, read later from OpenSSL's buffer, went nowhere.
            assert A(s)["ebpf_tracer.partial"] == "response-truncated", A(s)
            assert A(s)["http.response.status_code"] == 200, A(s)
            continue
        assert A(s)["http.response.status_code"] == 200, (c, A(s))
        assert A(s)["http.response.body.size"] == len(f"body of {A(s)['url.path']}\n")
        assert "ebpf_tracer.partial" not in A(s), (c, A(s))


ASYNCIO_TLS_SERVER = r"""
import asyncio, ssl, sys
async def handle(reader, writer):
    while True:
        head = await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
        await writer.drain()
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[2], sys.argv[3])
async def main():
    srv = await asyncio.start_server(handle, "127.0.0.1", int(sys.argv[1]), ssl=ctx)
    print("ready", flush=True)
    await srv.serve_forever()
asyncio.run(main())
"""


def test_asyncio_tls_is_reported_not_visible(start_agent, receiver, procs, tmp, cert):
    """asyncio drives OpenSSL through memory BIOs: its SSL calls make no syscall,
    so they cannot be tied to a socket. Said per process, never silently missing."""
    port = free_port()
    script = tmp / "aio_tls.py"
    script.write_text(ASYNCIO_TLS_SERVER)
    app = subprocess.Popen([sys.executable, str(script), str(port), str(cert[0]), str(cert[1])],
                           stdout=subprocess.PIPE, text=True)
    procs.append(app)
    assert app.stdout.readline() == "ready\n"
    agent = start_agent("attach", "--pid", str(app.pid))
    for _ in range(3):
        p = subprocess.run([need("curl"), "-sk", f"https://127.0.0.1:{port}/x"],
                           capture_output=True, text=True, timeout=30)
        assert p.stdout == "ok\n"
    time.sleep(2.5)  # the agent reads the kernel's per-process count every second
    rc, _, err = agent.stop()
    assert rc == 0, err
    line = next((x for x in err.splitlines()
                 if f"pid {app.pid} " in x and "memory BIOs" in x), "")
    assert "TLS NOT visible" in line, err
    assert of_pid(receiver, app.pid, 1, timeout=0.5) == []
