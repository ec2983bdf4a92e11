"""Layered export settings: flags > --config file > environment; BSP settings;
the YAML file; errors that name the setting as the user wrote it."""

from __future__ import annotations

from pathlib import Path

import pytest

from ebpf_tracer.export import (
    BspConfig,
    ExportConfigError,
    ExportSettings,
    OtlpConfig,
    default_exporter_kind,
    make_exporter,
)
from ebpf_tracer.export.config import (
    DEFAULT_MAX_EXPORT_BATCH_SIZE,
    DEFAULT_MAX_QUEUE_SIZE,
    PROTOCOL_HTTP_JSON,
    load_config_file,
)
from ebpf_tracer.export.otlp_http import OtlpHttpExporter

P = "OTEL_EXPORTER_OTLP_"


def settings(flags: dict | None = None, yaml_text: str | None = None, env: dict | None = None,
             tmp_path: Path | None = None) -> ExportSettings:
    file = None
    if yaml_text is not None:
        assert tmp_path is not None
        path = tmp_path / "tracer.yaml"
        path.write_text(yaml_text)
        file = load_config_file(str(path)).settings
    return ExportSettings.layered(flags=flags, file=file, environ=env or {})


def test_flags_beat_the_file_which_beats_the_environment(tmp_path: Path) -> None:
    env = {P + "ENDPOINT": "http://env:4318", P + "TIMEOUT": "1000", P + "COMPRESSION": "gzip"}
    yaml_text = "otlp:\n  endpoint: http://file:4318\n  timeout: 2000\n"
    both = settings({"timeout": "3000"}, yaml_text, env, tmp_path)
    config = OtlpConfig.from_settings(both)
    assert config.endpoint == "http://file:4318/v1/traces"  # file over env
    assert config.timeout_s == 3.0  # flag over file
    assert config.compression == "gzip"  # only the environment says it


def test_an_endpoint_flag_beats_a_traces_endpoint_variable() -> None:
    env = {P + "TRACES_ENDPOINT": "http://env:4318/custom"}
    config = OtlpConfig.from_settings(settings({"endpoint": "http://flag:4318"}, env=env))
    assert config.endpoint == "http://flag:4318/v1/traces"
    traces = OtlpConfig.from_settings(settings({"traces_endpoint": "http://flag:1/x"}, env=env))
    assert traces.endpoint == "http://flag:1/x"


def test_yaml_file_with_every_section(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    path = tmp_path / "tracer.yaml"
    path.write_text(f"""
exporter: otlp
otlp:
  endpoint: https://collector:4317
  protocol: grpc
  headers:
    Authorization: Bearer abc
    x-tenant: team 1
  timeout: 2500
  compression: gzip
  certificate: {ca}
batch:
  max_queue_size: 100
  max_export_batch_size: 10
  schedule_delay: 250
  export_timeout: 5000
metrics:
  port: 9464
  address: 0.0.0.0
""")
    file = load_config_file(str(path))
    assert file.exporter is not None and file.exporter.raw == "otlp"
    assert file.metrics_port is not None and file.metrics_port.raw == 9464
    assert file.metrics_address is not None and file.metrics_address.raw == "0.0.0.0"
    layered = ExportSettings.layered(file=file.settings, environ={})
    config = OtlpConfig.from_settings(layered)
    assert (config.protocol, config.endpoint, config.insecure) == ("grpc", "collector:4317", False)
    # A YAML mapping is taken literally: no URL-decoding, names lowercased.
    assert config.headers == {"authorization": "Bearer abc", "x-tenant": "team 1"}
    assert (config.timeout_s, config.compression, config.certificate) == (2.5, "gzip", str(ca))
    assert BspConfig.from_settings(layered) == BspConfig(100, 10, 0.25, 5.0)


def test_an_empty_file_sets_nothing(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing yet\n")
    file = load_config_file(str(path))
    assert file.settings == {} and file.exporter is None


@pytest.mark.parametrize(
    ("yaml_text", "named"),
    [
        ("otlp:\n  endpoint: http://x\n  compresion: gzip\n", "otlp.compresion"),
        ("exporters: otlp\n", "'exporters'"),
        ("otlp: gzip\n", "otlp must be a mapping"),
        ("- a\n- b\n", "mapping of settings"),
        ("otlp:\n  timeout: soon\n", "otlp.timeout='soon'"),
        ("otlp:\n  timeout: true\n", "otlp.timeout=True"),
        ("otlp:\n  protocol: thrift\n", "otlp.protocol='thrift'"),
        ("otlp:\n  headers: {'bad key': 1}\n", "otlp.headers"),
        ("batch:\n  max_queue_size: -1\n", "batch.max_queue_size=-1"),
        ("batch:\n  max_queue_size: 5\n  max_export_batch_size: 6\n",
         "batch.max_export_batch_size=6"),
        ("otlp:\n  endpoint: [\n", "not valid YAML at line"),
    ],
)
def test_file_errors_name_the_file_and_key(tmp_path: Path, yaml_text: str, named: str) -> None:
    with pytest.raises(ExportConfigError) as info:
        layered = settings(yaml_text=yaml_text, tmp_path=tmp_path)
        OtlpConfig.from_settings(layered)
        BspConfig.from_settings(layered)
    assert named in str(info.value)
    assert "tracer.yaml" in str(info.value)


def test_missing_config_file_names_the_flag() -> None:
    with pytest.raises(ExportConfigError, match="--config '/nonexistent/t.yaml'"):
        load_config_file("/nonexistent/t.yaml")


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        ({"protocol": "grpcc"}, "--otlp-protocol='grpcc'"),
        ({"endpoint": "collector:4318"}, "--otlp-endpoint"),
        ({"timeout": "0"}, "--otlp-timeout='0'"),
        ({"certificate": "/nonexistent.pem"}, "--otlp-certificate"),
        ({"headers": "novalue"}, "--otlp-headers"),
        ({"insecure": "maybe", "protocol": "grpc", "endpoint": "c:4317"}, "--otlp-insecure"),
    ],
)
def test_flag_errors_name_the_flag(flags: dict, named: str) -> None:
    with pytest.raises(ExportConfigError) as info:
        OtlpConfig.from_settings(settings(flags))
    assert named in str(info.value)


def test_a_certificate_must_be_pem(tmp_path: Path) -> None:
    junk = tmp_path / "ca.pem"
    junk.write_text("not a certificate")
    with pytest.raises(ExportConfigError, match=f"{P}CERTIFICATE=.*not a PEM file"):
        OtlpConfig.from_env({P + "CERTIFICATE": str(junk)})


def test_insecure_flag_is_a_bool() -> None:
    base = {"protocol": "grpc", "endpoint": "collector:4317"}
    assert OtlpConfig.from_settings(settings({**base, "insecure": True})).insecure
    assert not OtlpConfig.from_settings(settings({**base, "insecure": False})).insecure


def test_http_json_protocol() -> None:
    config = OtlpConfig.from_env({P + "PROTOCOL": "http/json",
                                  P + "ENDPOINT": "http://c:4318"})
    assert config.protocol == PROTOCOL_HTTP_JSON
    assert config.endpoint == "http://c:4318/v1/traces"
    assert isinstance(make_exporter("otlp", environ={P + "PROTOCOL": "http/json"}),
                      OtlpHttpExporter)


def test_bsp_defaults_hold_a_30s_outage_at_100_spans_per_second() -> None:
    bsp = BspConfig.from_env({})
    assert bsp.max_queue_size == DEFAULT_MAX_QUEUE_SIZE >= 30 * 100 + DEFAULT_MAX_EXPORT_BATCH_SIZE
    assert bsp.max_export_batch_size == 512
    assert bsp.schedule_delay_s == 0.5 and bsp.export_timeout_s == 30.0


def test_bsp_from_environment() -> None:
    bsp = BspConfig.from_env({"OTEL_BSP_MAX_QUEUE_SIZE": "100",
                              "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "20",
                              "OTEL_BSP_SCHEDULE_DELAY": "1500",
                              "OTEL_BSP_EXPORT_TIMEOUT": "2000"})
    assert bsp == BspConfig(100, 20, 1.5, 2.0)
    # A queue smaller than the default batch shrinks the batch rather than fail.
    assert BspConfig.from_env({"OTEL_BSP_MAX_QUEUE_SIZE": "50"}).max_export_batch_size == 50


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"OTEL_BSP_MAX_QUEUE_SIZE": "0"}, "OTEL_BSP_MAX_QUEUE_SIZE"),
        ({"OTEL_BSP_MAX_QUEUE_SIZE": "1e3"}, "OTEL_BSP_MAX_QUEUE_SIZE"),
        ({"OTEL_BSP_MAX_QUEUE_SIZE": "99999999999"}, "OTEL_BSP_MAX_QUEUE_SIZE"),
        ({"OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "-2"}, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE"),
        ({"OTEL_BSP_MAX_QUEUE_SIZE": "10", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "11"},
         "OTEL_BSP_MAX_EXPORT_BATCH_SIZE"),
        ({"OTEL_BSP_SCHEDULE_DELAY": "never"}, "OTEL_BSP_SCHEDULE_DELAY"),
        ({"OTEL_BSP_EXPORT_TIMEOUT": "0"}, "OTEL_BSP_EXPORT_TIMEOUT"),
    ],
)
def test_bsp_errors_name_the_variable(env: dict, named: str) -> None:
    with pytest.raises(ExportConfigError) as info:
        BspConfig.from_env(env)
    assert named in str(info.value)


def test_default_exporter_kind_sees_every_layer(tmp_path: Path) -> None:
    assert default_exporter_kind(settings()) == "console"
    assert default_exporter_kind(settings({"endpoint": "http://c:4318"})) == "otlp"
    assert default_exporter_kind(
        settings(yaml_text="otlp:\n  traces_endpoint: http://c/x\n", tmp_path=tmp_path)) == "otlp"
    assert default_exporter_kind(settings(env={P + "ENDPOINT": "http://c"})) == "otlp"
