"""What the OTLP/gRPC and OTLP/HTTP transports share: the retry loop, error
counters for metrics, rate-limited failure logs, partial-success accounting,
and decoding the server's google.rpc.Status (message, RetryInfo)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2

from .config import OtlpConfig
from .retry import (
    DEFAULT_POLICY,
    SUCCESS,
    Outcome,
    RateLimitedLog,
    RetryPolicy,
    RetryResult,
    call_with_retry,
)

# How often the same kind of failure (same error code) is logged.
LOG_INTERVAL_S = 60.0


def _advice(code: str) -> str:
    """What the operator can do about a failure, by error class."""
    if code in ("connection_refused", "connection_reset", "unreachable", "dns", "timeout",
                "network", "UNAVAILABLE", "DEADLINE_EXCEEDED"):
        return ("; check that the collector is running and that OTEL_EXPORTER_OTLP_ENDPOINT "
                "(or --otlp-endpoint) and the protocol (grpc: port 4317, http/protobuf: 4318) "
                "point at it")
    if code in ("UNAUTHENTICATED", "PERMISSION_DENIED", "401", "403"):
        return "; check OTEL_EXPORTER_OTLP_HEADERS (the backend's auth token)"
    if code in ("404", "UNIMPLEMENTED"):
        return ("; check the endpoint path and OTEL_EXPORTER_OTLP_PROTOCOL (http endpoints "
                "take /v1/traces)")
    return ""


class OtlpTransport:
    """Base of the OTLP exporters. Subclasses implement ``export`` with
    ``self._with_retry(attempt)`` and ``shutdown``."""

    name = "OTLP"

    def __init__(self, config: OtlpConfig, *, retry_policy: RetryPolicy = DEFAULT_POLICY) -> None:
        self.config = config
        self.retry_policy = retry_policy
        self.rejected_spans = 0  # spans the backend refused via partial_success
        # Failed attempts by error code ("UNAVAILABLE", "503", "connection_refused"...).
        # Written by the export thread only; read (copied) by the metrics thread.
        self.errors_by_code: dict[str, int] = {}
        self._stop = threading.Event()
        self._log = RateLimitedLog(logging.getLogger(type(self).__module__), LOG_INTERVAL_S)

    def _count_failure(self, outcome: Outcome) -> None:
        code = outcome.code or "unknown"
        self.errors_by_code[code] = self.errors_by_code.get(code, 0) + 1

    def _with_retry(self, attempt: Callable[[float], Outcome], span_count: int) -> Outcome:
        result: RetryResult = call_with_retry(
            attempt,
            timeout_s=self.config.timeout_s,
            policy=self.retry_policy,
            wait=self._stop.wait,  # shutdown cuts a backoff sleep short
            on_failure=self._count_failure,
        )
        outcome = result.outcome
        if not outcome.ok:
            # One line, no traceback: an outage is an operational state, not a bug.
            # Once per interval per code, with the server's own message.
            what = "will retry later" if outcome.retryable else "not retryable, spans dropped"
            self._log.log(
                logging.WARNING,
                f"{outcome.retryable}:{outcome.code}",
                "%s export of %d spans to %s failed after %d attempt(s) (%s): %s%s",
                self.name,
                span_count,
                self.config.endpoint,
                result.attempts,
                what,
                outcome.detail,
                _advice(outcome.code),
            )
        return outcome

    def _partial_success(self, rejected: int, message: str) -> Outcome:
        """Count and log an OTLP partial success; the batch itself was accepted."""
        if not rejected and not message:
            return SUCCESS
        self.rejected_spans += rejected
        self._log.log(
            logging.WARNING,
            "partial",
            "%s backend %s rejected %d span(s): %s",
            self.name,
            self.config.endpoint,
            rejected,
            message or "(no message)",
        )
        return Outcome(ok=True, rejected=rejected, detail=message)


def decode_status(data: bytes) -> tuple[str, float | None] | None:
    """(message, RetryInfo delay) from a serialized google.rpc.Status, or None."""
    status = status_pb2.Status()
    try:
        status.ParseFromString(data)
    except DecodeError:
        return None
    return status.message, retry_delay(status)


def retry_delay(status: status_pb2.Status) -> float | None:
    """Seconds the server asks us to wait (google.rpc.RetryInfo), if it says."""
    for detail in status.details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            delay = info.retry_delay
            return max(delay.seconds + delay.nanos / 1e9, 0.0)
    return None
