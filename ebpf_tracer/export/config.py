"""OTLP exporter settings from the standard ``OTEL_EXPORTER_OTLP_*`` variables.

Follows the OpenTelemetry SDK environment specification: a ``*_TRACES_*``
variable wins over its generic counterpart, the traces endpoint is used as-is
while the generic one is a base URL (``/v1/traces`` appended for HTTP), the
default protocol is ``http/protobuf``. Unlike the SDKs, a bad value is an error
rather than a warning: a tracer that silently sends nowhere is worse than one
that refuses to start.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import SplitResult, unquote, urlsplit

from .errors import ExportConfigError

PROTOCOL_GRPC = "grpc"
PROTOCOL_HTTP_PROTOBUF = "http/protobuf"
PROTOCOLS = (PROTOCOL_GRPC, PROTOCOL_HTTP_PROTOBUF)
COMPRESSIONS = ("gzip", "none")

DEFAULT_GRPC_ENDPOINT = "localhost:4317"
DEFAULT_HTTP_ENDPOINT = "http://localhost:4318/v1/traces"
DEFAULT_TIMEOUT_S = 10.0
TRACES_PATH = "/v1/traces"

_PREFIX = "OTEL_EXPORTER_OTLP_"
_TRACES_PREFIX = "OTEL_EXPORTER_OTLP_TRACES_"
# RFC 9110 token: what an HTTP header name (and a gRPC metadata key) may contain.
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9a-z]+$")


@dataclass(frozen=True, slots=True)
class OtlpConfig:
    """Where and how to send spans over OTLP.

    ``endpoint`` is a full URL for ``http/protobuf`` and a ``host:port`` target
    for ``grpc``. ``insecure`` only matters for gRPC (plaintext channel); for
    HTTP the URL scheme decides.
    """

    protocol: str = PROTOCOL_HTTP_PROTOBUF
    endpoint: str = DEFAULT_HTTP_ENDPOINT
    insecure: bool = True
    # Header values are often API keys: keep them out of reprs and logs.
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    timeout_s: float = DEFAULT_TIMEOUT_S
    compression: str = "none"
    certificate: str | None = None
    client_certificate: str | None = None
    client_key: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> OtlpConfig:
        """Build the config from ``environ`` (default ``os.environ``).

        Raises ExportConfigError naming the variable when a value is invalid.
        """
        env = os.environ if environ is None else environ

        protocol = _protocol(env)
        endpoint, insecure = _endpoint(env, protocol)
        certificate = _file(env, "CERTIFICATE")
        client_certificate = _file(env, "CLIENT_CERTIFICATE")
        client_key = _file(env, "CLIENT_KEY")
        if (client_certificate is None) != (client_key is None):
            raise ExportConfigError(
                "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE and OTEL_EXPORTER_OTLP_CLIENT_KEY "
                "must be set together for mutual TLS; set both or neither"
            )
        return cls(
            protocol=protocol,
            endpoint=endpoint,
            insecure=insecure,
            headers=_headers(env),
            timeout_s=_timeout(env),
            compression=_compression(env),
            certificate=certificate,
            client_certificate=client_certificate,
            client_key=client_key,
        )

    def describe(self) -> str:
        """One line for logs, without header values."""
        parts = [self.protocol, self.endpoint]
        if self.protocol == PROTOCOL_GRPC:
            parts.append("insecure" if self.insecure else "tls")
        if self.compression != "none":
            parts.append(self.compression)
        if self.headers:
            parts.append("headers=" + ",".join(sorted(self.headers)))
        return "otlp " + " ".join(parts)


def _lookup(env: Mapping[str, str], suffix: str) -> tuple[str, str] | None:
    """The (variable, value) that applies for ``suffix``; traces-specific first.

    Empty values count as unset, as in the SDKs.
    """
    for name in (_TRACES_PREFIX + suffix, _PREFIX + suffix):
        value = env.get(name, "").strip()
        if value:
            return name, value
    return None


def _protocol(env: Mapping[str, str]) -> str:
    found = _lookup(env, "PROTOCOL")
    if found is None:
        return PROTOCOL_HTTP_PROTOBUF
    name, value = found
    value = value.lower()
    if value not in PROTOCOLS:
        what = "OTLP/JSON" if value == "http/json" else "this protocol"
        raise ExportConfigError(
            f"{name}={found[1]!r}: {what} is not supported; use 'grpc' or 'http/protobuf'"
        )
    return value


def _endpoint(env: Mapping[str, str], protocol: str) -> tuple[str, bool]:
    """(endpoint, insecure) for ``protocol``."""
    traces = env.get(_TRACES_PREFIX + "ENDPOINT", "").strip()
    base = env.get(_PREFIX + "ENDPOINT", "").strip()
    if traces:
        name, value, is_base = _TRACES_PREFIX + "ENDPOINT", traces, False
    elif base:
        name, value, is_base = _PREFIX + "ENDPOINT", base, True
    elif protocol == PROTOCOL_GRPC:
        return DEFAULT_GRPC_ENDPOINT, True
    else:
        return DEFAULT_HTTP_ENDPOINT, True

    if protocol == PROTOCOL_GRPC:
        return _grpc_target(env, name, value)

    parts = _parse_url(name, value, example="http://collector:4318")
    if is_base:
        # The generic variable is a base URL: the spec appends the signal path.
        value = value.rstrip("/") + TRACES_PATH
    return value, parts.scheme == "http"


def _grpc_target(env: Mapping[str, str], name: str, value: str) -> tuple[str, bool]:
    if "://" not in value:
        # "host:port" without a scheme: OTEL_EXPORTER_OTLP_INSECURE decides (default TLS).
        insecure = _bool(env, "INSECURE", default=False)
        _parse_url(name, value, example="http://collector:4317", assumed_scheme="http://")
        return value, insecure
    parts = _parse_url(name, value, example="http://collector:4317")
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{host}:{port}", parts.scheme == "http"


def _parse_url(name: str, value: str, *, example: str, assumed_scheme: str = "") -> SplitResult:
    try:
        parts = urlsplit(assumed_scheme + value)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise ExportConfigError(
            f"{name}={value!r} is not a valid URL ({exc}); e.g. {example}"
        ) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ExportConfigError(
            f"{name}={value!r} must be an http:// or https:// URL with a host; e.g. {example}"
        )
    return parts


def _headers(env: Mapping[str, str]) -> dict[str, str]:
    found = _lookup(env, "HEADERS")
    if found is None:
        return {}
    name, raw = found
    headers: dict[str, str] = {}
    for item in raw.split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        # Lowercase: gRPC rejects metadata keys with capitals; HTTP does not care.
        key = unquote(key).strip().lower()
        value = unquote(value).strip()
        if not sep or not _HEADER_NAME.match(key):
            raise ExportConfigError(
                f"{name} has an invalid entry {item!r}; expected comma-separated key=value "
                f"pairs with URL-encoded values, e.g. api-key=abc,x-tenant=team%201"
            )
        if "\r" in value or "\n" in value or "\0" in value:
            raise ExportConfigError(f"{name}: the value of {key!r} contains a line break or NUL")
        headers[key] = value
    return headers


def _timeout(env: Mapping[str, str]) -> float:
    found = _lookup(env, "TIMEOUT")
    if found is None:
        return DEFAULT_TIMEOUT_S
    name, value = found
    try:
        ms = float(value)
    except ValueError:
        ms = -1.0
    if not ms > 0 or ms == float("inf"):
        raise ExportConfigError(
            f"{name}={value!r} must be a positive number of milliseconds, e.g. 10000"
        )
    return ms / 1000.0


def _compression(env: Mapping[str, str]) -> str:
    found = _lookup(env, "COMPRESSION")
    if found is None:
        return "none"
    name, value = found
    if value.lower() not in COMPRESSIONS:
        raise ExportConfigError(f"{name}={value!r} is not supported; use 'gzip' or 'none'")
    return value.lower()


def _bool(env: Mapping[str, str], suffix: str, *, default: bool) -> bool:
    found = _lookup(env, suffix)
    if found is None:
        return default
    name, value = found
    if value.lower() == "true":
        return True
    if value.lower() == "false":
        return False
    raise ExportConfigError(f"{name}={value!r} must be 'true' or 'false'")


def _file(env: Mapping[str, str], suffix: str) -> str | None:
    found = _lookup(env, suffix)
    if found is None:
        return None
    name, path = found
    if not os.path.isfile(path):
        raise ExportConfigError(f"{name}={path!r}: no such file; give the path to a PEM file")
    return path
