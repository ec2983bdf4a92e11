"""OTLP/gRPC transport (grpcio): one long-lived channel, retries per retry.py."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

import grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import TraceServiceStub

from .. import __version__
from ..model import Span
from .config import OtlpConfig
from .encoder import encode_spans
from .errors import ExportConfigError
from .retry import (
    DEFAULT_POLICY,
    RETRYABLE_GRPC_CODES,
    SUCCESS,
    Outcome,
    RetryPolicy,
    call_with_retry,
)

log = logging.getLogger(__name__)

USER_AGENT = f"ebpf-tracer/{__version__}"


class OtlpGrpcExporter:
    """Sends spans to ``config.endpoint`` (host:port) with TraceService/Export."""

    def __init__(self, config: OtlpConfig, *, retry_policy: RetryPolicy = DEFAULT_POLICY) -> None:
        self.config = config
        self.retry_policy = retry_policy
        self.rejected_spans = 0  # spans the collector refused via partial_success
        self._stop = threading.Event()
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
        self._stub = TraceServiceStub(self._channel)

    def export(self, spans: Sequence[Span]) -> bool:
        if not spans:
            return True
        if self._stop.is_set():
            return False
        request = encode_spans(spans)

        def attempt(timeout_s: float) -> Outcome:
            try:
                response = self._stub.Export(
                    request,
                    timeout=timeout_s,
                    metadata=self._metadata,
                    compression=self._compression,
                )
            except grpc.RpcError as exc:
                code = exc.code() if isinstance(exc, grpc.Call) else None
                name = code.name if code is not None else "UNKNOWN"
                details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
                return Outcome(
                    ok=False, retryable=name in RETRYABLE_GRPC_CODES, detail=f"{name}: {details}"
                )
            if response.HasField("partial_success"):
                self._note_partial_success(
                    response.partial_success.rejected_spans,
                    response.partial_success.error_message,
                )
            return SUCCESS

        result = call_with_retry(
            attempt,
            timeout_s=self.config.timeout_s,
            policy=self.retry_policy,
            wait=self._stop.wait,
        )
        if not result.outcome.ok:
            # One line, no traceback: a collector outage is an operational state, not a bug.
            log.warning(
                "OTLP/gRPC export of %d spans to %s failed after %d attempt(s): %s",
                len(spans),
                self.config.endpoint,
                result.attempts,
                result.outcome.detail,
            )
            return False
        return True

    def _note_partial_success(self, rejected: int, message: str) -> None:
        if rejected or message:
            self.rejected_spans += rejected
            log.warning(
                "OTLP/gRPC collector %s rejected %d span(s): %s",
                self.config.endpoint,
                rejected,
                message or "(no message)",
            )

    def shutdown(self) -> None:
        self._stop.set()  # cuts short any backoff wait in progress
        self._channel.close()


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
