"""The hand-written protobuf request against the protobuf library's encoding of the
same spans: parsed back, the two requests must be equal message for message."""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from ebpf_tracer.export import encoder, wire
from ebpf_tracer.export.encoder import SCOPE_NAME, SCOPE_VERSION, encode_request_bytes
from ebpf_tracer.model import (
    AttrGroup,
    AttrValue,
    ConnMeta,
    Resource,
    Role,
    Span,
    SpanKind,
    StatusCode,
)
from ebpf_tracer.protocols.http1 import Http1Record
from ebpf_tracer.protocols.http2 import Http2Record
from ebpf_tracer.spans import http1_span, http2_span

# --- the reference: the agent's encoder before wire.py, on the protobuf library ---

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1


def encode_spans_reference(spans: Sequence[Span]) -> ExportTraceServiceRequest:
    by_resource: dict[Resource, list[Span]] = {}
    for span in spans:
        group = by_resource.get(span.resource)
        if group is None:
            by_resource[span.resource] = [span]
        else:
            group.append(span)

    request = ExportTraceServiceRequest()
    for resource, group in by_resource.items():
        resource_spans = request.resource_spans.add()
        _fill_attributes(resource_spans.resource.attributes, resource.attributes)
        scope_spans = resource_spans.scope_spans.add()
        scope_spans.scope.name = SCOPE_NAME
        scope_spans.scope.version = SCOPE_VERSION
        add_span = scope_spans.spans.add
        for span in group:
            out = add_span(
                trace_id=span.trace_id,
                span_id=span.span_id,
                name=span.name,
                kind=span.kind,
                start_time_unix_nano=span.start_time_ns,
                end_time_unix_nano=span.end_time_ns,
            )
            if span.parent_span_id:
                out.parent_span_id = span.parent_span_id
            if span.attributes:
                _fill_attributes(out.attributes, span.attributes.items())
            if span.status_code:
                out.status.code = span.status_code
            if span.status_message:
                out.status.message = span.status_message
    return request


def _fill_attributes(target: Any, items: Iterable[tuple[str, AttrValue]]) -> None:
    add = target.add
    for key, value in items:
        kv = add()
        kv.key = key
        _set_any_value(kv.value, value)


def _set_any_value(out: Any, value: object) -> None:
    kind = type(value)
    if kind is str:
        out.string_value = value
    elif kind is int:
        _set_int(out, value)  # type: ignore[arg-type]
    elif kind is bool:
        out.bool_value = value
    elif kind is float:
        out.double_value = value
    elif isinstance(value, bool):
        out.bool_value = bool(value)
    elif isinstance(value, int):
        _set_int(out, int(value))
    elif isinstance(value, float):
        out.double_value = float(value)
    elif isinstance(value, str):
        out.string_value = str(value)
    elif isinstance(value, bytes | bytearray):
        out.bytes_value = bytes(value)
    elif isinstance(value, list | tuple):
        values = out.array_value.values
        for item in value:
            _set_any_value(values.add(), item)
    else:
        out.string_value = str(value)


def _set_int(out: Any, value: int) -> None:
    if _INT64_MIN <= value <= _INT64_MAX:
        out.int_value = value
    else:
        out.string_value = str(value)


def assert_same_request(spans: list[Span]) -> None:
    parsed = ExportTraceServiceRequest.FromString(encode_request_bytes(spans))
    assert parsed == encode_spans_reference(spans)


# --- fixed cases -----------------------------------------------------------

NGINX = Resource.from_dict({"service.name": "nginx", "process.pid": 42})


class Color(enum.IntEnum):
    RED = 1


class Method(str, enum.Enum):  # noqa: UP042 - on purpose: str() is "Method.GET"
    GET = "GET"


class Scheme(enum.StrEnum):  # str() is "http"
    HTTP = "http"


class Tag(str):
    def __str__(self) -> str:
        return "tag:" + self


class Opaque:
    def __str__(self) -> str:
        return "opaque"


def span(attributes: dict[str, Any] | None = None, **kw: Any) -> Span:
    kw.setdefault("name", "GET")
    kw.setdefault("kind", SpanKind.SERVER)
    kw.setdefault("start_time_ns", 1_700_000_000_000_000_000)
    kw.setdefault("end_time_ns", 1_700_000_000_001_230_000)
    kw.setdefault("resource", NGINX)
    return Span(attributes=attributes or {}, **kw)


EDGE_VALUES: list[object] = [
    True, False, 0, 1, -1, 127, 128, 16383, 16384, 2097151, 2097152, 2**35,
    _INT64_MAX, _INT64_MAX + 1, _INT64_MIN, _INT64_MIN - 1, 2**70, -(2**70),
    0.0, -0.0, 1.0, 0.25, -1e308, math.inf, -math.inf,
    "", "GET", "héllo ✓", "x" * 200, "y" * 20000,
    b"", b"\x00\xff", bytearray(b"ab"),
    [], [[]], [1, "a", True, 2.5, b"b"], ("t", 1), [[1, [2, []]], ()],
    Color.RED, Method.GET, Scheme.HTTP, Tag("t"), Opaque(), None,
]


def test_every_kind_of_value_alone() -> None:
    for value in EDGE_VALUES:
        assert_same_request([span({"k": value})])


def test_every_kind_of_value_in_one_span_and_in_many() -> None:
    attributes = {f"k{i}": value for i, value in enumerate(EDGE_VALUES)}
    assert_same_request([span(attributes)])
    assert_same_request([span({"k": value}) for value in EDGE_VALUES])


def test_values_that_compare_equal_are_not_confused_by_the_caches() -> None:
    # True == 1 == 1.0 and Method.GET == "GET" (same hash): each keeps its own type,
    # whichever was encoded (and cached) first, in one batch or across batches.
    for values in ([1, True, 1.0, Color.RED], [True, 1, 1.0], [1.0, 1, True],
                   [0, False, 0.0, -0.0], ["GET", Method.GET, Tag("GET")],
                   [Scheme.HTTP, "http"],
                   [Method.GET, "GET"], [Tag("GET"), "GET"]):
        assert_same_request([span({"k": v}) for v in values])
        for v in values:
            assert_same_request([span({"k": v})])


def test_span_fields_edges() -> None:
    assert_same_request([
        span(),  # no attributes, no parent, unset status
        span(name=""),
        span(name="é" * 100, parent_span_id=b"\x01" * 8),
        span(kind=SpanKind.CLIENT, status_code=StatusCode.ERROR, status_message="boom"),
        span(status_code=StatusCode.OK),
        span(status_message="only a message"),
        span(kind=0, start_time_ns=0, end_time_ns=0),  # all proto3 defaults
        span(kind=200, status_code=300),  # multi-byte enum values
        span(kind=-1, status_code=-2),  # negative enums: 10-byte varints
        span(trace_id=b"", span_id=b""),
        span(trace_id=b"\x01" * 17, span_id=b"\x02" * 7),
        span(start_time_ns=2**64 - 1, end_time_ns=1),
        span({"": "empty key", "k": "v"}),
    ])


def test_resources_group_like_the_library_encoder() -> None:
    twin = Resource.from_dict({"process.pid": 42, "service.name": "nginx"})  # equal, not same
    curl = Resource.from_dict({"service.name": "curl"})
    empty = Resource(())
    odd = Resource.from_dict({"f": 0.5, "b": True, "i": -7, "big": 2**64, "s": ""})
    assert_same_request([
        span(name="a"), span(name="b", resource=curl), span(name="c", resource=twin),
        span(name="d", resource=empty), span(name="e"), span(name="f", resource=odd),
        span(name="g", resource=curl),
    ])


def test_equal_resources_with_other_types_are_encoded_each_by_its_own() -> None:
    # {"k": 1} == {"k": True} == {"k": 1.0}: a cache keyed by equality alone would
    # send the first one's types for all.
    for attrs in ({"k": 1}, {"k": True}, {"k": 1.0}, {"k": 1}):
        assert_same_request([span(resource=Resource.from_dict(attrs))])


def test_large_sizes_use_multi_byte_lengths() -> None:
    attributes = {f"attr.{i}": "v" * i for i in range(300)}
    assert_same_request([span(attributes) for _ in range(3)])
    assert_same_request([span({"huge": "z" * 3_000_000})])  # 4-byte varint lengths


def test_nan_stays_nan() -> None:
    parsed = ExportTraceServiceRequest.FromString(
        encode_request_bytes([span({"nan": math.nan})]))
    value = parsed.resource_spans[0].scope_spans[0].spans[0].attributes[0].value
    assert value.WhichOneof("value") == "double_value" and math.isnan(value.double_value)


SERVER = ConnMeta(pid=1, fd=3, generation=1, role=Role.SERVER, local_addr="10.0.0.1",
                  local_port=8080, peer_addr="10.0.0.2", peer_port=54321)
CLIENT = ConnMeta(pid=1, fd=4, generation=1, role=Role.CLIENT, local_addr="10.0.0.2",
                  local_port=54321, peer_addr="10.0.0.1", peer_port=8080, tls=True)
H1 = Http1Record(
    method="GET", target="/items/7?color=red", request_version="1.1",
    request_headers={"host": "shop.example:8080", "user-agent": "curl/8.0",
                     "content-length": "0"},
    status=200, response_version="1.1", response_headers={"content-length": "12"},
    request_body_size=0, response_body_size=12, start_ns=1_000, end_ns=5_000,
)
H2 = Http2Record(
    stream_id=1, method="POST", scheme="http", authority="svc:50051",
    path="/helloworld.Greeter/SayHello", status=200,
    request_headers={"content-type": "application/grpc"},
    response_headers={"content-type": "application/grpc", "grpc-status": "0"},
    grpc_status=0, grpc_message=None, request_body_size=10, response_body_size=20,
    request_messages=1, response_messages=1, start_ns=1_000, end_ns=5_000,
    response_complete=True,
)


def test_spans_as_the_agent_makes_them() -> None:
    offset = 1_700_000_000_000_000_000
    spans = [
        http1_span(H1, SERVER, NGINX, clock_offset_ns=offset),
        http1_span(H1, CLIENT, NGINX, clock_offset_ns=offset),
        http1_span(replace(H1, method="BREW", status=503, partial="gap"), SERVER, NGINX),
        http1_span(replace(H1, target="*", status=None), CLIENT, NGINX),
        http2_span(H2, SERVER, NGINX, clock_offset_ns=offset),
        http2_span(replace(H2, grpc_status=13), CLIENT, NGINX),
        http2_span(replace(H2, request_headers={}, response_headers={}, grpc_status=None,
                           reset_code=8, response_complete=False,
                           unknown_fields=frozenset({":path"})), SERVER, NGINX),
    ]
    assert_same_request(spans)
    assert_same_request(spans * 3)  # again, from the caches


# --- generated cases -------------------------------------------------------

_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)  # UTF-8 encodable
_scalars = st.one_of(
    _text,
    st.sampled_from(["GET", "http", "1.1", "", "1"]),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-1, max_value=70_000),
    st.sampled_from([_INT64_MIN, _INT64_MAX, _INT64_MAX + 1, _INT64_MIN - 1]),
    st.floats(allow_nan=False),  # NaN != NaN: test_nan_stays_nan covers it
    st.binary(max_size=20),
    st.sampled_from([Color.RED, Method.GET, Scheme.HTTP, Tag("x"), Opaque(), None,
                     bytearray(b"z")]),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.lists(inner, max_size=4).map(tuple),
    max_leaves=8,
)
# A few shared keys, so the same key meets values of different types across spans.
_keys = st.sampled_from(["k", "http.response.status_code", "url.path", ""]) | _text
_resource_values = st.one_of(_text, st.booleans(), st.integers(), st.floats(allow_nan=False))
_resource_dicts = st.dictionaries(_keys, _resource_values, max_size=4)
_ids = st.binary(min_size=16, max_size=16) | st.binary(max_size=20)
_enums = st.sampled_from(list(SpanKind)) | st.integers(-(2**31), 2**31 - 1)


@st.composite
def _spans(draw: st.DrawFn, resources: list[dict]) -> Span:
    return Span(
        name=draw(st.sampled_from(["GET", "POST", ""]) | _text),
        kind=draw(_enums),
        start_time_ns=draw(st.integers(0, 2**64 - 1)),
        end_time_ns=draw(st.integers(0, 2**64 - 1)),
        # A Resource built anew for each span: equal ones must still share a group.
        resource=Resource.from_dict(draw(st.sampled_from(resources))),
        attributes=draw(st.dictionaries(_keys, _values, max_size=15)),
        status_code=draw(st.sampled_from(list(StatusCode)) | st.integers(-5, 500)),
        status_message=draw(st.sampled_from(["", "boom"]) | _text),
        trace_id=draw(_ids),
        span_id=draw(st.binary(min_size=8, max_size=8) | st.binary(max_size=10)),
        parent_span_id=draw(st.just(b"") | st.binary(max_size=10)),
        # Groups shared between spans (their keys never repeat the span's own).
        shared=tuple(AttrGroup({f"group{i}.{k}": v for k, v in d.items()}) for i, d in
                     enumerate(draw(st.lists(st.dictionaries(_keys, _values, max_size=4),
                                             max_size=2)))),
    )


@settings(max_examples=300, deadline=None)
@given(st.lists(_resource_dicts, min_size=1, max_size=3).flatmap(
    lambda resources: st.lists(_spans(resources), max_size=8)))
def test_generated_spans_encode_like_the_library(spans: list[Span]) -> None:
    assert_same_request(spans)


# --- cache bounds ----------------------------------------------------------


def test_resource_cache_is_bounded() -> None:
    spans = [span(resource=Resource.from_dict({"service.name": f"svc-{i}"}))
             for i in range(encoder.RESOURCE_CACHE_SIZE + 500)]
    for i in range(0, len(spans), 512):
        encode_request_bytes(spans[i : i + 512])
        assert len(encoder._resources) <= encoder.RESOURCE_CACHE_SIZE
    assert_same_request(spans[-600:])  # right after a flush, still right


def test_attribute_and_name_caches_are_bounded() -> None:
    size = encoder.ATTRIBUTE_CACHE_SIZE
    # One key with ever new values (client ports), others with new keys and values.
    spans = [span({"client.port": i, f"key.{i % 3000}": f"v{i}", "url.scheme": "http"},
                  name=f"name-{i}")
             for i in range(3 * size)]
    for i in range(0, len(spans), 512):
        encode_request_bytes(spans[i : i + 512])
        cached = encoder._attributes
        assert sum(len(values) for values in cached.values()) <= size
        assert len(cached) <= size
        assert len(cached.get("client.port", ())) <= size // 4
        assert len(encoder._names) <= encoder.NAME_CACHE_SIZE
        assert len(wire._keys) <= wire.KEY_CACHE_SIZE
    assert_same_request(spans[-700:])
