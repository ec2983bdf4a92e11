"""Per-pid state in the connection manager is dropped when the process exits."""

from __future__ import annotations

import socket

from ebpf_tracer.conn.manager import ConnManager
from ebpf_tracer.events import OpenInfo

GONE = 2**22 + 1000  # pids that do not exist: /proc lookups find nothing


def open_info(listen_fd: int = -1) -> OpenInfo:
    return OpenInfo(socket.AF_INET, 8080, listen_fd, socket.inet_aton("127.0.0.1") + bytes(12),
                    b"test\0")


def test_exit_drops_trackers_and_listen_addresses() -> None:
    m = ConnManager()
    for pid in (GONE, GONE + 1):
        m.on_open(pid, 5, 1, 2, 100, open_info(listen_fd=3))  # server: listen fd 3
        m.on_open(pid, 6, 1, 1, 100, open_info())  # client
    assert len(m) == 4 and set(m._listen_addrs) == {GONE, GONE + 1}
    m.on_process_exit(GONE, 200)
    assert len(m) == 2
    assert set(m._listen_addrs) == {GONE + 1}
    assert GONE not in m._pids


def test_exit_of_a_process_without_connections_is_cheap() -> None:
    m = ConnManager()
    m.on_open(GONE, 5, 1, 1, 100, open_info())
    assert m.on_process_exit(GONE + 7, 200) == []  # not scanned: no trackers of its own
    assert len(m) == 1


def test_pid_index_is_bounded_by_max_conns() -> None:
    m = ConnManager(max_conns=8)
    for i in range(100):
        m.on_open(GONE + i, 5, 1, 1, 100, open_info())  # exits never seen
    assert len(m) <= 8
    assert len(m._pids) <= 9
    for i in range(100):
        m.on_process_exit(GONE + i, 200)
    assert len(m) == 0 and not m._pids
