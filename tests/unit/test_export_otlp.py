"""OTLP/gRPC and OTLP/HTTP exporters against a real receiver on 127.0.0.1."""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator

import grpc
import pytest

from ebpf_tracer import __version__
from ebpf_tracer.export import OtlpConfig
from ebpf_tracer.export.otlp_grpc import OtlpGrpcExporter
from ebpf_tracer.export.otlp_http import OtlpHttpExporter
from ebpf_tracer.export.retry import RetryPolicy
from ebpf_tracer.model import Resource, Span, SpanKind, StatusCode
from tests.otlp_receiver import OtlpReceiver

FAST = RetryPolicy(initial_backoff_s=0.01, max_backoff_s=0.05, max_attempts=6)
NGINX = Resource.from_dict({"service.name": "nginx", "process.pid": 42})
CURL = Resource.from_dict({"service.name": "curl", "process.pid": 7})
TRANSPORTS = ["grpc", "http/protobuf"]


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as rx:
        yield rx


def exporter_for(rx: OtlpReceiver, protocol: str, policy: RetryPolicy = FAST, **env: str):
    endpoint = rx.grpc_endpoint if protocol == "grpc" else rx.http_endpoint
    config = OtlpConfig.from_env(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
         **{f"OTEL_EXPORTER_OTLP_{k}": v for k, v in env.items()}}
    )
    cls = OtlpGrpcExporter if protocol == "grpc" else OtlpHttpExporter
    return cls(config, retry_policy=policy)


def sample_spans() -> list[Span]:
    server = Span(
        name="GET /users/:id",
        kind=SpanKind.SERVER,
        start_time_ns=1_700_000_000_000_000_000,
        end_time_ns=1_700_000_000_002_000_000,
        resource=NGINX,
        attributes={"http.request.method": "GET", "http.response.status_code": 500,
                    "network.peer.port": 53422, "tls": False, "ratio": 0.5},
        status_code=StatusCode.ERROR,
        status_message="internal error",
        trace_id=bytes.fromhex("0af7651916cd43dd8448eb211c80319c"),
        span_id=bytes.fromhex("b7ad6b7169203331"),
        parent_span_id=bytes.fromhex("00f067aa0ba902b7"),
    )
    client = Span(name="GET", kind=SpanKind.CLIENT, start_time_ns=5, end_time_ns=6,
                  resource=CURL, attributes={"url.full": "http://x/"})
    return [server, client]


@pytest.mark.parametrize("protocol", TRANSPORTS)
def test_round_trip_keeps_every_field(receiver: OtlpReceiver, protocol: str) -> None:
    exporter = exporter_for(receiver, protocol)
    try:
        assert exporter.export(sample_spans())
    finally:
        exporter.shutdown()
    server, client = sorted(receiver.wait_for(2, timeout=5), key=lambda s: s.kind)
    assert server.name == "GET /users/:id"
    assert server.kind == SpanKind.SERVER
    assert server.trace_id == "0af7651916cd43dd8448eb211c80319c"
    assert server.span_id == "b7ad6b7169203331"
    assert server.parent_span_id == "00f067aa0ba902b7"
    assert (server.start_time_unix_nano, server.end_time_unix_nano) == (
        1_700_000_000_000_000_000, 1_700_000_000_002_000_000)
    assert server.duration_ns == 2_000_000
    assert server.attributes == {"http.request.method": "GET", "http.response.status_code": 500,
                                 "network.peer.port": 53422, "tls": False, "ratio": 0.5}
    assert (server.status_code, server.status_message) == (2, "internal error")
    assert server.resource == {"service.name": "nginx", "process.pid": 42}
    assert (server.scope_name, server.scope_version) == ("ebpf-tracer", __version__)
    assert client.resource["service.name"] == "curl"
    assert client.parent_span_id == ""
    assert len(receiver.requests) == 1 and receiver.requests[0].span_count == 2


@pytest.mark.parametrize("protocol", TRANSPORTS)
def test_headers_and_user_agent_are_sent(receiver: OtlpReceiver, protocol: str) -> None:
    exporter = exporter_for(receiver, protocol, HEADERS="api-key=s3cr%20et,X-Tenant=blue")
    assert exporter.export(sample_spans())
    exporter.shutdown()
    headers = receiver.requests[0].headers
    assert headers["api-key"] == "s3cr et"
    assert headers["x-tenant"] == "blue"
    assert headers["user-agent"].startswith(f"ebpf-tracer/{__version__}")


def test_http_gzip(receiver: OtlpReceiver) -> None:
    exporter = exporter_for(receiver, "http/protobuf", COMPRESSION="gzip")
    assert exporter.export(sample_spans())
    exporter.shutdown()
    request = receiver.requests[0]
    assert request.compressed and request.headers["content-encoding"] == "gzip"
    assert len(receiver.spans) == 2


def test_http_reuses_its_connection(receiver: OtlpReceiver) -> None:
    exporter = exporter_for(receiver, "http/protobuf")
    for _ in range(3):
        assert exporter.export(sample_spans())
    exporter.shutdown()
    peers = {r.peer for r in receiver.requests}
    assert len(receiver.requests) == 3 and len(peers) == 1


class CountingProxy:
    """Forwards 127.0.0.1 TCP to ``port`` and counts client → server bytes."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.upstream_bytes = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target))
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, count: bool) -> None:
        try:
            while data := src.recv(65536):
                if count:
                    self.upstream_bytes += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.listener.close()


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_grpc_gzip_shrinks_what_goes_on_the_wire(receiver: OtlpReceiver, compression) -> None:
    proxy = CountingProxy(receiver.grpc_port)
    config = OtlpConfig.from_env({
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{proxy.port}",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_EXPORTER_OTLP_COMPRESSION": compression,
    })
    exporter = OtlpGrpcExporter(config, retry_policy=FAST)
    span = sample_spans()[0]
    span.attributes["big"] = "a" * 200_000
    try:
        assert exporter.export([span])
    finally:
        exporter.shutdown()
        proxy.close()
    assert receiver.wait_for(1, timeout=5)[0].attributes["big"] == "a" * 200_000
    if compression == "gzip":
        assert proxy.upstream_bytes < 20_000
    else:
        assert proxy.upstream_bytes > 200_000


@pytest.mark.parametrize("protocol", TRANSPORTS)
def test_retries_unavailable_then_succeeds(receiver: OtlpReceiver, protocol: str) -> None:
    receiver.fail_next(2)  # HTTP 503 / gRPC UNAVAILABLE
    exporter = exporter_for(receiver, protocol)
    assert exporter.export(sample_spans())
    exporter.shutdown()
    statuses = [r.status for r in receiver.requests]
    if protocol == "grpc":
        assert statuses == [grpc.StatusCode.UNAVAILABLE.value[0]] * 2 + [0]
    else:
        assert statuses == [503, 503, 200]
    assert len(receiver.spans) == 2


def test_http_429_honours_retry_after(receiver: OtlpReceiver) -> None:
    receiver.fail_next(1, http_status=429, retry_after="1")
    exporter = exporter_for(receiver, "http/protobuf")
    started = time.monotonic()
    assert exporter.export(sample_spans())
    assert time.monotonic() - started >= 1.0
    exporter.shutdown()
    assert [r.status for r in receiver.requests] == [429, 200]


@pytest.mark.parametrize(
    ("protocol", "failure"),
    [("http/protobuf", {"http_status": 400}),
     ("http/protobuf", {"http_status": 401}),
     ("grpc", {"grpc_code": grpc.StatusCode.INVALID_ARGUMENT}),
     ("grpc", {"grpc_code": grpc.StatusCode.UNAUTHENTICATED})],
)
def test_no_retry_on_permanent_errors(receiver: OtlpReceiver, protocol, failure, caplog) -> None:
    receiver.fail_next(5, **failure)
    exporter = exporter_for(receiver, protocol)
    with caplog.at_level(logging.WARNING):
        assert exporter.export(sample_spans()) is False
    exporter.shutdown()
    assert len(receiver.requests) == 1
    assert receiver.spans == []
    failures = [r for r in caplog.records if "failed after 1 attempt" in r.getMessage()]
    assert len(failures) == 1 and failures[0].exc_info is None  # one line, no traceback


def test_http_wrong_path_is_not_retried(receiver: OtlpReceiver) -> None:
    config = OtlpConfig.from_env(
        {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": receiver.http_endpoint + "/wrong"})
    exporter = OtlpHttpExporter(config, retry_policy=FAST)
    assert exporter.export(sample_spans()) is False
    exporter.shutdown()
    assert [r.status for r in receiver.requests] == [404]


@pytest.mark.parametrize("protocol", TRANSPORTS)
def test_retries_stop_at_the_export_timeout(receiver: OtlpReceiver, protocol: str) -> None:
    receiver.fail_next(10_000)
    policy = RetryPolicy(initial_backoff_s=0.05, max_backoff_s=0.1, max_attempts=10_000)
    exporter = exporter_for(receiver, protocol, policy, TIMEOUT="600")
    started = time.monotonic()
    assert exporter.export(sample_spans()) is False
    assert time.monotonic() - started < 1.5
    assert len(receiver.requests) >= 3
    exporter.shutdown()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("protocol", TRANSPORTS)
def test_connection_refused_fails_within_the_timeout(protocol: str, caplog) -> None:
    config = OtlpConfig.from_env({
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{closed_port()}",
        "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
        "OTEL_EXPORTER_OTLP_TIMEOUT": "500",
    })
    exporter = (OtlpGrpcExporter if protocol == "grpc" else OtlpHttpExporter)(
        config, retry_policy=FAST)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING):
        assert exporter.export(sample_spans()) is False
    assert time.monotonic() - started < 2.0
    exporter.shutdown()
    [record] = [r for r in caplog.records if "export of 2 spans" in r.getMessage()]
    assert record.exc_info is None
    assert "\n" not in record.getMessage()


@pytest.mark.parametrize("protocol", TRANSPORTS)
def test_partial_success_is_counted(receiver: OtlpReceiver, protocol: str, caplog) -> None:
    receiver.respond_partial_success(1, "span too old")
    exporter = exporter_for(receiver, protocol)
    assert exporter.export(sample_spans())
    exporter.shutdown()
    assert exporter.rejected_spans == 1
    assert "span too old" in caplog.text


@pytest.mark.parametrize("protocol", TRANSPORTS)
def test_shutdown_cuts_a_backoff_short(receiver: OtlpReceiver, protocol: str) -> None:
    receiver.fail_next(10_000)
    slow = RetryPolicy(initial_backoff_s=10, max_backoff_s=10)
    exporter = exporter_for(receiver, protocol, slow, TIMEOUT="60000")
    result: list[bool] = []
    worker = threading.Thread(target=lambda: result.append(exporter.export(sample_spans())))
    worker.start()
    deadline = time.monotonic() + 5
    while not receiver.requests and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    exporter.shutdown()
    worker.join(5)
    assert time.monotonic() - started < 2.0
    assert result == [False]
    assert exporter.export(sample_spans()) is False  # after shutdown


class ClosingAfterOneReplyServer:
    """HTTP/1.1 server that answers one request per connection with keep-alive
    headers, then closes it: what a collector's idle timeout looks like."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                head, _, body = data.partition(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                while len(body) < length:
                    body += conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\n"
                             b"Content-Length: 0\r\n\r\n")
                time.sleep(0.05)

    def close(self) -> None:
        self.listener.close()


def test_http_reconnects_at_once_when_a_kept_alive_connection_went_stale() -> None:
    server = ClosingAfterOneReplyServer()
    config = OtlpConfig.from_env(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{server.port}"})
    exporter = OtlpHttpExporter(config, retry_policy=RetryPolicy(initial_backoff_s=5))
    try:
        assert exporter.export(sample_spans())
        time.sleep(0.2)  # the server has closed the idle connection by now
        started = time.monotonic()
        assert exporter.export(sample_spans())
        assert time.monotonic() - started < 1.0  # no backoff for a stale connection
        assert server.connections == 2
    finally:
        exporter.shutdown()
        server.close()


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory) -> tuple[str, str]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl command not found: cannot make a test certificate")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = str(directory / "cert.pem"), str(directory / "key.pem")
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", key, "-out", cert],
        check=True, capture_output=True,
    )
    return cert, key


@pytest.mark.parametrize("protocol", TRANSPORTS)
def test_tls_with_a_custom_certificate(self_signed, protocol: str, caplog) -> None:
    cert, key = self_signed
    with OtlpReceiver(tls_cert=cert, tls_key=key) as rx:
        assert rx.http_endpoint.startswith("https://")
        trusting = exporter_for(rx, protocol, CERTIFICATE=cert)
        assert trusting.export(sample_spans())
        trusting.shutdown()
        assert len(rx.spans) == 2

        # Without the CA the server is not trusted: the export fails, loudly.
        untrusting = exporter_for(rx, protocol, TIMEOUT="1000")
        with caplog.at_level(logging.WARNING):
            assert untrusting.export(sample_spans()) is False
        untrusting.shutdown()
        assert len(rx.spans) == 2
