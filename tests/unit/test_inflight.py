"""Reading what a thread is blocked in from /proc/PID/task/TID/syscall."""

from __future__ import annotations

import os
import platform
import socket
import threading
import time

import pytest

from ebpf_tracer.inflight import (
    ACCEPT,
    DIR_INGRESS,
    K_PLAIN,
    NUMBERS,
    blocked_threads,
    parse_syscall_line,
)

pytestmark = pytest.mark.skipif(platform.machine() != "x86_64",
                                reason="the captured lines are x86-64 syscall numbers")


def test_real_lines():
    # Captured from a Python thread in accept4 and one in read.
    b = parse_syscall_line(7, "288 0x3 0x7fe492b23980 0x7fe492b23974 0x80000 0x0 0x0 "
                              "0x7fe492b23920 0x7fe493128fa8")
    assert (b.tid, b.what, b.fd, b.ptr) == (7, ACCEPT, 3, 0x7fe492b23980)
    r = parse_syscall_line(8, "0 0x5 0x55f46a0cba60 0x2000 0x0 0x0 0x0 0x7ffd6ece63e0 "
                              "0x7fe4931162ec")
    assert (r.what, r.fd, r.ptr, r.direction, r.kind) == ("data", 5, 0x55f46a0cba60,
                                                          DIR_INGRESS, K_PLAIN)


@pytest.mark.parametrize("line", [
    "running", "-1 0x7ffd6ece63e0 0x7fe4931162ec", "", "232 0x4 0x1 0x2 0x3 0x0 0x0 0x1 0x2",
    "0 0xffffffffffffff9c 0x1 0x2 0x0 0x0 0x0 0x1 0x2",  # a negative fd (AT_FDCWD-like)
    "0 zz 0x1 0x2 0x0 0x0 0x0 0x1 0x2", "0 0x1",
])
def test_lines_that_are_not_followed(line):
    assert parse_syscall_line(1, line) is None


def test_a_thread_blocked_in_accept_is_found():
    assert NUMBERS
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    t = threading.Thread(target=srv.accept, daemon=True)
    t.start()
    deadline = time.monotonic() + 5
    found = []
    while time.monotonic() < deadline and not found:
        found = [b for b in blocked_threads(os.getpid())
                 if b.what == ACCEPT and b.fd == srv.fileno()]
        time.sleep(0.01)
    assert found and found[0].tid == t.native_id
    socket.create_connection(srv.getsockname()).close()
    srv.close()


def test_a_process_that_is_gone_has_none():
    assert blocked_threads(2**22 + 12345) == []
