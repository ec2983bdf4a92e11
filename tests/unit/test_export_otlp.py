"""OTLP/gRPC and OTLP/HTTP exporters against a real receiver on 127.0.0.1."""

from __future__ import annotations

import logging
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator

import grpc
import pytest

from ebpf_tracer import __version__
from ebpf_tracer.export import OtlpConfig
from ebpf_tracer.export.otlp_grpc import OtlpGrpcExporter
from ebpf_tracer.export.otlp_http import OtlpHttpExporter
from ebpf_tracer.export.retry import RetryPolicy
from ebpf_tracer.model import Resource, Span, SpanKind, StatusCode
from tests.certs import self_signed_cert
from tests.otlp_receiver import OtlpReceiver
from tests.proxy import LoopbackProxy

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


class CountingProxy(LoopbackProxy):
    """Forwards 127.0.0.1 TCP to ``port`` and counts client → server bytes."""

    def __init__(self, port: int) -> None:
        self.upstream_bytes = 0
        super().__init__(port)

    def watch_upstream(self) -> Callable[[bytes], None]:
        return self._count

    def _count(self, data: bytes) -> None:
        self.upstream_bytes += len(data)


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
        assert not exporter.export(sample_spans())
    exporter.shutdown()
    assert len(receiver.requests) == 1
    assert receiver.spans == []
    failures = [r for r in caplog.records if "failed after 1 attempt" in r.getMessage()]
    assert len(failures) == 1 and failures[0].exc_info is None  # one line, no traceback


def test_http_wrong_path_is_not_retried(receiver: OtlpReceiver) -> None:
    config = OtlpConfig.from_env(
        {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": receiver.http_endpoint + "/wrong"})
    exporter = OtlpHttpExporter(config, retry_policy=FAST)
    assert not exporter.export(sample_spans())
    exporter.shutdown()
    assert [r.status for r in receiver.requests] == [404]


@pytest.mark.parametrize("protocol", TRANSPORTS)
def test_retries_stop_at_the_export_timeout(receiver: OtlpReceiver, protocol: str) -> None:
    receiver.fail_next(10_000)
    policy = RetryPolicy(initial_backoff_s=0.05, max_backoff_s=0.1, max_attempts=10_000)
    exporter = exporter_for(receiver, protocol, policy, TIMEOUT="600")
    started = time.monotonic()
    assert not exporter.export(sample_spans())
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
        assert not exporter.export(sample_spans())
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
    assert [bool(r) for r in result] == [False]
    assert not exporter.export(sample_spans())  # after shutdown


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
    return self_signed_cert(openssl, tmp_path_factory.mktemp("tls"))


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
            assert not untrusting.export(sample_spans())
        untrusting.shutdown()
        assert len(rx.spans) == 2


# --- OTLP/JSON, RetryInfo, server messages, error codes, log rate --------------------


def test_http_json_round_trip_and_partial_success(receiver: OtlpReceiver) -> None:
    receiver.respond_partial_success(1, "one span too old")
    exporter = exporter_for(receiver, "http/json", COMPRESSION="gzip")
    try:
        outcome = exporter.export(sample_spans())
    finally:
        exporter.shutdown()
    assert outcome and outcome.rejected == 1 and exporter.rejected_spans == 1
    request = receiver.requests[0]
    assert request.headers["content-type"] == "application/json" and request.compressed
    server, client = sorted(receiver.wait_for(2, timeout=5), key=lambda s: s.kind)
    assert server.name == "GET /users/:id"
    assert server.trace_id == "0af7651916cd43dd8448eb211c80319c"
    assert server.span_id == "b7ad6b7169203331"
    assert server.parent_span_id == "00f067aa0ba902b7"
    assert server.start_time_unix_nano == 1_700_000_000_000_000_000
    assert server.attributes == {"http.request.method": "GET", "http.response.status_code": 500,
                                 "network.peer.port": 53422, "tls": False, "ratio": 0.5}
    assert (server.status_code, server.status_message) == (2, "internal error")
    assert server.resource == {"service.name": "nginx", "process.pid": 42}
    assert client.resource["service.name"] == "curl"


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf", "http/json"])
def test_retry_info_delay_is_honoured(receiver: OtlpReceiver, protocol: str) -> None:
    # gRPC: RESOURCE_EXHAUSTED is retried only because RetryInfo says so.
    receiver.fail_next(1, http_status=503, grpc_code=grpc.StatusCode.RESOURCE_EXHAUSTED,
                       retry_delay_s=0.8)
    exporter = exporter_for(receiver, protocol)
    started = time.monotonic()
    assert exporter.export(sample_spans())
    assert time.monotonic() - started >= 0.8
    exporter.shutdown()
    assert len(receiver.requests) == 2 and len(receiver.spans) == 2


def test_resource_exhausted_without_retry_info_is_not_retried(receiver: OtlpReceiver) -> None:
    receiver.fail_next(5, grpc_code=grpc.StatusCode.RESOURCE_EXHAUSTED)
    exporter = exporter_for(receiver, "grpc")
    outcome = exporter.export(sample_spans())
    exporter.shutdown()
    assert not outcome and not outcome.retryable and outcome.code == "RESOURCE_EXHAUSTED"
    assert len(receiver.requests) == 1


@pytest.mark.parametrize(
    ("protocol", "failure", "retried"),
    [("http/protobuf", {"http_status": 502}, True),
     ("http/protobuf", {"http_status": 504}, True),
     ("http/protobuf", {"http_status": 429}, True),
     ("http/protobuf", {"http_status": 403}, False),
     ("http/protobuf", {"http_status": 500}, False),
     ("grpc", {"grpc_code": grpc.StatusCode.DEADLINE_EXCEEDED}, True),
     ("grpc", {"grpc_code": grpc.StatusCode.ABORTED}, True),
     ("grpc", {"grpc_code": grpc.StatusCode.PERMISSION_DENIED}, False),
     ("grpc", {"grpc_code": grpc.StatusCode.UNIMPLEMENTED}, False)],
)
def test_each_code_retried_or_not(receiver: OtlpReceiver, protocol, failure, retried) -> None:
    receiver.fail_next(1, **failure)
    exporter = exporter_for(receiver, protocol)
    outcome = exporter.export(sample_spans())
    exporter.shutdown()
    assert bool(outcome) is retried
    assert len(receiver.requests) == (2 if retried else 1)
    code = str(failure.get("http_status") or failure["grpc_code"].name)
    assert exporter.errors_by_code == {code: 1}


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf", "http/json"])
def test_non_retryable_errors_log_the_server_message_once_per_interval(
    receiver: OtlpReceiver, protocol: str, caplog
) -> None:
    receiver.fail_next(3, http_status=401, grpc_code=grpc.StatusCode.UNAUTHENTICATED,
                       message="token expired for tenant blue")
    exporter = exporter_for(receiver, protocol)
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            assert not exporter.export(sample_spans())
    exporter.shutdown()
    lines = [r.getMessage() for r in caplog.records if "failed after" in r.getMessage()]
    assert len(lines) == 1, lines  # the same failure again within the interval: counted only
    assert "token expired for tenant blue" in lines[0]
    assert "not retryable" in lines[0]
    assert sum(exporter.errors_by_code.values()) == 3


def test_connection_refused_has_its_own_error_code() -> None:
    config = OtlpConfig.from_env({
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{closed_port()}",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "300",
    })
    exporter = OtlpHttpExporter(config, retry_policy=FAST)
    outcome = exporter.export(sample_spans())
    exporter.shutdown()
    assert not outcome and outcome.retryable and outcome.code == "connection_refused"
    assert exporter.errors_by_code["connection_refused"] >= 1


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_backend_restart_mid_traffic_loses_and_duplicates_nothing(protocol: str) -> None:
    """The real transports behind the batcher, against a receiver that is stopped
    (gracefully, as a collector shuts down) and started again on the same ports
    while spans keep coming."""
    from ebpf_tracer.export import BatchSpanProcessor
    from ebpf_tracer.export.retry import RetryPolicy as Policy

    rx = OtlpReceiver().start()
    # A generous timeout: an answer slower than it would be retried and duplicated
    # (at-least-once), which a loaded test machine must not provoke.
    exporter = exporter_for(rx, protocol, Policy(initial_backoff_s=0.05, max_backoff_s=0.2),
                            TIMEOUT="5000")
    processor = BatchSpanProcessor(exporter, max_export_batch_size=20, schedule_delay_s=0.05,
                                   hold_policy=Policy(initial_backoff_s=0.1, max_backoff_s=0.3))
    template = sample_spans()[0]
    sent = 0

    def produce(count: int) -> None:
        nonlocal sent
        for _ in range(count):
            span = Span(name=f"GET /{sent}", kind=SpanKind.SERVER, start_time_ns=sent + 1,
                        end_time_ns=sent + 2, resource=template.resource)
            processor.on_end(span)
            sent += 1
            time.sleep(0.005)

    try:
        produce(100)
        rx.wait_for(100, timeout=10)
        rx.stop()
        produce(300)  # ~1.5 s of traffic into a dead backend
        assert processor.pending > 0
        restarted = OtlpReceiver(grpc_port=rx.grpc_port, http_port=rx.http_port).start()
        try:
            produce(100)
            assert processor.force_flush(timeout_s=20)
            names = [s.name for s in rx.spans + restarted.spans]
        finally:
            restarted.stop()
    finally:
        processor.shutdown(timeout_s=2)
        rx.stop()
    assert sorted(names, key=lambda n: int(n[5:])) == [f"GET /{i}" for i in range(sent)]
    assert processor.stats.spans_dropped == {}
    assert processor.stats.spans_exported == sent == 500
