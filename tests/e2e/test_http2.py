"""HTTP/2 and gRPC end to end: grpcio (C core, sendmsg with iovecs), nghttpd
with h2load, Node's http2; the real agent and a real OTLP receiver."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.e2e.conftest import TRACER, final_stats, free_port, need, wait_port
from tests.e2e.test_http1 import A, of_pid, settle

SERVER, CLIENT = 2, 3
APP = Path(__file__).with_name("grpc_app.py")


def grpc_server(procs: list) -> tuple[subprocess.Popen, int]:
    """grpc_app.py's server on a free port, once it is listening."""
    port = free_port()
    server = subprocess.Popen([sys.executable, str(APP), "serve", str(port)],
                              stdout=subprocess.PIPE, text=True)
    procs.append(server)
    assert server.stdout.readline() == "ready\n"
    return server, port


def grpc_client(procs: list, mode: str, port: int, go: Path) -> subprocess.Popen:
    """grpc_app.py's client (``mode``: call, big): it waits for ``go`` to exist."""
    client = subprocess.Popen([sys.executable, str(APP), mode, str(port)],
                              env={"GO": str(go), "LINGER": "30", "PATH": "/usr/bin:/bin"},
                              stdout=subprocess.PIPE, text=True)
    procs.append(client)
    return client


def test_grpc_calls_give_one_rpc_span_each(start_agent, receiver, procs, tmp):
    server, port = grpc_server(procs)
    go = tmp / "go"
    client = grpc_client(procs, "call", port, go)
    agent = start_agent("attach", "--pid", str(server.pid), "--pid", str(client.pid))
    go.touch()
    assert client.stdout.readline() == "done\n"
    srv_spans = settle(receiver, server.pid, 6)
    cli_spans = of_pid(receiver, client.pid, 6)
    rc, _, err = agent.stop()
    assert rc == 0, err
    names = ["helloworld.Greeter/SayHello", "helloworld.Greeter/ListGreetings",
             "helloworld.Greeter/CollectGreetings", "helloworld.Greeter/Chat",
             "helloworld.Greeter/SayHello", "helloworld.Greeter/SayHello"]
    for spans, kind in ((srv_spans, SERVER), (cli_spans, CLIENT)):
        assert [s.name for s in spans] == names, [(s.name, A(s)) for s in spans]
        assert all(s.kind == kind for s in spans)
        assert all(A(s)["rpc.system"] == "grpc" for s in spans)
        assert all(A(s)["rpc.service"] == "helloworld.Greeter" for s in spans)
        assert [A(s)["rpc.method"] for s in spans][:4] == [
            "SayHello", "ListGreetings", "CollectGreetings", "Chat"]
        codes = [A(s).get("rpc.grpc.status_code") for s in spans]
        assert codes == [0, 0, 0, 0, 5, 1], codes
        assert A(spans[0])["server.port"] == port
        assert all("ebpf_tracer.unknown_fields" not in A(s) for s in spans)
    # Semantic conventions: NOT_FOUND is an error for the client only.
    assert cli_spans[4].status_code == 2 and A(cli_spans[4])["error.type"] == "NOT_FOUND"
    assert srv_spans[4].status_code == 0
    assert cli_spans[5].status_code == 2 and A(cli_spans[5])["error.type"] == "CANCELLED"
    assert srv_spans[0].resource["process.pid"] == server.pid


def test_h2load_against_nghttpd_is_complete(start_agent, receiver, procs, tmp):
    nghttpd = need("nghttpd")
    port = free_port()
    www = tmp / "www"
    www.mkdir()
    (www / "index.html").write_text("<h1>h2</h1>\n" * 10)
    server = subprocess.Popen([nghttpd, "--no-tls", "-d", str(www), "-a", "127.0.0.1", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs.append(server)
    wait_port(port)
    agent = start_agent("attach", "--pid", str(server.pid))
    out = subprocess.run([need("h2load"), "-n", "300", "-c", "3", "-m", "10",
                          f"http://127.0.0.1:{port}/index.html"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    done = int(re.search(r"(\d+) succeeded", out).group(1))
    assert done == 300, out
    spans = settle(receiver, server.pid, 300)
    rc, _, err = agent.stop()
    assert rc == 0, err
    assert len(spans) == 300
    s = spans[0]
    assert s.kind == SERVER and s.name == "GET"
    assert A(s)["network.protocol.version"] == "2"
    assert A(s)["url.path"] == "/index.html"
    assert A(s)["http.response.status_code"] == 200
    assert A(s)["http.response.body.size"] == len("<h1>h2</h1>\n" * 10)
    assert all(A(x)["http.response.status_code"] == 200 for x in spans)


NODE_H2 = r"""
const http2 = require('http2');
const server = http2.createServer();
server.on('stream', (stream, headers) => {
  const path = headers[':path'];
  if (path.startsWith('/missing')) { stream.respond({':status': 404}); stream.end('no'); return; }
  let n = 0;
  stream.on('data', (c) => { n += c.length; });
  stream.on('end', () => {
    stream.respond({':status': 200, 'content-type': 'application/json'});
    stream.end(JSON.stringify({got: n}));
  });
});
server.listen(+process.argv[2], '127.0.0.1');
"""


def test_node_http2_server_with_curl(start_agent, receiver, procs, tmp):
    port = free_port()
    script = tmp / "h2.js"
    script.write_text(NODE_H2)
    server = subprocess.Popen([need("node"), str(script), str(port)])
    procs.append(server)
    wait_port(port)
    agent = start_agent("attach", "--pid", str(server.pid))
    base = f"http://127.0.0.1:{port}"
    for args in (["-d", "x" * 500, f"{base}/orders?id=7"], [f"{base}/missing"]):
        subprocess.run([need("curl"), "-s", "-o", "/dev/null", "--http2-prior-knowledge", *args],
                       check=True, timeout=30)
    spans = settle(receiver, server.pid, 2)
    agent.stop()
    assert [s.name for s in spans] == ["POST", "GET"]
    post, missing = spans
    assert A(post)["url.path"] == "/orders" and A(post)["url.query"] == "id=7"
    assert A(post)["http.request.body.size"] == 500
    assert A(post)["network.protocol.version"] == "2"
    assert A(missing)["http.response.status_code"] == 404
    assert A(post)["server.port"] == port


def test_h2c_upgrade_client_and_server(start_agent, receiver, procs, tmp, otlp_env):
    """curl --http2 on a cleartext URL asks for h2c with Upgrade; the first
    request becomes stream 1 after the 101, the next is plain HTTP/2."""
    import ast

    # The same tiny h2c server (the `h2` library) that made the unit fixtures.
    src = Path(__file__).parents[1].joinpath("fixtures", "capture_http2.py").read_text()
    tree = ast.parse(src)
    upgrade_server = next(
        ast.literal_eval(n.value) for n in tree.body
        if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "_UPGRADE_SERVER"
    )
    port = free_port()
    script = tmp / "upgrade_server.py"
    script.write_text(upgrade_server)
    server = subprocess.Popen([sys.executable, str(script), str(port)])
    procs.append(server)
    wait_port(port)
    agent = start_agent("attach", "--pid", str(server.pid))
    base = f"http://127.0.0.1:{port}"
    subprocess.run([need("curl"), "-sS", "-o", "/dev/null", "--http2", f"{base}/hello.txt",
                    "--next", "-sS", "-o", "/dev/null", "--http2", f"{base}/missing"],
                   check=True, timeout=30)
    spans = settle(receiver, server.pid, 2)
    agent.stop()
    assert [(A(s)["url.path"], A(s)["http.response.status_code"]) for s in spans] == [
        ("/hello.txt", 200), ("/missing", 404)]
    assert all(A(s)["network.protocol.version"] == "2" for s in spans)


def test_grpc_channel_opened_before_the_tracer(start_agent, receiver, procs, tmp):
    """Joined mid-connection: fields are exact or reported unknown, never wrong."""
    server, port = grpc_server(procs)
    go = tmp / "go"
    code = (
        "import grpc, os, time, sys\n"
        f"ch = grpc.insecure_channel('127.0.0.1:{port}')\n"
        "call = ch.unary_unary('/helloworld.Greeter/SayHello')\n"
        "call(b'before', timeout=10)\n"
        "print('warm', flush=True)\n"
        f"while not os.path.exists({str(go)!r}): time.sleep(0.01)\n"
        "for i in range(5): call(b'after', timeout=10)\n"
        "print('done', flush=True)\n"
        "time.sleep(30)\n"
    )
    client = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    procs.append(client)
    assert client.stdout.readline() == "warm\n"
    agent = start_agent("attach", "--pid", str(server.pid))
    go.touch()
    assert client.stdout.readline() == "done\n"
    spans = settle(receiver, server.pid, 5)
    agent.stop()
    assert len(spans) == 5
    for s in spans:
        unknown = A(s).get("ebpf_tracer.unknown_fields", "")
        if ":path" not in unknown:
            assert s.name == "helloworld.Greeter/SayHello"
            assert A(s)["rpc.method"] == "SayHello"
        else:
            assert "rpc.method" not in A(s)
        assert A(s).get("rpc.grpc.status_code", 0) == 0


def test_garbage_after_the_preface_does_not_stop_tracing(start_agent, receiver, procs, tmp):
    import socket

    nghttpd = need("nghttpd")
    port = free_port()
    www = tmp / "www"
    www.mkdir()
    (www / "ok.txt").write_text("ok\n")
    server = subprocess.Popen([nghttpd, "--no-tls", "-d", str(www), "-a", "127.0.0.1", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs.append(server)
    wait_port(port)
    agent = start_agent("attach", "--pid", str(server.pid))
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    for junk in (b"\xff" * 4000, b"\x00\x00\x05\x01\x05\x00\x00\x00\x01\xbe\xbe\xbe\xbe\xbe",
                 b"GET / HTTP/1.1\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(preface + junk)
            s.settimeout(2)
            try:
                while s.recv(65536):
                    pass
            except OSError:
                pass
    subprocess.run([need("h2load"), "-n", "1", "-c", "1", f"http://127.0.0.1:{port}/ok.txt"],
                   capture_output=True, timeout=30, check=True)
    spans = receiver.wait_for(lambda s: s.attributes.get("url.path") == "/ok.txt", timeout=20)
    assert len(spans) == 1 and A(spans[0])["http.response.status_code"] == 200
    assert agent.proc.poll() is None
    rc, _, err = agent.stop()
    assert rc == 0 and "Traceback" not in err, err



def test_a_late_verdict_on_a_closed_connection_spares_the_next_one_on_its_fd(
        start_agent, receiver, procs, tmp):
    """The agent gives up on a garbage connection after the kernel has moved on:
    the server already accepted the next connection on the same fd number. The
    verdict (stop sending this connection) must not silence that next one."""
    import signal
    import socket

    import h2.config
    import h2.connection

    from tests.e2e.h2_raw_client import request

    www = tmp / "www"
    www.mkdir()
    (www / "ok.txt").write_text("ok\n")
    port = free_port()
    server = subprocess.Popen([need("nghttpd"), "--no-tls", "-d", str(www), "-a", "127.0.0.1",
                               str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs.append(server)
    wait_port(port)
    agent = start_agent("attach", "--pid", str(server.pid))
    agent.proc.send_signal(signal.SIGSTOP)  # the agent lags: records wait in the ring
    try:
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\xff" * 4000)
            s.settimeout(5)
            while s.recv(65536):  # nghttpd answers GOAWAY and closes: its fd is free
                pass
        s = socket.create_connection(("127.0.0.1", port))  # gets that fd in nghttpd
        c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        c.initiate_connection()
        s.sendall(c.data_to_send())
        request(s, c, port, "/ok.txt?n=1", 65536)
    finally:
        agent.proc.send_signal(signal.SIGCONT)
    # The first span comes after the garbage connection's records: the verdict is in.
    receiver.wait_for(lambda x: x.attributes.get("url.query") == "n=1", timeout=20)
    request(s, c, port, "/ok.txt?n=2", 65536)
    spans = receiver.wait_for(lambda x: x.attributes.get("url.query") == "n=2", timeout=20)
    s.close()
    assert A(spans[0])["http.response.status_code"] == 200
    rc, _, err = agent.stop()
    assert rc == 0 and "Traceback" not in err, err


# -- the kernel's frame walk: new connections are exact whatever the syscall sizes --

RAW = Path(__file__).with_name("h2_raw_client.py")
BIG_CALLS = (["helloworld.Greeter/SayHello"] * 10 + ["helloworld.Greeter/Chat"]
             + ["helloworld.Greeter/SayHello"] * 3)


def assert_big_calls_exact(spans: list, kind: int) -> None:
    """grpc_app.py big: 2 + 8 concurrent large unary calls, a large bidi stream, 3 small
    calls whose headers HPACK now indexes: all exact."""
    assert [s.name for s in spans] == BIG_CALLS, [(s.name, A(s)) for s in spans]
    for s in spans:
        a = A(s)
        assert s.kind == kind
        assert "ebpf_tracer.unknown_fields" not in a and "ebpf_tracer.partial" not in a, a
        assert a["rpc.service"] == "helloworld.Greeter"
        assert a["rpc.method"] == s.name.split("/")[1]
        assert a["rpc.grpc.status_code"] == 0
        n = 2 if a["rpc.method"] == "Chat" else 1
        assert (a["ebpf_tracer.rpc.request.messages"], a["ebpf_tracer.rpc.response.messages"]) \
            == (n, n), a


def test_grpc_large_messages_on_a_new_channel_are_exact(start_agent, receiver, procs, tmp):
    """HEADERS, DATA and more frames in one sendmsg, reads coalescing several
    40-100 KiB messages of concurrent calls: the kernel walks the frames, so every
    header block and both HPACK tables are seen, on both sides."""
    server, port = grpc_server(procs)
    go = tmp / "go"
    client = grpc_client(procs, "big", port, go)
    agent = start_agent("attach", "-v", "--pid", str(server.pid), "--pid", str(client.pid))
    go.touch()
    assert client.stdout.readline() == "done\n"
    srv_spans = settle(receiver, server.pid, len(BIG_CALLS))
    cli_spans = of_pid(receiver, client.pid, len(BIG_CALLS))
    rc, _, err = agent.stop()
    assert rc == 0, err
    assert_big_calls_exact(srv_spans, SERVER)
    assert_big_calls_exact(cli_spans, CLIENT)
    stats = final_stats(err)
    assert stats["kernel_h2_walks_lost"] == 0
    assert stats["kernel_h2_bytes_skipped"] > 2 * 1_000_000  # DATA went by uncopied
    assert stats["kernel_bytes_not_copied"] == 0 and stats["conn_gaps"] == 0


def test_grpc_client_under_exec_is_exact(receiver, procs, otlp_env):
    """`ebpf-tracer exec -- python client`: traced from its first syscall."""
    server, port = grpc_server(procs)
    p = subprocess.run([str(TRACER), "exec", "--", sys.executable, str(APP), "big", str(port)],
                       env=otlp_env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout == "done\n"
    spans = receiver.wait_for(lambda s: s.kind == CLIENT, count=len(BIG_CALLS), timeout=15)
    assert_big_calls_exact(sorted(spans, key=lambda s: s.start_time_unix_nano), CLIENT)
    assert all(s.resource["process.pid"] != server.pid for s in receiver.spans)


def test_nghttpd_new_connections_are_exact(start_agent, receiver, procs, tmp):
    """curl --http2-prior-knowledge (large download and upload), a client whose every
    write and read is 5 bytes (frame headers split across syscalls), and one writing
    more frames in one syscall than the kernel walks: that direction falls back to
    head + tail copies, and its records are exact or say what is unknown."""
    nghttpd = need("nghttpd")
    port = free_port()
    www = tmp / "www"
    www.mkdir()
    big = os.urandom(100_000)
    (www / "big.bin").write_bytes(big)
    (www / "small.txt").write_text("hi\n")
    body = tmp / "body.bin"
    body.write_bytes(os.urandom(60_000))
    server = subprocess.Popen([nghttpd, "--no-tls", "-d", str(www), "-a", "127.0.0.1", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs.append(server)
    wait_port(port)
    go = tmp / "go"
    env = {"GO": str(go), "LINGER": "30", "PATH": "/usr/bin:/bin"}
    split, flood = (subprocess.Popen([sys.executable, str(RAW), str(port), *mode], env=env,
                                     stdout=subprocess.PIPE, text=True)
                    for mode in (["split"], ["flood", "8000"]))
    procs += [split, flood]
    agent = start_agent("attach", "-v", "--pid", str(server.pid), "--pid", str(split.pid),
                        "--pid", str(flood.pid))
    base = f"http://127.0.0.1:{port}"
    for args in ([f"{base}/big.bin"], [f"{base}/missing?x=1"],
                 ["--data-binary", f"@{body}", f"{base}/small.txt?up=1"]):
        subprocess.run([need("curl"), "-sS", "-o", "/dev/null", "--http2-prior-knowledge",
                        *args], check=True, timeout=30)
    go.touch()
    assert split.stdout.readline() == "done\n" and flood.stdout.readline() == "done\n"
    srv = settle(receiver, server.pid, 8)
    split_spans = of_pid(receiver, split.pid, 3)
    flood_spans = of_pid(receiver, flood.pid, 2)
    rc, _, err = agent.stop()
    assert rc == 0, err

    def view(spans: list) -> list:
        return [(s.name, A(s)["url.path"], A(s).get("url.query"),
                 A(s)["http.response.status_code"]) for s in spans]

    curl_spans = [s for s in srv if s.start_time_unix_nano < min(
        x.start_time_unix_nano for x in split_spans + flood_spans)]
    assert view(curl_spans) == [("GET", "/big.bin", None, 200), ("GET", "/missing", "x=1", 404),
                                ("POST", "/small.txt", "up=1", 200)]
    assert A(curl_spans[0])["http.response.body.size"] == 100_000
    assert A(curl_spans[2])["http.request.body.size"] == 60_000
    assert view(split_spans) == [("GET", "/small.txt", None, 200), ("GET", "/big.bin", "a=1", 200),
                                 ("GET", "/small.txt", "b=2", 200)]
    assert A(split_spans[1])["http.response.body.size"] == 100_000
    assert all(A(s)["server.address"] == "127.0.0.1" for s in split_spans)
    exact = curl_spans + split_spans + flood_spans[:1] + [
        s for s in srv if A(s).get("url.query") in ("a=1", "b=2")]
    for s in exact:
        assert "ebpf_tracer.unknown_fields" not in A(s) and "ebpf_tracer.partial" not in A(s)
    # The flood's GET after it: exact, or its unknown fields named; never wrong.
    after = [s for s in srv + flood_spans if A(s).get("url.query") == "after=flood"]
    assert len(after) == 2, view(srv + flood_spans)
    for s in after:
        assert A(s)["url.path"] == "/small.txt" and A(s)["http.response.status_code"] == 200
        if "server.address" in A(s):
            assert A(s)["server.address"] == "127.0.0.1"
    assert len(srv) == 8
    stats = final_stats(err)
    assert stats["kernel_h2_walks_lost"] >= 1  # the flood's write
    assert stats["kernel_h2_bytes_skipped"] > 200_000
    assert stats["parse_failures_http2"] == 0 and stats["conn_unparseable"] == 0
