"""Export settings: the standard ``OTEL_EXPORTER_OTLP_*`` and ``OTEL_BSP_*``
variables, the same settings as CLI flags, and an optional YAML file.

Precedence, highest first: command-line flags, the ``--config`` file, the
environment, the defaults. Within the environment the OpenTelemetry SDK rules
apply: a ``*_TRACES_*`` variable wins over its generic counterpart, the traces
endpoint is used as-is while the generic one is a base URL (``/v1/traces``
appended for HTTP), the default protocol is ``http/protobuf``.

Unlike the SDKs, a bad value is an error rather than a warning, and the error
names the setting as the user wrote it (``OTEL_EXPORTER_OTLP_TIMEOUT``,
``--otlp-timeout`` or ``tracer.yaml: otlp.timeout``): a tracer that silently
sends nowhere is worse than one that refuses to start.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit

from .errors import ExportConfigError

PROTOCOL_GRPC = "grpc"
PROTOCOL_HTTP_PROTOBUF = "http/protobuf"
PROTOCOL_HTTP_JSON = "http/json"
PROTOCOLS = (PROTOCOL_GRPC, PROTOCOL_HTTP_PROTOBUF, PROTOCOL_HTTP_JSON)
COMPRESSIONS = ("gzip", "none")

DEFAULT_GRPC_ENDPOINT = "localhost:4317"
DEFAULT_HTTP_ENDPOINT = "http://localhost:4318/v1/traces"
DEFAULT_TIMEOUT_S = 10.0
TRACES_PATH = "/v1/traces"

# Batch span processor defaults. The queue is four times the SDKs' 2048: at 1 KB
# or so per span that is ~10 MB, and it holds a 30 s backend outage at 270
# spans/s (80 s at 100/s) without losing a span.
DEFAULT_MAX_QUEUE_SIZE = 8192
DEFAULT_MAX_EXPORT_BATCH_SIZE = 512
# The SDKs wait 5 s; a tracer people watch live is nicer at 0.5 s, and under
# load batches fill to the batch size long before the delay anyway.
DEFAULT_SCHEDULE_DELAY_S = 0.5
DEFAULT_EXPORT_TIMEOUT_S = 30.0

_PREFIX = "OTEL_EXPORTER_OTLP_"
_TRACES_PREFIX = "OTEL_EXPORTER_OTLP_TRACES_"
_BSP_PREFIX = "OTEL_BSP_"
# RFC 9110 token: what an HTTP header name (and a gRPC metadata key) may contain.
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9a-z]+$")

# Canonical setting keys. OTLP keys match the variable suffixes, lowercased.
OTLP_KEYS = (
    "endpoint", "traces_endpoint", "protocol", "headers", "timeout", "compression",
    "certificate", "client_key", "client_certificate", "insecure",
)
BSP_KEYS = ("max_queue_size", "max_export_batch_size", "schedule_delay", "export_timeout")

# How each setting is spelled on the command line (cli.py declares these flags).
FLAG_NAMES: dict[str, str] = {
    **{key: "--otlp-" + key.replace("_", "-") for key in OTLP_KEYS},
    **{"bsp." + key: "--bsp-" + key.replace("_", "-") for key in BSP_KEYS},
}


@dataclass(frozen=True, slots=True)
class Value:
    """One setting's raw value and where it came from (named in errors)."""

    source: str
    raw: Any


Layer = Mapping[str, Value]


class ExportSettings:
    """Export settings from layered sources; the first layer that has a key wins.

    Keys are ``OTLP_KEYS`` and ``"bsp." + BSP_KEYS``.
    """

    def __init__(self, layers: Sequence[Layer]) -> None:
        self.layers = list(layers)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ExportSettings:
        return cls([env_layer(os.environ if environ is None else environ)])

    @classmethod
    def layered(
        cls,
        *,
        flags: Mapping[str, Any] | None = None,
        file: Layer | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> ExportSettings:
        """Flags (canonical key → value; None means not given) over the config
        file over the environment."""
        layers: list[Layer] = []
        if flags:
            layers.append({k: Value(FLAG_NAMES.get(k, k), v) for k, v in flags.items()
                           if v is not None})
        if file:
            layers.append(file)
        layers.append(env_layer(os.environ if environ is None else environ))
        return cls(layers)

    def get(self, key: str) -> Value | None:
        for layer in self.layers:
            value = layer.get(key)
            if value is not None:
                return value
        return None

    def endpoint(self) -> tuple[Value, bool] | None:
        """The endpoint and whether it is a traces endpoint (used as-is) rather
        than a base URL. The highest layer that sets either decides."""
        for layer in self.layers:
            traces = layer.get("traces_endpoint")
            if traces is not None:
                return traces, True
            base = layer.get("endpoint")
            if base is not None:
                return base, False
        return None


def env_layer(env: Mapping[str, str]) -> dict[str, Value]:
    """The settings present in ``env``. Empty values count as unset, as in the SDKs."""
    out: dict[str, Value] = {}

    def take(key: str, *names: str) -> None:
        for name in names:
            value = env.get(name, "").strip()
            if value:
                out[key] = Value(name, value)
                return

    take("endpoint", _PREFIX + "ENDPOINT")
    take("traces_endpoint", _TRACES_PREFIX + "ENDPOINT")
    for key in OTLP_KEYS[2:]:
        take(key, _TRACES_PREFIX + key.upper(), _PREFIX + key.upper())
    for key in BSP_KEYS:
        take("bsp." + key, _BSP_PREFIX + key.upper())
    return out


# --- OTLP ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OtlpConfig:
    """Where and how to send spans over OTLP.

    ``endpoint`` is a full URL for the HTTP protocols and a ``host:port`` target
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
        return cls.from_settings(ExportSettings.from_env(environ))

    @classmethod
    def from_settings(cls, settings: ExportSettings) -> OtlpConfig:
        """Raises ExportConfigError naming the setting when a value is invalid."""
        protocol = _protocol(settings)
        endpoint, insecure = _endpoint(settings, protocol)
        certificate = _file(settings, "certificate")
        client_certificate = _file(settings, "client_certificate")
        client_key = _file(settings, "client_key")
        if (client_certificate is None) != (client_key is None):
            raise ExportConfigError(
                "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE and OTEL_EXPORTER_OTLP_CLIENT_KEY "
                "(--otlp-client-certificate, --otlp-client-key) must be set together for "
                "mutual TLS; set both or neither"
            )
        return cls(
            protocol=protocol,
            endpoint=endpoint,
            insecure=insecure,
            headers=_headers(settings),
            timeout_s=_millis(settings, "timeout", DEFAULT_TIMEOUT_S),
            compression=_compression(settings),
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


def _text(value: Value) -> str:
    raw = value.raw
    if isinstance(raw, bool):
        return "true" if raw else "false"
    return str(raw).strip()


def _protocol(settings: ExportSettings) -> str:
    found = settings.get("protocol")
    if found is None:
        return PROTOCOL_HTTP_PROTOBUF
    value = _text(found).lower()
    if value not in PROTOCOLS:
        raise ExportConfigError(
            f"{found.source}={found.raw!r} is not supported; use one of: {', '.join(PROTOCOLS)}"
        )
    return value


def _endpoint(settings: ExportSettings, protocol: str) -> tuple[str, bool]:
    """(endpoint, insecure) for ``protocol``."""
    found = settings.endpoint()
    if found is None:
        if protocol == PROTOCOL_GRPC:
            return DEFAULT_GRPC_ENDPOINT, True
        return DEFAULT_HTTP_ENDPOINT, True
    setting, is_traces = found
    value = _text(setting)
    if protocol == PROTOCOL_GRPC:
        return _grpc_target(settings, setting.source, value)

    parts = _parse_url(setting.source, value, example="http://collector:4318")
    if not is_traces:
        # The generic setting is a base URL: the spec appends the signal path.
        value = value.rstrip("/") + TRACES_PATH
    return value, parts.scheme == "http"


def _grpc_target(settings: ExportSettings, name: str, value: str) -> tuple[str, bool]:
    if "://" not in value:
        # "host:port" without a scheme: the insecure setting decides (default TLS).
        insecure = _bool(settings, "insecure", default=False)
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


def _headers(settings: ExportSettings) -> dict[str, str]:
    found = settings.get("headers")
    if found is None:
        return {}
    name = found.source
    if isinstance(found.raw, Mapping):
        # A YAML mapping: literal keys and values, no URL-encoding.
        items = [(str(k), "" if v is None else str(v), f"{k}: ...") for k, v in found.raw.items()]
    else:
        items = []
        for item in str(found.raw).split(","):
            item = item.strip()
            if not item:
                continue
            key, sep, value = item.partition("=")
            if not sep:
                key = ""  # invalid: reported below
            items.append((unquote(key), unquote(value), item))
    headers: dict[str, str] = {}
    for key, value, item in items:
        # Lowercase: gRPC rejects metadata keys with capitals; HTTP does not care.
        key = key.strip().lower()
        value = value.strip()
        if not _HEADER_NAME.match(key):
            raise ExportConfigError(
                f"{name} has an invalid entry {item!r}; expected comma-separated key=value "
                f"pairs with URL-encoded values, e.g. api-key=abc,x-tenant=team%201"
            )
        if "\r" in value or "\n" in value or "\0" in value:
            raise ExportConfigError(f"{name}: the value of {key!r} contains a line break or NUL")
        headers[key] = value
    return headers


def _millis(settings: ExportSettings, key: str, default_s: float) -> float:
    """A positive duration in milliseconds, returned in seconds."""
    found = settings.get(key)
    if found is None:
        return default_s
    text = _text(found)
    try:
        ms = float(text)
    except ValueError:
        ms = -1.0
    if isinstance(found.raw, bool) or not ms > 0 or ms == float("inf"):
        raise ExportConfigError(
            f"{found.source}={found.raw!r} must be a positive number of milliseconds, e.g. 10000"
        )
    return ms / 1000.0


def _compression(settings: ExportSettings) -> str:
    found = settings.get("compression")
    if found is None:
        return "none"
    value = _text(found).lower()
    if value not in COMPRESSIONS:
        raise ExportConfigError(
            f"{found.source}={found.raw!r} is not supported; use 'gzip' or 'none'"
        )
    return value


def _bool(settings: ExportSettings, key: str, *, default: bool) -> bool:
    found = settings.get(key)
    if found is None:
        return default
    value = _text(found).lower()
    if value == "true":
        return True
    if value == "false":
        return False
    raise ExportConfigError(f"{found.source}={found.raw!r} must be 'true' or 'false'")


def _file(settings: ExportSettings, key: str) -> str | None:
    found = settings.get(key)
    if found is None:
        return None
    path = _text(found)
    if not os.path.isfile(path):
        raise ExportConfigError(
            f"{found.source}={path!r}: no such file; give the path to a PEM file"
        )
    try:
        with open(path, "rb") as f:
            head = f.read(65536)
    except OSError as exc:
        raise ExportConfigError(
            f"{found.source}={path!r}: cannot read it: {exc.strerror}"
        ) from None
    if b"-----BEGIN " not in head:
        raise ExportConfigError(f"{found.source}={path!r} is not a PEM file (no -----BEGIN line)")
    return path


# --- batch span processor -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class BspConfig:
    """OTEL_BSP_*: how spans are queued and batched before export."""

    max_queue_size: int = DEFAULT_MAX_QUEUE_SIZE
    max_export_batch_size: int = DEFAULT_MAX_EXPORT_BATCH_SIZE
    schedule_delay_s: float = DEFAULT_SCHEDULE_DELAY_S
    export_timeout_s: float = DEFAULT_EXPORT_TIMEOUT_S

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> BspConfig:
        return cls.from_settings(ExportSettings.from_env(environ))

    @classmethod
    def from_settings(cls, settings: ExportSettings) -> BspConfig:
        """Raises ExportConfigError naming the setting when a value is invalid."""
        queue = _count(settings, "bsp.max_queue_size", DEFAULT_MAX_QUEUE_SIZE)
        batch_found = settings.get("bsp.max_export_batch_size")
        batch = _count(settings, "bsp.max_export_batch_size",
                       min(DEFAULT_MAX_EXPORT_BATCH_SIZE, queue))
        if batch > queue:
            assert batch_found is not None
            raise ExportConfigError(
                f"{batch_found.source}={batch} must not exceed the queue size ({queue}); "
                "raise OTEL_BSP_MAX_QUEUE_SIZE or lower the batch size"
            )
        return cls(
            max_queue_size=queue,
            max_export_batch_size=batch,
            schedule_delay_s=_millis(settings, "bsp.schedule_delay", DEFAULT_SCHEDULE_DELAY_S),
            export_timeout_s=_millis(settings, "bsp.export_timeout", DEFAULT_EXPORT_TIMEOUT_S),
        )


def _count(settings: ExportSettings, key: str, default: int) -> int:
    found = settings.get(key)
    if found is None:
        return default
    text = _text(found)
    if isinstance(found.raw, bool) or not text.isdigit() or int(text) < 1:
        raise ExportConfigError(f"{found.source}={found.raw!r} must be a positive whole number")
    value = int(text)
    if value > 10_000_000:
        raise ExportConfigError(f"{found.source}={value} is too large (at most 10000000)")
    return value


# --- the YAML config file -----------------------------------------------------


@dataclass(slots=True)
class FileConfig:
    """What a ``--config`` file says. ``settings`` is its export layer."""

    path: str
    settings: dict[str, Value] = field(default_factory=dict)
    exporter: Value | None = None
    output: Value | None = None
    metrics_port: Value | None = None
    metrics_address: Value | None = None


_FILE_SECTIONS: dict[str, tuple[str, ...]] = {
    "otlp": OTLP_KEYS,
    "batch": BSP_KEYS,
    "metrics": ("port", "address"),
}
# Sections `run` reads itself (ebpf_tracer/selection.py); the export loader
# passes over them so one file configures the whole DaemonSet.
RUN_SECTIONS = ("selection", "kubernetes")
_FILE_TOP = ("exporter", "output", *_FILE_SECTIONS, *RUN_SECTIONS)


def read_config_yaml(path: str) -> Any:
    """The parsed --config file. Raises ExportConfigError saying why it cannot
    be read (with the line and column of a YAML error)."""
    import yaml  # only paid for by users of --config

    try:
        with open(path, encoding="utf-8") as f:
            return yaml.safe_load(f)
    except OSError as exc:
        raise ExportConfigError(f"--config {path!r}: cannot read it: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ExportConfigError(f"--config {path!r}: not valid YAML{where}: {problem}") from None


def load_config_file(path: str) -> FileConfig:
    """Read a YAML config file (see docs/export.md). Raises ExportConfigError
    naming the file and the offending key."""
    data = read_config_yaml(path)
    out = FileConfig(path)
    if data is None:
        return out  # an empty file sets nothing
    if not isinstance(data, Mapping):
        raise ExportConfigError(f"--config {path!r}: expected a mapping of settings at the top")
    for key, value in data.items():
        if key not in _FILE_TOP:
            raise ExportConfigError(
                f"{path}: unknown setting {key!r}; known: {', '.join(_FILE_TOP)}"
            )
        if key in RUN_SECTIONS:
            continue
        if key in _FILE_SECTIONS:
            if value is None:
                continue
            if not isinstance(value, Mapping):
                raise ExportConfigError(f"{path}: {key} must be a mapping of settings")
            for sub, subvalue in value.items():
                if sub not in _FILE_SECTIONS[key]:
                    raise ExportConfigError(
                        f"{path}: unknown setting '{key}.{sub}'; known in {key}: "
                        f"{', '.join(_FILE_SECTIONS[key])}"
                    )
                if subvalue is None:
                    continue
                setting = Value(f"{path}: {key}.{sub}", subvalue)
                if key == "otlp":
                    out.settings[sub] = setting
                elif key == "batch":
                    out.settings["bsp." + sub] = setting
                elif sub == "port":
                    out.metrics_port = setting
                else:
                    out.metrics_address = setting
        elif value is not None:
            setattr(out, key, Value(f"{path}: {key}", value))
    return out
