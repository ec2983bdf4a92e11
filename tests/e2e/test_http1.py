"""HTTP/1 end to end: real servers and clients, the real agent, a real receiver."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.e2e.conftest import TRACER, curl, final_stats, need

SERVER, CLIENT = 2, 3


def A(span) -> dict:  # noqa: N802 - short accessor used everywhere below
    return span.attributes


def of_pid(receiver, pid: int, count: int, timeout: float = 20.0) -> list:
    """Wait until `count` spans from process `pid` arrived; return all of them."""
    def mine():
        return [s for s in receiver.spans if s.resource.get("process.pid") == pid]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(mine()) < count:
        time.sleep(0.05)
    return sorted(mine(), key=lambda s: s.start_time_unix_nano)


def settle(receiver, pid: int, count: int) -> list:
    """Spans of `pid` once `count` arrived and nothing more came for a moment."""
    of_pid(receiver, pid, count)
    time.sleep(1.0)
    return of_pid(receiver, pid, count)


def test_python_server_attach(start_agent, receiver, python_server):
    srv, port = python_server
    agent = start_agent("attach", "--pid", str(srv.pid))
    assert curl(f"http://127.0.0.1:{port}/hello.txt").stdout.strip() == "200"
    assert curl(f"http://127.0.0.1:{port}/nope?x=1").stdout.strip() == "404"
    rc, _, err = agent.stop()
    assert rc == 0, err
    spans = settle(receiver, srv.pid, 2)
    assert len(spans) == 2, [s.name for s in spans]
    ok, missing = spans
    assert ok.kind == SERVER and ok.name == "GET"
    assert A(ok)["http.request.method"] == "GET"
    assert A(ok)["url.path"] == "/hello.txt"
    assert A(ok)["http.response.status_code"] == 200
    assert A(ok)["server.port"] == port
    assert A(ok)["client.address"] == "127.0.0.1"
    assert A(ok)["network.peer.address"] == "127.0.0.1"
    assert A(ok)["http.response.body.size"] == len("hello world\n")
    assert A(ok)["user_agent.original"].startswith("curl/")
    assert A(missing)["url.path"] == "/nope" and A(missing)["url.query"] == "x=1"
    assert A(missing)["http.response.status_code"] == 404
    assert missing.status_code == 0, "4xx is not an error on the server side"
    assert ok.resource["service.name"].startswith("python")
    assert ok.resource["process.pid"] == srv.pid
    assert ok.end_time_unix_nano > ok.start_time_unix_nano
    assert len(ok.trace_id) == 32 and ok.trace_id != "0" * 32


def test_nginx_keepalive_sendfile_and_errors(start_agent, receiver, nginx_server):
    srv, port = nginx_server
    agent = start_agent("attach", "--pid", str(srv.pid))  # the worker is a child
    base = f"http://127.0.0.1:{port}"
    # One curl, one connection, four requests (keep-alive).
    out = curl(f"{base}/index.html", f"{base}/big.bin", f"{base}/boom", f"{base}/created")
    assert out.stdout.split() == ["200", "200", "503", "201"]
    spans = settle(receiver, _nginx_worker(srv.pid), 4)
    rc, _, err = agent.stop()
    assert rc == 0, err
    assert [A(s)["url.path"] for s in spans] == ["/index.html", "/big.bin", "/boom", "/created"]
    assert [A(s)["http.response.status_code"] for s in spans] == [200, 200, 503, 201]
    assert A(spans[1])["http.response.body.size"] == 100_000  # sent with sendfile
    assert A(spans[0])["http.response.body.size"] == len("<h1>hello</h1>\n" * 20)
    boom = spans[2]
    assert boom.status_code == 2 and A(boom)["error.type"] == "503"
    assert len({A(s)["client.port"] for s in spans}) == 1, "one keep-alive connection"
    assert all(s.resource["service.name"] == "nginx" for s in spans)


def _nginx_worker(master: int) -> int:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = open(f"/proc/{entry}/stat").read()
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[1]) == master:
                    return int(entry)
        time.sleep(0.1)
    raise AssertionError("no nginx worker")


def test_nginx_pipelined_requests(start_agent, receiver, nginx_server):
    srv, port = nginx_server
    worker = _nginx_worker(srv.pid)
    agent = start_agent("attach", "--pid", str(srv.pid))
    reqs = b"".join(
        f"GET /{p} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
        for p in ("index.html", "created", "missing")
    ) + b"GET /boom HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(reqs)  # one write: the server reads all four at once
        got = b""
        while chunk := s.recv(65536):
            got += chunk
    assert got.count(b"HTTP/1.1 ") == 4
    spans = settle(receiver, worker, 4)
    agent.stop()
    assert [A(s)["url.path"] for s in spans] == ["/index.html", "/created", "/missing", "/boom"]
    assert [A(s)["http.response.status_code"] for s in spans] == [200, 201, 404, 503]


def test_node_server_post_and_chunked(start_agent, receiver, node_server):
    srv, port = node_server
    agent = start_agent("attach", "--pid", str(srv.pid))
    base = f"http://127.0.0.1:{port}"
    assert curl("-X", "POST", "-d", "x" * 300, f"{base}/orders").stdout.strip() == "200"
    assert curl(f"{base}/chunked").stdout.strip() == "200"
    assert curl(f"{base}/missing").stdout.strip() == "404"
    spans = settle(receiver, srv.pid, 3)
    agent.stop()
    assert [s.name for s in spans] == ["POST", "GET", "GET"]
    post, chunked, missing = spans
    assert A(post)["http.request.body.size"] == 300
    assert A(chunked)["http.response.body.size"] == len("part one\npart two\n")
    assert A(missing)["http.response.status_code"] == 404
    # libuv accepts with no sockaddr: the peer comes from sock_diag.
    assert A(post)["client.address"] == "127.0.0.1"
    assert A(post)["server.port"] == port
    assert post.resource["service.name"] == "node"


def test_large_bodies_are_framed_exactly(start_agent, receiver, node_server, tmp):
    """Bodies far beyond the copy size: the copied tail of each syscall keeps
    chunked framing exact, and Content-Length bodies are skipped exactly."""
    srv, port = node_server
    agent = start_agent("attach", "--pid", str(srv.pid))
    base = f"http://127.0.0.1:{port}"
    body = tmp / "body"
    body.write_bytes(b"y" * 200_000)
    out = curl("-X", "POST", "--data-binary", f"@{body}", f"{base}/upload",
               f"{base}/bigchunked", f"{base}/missing")
    assert out.stdout.split() == ["200", "200", "404"]
    spans = settle(receiver, srv.pid, 3)
    agent.stop()
    assert [A(s)["url.path"] for s in spans] == ["/upload", "/bigchunked", "/missing"]
    upload, big, missing = spans
    assert A(upload)["http.request.body.size"] == 200_000
    assert A(big)["http.response.body.size"] == 100_000
    assert all("ebpf_tracer.partial" not in A(s) for s in spans), [A(s) for s in spans]


def test_exec_curl_client_spans_and_exit_code(start_agent, receiver, python_server, otlp_env,
                                              tmp):
    _, port = python_server
    url = f"http://127.0.0.1:{port}/hello.txt?lang=en"
    ready = tmp / "ready"
    p = subprocess.run(
        [str(TRACER), "exec", "--ready-file", str(ready), "--", need("curl"), "-s", url],
        env=otlp_env, capture_output=True, text=True, timeout=120,
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout == "hello world\n", "the command's stdout passes through"
    spans = receiver.wait_for(lambda s: s.resource.get("service.name") == "curl", timeout=10)
    assert len(spans) == 1
    s = spans[0]
    assert s.kind == CLIENT and s.name == "GET"
    assert A(s)["url.full"] == url
    assert A(s)["server.address"] == "127.0.0.1" and A(s)["server.port"] == port
    assert A(s)["http.response.status_code"] == 200
    assert A(s)["network.peer.port"] == port


def test_exec_passes_exit_code_and_output(otlp_env, tmp):
    # The command also reports its CPU policy and the agent's (its parent's) threads':
    # the agent runs SCHED_BATCH (3) so it never preempts what it traces; the command
    # gets the policy the agent was started with (0, SCHED_OTHER), not the agent's.
    script = ("echo out; echo err >&2; read x; echo $x; "
              "cat /proc/$$/stat /proc/$PPID/task/*/stat | sed 's/.*) //' "
              "| awk '{print \"policy\", $39}' | sort | uniq -c; "
              "exit 7")
    p = subprocess.run(
        [str(TRACER), "exec", "--", "sh", "-c", script],
        env=otlp_env, input="typed\n", capture_output=True, text=True, timeout=120,
    )
    assert p.returncode == 7, p.stderr
    out = p.stdout.splitlines()
    assert out[:2] == ["out", "typed"]
    assert "err" in p.stderr
    counts = {line.split()[-1]: int(line.split()[0]) for line in out[2:]}
    assert counts.get("0") == 1, p.stdout  # the command itself
    assert counts.get("3", 0) >= 2, p.stdout  # the agent: poll loop and export thread


def test_client_error_status_and_sigterm_flush(start_agent, receiver, python_server, procs,
                                               tmp):
    """A traced client sees a 404 as an error; SIGTERM right after still delivers it."""
    _, port = python_server
    go = tmp / "go"
    code = ("import os,time,urllib.request as u\n"
            f"while not os.path.exists({str(go)!r}): time.sleep(0.01)\n"
            "try:\n"
            f"    u.urlopen('http://127.0.0.1:{port}/absent')\n"
            "except Exception: pass\n"
            "print('done', flush=True)\n"
            "time.sleep(60)\n")
    client = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    procs.append(client)
    agent = start_agent("attach", "--pid", str(client.pid))
    go.touch()
    assert client.stdout.readline() == "done\n"
    rc, _, err = agent.stop()  # at once: no waiting for the batch timer
    assert rc == 0, err
    spans = of_pid(receiver, client.pid, 1, timeout=5)
    assert len(spans) == 1
    s = spans[0]
    assert s.kind == CLIENT and A(s)["http.response.status_code"] == 404
    assert s.status_code == 2 and A(s)["error.type"] == "404"
    assert A(s)["url.full"] == f"http://127.0.0.1:{port}/absent"


def test_connection_opened_before_the_tracer(start_agent, receiver, nginx_server):
    import http.client

    srv, port = nginx_server
    worker = _nginx_worker(srv.pid)
    conn = http.client.HTTPConnection("127.0.0.1", port)
    conn.request("GET", "/index.html")
    conn.getresponse().read()  # before tracing: not seen
    agent = start_agent("attach", "--pid", str(srv.pid))
    for path in ("/created", "/index.html"):
        conn.request("GET", path)
        conn.getresponse().read()
    conn.close()
    spans = settle(receiver, worker, 2)
    agent.stop()
    assert [A(s)["url.path"] for s in spans] == ["/created", "/index.html"]
    assert A(spans[0])["server.port"] == port


BLOCKING_SERVER = r"""
import socket, sys, threading
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 0))
srv.listen()
print(srv.getsockname()[1], flush=True)
def serve(c):
    while True:
        req = c.recv(65536)  # blocked here between requests
        if not req:
            return c.close()
        body = req.split(b" ", 2)[1]
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
while True:
    c, _ = srv.accept()  # a thread-per-connection server idles in accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""


def test_syscalls_blocked_when_the_tracer_attaches_are_followed(start_agent, receiver, procs):
    """An idle server is inside accept() (its next connection) and recv() (a kept-alive
    one) when we attach: neither entry was seen, yet both requests are traced, and
    the accepted connection is known from its accept (its peer from the syscall)."""
    import http.client

    srv = subprocess.Popen([sys.executable, "-c", BLOCKING_SERVER], stdout=subprocess.PIPE,
                           text=True)
    procs.append(srv)
    port = int(srv.stdout.readline())
    kept = http.client.HTTPConnection("127.0.0.1", port)
    kept.request("GET", "/before")
    assert kept.getresponse().read() == b"/before"  # before tracing: not seen
    time.sleep(0.2)  # both threads back in their syscalls
    agent = start_agent("attach", "--pid", str(srv.pid))
    kept.request("GET", "/kept")
    assert kept.getresponse().read() == b"/kept"
    kept_port = kept.sock.getsockname()[1]
    new = http.client.HTTPConnection("127.0.0.1", port)
    new.request("GET", "/new")
    assert new.getresponse().read() == b"/new"
    new_port = new.sock.getsockname()[1]
    spans = settle(receiver, srv.pid, 2)
    new.close()
    kept.close()
    rc, _, err = agent.stop()
    assert rc == 0, err
    by_path = {A(s)["url.path"]: s for s in spans}
    assert sorted(by_path) == ["/kept", "/new"], [s.name for s in spans]
    assert A(by_path["/new"])["client.port"] == new_port
    assert A(by_path["/kept"])["client.port"] == kept_port  # resolved from the socket
    assert A(by_path["/new"])["http.response.status_code"] == 200
    stats = final_stats(err)
    assert stats["conn_joined_existing"] == 1, stats  # only the kept-alive one


def test_wrk_completeness(start_agent, receiver, nginx_server, tmp):
    srv, port = nginx_server
    worker = _nginx_worker(srv.pid)
    agent = start_agent("attach", "--pid", str(srv.pid))
    # About 2k requests/s: each of 4 connections waits 2 ms between requests.
    lua = tmp / "pace.lua"
    lua.write_text("function delay() return 2 end\n")
    out = subprocess.run([need("wrk"), "-t1", "-c4", "-d3s", "-s", str(lua),
                          f"http://127.0.0.1:{port}/created"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    n = int(re.search(r"(\d+) requests in", out).group(1))
    assert n > 100
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(of_pid(receiver, worker, 0, 0)) < n:
        time.sleep(0.2)
    rc, _, err = agent.stop()
    assert rc == 0, err
    spans = of_pid(receiver, worker, 0, 0)
    # wrk counts completed responses; up to one in-flight request per
    # connection can be served but not counted when wrk stops.
    assert n <= len(spans) <= n + 4, (n, len(spans))
    assert all(A(s)["http.response.status_code"] == 201 for s in spans)


def test_hostile_traffic_does_not_stop_tracing(start_agent, receiver, python_server):
    srv, port = python_server
    agent = start_agent("attach", "--pid", str(srv.pid))
    payloads = [
        b"\x00\xff garbage \r\n\r\n" * 100,
        b"GET / HTTP/1.1\r\n" + b"X-Big: " + b"a" * 70_000 + b"\r\n\r\n",
        b"GET /half HTTP/1.1\r\nHost: x\r\nContent-Le",
        b"POST / HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
    ]
    for p in payloads:
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(p)
            s.shutdown(socket.SHUT_WR)
            s.settimeout(5)
            try:
                while s.recv(65536):
                    pass
            except OSError:
                pass
    with socket.create_connection(("127.0.0.1", port)) as s:  # one byte at a time
        for b in b"GET /slow-bytes HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n":
            s.send(bytes([b]))
            time.sleep(0.001)
        while s.recv(65536):
            pass
    assert curl(f"http://127.0.0.1:{port}/hello.txt").stdout.strip() == "200"
    receiver.wait_for(lambda s: s.attributes.get("url.path") == "/hello.txt", timeout=20)
    assert agent.proc.poll() is None, "the agent is still running"
    rc, _, err = agent.stop()
    assert rc == 0, err
    assert "Traceback" not in err


def test_run_mode_traces_host_but_not_itself(start_agent, receiver, python_server, otlp_env):
    srv, port = python_server
    env = dict(otlp_env)
    env["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.http_endpoint
    env["OTEL_EXPORTER_OTLP_PROTOCOL"] = "http/protobuf"
    agent = start_agent("run", env=env)
    for _ in range(3):
        curl(f"http://127.0.0.1:{port}/hello.txt")
    time.sleep(2)  # several export batches go out meanwhile
    spans = settle(receiver, srv.pid, 3)
    rc, _, err = agent.stop()
    assert rc == 0, err
    assert len(spans) == 3
    agent_pid = agent.proc.pid
    assert not [s for s in receiver.spans if s.resource.get("process.pid") == agent_pid]
    exports = [s for s in receiver.spans if A(s).get("url.path") == "/v1/traces"]
    assert not exports, [(s.resource.get("process.pid"), A(s)) for s in exports[:3]]


def test_attach_unknown_pid_is_a_one_line_error():
    p = subprocess.run([str(TRACER), "attach", "--pid", "999999999"], capture_output=True,
                       text=True, timeout=30)
    assert p.returncode == 2
    assert "no process with pid 999999999" in p.stderr
    assert "Traceback" not in p.stderr


def test_check_says_this_machine_can_trace():
    p = subprocess.run([str(TRACER), "check"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "this machine can trace" in p.stdout
    assert "kernel headers" in p.stdout and "load eBPF programs" in p.stdout


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signals_exit_zero(start_agent, python_server, sig):
    srv, _ = python_server
    agent = start_agent("attach", "--pid", str(srv.pid))
    agent.proc.send_signal(sig)
    rc, _, err = agent.stop()
    assert rc == 0, err


def test_jsonl_and_console_exporters(python_server, tmp):
    """The local exporters, as a user runs them: jsonl to a file, console to stderr."""
    _, port = python_server
    url = f"http://127.0.0.1:{port}/hello.txt"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_EXPORTER_OTLP")}
    out = tmp / "spans.jsonl"
    p = subprocess.run([str(TRACER), "exec", "--exporter", "jsonl", "--output", str(out), "--",
                        need("curl"), "-s", "-o", "/dev/null", url],
                       env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    import json

    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 1
    span = lines[0]
    assert span["name"] == "GET" and span["kind"] == CLIENT
    assert len(span["traceId"]) == 32 and len(span["spanId"]) == 16
    attrs = {a["key"]: a["value"] for a in span["attributes"]}
    assert attrs["url.full"] == {"stringValue": url}
    assert attrs["http.response.status_code"] == {"intValue": "200"}

    # Default exporter without an OTLP endpoint: one readable line per span, on
    # stderr under `exec` (the command's stdout stays pipeable).
    p = subprocess.run([str(TRACER), "exec", "--", need("curl"), "-s", url],
                       env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout == "hello world\n"
    lines = [line for line in p.stderr.splitlines() if "CLIENT" in line]
    assert len(lines) == 1, p.stderr
    assert "curl CLIENT GET /hello.txt -> 200" in lines[0]


def test_exec_unknown_command_says_so(otlp_env):
    p = subprocess.run([str(TRACER), "exec", "--", "no-such-command-xyz"], env=otlp_env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 127
    assert "cannot run no-such-command-xyz" in p.stderr
    assert "Traceback" not in p.stderr


def test_attach_stops_when_the_process_exits(start_agent, procs):
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(2)"])
    procs.append(p)
    agent = start_agent("attach", "--pid", str(p.pid))
    agent.proc.wait(timeout=30)
    rc, _, err = agent.stop()
    assert rc == 0, err
    assert "every traced process has exited" in err


def test_not_root_gets_one_line_errors_and_fixes():
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    p = subprocess.run([*nobody, str(TRACER), "attach", "--pid", "1"], capture_output=True,
                       text=True, timeout=60, cwd="/")
    assert p.returncode == 1
    assert p.stderr.count("\n") == 1 and "must run as root" in p.stderr, p.stderr
    p = subprocess.run([*nobody, str(TRACER), "check"], capture_output=True, text=True,
                       timeout=60, cwd="/")
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr
    assert "FAIL privileges" in p.stdout and "fix: run as root" in p.stdout
    assert "this machine cannot trace yet" in p.stdout


def test_signal_while_loading_exits_cleanly(python_server):
    """SIGTERM during the BPF compile: no traceback, exit 0, nothing left attached."""
    srv, _ = python_server
    p = subprocess.Popen([str(TRACER), "attach", "-v", "--pid", str(srv.pid)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    for line in p.stderr:  # wait until the compile (~2 s) is under way
        seen.append(line)
        if "compiling the eBPF programs" in line:
            break
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=60)
    err = "".join(seen) + err
    assert p.returncode == 0, err
    assert "Traceback" not in err and "Aborted" not in err


WEBDAV_ETC = ("PROPFIND", "PROPPATCH", "MKCOL", "COPY", "MOVE", "LOCK", "UNLOCK", "REPORT",
              "SEARCH", "PURGE", "QUERY")


def test_new_connections_starting_with_other_methods_are_traced(receiver, python_server,
                                                               otlp_env):
    """The kernel decides a new connection's protocol from its first bytes: it knows
    every method the agent's parser trusts (WebDAV, PURGE, QUERY), not only the nine."""
    _, port = python_server
    url = f"http://127.0.0.1:{port}/dav/x.txt"
    script = "; ".join(f"curl -s -o /dev/null -X {m} {url}" for m in WEBDAV_ETC)
    p = subprocess.run([str(TRACER), "exec", "--", "sh", "-c", script],
                       env=otlp_env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    spans = receiver.wait_for(lambda s: s.kind == CLIENT, count=len(WEBDAV_ETC), timeout=15)
    spans.sort(key=lambda s: s.start_time_unix_nano)
    assert [s.attributes["http.request.method_original"] for s in spans] == list(WEBDAV_ETC)
    for s in spans:
        assert s.name == "HTTP" and s.attributes["http.request.method"] == "_OTHER"
        assert s.attributes["http.response.status_code"] == 501  # http.server: unsupported
        assert s.attributes["url.path"] == "/dav/x.txt"
    time.sleep(0.5)
    assert len(receiver.spans) == len(WEBDAV_ETC)
