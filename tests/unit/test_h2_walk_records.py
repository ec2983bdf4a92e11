"""Records of the kernel's HTTP/2 frame walk (EVF_SEGMENTS) through the agent.

`kernel_walk` models bpf/tracer.c's h2_walk on captured traffic: per direction,
from its first byte, frame headers and non-DATA payloads are copied, of a DATA
payload only its first H2_DATA_COPY bytes; each syscall becomes one or more
records of segments (skip, then bytes), a new record whenever the payload
buffer fills. The records are packed as the kernel packs them and fed to the
agent's record handler: every capture decodes exactly, as if copied whole.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest

from ebpf_tracer import events
from ebpf_tracer.agent import Agent
from ebpf_tracer.config import Config
from ebpf_tracer.conn.manager import ConnManager
from ebpf_tracer.events import EVF_HTTP2, EVF_SEGMENTS, HDR, SEG, OpenInfo
from ebpf_tracer.model import Direction, Role
from ebpf_tracer.protocols.http2 import Http2Record
from ebpf_tracer.protocols.http2.frames import DATA, HEADER

from .http2_util import load_capture, summary
from .test_http2_fixtures import EXPECTED, GRPC_DETAILS, NAMES

H2_DATA_COPY = 128  # bpf/tracer.c
H2_FRAME_COPY = 16384
GONE = 2**22 + 2001  # a pid that does not exist: /proc lookups find nothing
FD, GEN = 9, 77


@dataclass
class Walk:
    """struct h2_dir: where the next frame header starts."""

    new: bool = True
    copy: int = 0
    skip: int = 0
    hbuf: bytes = b""


def walk(w: Walk, data: bytes) -> list[tuple[str, bytes | int]]:
    """One syscall's bytes -> ("copy", bytes) and ("skip", n) items, in order."""
    out: list[tuple[str, bytes | int]] = []
    i = 0
    while i < len(data):
        if w.copy:
            n = min(w.copy, len(data) - i)
            out.append(("copy", data[i : i + n]))
            w.copy -= n
        elif w.skip:
            n = min(w.skip, len(data) - i)
            out.append(("skip", n))
            w.skip -= n
        else:
            if w.new:
                w.new = False
                if data[i : i + 4] == b"PRI ":
                    w.copy = 24
                    continue
            n = min(9 - len(w.hbuf), len(data) - i)
            w.hbuf += data[i : i + n]
            out.append(("copy", data[i : i + n]))
            if len(w.hbuf) == 9:
                hi, lo, ftype, _, _ = HEADER.unpack(w.hbuf)
                w.hbuf = b""
                length = hi << 8 | lo
                keep = min(length, H2_DATA_COPY if ftype == DATA else H2_FRAME_COPY)
                w.copy, w.skip = keep, length - keep
        i += n
    return out


@dataclass
class Rec:
    pos: int
    length: int = 0
    segs: list[list] = field(default_factory=list)  # [skip, bytes]

    def size(self) -> int:
        return sum(8 + len(b) for _, b in self.segs)


def records(pos: int, items: list, buf: int) -> list[Rec]:
    """Items -> records of at most `buf` payload bytes, as h2_emit cuts them."""
    recs = [Rec(pos)]
    for kind, x in items:
        r = recs[-1]
        if kind == "skip":
            if not r.segs or r.segs[-1][1]:
                r.segs.append([0, b""])
            r.segs[-1][0] += x
            r.length += x
            continue
        if r.size() + len(x) + 8 > buf and r.length:
            r = Rec(r.pos + r.length)
            recs.append(r)
        if not r.segs:
            r.segs.append([0, b""])
        r.segs[-1][1] += x
        r.length += len(x)
    return [r for r in recs if r.length]


def pack(r: Rec, direction: int, ts: int) -> bytes:
    """One ring-buffer record, as the kernel writes it (an empty last segment is not sent)."""
    segs = [s for s in r.segs if s[1]]
    payload = b"".join(SEG.pack(skip, len(b)) + b for skip, b in segs)
    hdr = HDR.pack(events.EventType.DATA, direction, 0, EVF_HTTP2 | EVF_SEGMENTS, GONE, GONE, FD,
                   GEN, ts, r.pos, r.length, len(payload), 0, 0)
    return hdr + payload


def kernel_walk(name: str, role: Role, buf: int = 8192, drop: int = -1) -> list[bytes]:
    """A capture as the kernel would send it to a traced process of `role`."""
    walks = {Direction.INGRESS: Walk(), Direction.EGRESS: Walk()}
    pos = {Direction.INGRESS: 0, Direction.EGRESS: 0}
    out = []
    for c in load_capture(name):
        d = c.direction if role == Role.SERVER else Direction(1 - c.direction)
        for r in records(pos[d], walk(walks[d], c.data), buf):
            out.append(pack(r, int(d), c.ts))
        pos[d] += len(c.data)
    if drop >= 0:
        del out[drop]
    return out


def agent_records(recs: list[bytes], role: Role) -> tuple[list, Agent]:
    agent = Agent(Config(), exporter=SimpleNamespace(export=lambda s: None, shutdown=lambda: None))
    got: list = []
    agent._emit = got.extend  # (meta, record) pairs
    info = OpenInfo(socket.AF_INET, 50051, -1, socket.inet_aton("127.0.0.1") + bytes(12), b"t\0")
    agent.conns.on_open(GONE, FD, GEN, int(role), 1, info)
    for r in recs:
        agent._on_record(memoryview(r))
    assert agent.decode_errors == 0
    got += agent.conns.on_close(GONE, FD, GEN, 2**62)
    return [rec for _, rec in got], agent


@pytest.mark.parametrize("role", [Role.SERVER, Role.CLIENT], ids=lambda r: r.name)
@pytest.mark.parametrize("name", NAMES)
def test_walked_capture_decodes_exactly(name: str, role: Role) -> None:
    recs = kernel_walk(name, role)
    assert all(HDR.unpack_from(r)[3] & EVF_SEGMENTS for r in recs)
    got, agent = agent_records(recs, role)
    h2 = [r for r in got if isinstance(r, Http2Record)]
    assert summary(h2) == EXPECTED[name]
    assert all(not r.unknown_fields for r in h2)
    if name in GRPC_DETAILS:  # message counts survive: prefixes are in the copied heads
        assert [(r.request_messages, r.response_messages, r.reset_code, r.reset_by)
                for r in h2] == GRPC_DETAILS[name]
    t = agent.conns.stats
    assert t.gaps == 0 and t.unparseable == 0


@pytest.mark.parametrize("name", ["grpc_unary", "grpc_server_streaming", "nghttpd_nghttp"])
def test_records_cut_when_the_buffer_fills(name: str) -> None:
    """A syscall whose copies overflow the record buffer gives several records with
    consecutive positions; the agent joins them."""
    recs = kernel_walk(name, Role.SERVER, buf=48)
    assert len(recs) > len(load_capture(name))
    got, _ = agent_records(recs, Role.SERVER)
    assert summary([r for r in got if isinstance(r, Http2Record)]) == EXPECTED[name]


def test_skipped_data_is_not_counted_as_lost() -> None:
    m = ConnManager()
    info = OpenInfo(socket.AF_INET, 80, -1, socket.inet_aton("127.0.0.1") + bytes(12), b"t\0")
    m.on_open(GONE, FD, GEN, int(Role.SERVER), 1, info)
    total_skipped = 0
    for raw in kernel_walk("grpc_unary", Role.SERVER):
        (_, d, _, flags, _, _, _, _, ts, pos, length, copied, _, _) = HDR.unpack_from(raw)
        segs = events.segments(raw, copied)
        total_skipped += length - sum(len(b) for _, b in segs)
        m.on_data(GONE, FD, GEN, int(Role.SERVER), d, pos, length, b"", ts, b"", flags, segs)
    t = m.trackers()[0]
    assert total_skipped > 40_000  # the 40 kB call's DATA went by uncopied
    assert t.skipped == total_skipped and t.gaps == 0


def test_a_lost_record_is_a_gap() -> None:
    """A record lost on the way (ring buffer full) shows as a position jump: counted
    as lost, and the parser is told."""
    recs = kernel_walk("grpc_unary", Role.SERVER)
    got, agent = agent_records(recs[:4] + recs[5:], Role.SERVER)
    assert agent.conns.stats.gaps == 1
    assert len([r for r in got if isinstance(r, Http2Record)]) >= 1


def test_segments_decode() -> None:
    raw = pack(Rec(10, 30, [[0, b"abc"], [20, b"defgh"]]), 1, 5)
    copied = HDR.unpack_from(raw)[11]
    assert copied == 8 + 3 + 8 + 5
    assert events.segments(raw, copied) == [(0, b"abc"), (20, b"defgh")]
    assert events.segments(raw[: HDR.size], 0) == []
