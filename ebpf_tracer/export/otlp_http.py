"""OTLP/HTTP transport (protobuf body) on http.client, with a kept-alive connection."""

from __future__ import annotations

import gzip
import http.client
import logging
import ssl
import threading
from collections.abc import Sequence
from urllib.parse import urlsplit

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceResponse,
)

from .. import __version__, own_sockets
from ..model import Span
from .config import OtlpConfig
from .encoder import encode_spans
from .errors import ExportConfigError
from .retry import (
    DEFAULT_POLICY,
    RETRYABLE_HTTP_STATUSES,
    SUCCESS,
    Outcome,
    RetryPolicy,
    call_with_retry,
    parse_retry_after,
)

log = logging.getLogger(__name__)

USER_AGENT = f"ebpf-tracer/{__version__}"
# Errors on a kept-alive connection that the server may have closed while idle:
# worth one immediate retry on a fresh connection before backing off.
_STALE_CONNECTION_ERRORS = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


class OtlpHttpExporter:
    """POSTs ``application/x-protobuf`` ExportTraceServiceRequests to ``config.endpoint``."""

    def __init__(self, config: OtlpConfig, *, retry_policy: RetryPolicy = DEFAULT_POLICY) -> None:
        self.config = config
        self.retry_policy = retry_policy
        self.rejected_spans = 0  # spans the collector refused via partial_success
        parts = urlsplit(config.endpoint)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or "localhost"
        self._port = parts.port or (443 if self._https else 80)
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._ssl_context = _ssl_context(config) if self._https else None
        self._headers = {
            "Content-Type": "application/x-protobuf",
            "User-Agent": USER_AGENT,
            **config.headers,
        }
        self._gzip = config.compression == "gzip"
        if self._gzip:
            self._headers["Content-Encoding"] = "gzip"
        self._conn: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()  # one request at a time on the shared connection
        self._stop = threading.Event()

    def export(self, spans: Sequence[Span]) -> bool:
        if not spans:
            return True
        if self._stop.is_set():
            return False
        body = encode_spans(spans).SerializeToString()
        if self._gzip:
            # Level 6 (zlib's default) is several times faster than gzip's 9 for ~the same size.
            body = gzip.compress(body, compresslevel=6, mtime=0)

        with self._lock:
            result = call_with_retry(
                lambda timeout_s: self._post(body, timeout_s),
                timeout_s=self.config.timeout_s,
                policy=self.retry_policy,
                wait=self._stop.wait,
            )
        if not result.outcome.ok:
            log.warning(
                "OTLP/HTTP export of %d spans to %s failed after %d attempt(s): %s",
                len(spans),
                self.config.endpoint,
                result.attempts,
                result.outcome.detail,
            )
            return False
        return True

    def _post(self, body: bytes, timeout_s: float) -> Outcome:
        for _ in range(2):
            reused = self._conn is not None
            conn = self._conn or self._new_connection(timeout_s)
            self._conn = conn
            conn.timeout = timeout_s
            if conn.sock is not None:
                conn.sock.settimeout(timeout_s)
            try:
                conn.request("POST", self._path, body=body, headers=self._headers)
                response = conn.getresponse()
                data = response.read()
            except _STALE_CONNECTION_ERRORS as exc:
                self._close()
                if reused:
                    continue
                return Outcome(ok=False, retryable=True, detail=_describe(exc))
            except ssl.SSLError as exc:
                self._close()  # certificate trouble will not fix itself by retrying
                return Outcome(ok=False, retryable=False, detail=_describe(exc))
            except (OSError, http.client.HTTPException) as exc:
                self._close()  # refused, timed out, unreachable, garbled reply...
                return Outcome(ok=False, retryable=True, detail=_describe(exc))
            if response.will_close:
                self._close()
            return self._outcome(response, data)
        return Outcome(ok=False, retryable=True, detail="connection closed by the server")

    def _outcome(self, response: http.client.HTTPResponse, data: bytes) -> Outcome:
        status = response.status
        if 200 <= status < 300:
            if data:
                self._note_partial_success(data)
            return SUCCESS
        detail = f"HTTP {status} {response.reason}"
        hint = _body_hint(data, response.getheader("Content-Type", ""))
        if hint:
            detail += f": {hint}"
        return Outcome(
            ok=False,
            retryable=status in RETRYABLE_HTTP_STATUSES,
            detail=detail,
            retry_after_s=parse_retry_after(response.getheader("Retry-After")),
        )

    def _note_partial_success(self, data: bytes) -> None:
        reply = ExportTraceServiceResponse()
        try:
            reply.ParseFromString(data)
        except DecodeError:
            return  # not protobuf (a proxy's page?); the 2xx is what counts
        if reply.HasField("partial_success"):
            rejected = reply.partial_success.rejected_spans
            message = reply.partial_success.error_message
            if rejected or message:
                self.rejected_spans += rejected
                log.warning(
                    "OTLP/HTTP collector %s rejected %d span(s): %s",
                    self.config.endpoint,
                    rejected,
                    message or "(no message)",
                )

    def _new_connection(self, timeout_s: float) -> http.client.HTTPConnection:
        if self._https:
            return _NotedHTTPSConnection(
                self._host, self._port, timeout=timeout_s, context=self._ssl_context
            )
        return _NotedHTTPConnection(self._host, self._port, timeout=timeout_s)

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def shutdown(self) -> None:
        self._stop.set()  # cuts short any backoff wait in progress
        self._close()


def _ssl_context(config: OtlpConfig) -> ssl.SSLContext:
    try:
        context = ssl.create_default_context(cafile=config.certificate)
        if config.client_certificate:
            context.load_cert_chain(config.client_certificate, config.client_key)
    except (OSError, ssl.SSLError) as exc:
        raise ExportConfigError(
            f"cannot load the TLS certificate/key for OTLP/HTTP: {exc}; check "
            "OTEL_EXPORTER_OTLP_CERTIFICATE / _CLIENT_CERTIFICATE / _CLIENT_KEY"
        ) from None
    return context


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _body_hint(data: bytes, content_type: str) -> str:
    """A short, printable excerpt of an error body (collectors explain 4xx there)."""
    if not data:
        return ""
    if "protobuf" in content_type:
        # google.rpc.Status: field 2 is the message. Pull printable text rather
        # than depend on googleapis-common-protos for one log line.
        text = data.decode("utf-8", "replace")
        text = "".join(ch for ch in text if ch.isprintable())
    else:
        text = data.decode("utf-8", "replace")
    text = " ".join(text.split())
    return text[:200]


class _NotedHTTPConnection(http.client.HTTPConnection):
    """Tells the agent our local port, so our exports are never traced."""

    def connect(self) -> None:
        super().connect()
        own_sockets.note(self.sock)


class _NotedHTTPSConnection(http.client.HTTPSConnection):
    def connect(self) -> None:
        super().connect()
        own_sockets.note(self.sock)
