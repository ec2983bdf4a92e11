"""Helpers shared by the HTTP/1 tests: replaying captures, feeding in pieces."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ebpf_tracer.model import Direction, Role
from ebpf_tracer.protocols.http1 import Http1Connection, Http1Record

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "http1"

IN, OUT = Direction.INGRESS, Direction.EGRESS


@dataclass(frozen=True)
class Chunk:
    direction: Direction  # from the server's view
    data: bytes
    ts: int


def load_capture(name: str) -> list[Chunk]:
    chunks = []
    with (FIXTURES / f"{name}.jsonl").open() as f:
        for line in f:
            o = json.loads(line)
            d = IN if o["dir"] == "ingress" else OUT
            chunks.append(Chunk(d, base64.b64decode(o["data_b64"]), o["ts"]))
    return chunks


def flip(d: Direction) -> Direction:
    return OUT if d == IN else IN


def replay(
    chunks: Iterable[Chunk], role: Role = Role.SERVER, *, piece: int = 0, copy_cap: int = 0,
    conn: Http1Connection | None = None, close: bool = True,
) -> tuple[list[Http1Record], Http1Connection]:
    """Feed server-view chunks to a connection of ``role`` (CLIENT flips directions).

    piece > 0 feeds each chunk in pieces of that size; copy_cap > 0 keeps only the
    first copy_cap bytes of each chunk and reports the rest as a gap, like the kernel.
    """
    conn = conn or Http1Connection(role)
    out: list[Http1Record] = []
    last = 0
    for c in chunks:
        d = c.direction if role != Role.CLIENT else flip(c.direction)
        data, missing = c.data, 0
        if copy_cap and len(data) > copy_cap:
            data, missing = data[:copy_cap], len(data) - copy_cap
        if piece:
            for i in range(0, len(data), piece):
                out += conn.feed(d, data[i : i + piece], c.ts)
        else:
            out += conn.feed(d, data, c.ts)
        if missing:
            out += conn.gap(d, missing, c.ts)
        last = c.ts
    if close:
        out += conn.close(last + 1)
    return out, conn


def feed_all(
    conn: Http1Connection, items: Iterable[tuple[Direction, bytes | int, int]]
) -> list[Http1Record]:
    """Feed (direction, bytes-or-gap-length, ts) items; return all records."""
    out: list[Http1Record] = []
    for d, data, ts in items:
        if isinstance(data, int):
            out += conn.gap(d, data, ts)
        else:
            out += conn.feed(d, data, ts)
    return out


def summary(records: Iterable[Http1Record]) -> list[tuple]:
    """The parts of records a test usually compares."""
    return [
        (r.method, r.target, r.status, r.request_body_size, r.response_body_size, r.partial)
        for r in records
    ]
