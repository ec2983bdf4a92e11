"""HTTP/2 frame layout (RFC 9113 section 4, 6) and the checks used to find a frame again."""

from __future__ import annotations

import re
import struct

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
HEADER = struct.Struct(">HBBBL")  # 24-bit length as 16+8, type, flags, R + stream id
HEADER_LEN = 9
DEFAULT_MAX_FRAME = 16384
MAX_FRAME_LIMIT = (1 << 24) - 1

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS = 0, 1, 2, 3, 4
PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 5, 6, 7, 8, 9

END_STREAM = 0x1
ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20

# Flags each type defines; a resync candidate setting any other is rejected.
VALID_FLAGS = (
    END_STREAM | PADDED,  # DATA
    END_STREAM | END_HEADERS | PADDED | PRIORITY_FLAG,  # HEADERS
    0, 0, ACK, END_HEADERS | PADDED, ACK, 0, 0, END_HEADERS,
)

SETTINGS_HEADER_TABLE_SIZE = 1
SETTINGS_MAX_FRAME_SIZE = 5
SETTING = struct.Struct(">HL")
U32 = struct.Struct(">L")

# A frame header whose length fits 16 KiB and whose type is known: resync candidates.
# (Lookahead so overlapping candidates are all found.)
# Stream frames need a stream id, connection frames (SETTINGS, PING, GOAWAY) stream 0: so a
# run of zero bytes (common in payloads) is no candidate.
CANDIDATE = re.compile(
    rb"(?=\x00[\x00-\x40][\x00-\xff](?:[\x00-\x03\x05\x08\x09][\x00-\x2d](?!\x00\x00\x00\x00)"
    rb"[\x00-\x7f]|[\x04\x06\x07\x08][\x00\x01]\x00\x00\x00\x00))",
    re.DOTALL,
)
CANDIDATE_ANY_LENGTH = re.compile(
    rb"(?=[\x00-\xff]{3}[\x00-\x09][\x00-\x2d][\x00-\x7f])", re.DOTALL
)


def plausible(
    length: int, ftype: int, flags: int, sid: int, max_frame: int, odd_only: bool
) -> bool:
    """Whether a frame header makes sense where framing is unknown (after a gap or join).

    ``sid`` is the raw 32-bit field (its reserved bit must be clear); ``odd_only`` when the
    sender is the client, which only uses the streams it opened.
    """
    if ftype > CONTINUATION or length > max_frame or sid & 0x80000000:
        return False
    if flags & ~VALID_FLAGS[ftype]:
        return False
    if ftype == SETTINGS:
        return sid == 0 and length % 6 == 0 and (length == 0 or not flags & ACK)
    if ftype == PING:
        return sid == 0 and length == 8
    if ftype == GOAWAY:
        return sid == 0 and length >= 8
    if ftype == WINDOW_UPDATE:
        return length == 4 and (sid == 0 or not odd_only or sid & 1 == 1)
    if sid == 0 or (odd_only and not sid & 1):
        return False
    if ftype == RST_STREAM:
        return length == 4
    if ftype == PRIORITY:
        return length == 5
    if ftype == PUSH_PROMISE:
        return not odd_only and length >= 4
    return True


def parse_settings(payload: bytes | memoryview) -> list[tuple[int, int]]:
    """(id, value) pairs of a SETTINGS payload (length already checked)."""
    return [SETTING.unpack_from(payload, i) for i in range(0, len(payload) - 5, 6)]
