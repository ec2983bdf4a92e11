"""Span → OTLP: protobuf bytes for the OTLP transports, OTLP/JSON dict for jsonl.

Pure functions, no I/O. The protobuf request is written by hand (wire.py) rather
than built with the protobuf library, about 4x cheaper per span: the bytes of
whatever repeats (resources, the scope, span names, attribute keys, common
key/value pairs) are encoded once and cached.
"""

from __future__ import annotations

import base64
import math
import struct
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from .. import __version__
from ..model import AttrValue, Resource, Span
from . import wire

SCOPE_NAME = "ebpf-tracer"
SCOPE_VERSION = __version__

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1

RESOURCE_CACHE_SIZE = 4096
NAME_CACHE_SIZE = 1024
ATTRIBUTE_CACHE_SIZE = 4096  # encoded key/value pairs
PAUSE_SPANS = 64  # spans (~2 us each) between two pause() calls

# Tags (field number << 3 | wire type) of opentelemetry-proto's trace messages.
_RESOURCE_SPANS = b"\x0a"  # ExportTraceServiceRequest.resource_spans = 1
_RESOURCE = b"\x0a"  # ResourceSpans.resource = 1
_SCOPE_SPANS = b"\x12"  # ResourceSpans.scope_spans = 2
_RESOURCE_ATTRIBUTE = b"\x0a"  # Resource.attributes = 1
_SCOPE = b"\x0a"  # ScopeSpans.scope = 1
_SPAN = b"\x12"  # ScopeSpans.spans = 2
_SCOPE_NAME = b"\x0a"  # InstrumentationScope.name = 1
_SCOPE_VERSION = b"\x12"  # InstrumentationScope.version = 2
_TRACE_ID = b"\x0a"  # Span.trace_id = 1
_SPAN_ID = b"\x12"  # Span.span_id = 2
_PARENT_SPAN_ID = b"\x22"  # Span.parent_span_id = 4
_NAME = b"\x2a"  # Span.name = 5
_KIND = b"\x30"  # Span.kind = 6, varint
_START = b"\x39"  # Span.start_time_unix_nano = 7, fixed64
_END = b"\x41"  # Span.end_time_unix_nano = 8, fixed64
_ATTRIBUTE = b"\x4a"  # Span.attributes = 9
_STATUS = b"\x7a"  # Span.status = 15
_STATUS_MESSAGE = b"\x12"  # Status.message = 2
_STATUS_CODE = b"\x18"  # Status.code = 3

_SCOPE_FIELD = wire.field(
    _SCOPE,
    wire.field(_SCOPE_NAME, SCOPE_NAME.encode())
    + wire.field(_SCOPE_VERSION, SCOPE_VERSION.encode()),
)
_pack_time = struct.Struct("<Q").pack
# What every span the agent makes starts with, in one call: the 16-byte trace id,
# the 8-byte span id, a kind below 128 (one-byte varint) and both times, each
# after its tag (passed as ints: 0x30 _KIND, 0x39 _START, 0x41 _END).
_pack_head = struct.Struct("<2s16s2s8sBBBQBQ").pack
_TRACE_ID_16 = _TRACE_ID + b"\x10"
_SPAN_ID_8 = _SPAN_ID + b"\x08"

_resources: dict[Resource, tuple[Resource, bytes]] = {}
_names = wire.StringFields(_NAME, NAME_CACHE_SIZE)
_attributes = wire.AttributeFields(_ATTRIBUTE, ATTRIBUTE_CACHE_SIZE)
_span_prefix = wire.Prefixes(_SPAN)


def encode_request_bytes(spans: Sequence[Span],
                         pause: Callable[[], object] | None = None) -> bytes:
    """The protobuf encoding of one ExportTraceServiceRequest: one ResourceSpans
    per distinct Resource (first-seen order), each with one ScopeSpans. `pause()`
    is called once every PAUSE_SPANS spans (cpusched.give_way)."""
    # The hot loop is written out inline: a call per span or attribute costs more
    # than the encoding itself.
    attributes = _attributes
    names = _names
    span_prefix = _span_prefix
    pack_head = _pack_head
    out: list[bytes] = []
    todo = PAUSE_SPANS if pause is not None else -1
    for resource, group in _group_by_resource(spans).items():
        pieces: list[bytes] = []
        for span in group:
            todo -= 1
            if not todo:
                pause()
                todo = PAUSE_SPANS
            trace_id = span.trace_id
            span_id = span.span_id
            kind = span.kind
            if len(trace_id) == 16 and len(span_id) == 8 and 0 < kind < 128:
                parts = [
                    pack_head(_TRACE_ID_16, trace_id, _SPAN_ID_8, span_id, 0x30, kind,
                              0x39, span.start_time_ns, 0x41, span.end_time_ns),
                    names[span.name],
                ]
            else:
                parts = [_unusual_head(span), names[span.name]]
            append = parts.append
            if span.parent_span_id:
                append(wire.field(_PARENT_SPAN_ID, span.parent_span_id))
            for group in span.shared:
                encoded = group.encoded
                if encoded is None:  # a race with another encoder only encodes twice
                    encoded = group.encoded = _group_fields(group.items)
                append(encoded)
            for key, value in span.own_attributes.items():
                value_type = type(value)
                if value_type is str or value_type is int:
                    append(attributes[key][value])
                else:
                    append(wire.key_value_field(_ATTRIBUTE, key, value))
            if span.status_code or span.status_message:
                append(_status_field(span))
            body = b"".join(parts)
            pieces.append(span_prefix[len(body)])
            pieces.append(body)
        scope_spans_size = len(_SCOPE_FIELD) + sum(map(len, pieces))
        head = _resource_field(resource) + _SCOPE_SPANS + wire.LENGTH[scope_spans_size]
        out.append(_RESOURCE_SPANS + wire.varint(len(head) + scope_spans_size))
        out.append(head)
        out.append(_SCOPE_FIELD)
        out += pieces
    return b"".join(out)


def _group_fields(items: dict[str, AttrValue]) -> bytes:
    """A group's attribute fields, each from the field cache when its type allows
    (a group made per connection, e.g. a new client port, is encoded once per
    connection: the common fields still come cached)."""
    attributes = _attributes
    return b"".join([attributes[key][value] if type(value) is str or type(value) is int
                     else wire.key_value_field(_ATTRIBUTE, key, value)
                     for key, value in items.items()])


def _group_by_resource(spans: Sequence[Span]) -> dict[Resource, list[Span]]:
    """Spans by Resource, first-seen order. Resources are looked up by identity
    first: a Resource's hash is not cached, it re-hashes every attribute."""
    by_id: dict[int, list[Span]] = {}
    by_value: dict[Resource, list[Span]] = {}
    for span in spans:
        group = by_id.get(id(span.resource))
        if group is None:
            group = by_value.get(span.resource)
            if group is None:
                group = by_value[span.resource] = []
            by_id[id(span.resource)] = group
        group.append(span)
    return by_value


def _resource_field(resource: Resource) -> bytes:
    # The entry is trusted for this very object only: an equal Resource may hold
    # other types ({"k": True} == {"k": 1}), and the agent reuses its Resources.
    entry = _resources.get(resource)
    if entry is not None and entry[0] is resource:
        return entry[1]
    if len(_resources) >= RESOURCE_CACHE_SIZE:
        _resources.clear()
    body = wire.attributes(_RESOURCE_ATTRIBUTE, resource.attributes)
    # No attributes: the library encoder left the resource unset, so do we.
    encoded = wire.field(_RESOURCE, body) if body else b""
    _resources[resource] = (resource, encoded)
    return encoded


def _unusual_head(span: Span) -> bytes:
    """The first fields of a span that _pack_head cannot write (odd id lengths,
    kind 0 or above 127), each omitted when empty as proto3 does."""
    out: list[bytes] = []
    if span.trace_id:
        out.append(wire.field(_TRACE_ID, span.trace_id))
    if span.span_id:
        out.append(wire.field(_SPAN_ID, span.span_id))
    if span.kind:
        out.append(_KIND + wire.varint(span.kind & wire.UINT64_MASK))
    if span.start_time_ns:
        out.append(_START + _pack_time(span.start_time_ns))
    if span.end_time_ns:
        out.append(_END + _pack_time(span.end_time_ns))
    return b"".join(out)


def _status_field(span: Span) -> bytes:
    body = b""
    if span.status_message:
        body = wire.field(_STATUS_MESSAGE, span.status_message.encode())
    if span.status_code:
        body += _STATUS_CODE + wire.varint(span.status_code & wire.UINT64_MASK)
    return wire.field(_STATUS, body)


# --- OTLP/JSON -------------------------------------------------------------


def encode_spans_json(spans: Sequence[Span]) -> dict[str, Any]:
    """One ExportTraceServiceRequest in the OTLP/JSON encoding (``http/json``):
    lowerCamelCase names, hex ids, integer enums, int64 as strings."""
    by_resource: dict[Resource, list[dict[str, Any]]] = {}
    for span in spans:
        out = span_to_json(span, with_resource=False)
        group = by_resource.get(span.resource)
        if group is None:
            by_resource[span.resource] = [out]
        else:
            group.append(out)
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": attributes_to_json(resource.attributes)},
                "scopeSpans": [
                    {"scope": {"name": SCOPE_NAME, "version": SCOPE_VERSION}, "spans": group}
                ],
            }
            for resource, group in by_resource.items()
        ]
    }


def span_to_json(span: Span, *, with_resource: bool = True) -> dict[str, Any]:
    """The span as an OTLP/JSON dict, plus its resource (for JSON lines)."""
    out: dict[str, Any] = {
        "traceId": span.trace_id.hex(),
        "spanId": span.span_id.hex(),
    }
    if span.parent_span_id:
        out["parentSpanId"] = span.parent_span_id.hex()
    out["name"] = span.name
    out["kind"] = int(span.kind)
    out["startTimeUnixNano"] = str(span.start_time_ns)
    out["endTimeUnixNano"] = str(span.end_time_ns)
    out["attributes"] = attributes_to_json(span.attributes.items())
    out["status"] = {"code": int(span.status_code), "message": span.status_message}
    if with_resource:
        out["resource"] = {"attributes": attributes_to_json(span.resource.attributes)}
    return out


def attributes_to_json(items: Iterable[tuple[str, AttrValue]]) -> list[dict[str, Any]]:
    return [{"key": key, "value": any_value_to_json(value)} for key, value in items]


def any_value_to_json(value: object) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        if _INT64_MIN <= value <= _INT64_MAX:
            return {"intValue": str(int(value))}  # int64 is a string in OTLP/JSON
        return {"stringValue": str(value)}
    if isinstance(value, float):
        if math.isfinite(value):
            return {"doubleValue": value}
        # JSON has no NaN/Infinity literals; protobuf's JSON mapping uses these strings.
        if math.isnan(value):
            return {"doubleValue": "NaN"}
        return {"doubleValue": "Infinity" if value > 0 else "-Infinity"}
    if isinstance(value, str):
        return {"stringValue": value}
    if isinstance(value, bytes | bytearray):
        return {"bytesValue": base64.b64encode(value).decode("ascii")}
    if isinstance(value, list | tuple):
        return {"arrayValue": {"values": [any_value_to_json(v) for v in value]}}
    return {"stringValue": str(value)}
