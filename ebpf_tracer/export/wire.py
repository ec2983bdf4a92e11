"""Protobuf wire format, written by hand: varints, length-delimited fields, and
OTLP's KeyValue/AnyValue (opentelemetry/proto/common/v1/common.proto).

Values are typed exactly as the protobuf-library encoder typed them: bool before
int, ints outside int64 as their digits, subclasses (IntEnum...) by their base
type, lists and tuples as arrays, anything else as ``str(value)``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
UINT64_MASK = 2**64 - 1  # a negative int64 is sent as its 64-bit two's complement

# Caches are cleared when full: simpler than LRU, and refilling is cheap.
KEY_CACHE_SIZE = 4096

_ONE_BYTE = tuple(bytes((n,)) for n in range(128))
_pack_double = struct.Struct("<d").pack

# AnyValue tags: string_value=1, bool_value=2, int_value=3, double_value=4,
# array_value=5, bytes_value=7. ArrayValue.values=1. KeyValue key=1, value=2.
_STRING = b"\x0a"
_TRUE = b"\x10\x01"
_FALSE = b"\x10\x00"
_INT = b"\x18"
_DOUBLE = b"\x21"
_ARRAY = b"\x2a"
_BYTES = b"\x3a"
_ARRAY_ITEM = b"\x0a"
_KEY = b"\x0a"
_VALUE = b"\x12"


def varint(n: int) -> bytes:
    """``n`` >= 0 as a base-128 varint."""
    if n < 128:
        return _ONE_BYTE[n]
    if n < 16384:
        return bytes((n & 0x7F | 0x80, n >> 7))
    if n < 2097152:  # ports, body sizes: worth the branch
        return bytes((n & 0x7F | 0x80, n >> 7 & 0x7F | 0x80, n >> 14))
    out = bytearray()
    while n > 127:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


class Prefixes(dict[int, bytes]):
    """Length -> ``tag`` + varint(length), built once: a lookup costs a fraction of
    ``varint``. Only lengths below 2**14 are kept, so it stays small."""

    def __init__(self, tag: bytes = b"") -> None:
        super().__init__()
        self.tag = tag

    def __missing__(self, n: int) -> bytes:
        encoded = self.tag + varint(n)
        if n < 16384:
            self[n] = encoded
        return encoded


LENGTH = Prefixes()
_INT_VALUES = Prefixes(_INT)  # int_value fields: status codes, small sizes


def field(tag: bytes, body: bytes) -> bytes:
    """A length-delimited field (string, bytes or message)."""
    return tag + LENGTH[len(body)] + body


def any_value(value: object) -> bytes:
    """The body of the AnyValue for ``value``; empty for an empty list, which the
    library encoder left without any value set."""
    kind = type(value)
    if kind is str:
        return field(_STRING, value.encode())  # type: ignore[attr-defined]
    if kind is int:
        if 0 <= value <= _INT64_MAX:  # type: ignore[operator]
            return _INT_VALUES[value] if value < 16384 else _INT + varint(value)  # type: ignore[index, operator, arg-type]
        return _int(value)  # type: ignore[arg-type]
    if kind is bool:
        return _TRUE if value else _FALSE
    if kind is float:
        return _DOUBLE + _pack_double(value)
    if isinstance(value, bool):  # before int: bool is an int subclass
        return _TRUE if value else _FALSE
    if isinstance(value, int):
        return _int(int(value))
    if isinstance(value, float):
        return _DOUBLE + _pack_double(float(value))
    if isinstance(value, bytes | bytearray):
        return field(_BYTES, bytes(value))
    if isinstance(value, list | tuple):
        if not value:
            return b""
        return field(_ARRAY, b"".join([field(_ARRAY_ITEM, any_value(v)) for v in value]))
    return field(_STRING, str(value).encode())  # str subclasses and any other object


def _int(value: int) -> bytes:
    if _INT64_MIN <= value <= _INT64_MAX:
        return _INT + varint(value & UINT64_MASK)
    # Does not fit OTLP's int64: keep the digits rather than fail the batch.
    return field(_STRING, str(value).encode())


class StringFields(dict[str, bytes]):
    """Text -> its encoded field with ``tag`` (empty for "", which proto3 omits)."""

    def __init__(self, tag: bytes, size: int) -> None:
        super().__init__()
        self.tag = tag
        self.size = size

    def __missing__(self, text: str) -> bytes:
        if len(self) >= self.size:
            self.clear()
        encoded = self[text] = field(self.tag, text.encode()) if text else b""
        return encoded


_keys = StringFields(_KEY, KEY_CACHE_SIZE)


def key_value_field(tag: bytes, key: str, value: object) -> bytes:
    """A KeyValue field with tag ``tag`` (e.g. Span.attributes)."""
    encoded = any_value(value)
    if encoded:
        return field(tag, _keys[key] + _VALUE + LENGTH[len(encoded)] + encoded)
    return field(tag, _keys[key])


def attributes(tag: bytes, items: Iterable[tuple[str, object]]) -> bytes:
    """KeyValue fields for ``items``, uncached (resources and attribute groups: cached
    whole by the caller)."""
    return b"".join([key_value_field(tag, key, value) for key, value in items])


class AttributeFields(dict[str, "_ValueFields"]):
    """key -> value -> the encoded KeyValue field with ``tag``, for values of type
    exactly str or int: True == 1 == 1.0 and a str-mixin Enum equals its value, so
    no other type may be looked up here (the caller checks ``type(value)``).

    Two levels rather than (key, value) tuples: a str caches its hash, a tuple
    hashes on every lookup. At most ``size`` fields: a key holding a quarter of
    them (client ports, body sizes) drops its own values, so it cannot flush the
    steady ones; past ``size`` in all, everything is dropped. Meant for the one
    export thread: concurrent use stays correct, only the count could drift.
    """

    def __init__(self, tag: bytes, size: int) -> None:
        super().__init__()
        self.tag = tag
        self.size = size
        self.count = 0

    def __missing__(self, key: str) -> _ValueFields:
        values = self[key] = _ValueFields(self, _FieldHeads(self.tag, _keys[key] + _VALUE))
        return values


class _FieldHeads(dict[int, bytes]):
    """Length of an encoded AnyValue -> what precedes it in its KeyValue field."""

    def __init__(self, tag: bytes, key_prefix: bytes) -> None:
        super().__init__()
        self.tag = tag
        self.key_prefix = key_prefix  # the key's field, then the value's tag

    def __missing__(self, n: int) -> bytes:
        inner = self.key_prefix + varint(n)
        head = self.tag + varint(len(inner) + n) + inner
        if n < 128:  # the common case, and a bound
            self[n] = head
        return head


class _ValueFields(dict[object, bytes]):
    """One key's values -> their encoded KeyValue fields."""

    def __init__(self, owner: AttributeFields, heads: _FieldHeads) -> None:
        super().__init__()
        self.owner = owner
        self.heads = heads

    def __missing__(self, value: object) -> bytes:
        if type(value) is int and 16384 <= value < 2097152:
            # Ports and body sizes, the usual misses: their int_value (tag 0x18 = _INT,
            # a 3-byte varint) inline, without the calls any_value would take.
            encoded = bytes((0x18, value & 0x7F | 0x80, value >> 7 & 0x7F | 0x80, value >> 14))
        else:
            encoded = any_value(value)
        key_value = self.heads[len(encoded)] + encoded
        owner = self.owner
        if len(self) * 4 >= owner.size:
            owner.count -= len(self)
            self.clear()
        elif owner.count >= owner.size:
            owner.count = 0
            owner.clear()
            return key_value  # this one is no longer the owner's: not worth filling
        self[value] = key_value
        owner.count += 1
        return key_value
