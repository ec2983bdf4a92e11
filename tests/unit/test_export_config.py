"""OtlpConfig.from_env: the standard OTEL_EXPORTER_OTLP_* variables."""

from __future__ import annotations

import pytest

from ebpf_tracer.export import ExportConfigError, OtlpConfig
from ebpf_tracer.export.config import (
    DEFAULT_GRPC_ENDPOINT,
    DEFAULT_HTTP_ENDPOINT,
    PROTOCOL_GRPC,
    PROTOCOL_HTTP_PROTOBUF,
)

P = "OTEL_EXPORTER_OTLP_"
T = "OTEL_EXPORTER_OTLP_TRACES_"


def test_defaults_are_http_protobuf_to_localhost() -> None:
    config = OtlpConfig.from_env({})
    assert config.protocol == PROTOCOL_HTTP_PROTOBUF
    assert config.endpoint == DEFAULT_HTTP_ENDPOINT == "http://localhost:4318/v1/traces"
    assert config.headers == {}
    assert config.timeout_s == 10.0
    assert config.compression == "none"
    assert config.certificate is None


def test_default_grpc_endpoint() -> None:
    config = OtlpConfig.from_env({P + "PROTOCOL": "grpc"})
    assert (config.protocol, config.endpoint, config.insecure) == (
        PROTOCOL_GRPC,
        DEFAULT_GRPC_ENDPOINT,
        True,
    )


def test_empty_values_count_as_unset() -> None:
    config = OtlpConfig.from_env({P + "ENDPOINT": "", T + "PROTOCOL": " ", P + "TIMEOUT": ""})
    assert config == OtlpConfig.from_env({})


@pytest.mark.parametrize(
    ("base", "expected"),
    [
        ("http://collector:4318", "http://collector:4318/v1/traces"),
        ("http://collector:4318/", "http://collector:4318/v1/traces"),
        ("https://otlp.example.com/otlp", "https://otlp.example.com/otlp/v1/traces"),
    ],
)
def test_generic_http_endpoint_is_a_base_url(base: str, expected: str) -> None:
    assert OtlpConfig.from_env({P + "ENDPOINT": base}).endpoint == expected


def test_traces_http_endpoint_is_used_as_is_and_wins() -> None:
    config = OtlpConfig.from_env(
        {P + "ENDPOINT": "http://ignored:4318", T + "ENDPOINT": "https://c.example/custom/path"}
    )
    assert config.endpoint == "https://c.example/custom/path"
    assert config.insecure is False


@pytest.mark.parametrize(
    ("endpoint", "target", "insecure"),
    [
        ("http://collector:4317", "collector:4317", True),
        ("https://collector:4317", "collector:4317", False),
        ("https://otlp.example.com", "otlp.example.com:443", False),
        ("http://[::1]:4317", "[::1]:4317", True),
        ("http://collector:4317/ignored/path", "collector:4317", True),
    ],
)
def test_grpc_endpoint_scheme_decides_tls(endpoint: str, target: str, insecure: bool) -> None:
    for variable in (P + "ENDPOINT", T + "ENDPOINT"):
        config = OtlpConfig.from_env({variable: endpoint, P + "PROTOCOL": "grpc"})
        assert (config.endpoint, config.insecure) == (target, insecure)


def test_grpc_endpoint_without_scheme_uses_insecure_variable() -> None:
    env = {P + "PROTOCOL": "grpc", P + "ENDPOINT": "collector:4317"}
    assert OtlpConfig.from_env(env).insecure is False  # spec default: TLS
    assert OtlpConfig.from_env({**env, P + "INSECURE": "true"}).insecure is True
    assert OtlpConfig.from_env({**env, T + "INSECURE": "TRUE", P + "INSECURE": "false"}).insecure
    assert OtlpConfig.from_env(env).endpoint == "collector:4317"


def test_scheme_beats_insecure_variable() -> None:
    env = {P + "PROTOCOL": "grpc", P + "ENDPOINT": "https://c:4317", P + "INSECURE": "true"}
    assert OtlpConfig.from_env(env).insecure is False


def test_protocol_traces_variable_wins_and_is_case_insensitive() -> None:
    env = {P + "PROTOCOL": "http/protobuf", T + "PROTOCOL": "GRPC"}
    assert OtlpConfig.from_env(env).protocol == PROTOCOL_GRPC


def test_headers_are_parsed_and_url_decoded() -> None:
    config = OtlpConfig.from_env(
        {P + "HEADERS": "api-key=secret%3D%3D, X-Tenant = team%201 ,,empty="}
    )
    assert config.headers == {"api-key": "secret==", "x-tenant": "team 1", "empty": ""}


def test_traces_headers_replace_generic_headers() -> None:
    config = OtlpConfig.from_env({P + "HEADERS": "a=1,b=2", T + "HEADERS": "c=3"})
    assert config.headers == {"c": "3"}


def test_header_values_stay_out_of_repr() -> None:
    config = OtlpConfig.from_env({P + "HEADERS": "authorization=Bearer%20topsecret"})
    assert "topsecret" not in repr(config)
    assert "topsecret" not in config.describe()
    assert "authorization" in config.describe()


def test_timeout_in_milliseconds() -> None:
    assert OtlpConfig.from_env({P + "TIMEOUT": "2500"}).timeout_s == 2.5
    assert OtlpConfig.from_env({P + "TIMEOUT": "2500", T + "TIMEOUT": "500"}).timeout_s == 0.5


def test_compression() -> None:
    assert OtlpConfig.from_env({P + "COMPRESSION": "gzip"}).compression == "gzip"
    assert OtlpConfig.from_env({P + "COMPRESSION": "gzip", T + "COMPRESSION": "none"}).compression \
        == "none"


def test_certificates(tmp_path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    config = OtlpConfig.from_env({P + "CERTIFICATE": str(ca)})
    assert config.certificate == str(ca)
    both = OtlpConfig.from_env(
        {T + "CLIENT_CERTIFICATE": str(ca), P + "CLIENT_KEY": str(ca)}
    )
    assert (both.client_certificate, both.client_key) == (str(ca), str(ca))


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({P + "PROTOCOL": "http/xml"}, P + "PROTOCOL"),
        ({T + "PROTOCOL": "thrift"}, T + "PROTOCOL"),
        ({P + "ENDPOINT": "collector:4318"}, P + "ENDPOINT"),  # http needs a URL
        ({P + "ENDPOINT": "ftp://collector"}, P + "ENDPOINT"),
        ({T + "ENDPOINT": "http://collector:99999"}, T + "ENDPOINT"),
        ({T + "ENDPOINT": "http://"}, T + "ENDPOINT"),
        ({P + "PROTOCOL": "grpc", P + "ENDPOINT": "grpc://c:4317"}, P + "ENDPOINT"),
        ({P + "PROTOCOL": "grpc", P + "ENDPOINT": "c:notaport"}, P + "ENDPOINT"),
        ({P + "HEADERS": "novalue"}, P + "HEADERS"),
        ({T + "HEADERS": "a=1,=2"}, T + "HEADERS"),
        ({P + "HEADERS": "bad key=1"}, P + "HEADERS"),
        ({P + "HEADERS": "a=x%0D%0Ainjected: 1"}, P + "HEADERS"),
        ({P + "TIMEOUT": "soon"}, P + "TIMEOUT"),
        ({T + "TIMEOUT": "0"}, T + "TIMEOUT"),
        ({P + "TIMEOUT": "-5"}, P + "TIMEOUT"),
        ({P + "COMPRESSION": "zstd"}, P + "COMPRESSION"),
        ({P + "PROTOCOL": "grpc", P + "ENDPOINT": "c:4317", P + "INSECURE": "yes"},
         P + "INSECURE"),
        ({P + "CERTIFICATE": "/nonexistent/ca.pem"}, P + "CERTIFICATE"),
    ],
)
def test_invalid_values_name_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(ExportConfigError) as info:
        OtlpConfig.from_env(env)
    assert named in str(info.value)
    assert isinstance(info.value, ValueError)


def test_client_certificate_needs_a_key(tmp_path) -> None:
    cert = tmp_path / "client.pem"
    cert.write_text("-----BEGIN CERTIFICATE-----\n")
    with pytest.raises(ExportConfigError, match="CLIENT_KEY"):
        OtlpConfig.from_env({P + "CLIENT_CERTIFICATE": str(cert)})


def test_from_env_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(P + "ENDPOINT", "http://from-os-environ:4318")
    monkeypatch.delenv(T + "ENDPOINT", raising=False)
    monkeypatch.delenv(T + "PROTOCOL", raising=False)
    monkeypatch.delenv(P + "PROTOCOL", raising=False)
    assert OtlpConfig.from_env().endpoint == "http://from-os-environ:4318/v1/traces"
