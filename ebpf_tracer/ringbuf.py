"""Consume a BPF ring buffer through its memory mapping, without a callback per record.

BCC's ``open_ring_buffer`` calls back into Python through ctypes once per record,
which costs more than decoding the record itself. The ring buffer's layout is a
stable kernel ABI (kernel/bpf/ringbuf.c, libbpf's ringbuf.c is the reference
consumer), so the agent reads it directly:

- page 0, read-write: ``consumer_pos`` (u64), advanced by us;
- page 1, read-only: ``producer_pos`` (u64), advanced by the kernel;
- from page 2: the data area. The kernel offers it twice in a row so a record
  that wraps around the end is contiguous; we map it once (the second copy
  would double the ring's share of the agent's RSS) and join the rare
  wrapping record from its two pieces.

Each record is an 8-byte header (u32 length with BUSY and DISCARD bits, u32 page
offset) and its payload, padded to 8 bytes. x86-64 and arm64 loads and stores of
aligned 8-byte words are atomic; Python's struct does them with one memcpy, and
the kernel publishes ``producer_pos`` only after the record headers it covers.
"""

from __future__ import annotations

import mmap
import select
import struct
from collections.abc import Callable

BUSY_BIT = 1 << 31  # the producer has reserved the record but not submitted it
DISCARD_BIT = 1 << 30  # submitted as discarded: skip
HDR_SIZE = 8

_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")


class RingBuffer:
    """One BPF_MAP_TYPE_RINGBUF map, read through mmap. Not thread-safe."""

    def __init__(self, map_fd: int, data_size: int) -> None:
        page = mmap.PAGESIZE
        if data_size <= 0 or data_size & (data_size - 1) or data_size % page:
            raise ValueError(f"ring buffer size {data_size} is not a power-of-2 pages")
        self._size = data_size
        self._mask = data_size - 1
        self._cons = mmap.mmap(map_fd, page, flags=mmap.MAP_SHARED,
                               prot=mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        self._prod = mmap.mmap(map_fd, page + data_size, flags=mmap.MAP_SHARED,
                               prot=mmap.PROT_READ, offset=page)
        self._view = memoryview(self._prod)
        self._data_off = page
        self._epoll = select.epoll()
        self._epoll.register(map_fd, select.EPOLLIN)

    @property
    def size(self) -> int:
        """Bytes in the data area."""
        return self._size

    def available(self) -> int:
        """Bytes submitted or reserved but not yet consumed."""
        return _U64.unpack_from(self._prod, 0)[0] - _U64.unpack_from(self._cons, 0)[0]

    def wait(self, timeout_s: float) -> bool:
        """Sleep until the kernel signals new data (or the timeout); True if signalled."""
        return bool(self._epoll.poll(timeout_s))

    def consume_paced(self, callback: Callable[[memoryview], object], limit: int,
                      every: int, pause: Callable[[], object]) -> int:
        """`consume`, calling `pause()` after each `every` records while more may
        follow (cpusched.give_way: a busy agent lets waiting applications in)."""
        n = 0
        while n < limit:
            k = self.consume(callback, min(every, limit - n))
            n += k
            if k < every or n >= limit:
                break
            pause()
        return n

    def consume(self, callback: Callable[[memoryview], object], limit: int = 1 << 30) -> int:
        """Hand every submitted record to ``callback`` (the view is valid only during
        the call); returns how many. Stops at a record still being written."""
        cons_map, view = self._cons, self._view
        cons = _U64.unpack_from(cons_map, 0)[0]
        mask, base = self._mask, self._data_off
        end = base + self._size
        unpack_len = _U32.unpack_from
        n = 0
        while n < limit:
            prod = _U64.unpack_from(self._prod, 0)[0]
            if cons >= prod:
                break
            start_cons = cons
            while cons < prod and n < limit:
                off = base + (cons & mask)
                length = unpack_len(view, off)[0]
                if length & BUSY_BIT:
                    prod = cons  # not submitted yet: stop here, retry on next call
                    break
                size = length & ~(BUSY_BIT | DISCARD_BIT)
                cons += (size + HDR_SIZE + 7) & ~7
                if not length & DISCARD_BIT:
                    start = off + HDR_SIZE
                    if start + size <= end:
                        callback(view[start : start + size])
                    else:  # wraps around the end of the data area (headers never do)
                        if start >= end:
                            start -= self._size
                            callback(view[start : start + size])
                        else:
                            rest = size - (end - start)
                            callback(memoryview(bytes(view[start:end])
                                                + bytes(view[base : base + rest])))
                    n += 1
            if cons != start_cons:
                # Release the space to the kernel once per batch, not per record.
                _U64.pack_into(cons_map, 0, cons)
            if cons < prod or cons == start_cons:
                break
        return n

    def first(self) -> memoryview | None:
        """The oldest submitted record not yet consumed (valid until the next
        consume), or None; what waits behind a record still being written is
        not looked at."""
        cons = _U64.unpack_from(self._cons, 0)[0]
        if cons >= _U64.unpack_from(self._prod, 0)[0]:
            return None
        off = self._data_off + (cons & self._mask)
        length = _U32.unpack_from(self._view, off)[0]
        if length & (BUSY_BIT | DISCARD_BIT):
            return None
        start = off + HDR_SIZE
        size = length & ~(BUSY_BIT | DISCARD_BIT)
        if start + size > self._data_off + self._size:
            return None  # wraps around: rare, and the next poll looks again
        return self._view[start : start + size]

    def close(self) -> None:
        self._epoll.close()
        try:
            self._view.release()
            self._prod.close()
            self._cons.close()
        except BufferError:  # a record view still referenced: the GC unmaps later
            pass
