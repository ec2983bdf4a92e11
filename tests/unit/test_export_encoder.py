"""Span → OTLP protobuf and OTLP/JSON encoding (test_export_wire.py checks the
protobuf bytes against the protobuf library's encoding)."""

from __future__ import annotations

import enum
import json

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from ebpf_tracer import __version__
from ebpf_tracer.export.encoder import encode_request_bytes, span_to_json
from ebpf_tracer.model import Resource, Span, SpanKind, StatusCode

NGINX = Resource.from_dict({"service.name": "nginx", "process.pid": 42})
CURL = Resource.from_dict({"service.name": "curl", "process.pid": 7})


def make_span(name: str = "GET", resource: Resource = NGINX, **kw: object) -> Span:
    kw.setdefault("kind", SpanKind.SERVER)
    kw.setdefault("start_time_ns", 1_700_000_000_000_000_000)
    kw.setdefault("end_time_ns", 1_700_000_000_001_230_000)
    return Span(name=name, resource=resource, **kw)  # type: ignore[arg-type]


def encode_spans(spans: list[Span]) -> ExportTraceServiceRequest:
    """What a collector receives: the request bytes, parsed."""
    return ExportTraceServiceRequest.FromString(encode_request_bytes(spans))


def attr_map(key_values) -> dict:
    out = {}
    for kv in key_values:
        which = kv.value.WhichOneof("value")
        out[kv.key] = (which, getattr(kv.value, which))
    return out


def test_spans_are_grouped_by_resource_in_first_seen_order() -> None:
    spans = [make_span("a"), make_span("b", CURL), make_span("c"), make_span("d", CURL)]
    request = encode_spans(spans)

    assert len(request.resource_spans) == 2
    first, second = request.resource_spans
    assert attr_map(first.resource.attributes) == {
        "process.pid": ("int_value", 42),
        "service.name": ("string_value", "nginx"),
    }
    assert [s.name for s in first.scope_spans[0].spans] == ["a", "c"]
    assert attr_map(second.resource.attributes)["service.name"] == ("string_value", "curl")
    assert [s.name for s in second.scope_spans[0].spans] == ["b", "d"]


def test_equal_resources_built_separately_share_one_group() -> None:
    twin = Resource.from_dict({"process.pid": 42, "service.name": "nginx"})
    request = encode_spans([make_span("a"), make_span("b", twin)])
    assert len(request.resource_spans) == 1
    assert len(request.resource_spans[0].scope_spans[0].spans) == 2


def test_one_scope_named_after_the_tracer() -> None:
    request = encode_spans([make_span(), make_span(resource=CURL)])
    for resource_spans in request.resource_spans:
        assert len(resource_spans.scope_spans) == 1
        scope = resource_spans.scope_spans[0].scope
        assert (scope.name, scope.version) == ("ebpf-tracer", __version__)


def test_span_fields() -> None:
    span = make_span(
        "GET /users/:id",
        kind=SpanKind.CLIENT,
        trace_id=bytes(range(16)),
        span_id=bytes(range(8)),
        parent_span_id=b"\xff" * 8,
    )
    out = encode_spans([span]).resource_spans[0].scope_spans[0].spans[0]
    assert out.name == "GET /users/:id"
    assert out.kind == 3
    assert out.trace_id == bytes(range(16))
    assert out.span_id == bytes(range(8))
    assert out.parent_span_id == b"\xff" * 8
    assert out.start_time_unix_nano == 1_700_000_000_000_000_000
    assert out.end_time_unix_nano == 1_700_000_000_001_230_000


def test_parent_span_id_only_when_set() -> None:
    out = encode_spans([make_span()]).resource_spans[0].scope_spans[0].spans[0]
    assert out.parent_span_id == b""


class Color(enum.IntEnum):
    RED = 5


def test_attribute_values_are_typed_by_python_type() -> None:
    span = make_span(
        attributes={
            "flag": True,
            "off": False,
            "count": 200,
            "negative": -3,
            "ratio": 0.25,
            "text": "héllo",
            "enum": Color.RED,
            "huge": 2**70,
            "blob": b"\x00\x01",
            "list": ["a", "b"],
        }
    )
    attrs = attr_map(encode_spans([span]).resource_spans[0].scope_spans[0].spans[0].attributes)
    assert attrs["flag"] == ("bool_value", True)  # not int_value: bool is checked first
    assert attrs["off"] == ("bool_value", False)
    assert attrs["count"] == ("int_value", 200)
    assert attrs["negative"] == ("int_value", -3)
    assert attrs["ratio"] == ("double_value", 0.25)
    assert attrs["text"] == ("string_value", "héllo")
    assert attrs["enum"] == ("int_value", 5)
    assert attrs["huge"] == ("string_value", str(2**70))  # beyond int64: kept as digits
    assert attrs["blob"] == ("bytes_value", b"\x00\x01")
    assert attrs["list"][0] == "array_value"
    assert [v.string_value for v in attrs["list"][1].values] == ["a", "b"]


def test_status_code_and_message() -> None:
    error = make_span(status_code=StatusCode.ERROR, status_message="connection reset")
    ok = make_span(status_code=StatusCode.OK)
    unset = make_span()
    spans = encode_spans([error, ok, unset]).resource_spans[0].scope_spans[0].spans
    assert (spans[0].status.code, spans[0].status.message) == (2, "connection reset")
    assert (spans[1].status.code, spans[1].status.message) == (1, "")
    assert not spans[2].HasField("status")


def test_empty_input_gives_an_empty_request() -> None:
    assert encode_request_bytes([]) == b""


def test_many_spans_in_one_request() -> None:
    spans = [make_span(str(i), attributes={"i": i}) for i in range(100)]
    out = encode_spans(spans).resource_spans[0].scope_spans[0].spans
    assert [(s.name, attr_map(s.attributes)["i"]) for s in out] == [
        (str(i), ("int_value", i)) for i in range(100)
    ]


def test_span_to_json_uses_otlp_json_field_names() -> None:
    span = make_span(
        "GET",
        trace_id=bytes.fromhex("0af7651916cd43dd8448eb211c80319c"),
        span_id=bytes.fromhex("b7ad6b7169203331"),
        attributes={"http.response.status_code": 200, "ok": True, "r": 1.5, "m": "GET"},
        status_code=StatusCode.ERROR,
        status_message="boom",
    )
    out = span_to_json(span)
    assert out == {
        "traceId": "0af7651916cd43dd8448eb211c80319c",
        "spanId": "b7ad6b7169203331",
        "name": "GET",
        "kind": 2,
        "startTimeUnixNano": "1700000000000000000",
        "endTimeUnixNano": "1700000000001230000",
        "attributes": [
            {"key": "http.response.status_code", "value": {"intValue": "200"}},
            {"key": "ok", "value": {"boolValue": True}},
            {"key": "r", "value": {"doubleValue": 1.5}},
            {"key": "m", "value": {"stringValue": "GET"}},
        ],
        "status": {"code": 2, "message": "boom"},
        "resource": {
            "attributes": [
                {"key": "process.pid", "value": {"intValue": "42"}},
                {"key": "service.name", "value": {"stringValue": "nginx"}},
            ]
        },
    }


def test_span_to_json_parent_and_awkward_values_stay_valid_json() -> None:
    span = make_span(
        parent_span_id=bytes.fromhex("00f067aa0ba902b7"),
        attributes={"nan": float("nan"), "inf": float("-inf"), "bad": "\udcff"},
    )
    out = span_to_json(span)
    assert out["parentSpanId"] == "00f067aa0ba902b7"
    values = {a["key"]: a["value"] for a in out["attributes"]}
    assert values["nan"] == {"doubleValue": "NaN"}
    assert values["inf"] == {"doubleValue": "-Infinity"}
    text = json.dumps(out, allow_nan=False)  # raises if NaN leaked through
    assert json.loads(text)["parentSpanId"] == "00f067aa0ba902b7"
    assert "parentSpanId" not in span_to_json(make_span())


def test_pause_is_called_every_64_spans_and_changes_nothing() -> None:
    from ebpf_tracer.export.encoder import PAUSE_SPANS

    # Two resources: the count runs on across ResourceSpans groups.
    spans = [make_span(str(i), resource=NGINX if i % 3 else CURL, attributes={"i": i})
             for i in range(300)]
    calls: list[int] = []
    paced = encode_request_bytes(spans, lambda: calls.append(1))
    assert paced == encode_request_bytes(spans)
    assert len(calls) == 300 // PAUSE_SPANS
