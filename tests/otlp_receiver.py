"""A real OTLP trace receiver for tests: gRPC and HTTP/protobuf on 127.0.0.1.

    with OtlpReceiver() as rx:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": rx.http_endpoint}
        ...
        spans = rx.wait_for(lambda s: s.name == "GET /", timeout=10)

It decodes what arrives exactly as a collector would (gzip, OTLP/JSON
included), keeps every span with its resource, and records each request's
headers so tests can check what was sent. ``fail_next`` makes it answer with
errors for a while (optionally with a google.rpc.RetryInfo delay), to exercise
the exporters' retries against a real server. Given fixed ports, a stopped
receiver can be started again where the tracer expects it (a backend restart).
"""

from __future__ import annotations

import base64
import gzip
import http.server
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import json_format
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

LISTEN_HOST = "127.0.0.1"  # never listen beyond loopback


@dataclass
class ReceivedSpan:
    name: str
    kind: int
    trace_id: str  # lowercase hex
    span_id: str
    parent_span_id: str  # "" for a root span
    start_time_unix_nano: int
    end_time_unix_nano: int
    attributes: dict[str, Any]
    status_code: int
    status_message: str
    resource: dict[str, Any]
    scope_name: str = ""
    scope_version: str = ""
    transport: str = ""  # "grpc" or "http"

    @property
    def start_time_ns(self) -> int:
        return self.start_time_unix_nano

    @property
    def end_time_ns(self) -> int:
        return self.end_time_unix_nano

    @property
    def duration_ns(self) -> int:
        return self.end_time_unix_nano - self.start_time_unix_nano


@dataclass
class ReceivedRequest:
    transport: str  # "grpc" or "http"
    headers: dict[str, str]  # lowercase names
    compressed: bool  # HTTP Content-Encoding: gzip (always False for gRPC: see below)
    span_count: int
    path: str = ""
    status: int = 200  # what we answered: HTTP status, or the gRPC code value (0 = OK)
    peer: str = ""  # client address:port, to tell whether a connection was reused


@dataclass
class _Failure:
    remaining: int
    http_status: int
    grpc_code: grpc.StatusCode
    retry_after: str | None = None
    retry_delay_s: float | None = None  # google.rpc.RetryInfo in the error status
    message: str = "injected failure"

    def status(self, code: int) -> status_pb2.Status:
        """The google.rpc.Status a collector sends with the error."""
        status = status_pb2.Status(code=code, message=self.message)
        if self.retry_delay_s is not None:
            info = error_details_pb2.RetryInfo()
            info.retry_delay.FromNanoseconds(int(self.retry_delay_s * 1e9))
            status.details.add().Pack(info)
        return status


def parse_json_request(body: bytes) -> trace_service_pb2.ExportTraceServiceRequest:
    """OTLP/JSON → protobuf. OTLP/JSON ids are hex where protobuf's JSON mapping
    expects base64, so they are converted first."""
    data = json.loads(body)
    for resource_spans in data.get("resourceSpans", []):
        for scope_spans in resource_spans.get("scopeSpans", []):
            for span in scope_spans.get("spans", []):
                for key in ("traceId", "spanId", "parentSpanId"):
                    if span.get(key):
                        span[key] = base64.b64encode(bytes.fromhex(span[key])).decode()
    return json_format.ParseDict(data, trace_service_pb2.ExportTraceServiceRequest())


def any_value(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, which)


def _attrs(key_values: Any) -> dict[str, Any]:
    return {kv.key: any_value(kv.value) for kv in key_values}


class OtlpReceiver:
    """gRPC + HTTP OTLP trace receiver on ephemeral loopback ports. Thread-safe."""

    def __init__(
        self,
        *,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        grpc_port: int = 0,
        http_port: int = 0,
    ) -> None:
        """With ``tls_cert``/``tls_key`` (PEM files) both servers speak TLS and the
        endpoints are https:// URLs. Ports default to ephemeral ones; ``start()``
        after ``stop()`` listens on the same ports again."""
        self._tls = (tls_cert, tls_key) if tls_cert and tls_key else None
        self._cond = threading.Condition()
        self._spans: list[ReceivedSpan] = []
        self._requests: list[ReceivedRequest] = []
        self._failure: _Failure | None = None
        self._partial: tuple[int, str] | None = None
        self._grpc_server: grpc.Server | None = None
        self._http_server: http.server.ThreadingHTTPServer | None = None
        self._http_thread: threading.Thread | None = None
        self._http_conns: set[socket.socket] = set()  # open keep-alive connections
        self._http_busy = 0  # HTTP requests being handled
        self._stopping = False
        self.grpc_port = grpc_port
        self.http_port = http_port

    # --- lifecycle -----------------------------------------------------------

    def start(self) -> OtlpReceiver:
        self._stopping = False
        self._grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(
            _GrpcServicer(self), self._grpc_server
        )
        address = f"{LISTEN_HOST}:{self.grpc_port}"
        if self._tls is None:
            self.grpc_port = self._grpc_server.add_insecure_port(address)
        else:
            cert, key = (open(path, "rb").read() for path in self._tls)
            credentials = grpc.ssl_server_credentials([(key, cert)])
            self.grpc_port = self._grpc_server.add_secure_port(address, credentials)
        self._grpc_server.start()

        handler = type("Handler", (_HttpHandler,), {"receiver": self})
        self._http_server = http.server.ThreadingHTTPServer((LISTEN_HOST, self.http_port),
                                                            handler)
        self._http_server.daemon_threads = True
        if self._tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*self._tls)
            self._http_server.socket = context.wrap_socket(
                self._http_server.socket, server_side=True
            )
        self.http_port = self._http_server.server_address[1]
        self._http_thread = threading.Thread(
            target=self._http_server.serve_forever,
            kwargs={"poll_interval": 0.05},  # stop() waits up to one poll interval
            name="otlp-receiver-http",
            daemon=True,
        )
        self._http_thread.start()
        return self

    def stop(self) -> None:
        """Stop like a collector shutting down gracefully: requests already being
        handled are answered (so nothing recorded goes unacknowledged), later ones
        are refused, and kept-alive connections are closed."""
        with self._cond:
            self._stopping = True
        if self._grpc_server is not None:
            self._grpc_server.stop(grace=2.0).wait(5)
            self._grpc_server = None
        if self._http_server is not None:
            self._http_server.shutdown()
            self._http_server.server_close()
            self._http_server = None
            with self._cond:
                self._cond.wait_for(lambda: self._http_busy == 0, timeout=5)
                conns, self._http_conns = list(self._http_conns), set()
            for conn in conns:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def grpc_endpoint(self) -> str:
        return f"{self._scheme}://{LISTEN_HOST}:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        return f"{self._scheme}://{LISTEN_HOST}:{self.http_port}"

    @property
    def _scheme(self) -> str:
        return "http" if self._tls is None else "https"

    # --- what arrived --------------------------------------------------------

    @property
    def spans(self) -> list[ReceivedSpan]:
        with self._cond:
            return list(self._spans)

    @property
    def requests(self) -> list[ReceivedRequest]:
        with self._cond:
            return list(self._requests)

    def clear(self) -> None:
        with self._cond:
            self._spans.clear()
            self._requests.clear()

    def wait_for(
        self,
        predicate_or_count: Callable[[ReceivedSpan], bool] | int,
        timeout: float = 10.0,
        *,
        count: int = 1,
    ) -> list[ReceivedSpan]:
        """Wait until ``predicate_or_count`` spans have arrived (an int), or until
        ``count`` spans match the predicate; return the spans (all, or the matches).

        Raises AssertionError listing what did arrive when ``timeout`` passes.
        """
        if isinstance(predicate_or_count, int):
            want = predicate_or_count

            def select(spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
                return spans
        else:
            want = count
            predicate = predicate_or_count

            def select(spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
                return [s for s in spans if predicate(s)]

        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = select(list(self._spans))
                if len(found) >= want:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    got = ", ".join(f"{s.name!r}" for s in self._spans[:20]) or "nothing"
                    raise AssertionError(
                        f"OTLP receiver: wanted {want} matching span(s) within {timeout}s, "
                        f"{len(found)} matched; received {len(self._spans)}: {got}"
                    )
                self._cond.wait(remaining)

    # --- fault injection -----------------------------------------------------

    def fail_next(
        self,
        times: int,
        *,
        http_status: int = 503,
        grpc_code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE,
        retry_after: str | None = None,
        retry_delay_s: float | None = None,
        message: str = "injected failure",
    ) -> None:
        """Answer the next ``times`` export requests (either transport) with an error.

        ``retry_after`` is an HTTP Retry-After header; ``retry_delay_s`` puts a
        google.rpc.RetryInfo in the error's google.rpc.Status (gRPC trailers, or
        the HTTP body); ``message`` is the status message."""
        with self._cond:
            self._failure = _Failure(times, http_status, grpc_code, retry_after, retry_delay_s,
                                     message)

    def respond_partial_success(self, rejected_spans: int, error_message: str = "") -> None:
        """Accept requests but report ``rejected_spans`` refused (OTLP partial success)."""
        with self._cond:
            self._partial = (rejected_spans, error_message) if rejected_spans or error_message \
                else None

    def _response(self) -> trace_service_pb2.ExportTraceServiceResponse:
        response = trace_service_pb2.ExportTraceServiceResponse()
        with self._cond:
            partial = self._partial
        if partial is not None:
            response.partial_success.rejected_spans = partial[0]
            response.partial_success.error_message = partial[1]
        return response

    def _take_failure(self) -> _Failure | None:
        with self._cond:
            failure = self._failure
            if failure is None or failure.remaining <= 0:
                return None
            failure.remaining -= 1
            return failure

    # --- recording -----------------------------------------------------------

    def _record(
        self,
        request: trace_service_pb2.ExportTraceServiceRequest,
        meta: ReceivedRequest,
    ) -> None:
        received: list[ReceivedSpan] = []
        for resource_spans in request.resource_spans:
            resource = _attrs(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    received.append(
                        ReceivedSpan(
                            name=span.name,
                            kind=span.kind,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            start_time_unix_nano=span.start_time_unix_nano,
                            end_time_unix_nano=span.end_time_unix_nano,
                            attributes=_attrs(span.attributes),
                            status_code=span.status.code,
                            status_message=span.status.message,
                            resource=dict(resource),
                            scope_name=scope_spans.scope.name,
                            scope_version=scope_spans.scope.version,
                            transport=meta.transport,
                        )
                    )
        meta.span_count = len(received)
        with self._cond:
            self._spans.extend(received)
            self._requests.append(meta)
            self._cond.notify_all()

    def _record_rejected(self, meta: ReceivedRequest) -> None:
        with self._cond:
            self._requests.append(meta)
            self._cond.notify_all()


class _GrpcServicer(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, receiver: OtlpReceiver) -> None:
        self.receiver = receiver

    def Export(self, request, context):  # noqa: N802 - gRPC method name
        # grpcio decompresses transparently and does not expose grpc-encoding,
        # so `compressed` is always False here.
        headers = {k.lower(): v for k, v in context.invocation_metadata() if isinstance(v, str)}
        meta = ReceivedRequest("grpc", headers, False, 0, status=0, peer=context.peer())
        failure = self.receiver._take_failure()
        if failure is not None:
            meta.status = failure.grpc_code.value[0]
            self.receiver._record_rejected(meta)
            status = failure.status(meta.status)
            context.set_trailing_metadata(
                (("grpc-status-details-bin", status.SerializeToString()),))
            context.abort(failure.grpc_code, failure.message)
        self.receiver._record(request, meta)
        return self.receiver._response()


class _HttpHandler(http.server.BaseHTTPRequestHandler):
    receiver: OtlpReceiver
    protocol_version = "HTTP/1.1"  # keep-alive, like a real collector

    def setup(self) -> None:
        super().setup()
        with self.receiver._cond:
            self.receiver._http_conns.add(self.connection)

    def finish(self) -> None:
        with self.receiver._cond:
            self.receiver._http_conns.discard(self.connection)
        super().finish()

    def do_POST(self) -> None:  # noqa: N802 - http.server naming
        receiver = self.receiver
        with receiver._cond:
            if receiver._stopping:
                self.close_connection = True  # refused unread: the client retries
                return
            receiver._http_busy += 1
        try:
            self._post()
        finally:
            with receiver._cond:
                receiver._http_busy -= 1
                receiver._cond.notify_all()

    def _post(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        headers = {k.lower(): v for k, v in self.headers.items()}
        compressed = headers.get("content-encoding", "").lower() == "gzip"
        peer = f"{self.client_address[0]}:{self.client_address[1]}"
        meta = ReceivedRequest("http", headers, compressed, 0, path=self.path, peer=peer)

        if self.path.split("?", 1)[0] != "/v1/traces":
            meta.status = 404
            self.receiver._record_rejected(meta)
            return self._reply(404, b"not found", "text/plain")
        failure = self.receiver._take_failure()
        content_type = headers.get("content-type", "")
        is_json = content_type.startswith("application/json")
        if failure is not None:
            meta.status = failure.http_status
            self.receiver._record_rejected(meta)
            extra = {"Retry-After": failure.retry_after} if failure.retry_after else {}
            # OTLP/HTTP: the error body is a google.rpc.Status in the request's encoding.
            status = failure.status(failure.http_status)
            if is_json:
                body = json_format.MessageToJson(status).encode()
                return self._reply(failure.http_status, body, "application/json", extra)
            return self._reply(failure.http_status, status.SerializeToString(),
                               "application/x-protobuf", extra)
        if "protobuf" not in content_type and not is_json:
            meta.status = 415
            self.receiver._record_rejected(meta)
            return self._reply(415, b"only application/x-protobuf or application/json",
                               "text/plain")
        try:
            raw = gzip.decompress(body) if compressed else body
            if is_json:
                request = parse_json_request(raw)
            else:
                request = trace_service_pb2.ExportTraceServiceRequest()
                request.ParseFromString(raw)
        except Exception as exc:  # noqa: BLE001 - any garbage is the client's fault
            meta.status = 400
            self.receiver._record_rejected(meta)
            return self._reply(400, f"bad request: {exc}".encode(), "text/plain")
        self.receiver._record(request, meta)
        response = self.receiver._response()
        if is_json:
            self._reply(200, json_format.MessageToJson(response).encode(), "application/json")
        else:
            self._reply(200, response.SerializeToString(), "application/x-protobuf")

    def _reply(
        self, status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # keep test output clean
