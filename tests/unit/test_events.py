"""The Python mirror of bpf/include/events.h matches what a C compiler lays out."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from ebpf_tracer import events

PROBE = r"""
#include <linux/types.h>
#include <stddef.h>
#include <stdio.h>
#include "events.h"
int main(void) {
    printf("%zu %zu\n", sizeof(struct event_hdr), sizeof(struct open_info));
    printf("%zu %zu %zu %zu %zu %zu\n", offsetof(struct event_hdr, pid),
           offsetof(struct event_hdr, fd), offsetof(struct event_hdr, generation),
           offsetof(struct event_hdr, ts_ns), offsetof(struct event_hdr, len),
           offsetof(struct event_hdr, copied));
    printf("%zu %zu\n", offsetof(struct open_info, peer_addr), offsetof(struct open_info, comm));
    printf("%zu %zu\n", sizeof(struct seg_hdr), offsetof(struct seg_hdr, len));
    return 0;
}
"""


def test_sizes_and_offsets_match_the_c_header(tmp_path: Path) -> None:
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        pytest.fail("no C compiler: `make setup` needs gcc for BCC anyway")
    src = tmp_path / "probe.c"
    src.write_text(PROBE)
    exe = tmp_path / "probe"
    subprocess.run([cc, "-I", str(events.HEADER.parent), "-o", str(exe), str(src)], check=True)
    lines = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.split(
        "\n"
    )
    hdr_size, open_size = map(int, lines[0].split())
    assert hdr_size == events.HDR.size
    assert open_size == events.OPEN_INFO.size
    pid, fd, gen, ts, length, copied = map(int, lines[1].split())
    hdr_fmt = "<BBBBIIiQQQIIII"
    assert events.HDR.format == hdr_fmt
    assert (pid, fd, gen, ts, length, copied) == (
        struct.calcsize("<BBBB"), struct.calcsize("<BBBBII"), struct.calcsize("<BBBBIIi"),
        struct.calcsize("<BBBBIIiQ"), struct.calcsize("<BBBBIIiQQQ"),
        struct.calcsize("<BBBBIIiQQQI"),
    )
    peer_addr, comm = map(int, lines[2].split())
    assert (peer_addr, comm) == (struct.calcsize("<HHi"), struct.calcsize("<HHi16s"))
    seg_size, seg_len = map(int, lines[3].split())
    assert (seg_size, seg_len) == (events.SEG.size, struct.calcsize("<I"))


def test_constants_come_from_the_header() -> None:
    text = events.HEADER.read_text()
    assert f"#define EVT_DATA {int(events.EventType.DATA)}" in text
    assert f"#define PROTO_NONE {int(events.Proto.NONE)}" in text
    assert f"#define EVF_SEGMENTS {events.EVF_SEGMENTS}" in text
    assert events.EVF_HTTP2 == 4


def test_decode_header_roundtrip() -> None:
    raw = events.HDR.pack(1, 0, 2, 0, 10, 11, 5, 99, 123456, 7, 300, 3, 0, 0) + b"GET"
    h = events.decode_header(raw)
    assert h[0] == events.EventType.DATA and h[4] == 10 and h[10] == 300
    assert events.payload(raw, h[11]) == b"GET"
