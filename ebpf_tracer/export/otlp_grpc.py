"""OTLP/gRPC transport (grpcio): one long-lived channel, retries per retry.py."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from .. import __version__, cpusched
from ..model import Span
from .config import OtlpConfig
from .encoder import encode_request_bytes
from .errors import ExportConfigError
from .otlp_common import OtlpTransport, decode_status
from .retry import (
    DEFAULT_POLICY,
    RETRYABLE_GRPC_CODES,
    SUCCESS,
    Outcome,
    RetryPolicy,
)

USER_AGENT = f"ebpf-tracer/{__version__}"
# Where a server puts its google.rpc.Status (with RetryInfo) on an error.
_STATUS_DETAILS_KEY = "grpc-status-details-bin"
_EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


class OtlpGrpcExporter(OtlpTransport):
    """Sends spans to ``config.endpoint`` (host:port) with TraceService/Export."""

    name = "OTLP/gRPC"

    def __init__(self, config: OtlpConfig, *, retry_policy: RetryPolicy = DEFAULT_POLICY) -> None:
        super().__init__(config, retry_policy=retry_policy)
        self._metadata = tuple(config.headers.items()) or None
        gzip = config.compression == "gzip"
        self._compression = grpc.Compression.Gzip if gzip else grpc.Compression.NoCompression
        options = [
            ("grpc.primary_user_agent", USER_AGENT),
            # grpc's own reconnect backoff grows to 120s by default, and calls
            # fail fast meanwhile: cap it so export resumes soon after an outage.
            ("grpc.max_reconnect_backoff_ms", 5000),
        ]
        if config.insecure:
            self._channel = grpc.insecure_channel(
                config.endpoint, options=options, compression=self._compression
            )
        else:
            self._channel = grpc.secure_channel(
                config.endpoint,
                _credentials(config),
                options=options,
                compression=self._compression,
            )
        # The request is already protobuf bytes (encoder.py writes them by hand):
        # no request serializer, grpc sends bytes as they are.
        self._export = self._channel.unary_unary(
            _EXPORT_METHOD,
            request_serializer=None,
            response_deserializer=ExportTraceServiceResponse.FromString,
        )

    def export(self, spans: Sequence[Span]) -> Outcome:
        if not spans:
            return SUCCESS
        if self._stop.is_set():
            return Outcome(ok=False, detail="exporter shut down", code="shutdown")
        request = encode_request_bytes(spans, cpusched.give_way)

        def attempt(timeout_s: float) -> Outcome:
            try:
                response = self._export(
                    request,
                    timeout=timeout_s,
                    metadata=self._metadata,
                    compression=self._compression,
                )
            except grpc.RpcError as exc:
                return _failure(exc)
            if response.HasField("partial_success"):
                return self._partial_success(
                    response.partial_success.rejected_spans,
                    response.partial_success.error_message,
                )
            return SUCCESS

        return self._with_retry(attempt, len(spans))

    def shutdown(self) -> None:
        self._stop.set()  # cuts short any backoff wait in progress
        self._channel.close()


def _failure(exc: grpc.RpcError) -> Outcome:
    if not isinstance(exc, grpc.Call):
        return Outcome(ok=False, retryable=True, detail=str(exc), code="UNKNOWN")
    code = exc.code()
    name = code.name if code is not None else "UNKNOWN"
    details = exc.details() or ""
    delay = None
    for key, value in exc.trailing_metadata() or ():
        if key == _STATUS_DETAILS_KEY and isinstance(value, bytes):
            decoded = decode_status(value)
            if decoded is not None:
                details = decoded[0] or details
                delay = decoded[1]
    if name == "RESOURCE_EXHAUSTED":
        # OTLP spec: retry only when the server says recovery is possible (RetryInfo);
        # otherwise the backend is over quota and retrying only adds load.
        retryable = delay is not None
    else:
        retryable = name in RETRYABLE_GRPC_CODES
    if delay is not None:
        details += f" (server asks to retry in {delay:.1f}s)"
    return Outcome(ok=False, retryable=retryable, detail=f"{name}: {details}",
                   retry_after_s=delay, code=name)


def _credentials(config: OtlpConfig) -> grpc.ChannelCredentials:
    def read(path: str | None) -> bytes | None:
        if path is None:
            return None
        try:
            with open(path, "rb") as f:
                return f.read()
        except OSError as exc:
            raise ExportConfigError(f"cannot read TLS file {path!r}: {exc.strerror}") from None

    return grpc.ssl_channel_credentials(
        root_certificates=read(config.certificate),
        private_key=read(config.client_key),
        certificate_chain=read(config.client_certificate),
    )
