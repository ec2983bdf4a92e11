"""gRPC over HTTP/2: status codes, the mappings of its spec, message framing."""

from __future__ import annotations

# google.rpc.Code / grpc status codes.
STATUS_NAMES: tuple[str, ...] = (
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
    "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
    "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
    "UNAUTHENTICATED",
)
OK, CANCELLED, UNKNOWN = 0, 1, 2
INTERNAL, UNAVAILABLE = 13, 14

# HTTP/2 error codes (RFC 9113 section 7).
H2_ERROR_NAMES: tuple[str, ...] = (
    "NO_ERROR", "PROTOCOL_ERROR", "INTERNAL_ERROR", "FLOW_CONTROL_ERROR", "SETTINGS_TIMEOUT",
    "STREAM_CLOSED", "FRAME_SIZE_ERROR", "REFUSED_STREAM", "CANCEL", "COMPRESSION_ERROR",
    "CONNECT_ERROR", "ENHANCE_YOUR_CALM", "INADEQUATE_SECURITY", "HTTP_1_1_REQUIRED",
)
H2_CANCEL = 8

# gRPC's PROTOCOL-HTTP2.md, "Errors": RST_STREAM code -> status; anything else is INTERNAL.
_RST_TO_STATUS = {7: UNAVAILABLE, 8: CANCELLED, 11: 8, 12: 7}
# ... and "HTTP to gRPC status code mapping" for responses without grpc-status.
_HTTP_TO_STATUS = {400: INTERNAL, 401: 16, 403: 7, 404: 12, 429: UNAVAILABLE,
                   502: UNAVAILABLE, 503: UNAVAILABLE, 504: UNAVAILABLE}


def status_name(code: int) -> str:
    return STATUS_NAMES[code] if 0 <= code < len(STATUS_NAMES) else str(code)


def h2_error_name(code: int) -> str:
    return H2_ERROR_NAMES[code] if 0 <= code < len(H2_ERROR_NAMES) else hex(code)


def status_from_reset(code: int) -> int:
    return _RST_TO_STATUS.get(code, INTERNAL)


def status_from_http(status: int) -> int:
    return _HTTP_TO_STATUS.get(status, UNKNOWN)


def is_grpc_content_type(value: str | None) -> bool:
    return value is not None and (
        value == "application/grpc" or value.startswith(("application/grpc+",
                                                          "application/grpc;"))
    )


def parse_status(value: str | None) -> int | None:
    if value is None or not value.isdigit() or len(value) > 9:
        return None
    return int(value)


class MessageCounter:
    """Counts length-prefixed messages (1 flag byte, 4-byte length) across DATA payloads."""

    __slots__ = ("count", "_left", "_need", "_len")

    def __init__(self) -> None:
        self.count: int | None = 0  # None once a gap hid a message boundary
        self._left = 0  # message bytes still to come
        self._need = 0  # prefix bytes still to come (0: between messages)
        self._len = 0

    def feed(self, data: bytes | memoryview, pos: int, end: int) -> None:
        if self.count is None:
            return
        left = self._left
        while pos < end:
            if left:
                take = end - pos
                if take >= left:
                    pos += left
                    left = 0
                    continue
                left -= take
                break
            need = self._need
            if need == 0 and end - pos >= 5:
                # Whole prefix in view: the common case.
                left = int.from_bytes(data[pos + 1 : pos + 5], "big")
                pos += 5
                self.count += 1
                continue
            if need == 0:
                need = 5
                self._len = 0
            while need and pos < end:
                if need <= 4:
                    self._len = (self._len << 8) | data[pos]
                need -= 1
                pos += 1
            self._need = need
            if need == 0:
                left = self._len
                self.count += 1
        self._left = left

    def skip(self, n: int) -> None:
        """n payload bytes were not captured: exact while they stay inside one message."""
        if self._need == 0 and n <= self._left:
            self._left -= n
        else:
            self.count = None
            self._left = self._need = 0
