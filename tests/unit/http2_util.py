"""Helpers shared by the HTTP/2 tests: replaying captures, building frames with `h2`."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import h2.settings

from ebpf_tracer.model import Direction, Role
from ebpf_tracer.protocols.http2 import Http2Connection, Http2Record

from .http1_util import Chunk, flip

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "http2"

IN, OUT = Direction.INGRESS, Direction.EGRESS


def load_capture(name: str) -> list[Chunk]:
    chunks = []
    with (FIXTURES / f"{name}.jsonl").open() as f:
        for line in f:
            o = json.loads(line)
            d = IN if o["dir"] == "ingress" else OUT
            chunks.append(Chunk(d, base64.b64decode(o["data_b64"]), o["ts"]))
    return chunks


def replay(
    chunks: Iterable[Chunk], role: Role = Role.SERVER, *, piece: int = 0, copy_cap: int = 0,
    conn: Http2Connection | None = None, close: bool = True,
) -> tuple[list, Http2Connection]:
    """Feed server-view chunks to a connection of ``role`` (CLIENT flips directions).

    piece > 0 feeds each chunk in pieces of that size; copy_cap > 0 keeps only the first
    copy_cap bytes of each chunk and reports the rest as a gap, like the kernel.
    """
    conn = conn or Http2Connection(role)
    out: list = []
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


def summary(records: Iterable[Http2Record]) -> list[tuple]:
    """The parts of records a test usually compares."""
    return [
        (r.stream_id, r.method, r.path, r.status, r.grpc_status, r.request_body_size,
         r.response_body_size, r.partial)
        for r in records
    ]


class H2Pair:
    """A client and a server `h2` connection, whose bytes are collected as server-view chunks."""

    def __init__(self, header_table_size: int | None = None) -> None:
        self.client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.server = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None)
        )
        self.chunks: list[Chunk] = []
        self.ts = 0
        self.client.initiate_connection()
        self.server.initiate_connection()
        if header_table_size is not None:
            self.client.update_settings({h2.settings.SettingCodes.HEADER_TABLE_SIZE:
                                         header_table_size})
        self.pump()

    def pump(self) -> None:
        """Move bytes both ways until quiet, recording them."""
        while True:
            moved = False
            for src, dst, d in ((self.client, self.server, IN), (self.server, self.client, OUT)):
                data = src.data_to_send()
                if data:
                    self.ts += 10
                    self.chunks.append(Chunk(d, data, self.ts))
                    for ev in dst.receive_data(data):
                        if isinstance(ev, h2.events.DataReceived):  # keep windows open
                            dst.acknowledge_received_data(ev.flow_controlled_length,
                                                          ev.stream_id)
                    moved = True
            if not moved:
                return

    def request(
        self, path: str, *, method: str = "GET", body: bytes = b"",
        headers: list[tuple[str, str]] | None = None,
    ) -> int:
        sid = self.client.get_next_available_stream_id()
        hdrs = [(":method", method), (":scheme", "http"), (":authority", "example.com"),
                (":path", path), *(headers or [])]
        self.client.send_headers(sid, hdrs, end_stream=not body)
        if body:
            self.client.send_data(sid, body, end_stream=True)
        self.pump()
        return sid

    def respond(
        self, sid: int, status: int = 200, body: bytes = b"",
        headers: list[tuple[str, str]] | None = None,
        trailers: list[tuple[str, str]] | None = None,
    ) -> None:
        self.server.send_headers(sid, [(":status", str(status)), *(headers or [])],
                                 end_stream=not body and not trailers)
        if body:
            self.server.send_data(sid, body, end_stream=not trailers)
        if trailers:
            self.server.send_headers(sid, trailers, end_stream=True)
        self.pump()
