"""Neutral data model shared by the layers: connection facts, resources, spans.

Kept free of BPF, protobuf and I/O so parsers, span builders and exporters can
be tested on their own.
"""

from __future__ import annotations

import enum
import os
import random
from dataclasses import dataclass

AttrValue = str | int | float | bool


class Role(enum.IntEnum):
    """Who this process is on a connection (values match bpf/include/events.h)."""

    UNKNOWN = 0
    CLIENT = 1
    SERVER = 2


class Direction(enum.IntEnum):
    """Byte direction from the traced process's view (values match events.h)."""

    INGRESS = 0  # bytes the traced process read
    EGRESS = 1  # bytes it wrote


class SpanKind(enum.IntEnum):
    """OTLP Span.SpanKind values."""

    INTERNAL = 1
    SERVER = 2
    CLIENT = 3


class StatusCode(enum.IntEnum):
    """OTLP Status.StatusCode values."""

    UNSET = 0
    OK = 1
    ERROR = 2


@dataclass(slots=True)
class ConnMeta:
    """What the agent knows about one traced connection, beside its bytes."""

    pid: int
    fd: int
    generation: int
    role: Role = Role.UNKNOWN
    local_addr: str | None = None
    local_port: int | None = None
    peer_addr: str | None = None
    peer_port: int | None = None
    tls: bool = False


@dataclass(frozen=True, slots=True)
class Resource:
    """The entity that produced spans (one traced process).

    ``attributes`` is a sorted tuple so a Resource is hashable and the exporter
    can group spans by it cheaply.
    """

    attributes: tuple[tuple[str, AttrValue], ...]

    @classmethod
    def from_dict(cls, attrs: dict[str, AttrValue]) -> Resource:
        return cls(tuple(sorted(attrs.items())))

    def as_dict(self) -> dict[str, AttrValue]:
        return dict(self.attributes)

    def get(self, key: str, default: AttrValue | None = None) -> AttrValue | None:
        for k, v in self.attributes:
            if k == key:
                return v
        return default


# Ids need uniqueness, not secrecy (as in the OpenTelemetry SDKs): a seeded
# Mersenne Twister is ~10x cheaper per span than a getrandom() syscall.
_rng = random.Random(os.urandom(32))
_bits = _rng.getrandbits


def new_trace_id() -> bytes:
    """A random, non-zero W3C trace id (16 bytes)."""
    return (_bits(128) or 1).to_bytes(16, "big")


def new_span_id() -> bytes:
    """A random, non-zero W3C span id (8 bytes)."""
    return (_bits(64) or 1).to_bytes(8, "big")


class AttrGroup:
    """Attributes many spans share (what a request decides, a connection's peer):
    built once and never changed, so the OTLP encoder encodes them once
    (``encoded``, set by it) instead of once per span."""

    __slots__ = ("items", "encoded")

    def __init__(self, items: dict[str, AttrValue]) -> None:
        self.items = items
        self.encoded: bytes | None = None

    def __repr__(self) -> str:
        return f"AttrGroup({self.items!r})"


class Span:
    """A finished span, independent of any exporter's wire format.

    Times are nanoseconds since the Unix epoch. Its attributes are the ``shared``
    groups' (in order) then its own; ``attributes`` is that merged view (the own
    dict itself when there are no groups).
    """

    __slots__ = ("name", "kind", "start_time_ns", "end_time_ns", "resource", "own_attributes",
                 "shared", "status_code", "status_message", "trace_id", "span_id",
                 "parent_span_id")

    def __init__(self, name: str, kind: SpanKind, start_time_ns: int, end_time_ns: int,
                 resource: Resource, attributes: dict[str, AttrValue] | None = None,
                 status_code: StatusCode = StatusCode.UNSET, status_message: str = "",
                 trace_id: bytes | None = None, span_id: bytes | None = None,
                 parent_span_id: bytes = b"", shared: tuple[AttrGroup, ...] = ()) -> None:
        self.name = name
        self.kind = kind
        self.start_time_ns = start_time_ns
        self.end_time_ns = end_time_ns
        self.resource = resource
        self.own_attributes = {} if attributes is None else attributes
        self.shared = shared
        self.status_code = status_code
        self.status_message = status_message
        self.trace_id = new_trace_id() if trace_id is None else trace_id
        self.span_id = new_span_id() if span_id is None else span_id
        self.parent_span_id = parent_span_id

    @property
    def attributes(self) -> dict[str, AttrValue]:
        if not self.shared:
            return self.own_attributes
        out: dict[str, AttrValue] = {}
        for group in self.shared:
            out.update(group.items)
        out.update(self.own_attributes)
        return out

    def _fields(self) -> tuple:
        return (self.name, self.kind, self.start_time_ns, self.end_time_ns, self.resource,
                self.attributes, self.status_code, self.status_message, self.trace_id,
                self.span_id, self.parent_span_id)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Span):
            return NotImplemented
        return self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment]  # mutable, as the dataclass was

    def __repr__(self) -> str:
        names = ("name", "kind", "start_time_ns", "end_time_ns", "resource", "attributes",
                 "status_code", "status_message", "trace_id", "span_id", "parent_span_id")
        inner = ", ".join(f"{n}={v!r}" for n, v in zip(names, self._fields(), strict=True))
        return f"Span({inner})"
