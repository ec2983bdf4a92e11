"""The one Python mirror of bpf/include/events.h.

Constants are read from the header itself, so they cannot drift; the struct
layouts below are checked against the C compiler at every load (the loader
passes their sizes as -D flags to `_Static_assert`s) and by a unit test.
Decoding is the agent's hot path: one `struct.unpack_from` per record.
"""

from __future__ import annotations

import enum
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path

# bpf/ sits beside the package in a checkout; an image may put it elsewhere.
BPF_DIR = Path(
    os.environ.get("EBPF_TRACER_BPF_DIR") or Path(__file__).resolve().parent.parent / "bpf"
)
HEADER = BPF_DIR / "include" / "events.h"


def _read_defines(path: Path) -> dict[str, int]:
    defines: dict[str, int] = {}
    for m in re.finditer(r"^#define\s+(\w+)\s+(\d+)\b", path.read_text(), re.M):
        defines[m.group(1)] = int(m.group(2))
    return defines


C = _read_defines(HEADER)


class EventType(enum.IntEnum):
    DATA = C["EVT_DATA"]
    OPEN = C["EVT_OPEN"]
    CLOSE = C["EVT_CLOSE"]
    PROC_EXIT = C["EVT_PROC_EXIT"]
    PROC_EXEC = C["EVT_PROC_EXEC"]
    H1_RESP = C["EVT_H1_RESP"]


class Proto(enum.IntEnum):
    UNKNOWN = C["PROTO_UNKNOWN"]
    HTTP1 = C["PROTO_HTTP1"]
    HTTP2 = C["PROTO_HTTP2"]
    NONE = C["PROTO_NONE"]


EVF_NOCOPY = C["EVF_NOCOPY"]
EVF_EXISTING = C["EVF_EXISTING"]
EVF_HTTP2 = C["EVF_HTTP2"]
EVF_TLS = C["EVF_TLS"]
EVF_SEGMENTS = C["EVF_SEGMENTS"]
EVF_H1_REQ = C["EVF_H1_REQ"]

# struct event_hdr: type, direction, role, flags, pid, tid, fd, generation,
# ts_ns, pos, len, copied, tail, _reserved.
HDR = struct.Struct("<BBBBIIiQQQIIII")
# struct open_info: family, peer_port, listen_fd, peer_addr[16], comm[16].
OPEN_INFO = struct.Struct("<HHi16s16s")

# struct seg_hdr: skip, len (EVF_SEGMENTS payloads).
SEG = struct.Struct("<II")
# struct h1_resp_info: start_ns, body, head_len, status, minor, partial, req_ts,
# req_pos, req_len, req_copied (EVT_H1_RESP; the request's bytes follow).
H1_RESP = struct.Struct("<QQIHBBQQII")

assert HDR.size == 56 and OPEN_INFO.size == 40 and SEG.size == 8 and H1_RESP.size == 48


@dataclass(slots=True)
class OpenInfo:
    family: int
    peer_port: int
    listen_fd: int
    peer_addr: bytes
    comm: bytes


def decode_header(buf: bytes | memoryview) -> tuple:
    """Decode the fixed header of one record (a tuple in HDR field order)."""
    return HDR.unpack_from(buf, 0)


def record_ts(buf: bytes | memoryview) -> int:
    """A record's ts_ns: bpf_ktime_get_ns(), i.e. CLOCK_MONOTONIC."""
    return HDR.unpack_from(buf, 0)[8]


def decode_open(buf: bytes | memoryview) -> OpenInfo:
    return OpenInfo(*OPEN_INFO.unpack_from(buf, HDR.size))


def payload(buf: bytes | memoryview, copied: int) -> bytes:
    return bytes(buf[HDR.size : HDR.size + copied])


def segments(buf: bytes | memoryview, copied: int) -> list[tuple[int, bytes]]:
    """An EVF_SEGMENTS payload: (stream bytes not copied, then the bytes copied), in order."""
    out = []
    o = HDR.size
    end = o + copied
    unpack = SEG.unpack_from
    while o + 8 <= end:
        skip, n = unpack(buf, o)
        o += 8
        out.append((skip, bytes(buf[o : o + n])))
        o += n
    return out
