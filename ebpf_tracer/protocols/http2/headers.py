"""HPACK (RFC 7541) decoding for an observer that may have missed the table's history.

``hpack.Decoder`` needs the whole dynamic table, so one block referencing an entry added
before the tracer started makes it fail. This decoder keeps the entries added since it
started and treats older ones as unknown. Indexes count from the newest entry, so an entry
we saw inserted has the same index here as in the peer's encoder whatever older entries
existed: it is exact. A reference past the known entries names an entry we never saw: the
field is reported unknown, never guessed. Keeping an entry longer than the encoder would is
harmless (the encoder never references an index it evicted), so eviction only needs to be
exact for the table to become whole again.

We use the ``hpack`` library's static table and Huffman decoder; the walk over
representations and the table are ours, because the library cannot decode partially.
"""

from __future__ import annotations

from hpack.exceptions import HPACKDecodingError
from hpack.huffman_table import decode_huffman
from hpack.table import HeaderTable

STATIC: tuple[tuple[bytes, bytes], ...] = HeaderTable.STATIC_TABLE
_NSTATIC = len(STATIC)  # 61
DEFAULT_TABLE_SIZE = 4096  # SETTINGS_HEADER_TABLE_SIZE's initial value
_MAX_INT = 1 << 32

# The only fields a record keeps: spans may carry no other header value.
WANTED = frozenset({
    b":method", b":scheme", b":authority", b":path", b":status",
    b"content-type", b"user-agent", b"grpc-status", b"grpc-message",
})

_huffman_cache: dict[bytes, bytes] = {}
_HUFFMAN_CACHE_MAX = 1024


class HpackError(Exception):
    """The block cannot be HPACK: the connection's decoding state is unusable."""


def _huffman(raw: bytes) -> bytes:
    # Repeated literals (paths, user agents never indexed) are common: cache them.
    out = _huffman_cache.get(raw)
    if out is None:
        try:
            out = decode_huffman(raw)
        except HPACKDecodingError as e:
            raise HpackError("bad huffman") from e
        if len(raw) <= 256:  # bounded: 1024 short strings
            if len(_huffman_cache) >= _HUFFMAN_CACHE_MAX:
                _huffman_cache.clear()
            _huffman_cache[raw] = out
    return out


class HeaderDecoder:
    """Decoder state for the header blocks one endpoint sends.

    ``whole``: the known entries are the entire table, as after a connection preface; an
    index past them is then an error, not an unknown. ``max_table_size`` bounds our memory:
    entries beyond it are dropped and become unknown.
    """

    __slots__ = (
        "_names", "_values", "_sizes", "size", "max_size", "max_known", "whole", "cap",
        "limit", "max_list", "strict",
    )

    def __init__(self, *, max_table_size: int = 65536, max_header_list_size: int = 65536) -> None:
        # Newest entry last. A name of None: inserted with a name we could not resolve.
        # A value of None: not one of WANTED (never kept).
        self._names: list[bytes | None] = []
        self._values: list[bytes | None] = []
        self._sizes: list[int] = []
        self.size = 0  # sum of _sizes (a lower bound when a name is unknown)
        self.max_size = DEFAULT_TABLE_SIZE
        self.max_known = False  # joined late: the encoder's table size is unknown
        self.whole = False
        self.strict = False  # seen from the connection's start: violations are errors
        self.cap = max(0, max_table_size)
        self.limit = DEFAULT_TABLE_SIZE  # largest size the peer's SETTINGS allowed
        self.max_list = max_header_list_size

    def mark_exact(self) -> None:
        """Every block since the connection started was seen (the preface was)."""
        self.max_known = self.strict = True
        self.max_size = DEFAULT_TABLE_SIZE
        self.whole = self.max_size <= self.cap
        self._evict(self.max_size)

    def allow_table_size(self, value: int) -> None:
        """The decoding endpoint sent SETTINGS_HEADER_TABLE_SIZE = value."""
        # The encoder may use any value announced (before or after an ACK): keep the largest.
        if value > self.limit:
            self.limit = value

    def lose(self) -> None:
        """Blocks went by unseen: entries they added shift every index by an unknown amount."""
        self._names.clear()
        self._values.clear()
        self._sizes.clear()
        self.size = 0
        self.whole = False

    def decode(self, block: bytes | memoryview, truncated: bool = False) -> tuple[dict, int]:
        """Decode one header block into ({name: value} of WANTED names, unknown count).

        ``unknown`` counts representations naming entries we never saw. With
        ``truncated`` (a gap cut the block) decoding stops at the first representation
        that does not fit, and the table is lost afterwards. Raises HpackError.
        """
        fields: dict[bytes, bytes] = {}
        unknown = 0
        pos = 0
        n = len(block)
        listed = 0
        names = self._names
        values = self._values
        try:
            while pos < n:
                b = block[pos]
                if b & 0x80:  # indexed field
                    idx = b & 0x7F
                    pos += 1
                    if idx == 0x7F:
                        idx, pos = _varint(block, pos, idx)
                    if idx == 0:
                        raise HpackError("index 0")
                    if idx <= _NSTATIC:
                        name, value = STATIC[idx - 1]
                        listed += 32 + len(name) + len(value)
                    else:
                        j = len(names) - 1 - (idx - _NSTATIC - 1)
                        if j < 0:
                            if self.whole:
                                raise HpackError("index beyond table")
                            unknown += 1
                            continue
                        name = names[j]
                        listed += self._sizes[j]
                        if name is None:
                            unknown += 1
                            continue
                        value = values[j]
                    if name in WANTED and name not in fields:
                        fields[name] = value
                elif b & 0xC0 == 0x40 or b & 0xE0 == 0:  # literal: indexed, not, never
                    indexing = b & 0x40
                    mask = 0x3F if indexing else 0x0F
                    idx = b & mask
                    pos += 1
                    if idx == mask:
                        idx, pos = _varint(block, pos, idx)
                    name_ok = True
                    if idx == 0:
                        name, pos = self._string(block, pos, True)
                    elif idx <= _NSTATIC:
                        name = STATIC[idx - 1][0]
                    else:
                        j = len(names) - 1 - (idx - _NSTATIC - 1)
                        if j < 0:
                            if self.whole:
                                raise HpackError("index beyond table")
                            name = None
                        else:
                            name = names[j]
                        name_ok = name is not None
                    wanted = name_ok and name in WANTED
                    # A value is only decoded when kept or when its size matters.
                    vpos = pos
                    value, pos = self._string(block, pos, wanted or bool(indexing))
                    if not name_ok:
                        unknown += 1
                    elif wanted and name not in fields:
                        fields[name] = value
                    vlen = len(value) if value is not None else pos - vpos
                    nlen = len(name) if name is not None else 0
                    listed += 32 + nlen + vlen
                    if indexing:
                        self._insert(name, value if wanted else None, 32 + nlen + vlen)
                elif b & 0xE0 == 0x20:  # dynamic table size update
                    if fields or unknown or listed:
                        raise HpackError("table size update after a field")
                    size = b & 0x1F
                    pos += 1
                    if size == 0x1F:
                        size, pos = _varint(block, pos, size)
                    self._resize(size)
                if listed > self.max_list:
                    raise HpackError("header list too large")
        except _Truncated:
            if not truncated:
                raise HpackError("truncated block") from None
        if truncated:
            self.lose()
        return fields, unknown

    # ------------------------------------------------------------ internals

    def _string(self, block: bytes | memoryview, pos: int, decode: bool) -> tuple:
        """A string literal at pos: (bytes or None when not decoded, next pos)."""
        if pos >= len(block):
            raise _Truncated
        b = block[pos]
        length = b & 0x7F
        pos += 1
        if length == 0x7F:
            length, pos = _varint(block, pos, length)
        end = pos + length
        if end > len(block):
            raise _Truncated
        if not decode:
            return None, end
        raw = bytes(block[pos:end])
        return (_huffman(raw) if b & 0x80 else raw), end

    def _insert(self, name: bytes | None, value: bytes | None, size: int) -> None:
        limit = self.max_size if self.max_known else self.cap
        if size > limit and self.max_known:
            # RFC 7541 4.4: an entry larger than the table empties it. Now we know it all.
            self.lose()
            self.whole = self.max_size <= self.cap
            return
        self._names.append(name)
        self._values.append(value)
        self._sizes.append(size)
        self.size += size
        self._evict(limit)
        if not self.whole and self.max_known and self.max_size <= self.cap:
            # No room left for any entry older than the ones we saw (32 is the least size).
            if self.size + 32 > self.max_size:
                self.whole = True

    def _resize(self, size: int) -> None:
        if size > self.limit and self.strict:
            raise HpackError("table size above the peer's setting")
        self.max_size = size
        self.max_known = True
        if size == 0:
            self.lose()
            self.whole = True
            return
        self._evict(size)

    def _evict(self, limit: int) -> None:
        if limit > self.cap:
            limit = self.cap
        if self.size <= limit:
            return
        sizes = self._sizes
        k = 0
        total = self.size
        while total > limit and k < len(sizes):
            total -= sizes[k]
            k += 1
        del self._names[:k], self._values[:k], sizes[:k]
        self.size = total
        if self.max_known and self.max_size > self.cap:
            self.whole = False  # dropped for our memory, still in the encoder's table


class _Truncated(Exception):
    pass


def _varint(block: bytes | memoryview, pos: int, value: int) -> tuple[int, int]:
    """The continuation bytes of an HPACK integer whose prefix was all ones."""
    shift = 0
    n = len(block)
    while True:
        if pos >= n:
            raise _Truncated
        b = block[pos]
        pos += 1
        value += (b & 0x7F) << shift
        if value > _MAX_INT or shift > 28:
            raise HpackError("integer overflow")
        if not b & 0x80:
            return value, pos
        shift += 7
