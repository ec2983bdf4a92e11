"""Console and JSON-lines exporters, make_exporter and default_exporter_kind."""

from __future__ import annotations

import io
import json
import time

import pytest

from ebpf_tracer.export import (
    ExportConfigError,
    default_exporter_kind,
    make_exporter,
)
from ebpf_tracer.export.console import ConsoleExporter, format_span
from ebpf_tracer.export.jsonl import JsonlExporter
from ebpf_tracer.export.otlp_grpc import OtlpGrpcExporter
from ebpf_tracer.export.otlp_http import OtlpHttpExporter
from ebpf_tracer.model import Resource, Span, SpanKind, StatusCode

NGINX = Resource.from_dict({"service.name": "nginx"})
START_NS = 1_700_000_000_345_000_000
TRACE_ID = bytes.fromhex("abcd1234" + "00" * 12)


def clock(ns: int) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ns // 10**9)) + ".345"


def http_span(**attrs: object) -> Span:
    base: dict = {
        "http.request.method": "GET",
        "url.path": "/index.html",
        "url.query": "x=1",
        "http.response.status_code": 200,
        "network.peer.address": "127.0.0.1",
        "network.peer.port": 53422,
    }
    base.update(attrs)
    return Span(
        name="GET",
        kind=SpanKind.SERVER,
        start_time_ns=START_NS,
        end_time_ns=START_NS + 1_234_000,
        resource=NGINX,
        attributes={k: v for k, v in base.items() if v is not None},
        trace_id=TRACE_ID,
    )


def test_console_line_for_an_http_server_span() -> None:
    assert format_span(http_span()) == (
        f"{clock(START_NS)} nginx SERVER GET /index.html?x=1 -> 200 1.23ms "
        "peer=127.0.0.1:53422 [abcd1234]"
    )


def test_console_line_for_a_client_span_with_ipv6_peer_and_full_url() -> None:
    span = http_span(**{
        "url.path": None, "url.query": None, "url.full": "http://[::1]:8080/x",
        "network.peer.address": "::1", "network.peer.port": 8080,
    })
    span.kind = SpanKind.CLIENT
    line = format_span(span)
    assert " CLIENT GET http://[::1]:8080/x -> 200 " in line
    assert "peer=[::1]:8080" in line


def test_console_line_without_http_attributes_uses_the_name() -> None:
    span = Span(name="mystery", kind=SpanKind.INTERNAL, start_time_ns=START_NS,
                end_time_ns=START_NS, resource=Resource(()), trace_id=TRACE_ID,
                status_code=StatusCode.ERROR, status_message="reset by peer")
    assert format_span(span) == (
        f"{clock(START_NS)} - INTERNAL mystery -> ERROR 0.00ms error='reset by peer' [abcd1234]"
    )


def test_console_line_for_grpc() -> None:
    span = Span(name="helloworld.Greeter/SayHello", kind=SpanKind.SERVER, start_time_ns=START_NS,
                end_time_ns=START_NS + 500_000, resource=NGINX, trace_id=TRACE_ID,
                attributes={"rpc.grpc.status_code": 0})
    assert "SERVER helloworld.Greeter/SayHello -> grpc=0 0.50ms [abcd1234]" in format_span(span)


def test_console_escapes_control_characters_from_the_network() -> None:
    line = format_span(http_span(**{"url.path": "/\x1b[2Jevil\n"}))
    assert "\x1b" not in line and "\n" not in line
    assert "/\\x1b[2Jevil\\n" in line


def test_console_exporter_writes_one_line_per_span_and_flushes() -> None:
    stream = io.StringIO()
    exporter = ConsoleExporter(stream)
    assert exporter.export([http_span(), http_span()])
    assert stream.getvalue().count("\n") == 2
    exporter.shutdown()
    assert not stream.closed  # not ours to close


def test_console_exporter_defaults_to_stdout(capsys) -> None:
    assert make_exporter("console").export([http_span()])
    assert "GET /index.html?x=1" in capsys.readouterr().out


def test_console_exporter_reports_a_closed_stream() -> None:
    stream = io.StringIO()
    stream.close()
    assert ConsoleExporter(stream).export([http_span()]) is False


def test_jsonl_to_a_file_one_object_per_line(tmp_path) -> None:
    path = tmp_path / "spans.jsonl"
    exporter = make_exporter("jsonl", output=str(path))
    assert exporter.export([http_span(), http_span()])
    assert exporter.export([http_span()])
    # Flushed per batch: readable before shutdown.
    lines = path.read_text().splitlines()
    assert len(lines) == 3
    first = json.loads(lines[0])
    assert first["traceId"] == TRACE_ID.hex()
    assert first["startTimeUnixNano"] == str(START_NS)
    assert {"key": "http.response.status_code", "value": {"intValue": "200"}} in \
        first["attributes"]
    assert first["resource"]["attributes"] == [
        {"key": "service.name", "value": {"stringValue": "nginx"}}
    ]
    exporter.shutdown()
    assert exporter.export([http_span()]) is False  # file closed


def test_jsonl_dash_means_the_stream() -> None:
    stream = io.StringIO()
    exporter = make_exporter("jsonl", output="-", stream=stream)
    assert exporter.export([http_span()])
    assert json.loads(stream.getvalue())["name"] == "GET"


def test_jsonl_appends_to_an_existing_file(tmp_path) -> None:
    path = tmp_path / "spans.jsonl"
    path.write_text('{"earlier":1}\n')
    exporter = JsonlExporter(str(path))
    exporter.export([http_span()])
    exporter.shutdown()
    assert len(path.read_text().splitlines()) == 2


def test_jsonl_unwritable_path_is_a_config_error(tmp_path) -> None:
    with pytest.raises(ExportConfigError, match="missing"):
        make_exporter("jsonl", output=str(tmp_path / "missing" / "spans.jsonl"))


def test_console_to_a_file(tmp_path) -> None:
    path = tmp_path / "out.txt"
    exporter = make_exporter("console", output=str(path))
    exporter.export([http_span()])
    exporter.shutdown()
    assert "GET /index.html?x=1 -> 200" in path.read_text()


def test_make_exporter_otlp_picks_the_transport() -> None:
    grpc_exporter = make_exporter("otlp", environ={"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})
    http_exporter = make_exporter("otlp", environ={})
    try:
        assert isinstance(grpc_exporter, OtlpGrpcExporter)
        assert isinstance(http_exporter, OtlpHttpExporter)
    finally:
        grpc_exporter.shutdown()
        http_exporter.shutdown()


def test_make_exporter_errors() -> None:
    with pytest.raises(ExportConfigError, match="console, jsonl, otlp"):
        make_exporter("zipkin")
    with pytest.raises(ExportConfigError, match="OTEL_EXPORTER_OTLP_TIMEOUT"):
        make_exporter("otlp", environ={"OTEL_EXPORTER_OTLP_TIMEOUT": "x"})
    with pytest.raises(ExportConfigError, match="jsonl"):
        make_exporter("otlp", output="spans.jsonl", environ={})


@pytest.mark.parametrize(
    ("env", "kind"),
    [
        ({}, "console"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": ""}, "console"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, "otlp"),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, "otlp"),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "console"),
    ],
)
def test_default_exporter_kind(env: dict[str, str], kind: str) -> None:
    assert default_exporter_kind(env) == kind
