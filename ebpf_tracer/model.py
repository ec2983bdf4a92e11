"""Neutral data model shared by the layers: connection facts, resources, spans.

Kept free of BPF, protobuf and I/O so parsers, span builders and exporters can
be tested on their own.
"""

from __future__ import annotations

import enum
import os
import random
from dataclasses import dataclass, field

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


@dataclass(slots=True)
class Span:
    """A finished span, independent of any exporter's wire format.

    Times are nanoseconds since the Unix epoch.
    """

    name: str
    kind: SpanKind
    start_time_ns: int
    end_time_ns: int
    resource: Resource
    attributes: dict[str, AttrValue] = field(default_factory=dict)
    status_code: StatusCode = StatusCode.UNSET
    status_message: str = ""
    trace_id: bytes = field(default_factory=new_trace_id)
    span_id: bytes = field(default_factory=new_span_id)
    parent_span_id: bytes = b""
