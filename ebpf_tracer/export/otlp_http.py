"""OTLP/HTTP transport (protobuf or JSON body) on http.client, with a kept-alive
connection."""

from __future__ import annotations

import errno
import gzip
import http.client
import json
import socket
import ssl
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceResponse,
)

from .. import __version__, cpusched
from ..model import Span
from .config import PROTOCOL_HTTP_JSON, OtlpConfig
from .encoder import encode_request_bytes, encode_spans_json
from .errors import ExportConfigError
from .otlp_common import OtlpTransport, decode_status
from .retry import (
    DEFAULT_POLICY,
    RETRYABLE_HTTP_STATUSES,
    SUCCESS,
    Outcome,
    RetryPolicy,
    parse_retry_after,
)

USER_AGENT = f"ebpf-tracer/{__version__}"
# Errors on a kept-alive connection that the server may have closed while idle:
# worth one immediate retry on a fresh connection before backing off.
_STALE_CONNECTION_ERRORS = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


class OtlpHttpExporter(OtlpTransport):
    """POSTs ExportTraceServiceRequests to ``config.endpoint``: protobuf
    (``http/protobuf``) or OTLP/JSON (``http/json``)."""

    name = "OTLP/HTTP"

    def __init__(self, config: OtlpConfig, *, retry_policy: RetryPolicy = DEFAULT_POLICY) -> None:
        super().__init__(config, retry_policy=retry_policy)
        self._json = config.protocol == PROTOCOL_HTTP_JSON
        parts = urlsplit(config.endpoint)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or "localhost"
        self._port = parts.port or (443 if self._https else 80)
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._ssl_context = _ssl_context(config) if self._https else None
        self._headers = {
            "Content-Type": "application/json" if self._json else "application/x-protobuf",
            "User-Agent": USER_AGENT,
            **config.headers,
        }
        self._gzip = config.compression == "gzip"
        if self._gzip:
            self._headers["Content-Encoding"] = "gzip"
        self._conn: http.client.HTTPConnection | None = None

    def export(self, spans: Sequence[Span]) -> Outcome:
        """Called from one thread at a time (the batcher's worker)."""
        if not spans:
            return SUCCESS
        if self._stop.is_set():
            return Outcome(ok=False, detail="exporter shut down", code="shutdown")
        if self._json:
            body = json.dumps(encode_spans_json(spans), separators=(",", ":")).encode()
        else:
            body = encode_request_bytes(spans, cpusched.give_way)
        if self._gzip:
            # Level 6 (zlib's default) is several times faster than gzip's 9 for ~the same size.
            body = gzip.compress(body, compresslevel=6, mtime=0)
        return self._with_retry(lambda timeout_s: self._post(body, timeout_s), len(spans))

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
                return Outcome(ok=False, retryable=True, detail=_describe(exc),
                               code=_error_code(exc))
            except ssl.SSLError as exc:
                self._close()  # certificate trouble will not fix itself by retrying
                return Outcome(ok=False, retryable=False, detail=_describe(exc), code="tls")
            except (OSError, http.client.HTTPException) as exc:
                self._close()  # refused, timed out, unreachable, garbled reply...
                return Outcome(ok=False, retryable=True, detail=_describe(exc),
                               code=_error_code(exc))
            except Exception:
                self._close()  # never leave a half-used connection behind
                raise
            if response.will_close:
                self._close()
            return self._outcome(response, data)
        return Outcome(ok=False, retryable=True, detail="connection closed by the server",
                       code="connection_reset")

    def _outcome(self, response: http.client.HTTPResponse, data: bytes) -> Outcome:
        status = response.status
        content_type = response.getheader("Content-Type", "") or ""
        if 200 <= status < 300:
            return self._success(data, content_type)
        detail = f"HTTP {status} {response.reason}"
        message, delay = _error_body(data, content_type)
        if message:
            detail += f": {message}"
        retry_after = parse_retry_after(response.getheader("Retry-After"))
        if retry_after is None:
            retry_after = delay  # RetryInfo inside a google.rpc.Status body
        return Outcome(
            ok=False,
            retryable=status in RETRYABLE_HTTP_STATUSES,
            detail=detail,
            retry_after_s=retry_after,
            code=str(status),
        )

    def _success(self, data: bytes, content_type: str) -> Outcome:
        if not data:
            return SUCCESS
        if "json" in content_type:
            try:
                reply = json.loads(data)
                partial = reply.get("partialSuccess") or {}
                rejected = int(partial.get("rejectedSpans") or 0)
                message = str(partial.get("errorMessage") or "")
            except (ValueError, AttributeError, TypeError):
                return SUCCESS  # not OTLP/JSON (a proxy's page?); the 2xx is what counts
            return self._partial_success(rejected, message)
        reply = ExportTraceServiceResponse()
        try:
            reply.ParseFromString(data)
        except DecodeError:
            return SUCCESS  # not protobuf; the 2xx is what counts
        if reply.HasField("partial_success"):
            return self._partial_success(
                reply.partial_success.rejected_spans, reply.partial_success.error_message
            )
        return SUCCESS

    def _new_connection(self, timeout_s: float) -> http.client.HTTPConnection:
        if self._https:
            return http.client.HTTPSConnection(
                self._host, self._port, timeout=timeout_s, context=self._ssl_context
            )
        return http.client.HTTPConnection(self._host, self._port, timeout=timeout_s)

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


def _error_code(exc: BaseException) -> str:
    """A metrics label for a transport error."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection_refused"
    if isinstance(exc, ConnectionResetError | BrokenPipeError | http.client.RemoteDisconnected):
        return "connection_reset"
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timeout"
    if isinstance(exc, socket.gaierror):
        return "dns"
    if isinstance(exc, OSError) and exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return "unreachable"
    if isinstance(exc, http.client.HTTPException):
        return "bad_response"
    return "network"


def _error_body(data: bytes, content_type: str) -> tuple[str, float | None]:
    """The server's message (and RetryInfo delay) from an error body: OTLP says it
    is a google.rpc.Status in the request's encoding; proxies send text or HTML."""
    if not data:
        return "", None
    if "protobuf" in content_type:
        decoded = decode_status(data)
        if decoded is not None and decoded[0]:
            return _short(decoded[0]), decoded[1]
    elif "json" in content_type:
        try:
            reply: Any = json.loads(data)
        except ValueError:
            reply = None
        if isinstance(reply, dict) and reply.get("message"):
            return _short(str(reply["message"])), _json_retry_delay(reply)
    text = data.decode("utf-8", "replace")
    return _short("".join(ch for ch in text if ch.isprintable() or ch.isspace())), None


def _json_retry_delay(status: dict[str, Any]) -> float | None:
    """RetryInfo in a JSON google.rpc.Status: {"@type": ".../google.rpc.RetryInfo",
    "retryDelay": "1.5s"}."""
    for detail in status.get("details") or ():
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("RetryInfo"):
            delay = str(detail.get("retryDelay", ""))
            try:
                return max(float(delay.removesuffix("s")), 0.0)
            except ValueError:
                return None
    return None


def _short(text: str) -> str:
    return " ".join(text.split())[:300]
