"""Which socket an fd is, and its addresses: /proc plus netlink sock_diag.

Used only when the kernel could not say (connections opened before the
tracer, accept() without a sockaddr, local address of a listening socket).
Lookups are per connection, never per request, and dumps are cached.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass

log = logging.getLogger(__name__)

ALL_STATES = 0xFFF
# TIME_WAIT sockets have no inode (nothing to look up) and a busy host has tens of
# thousands: parsing them cost the agent ~90 MB of RSS after a load test.
TCP_TIME_WAIT = 6
DUMP_STATES = ALL_STATES & ~(1 << TCP_TIME_WAIT)


@dataclass(slots=True, frozen=True)
class SockAddrs:
    local_addr: str
    local_port: int
    peer_addr: str
    peer_port: int


def socket_inode(pid: int, fd: int) -> int | None:
    """The socket inode behind pid's fd; None if not a socket (or gone)."""
    try:
        target = os.readlink(f"/proc/{pid}/fd/{fd}")
    except OSError:
        return None
    if target.startswith("socket:["):
        return int(target[8:-1])
    return None


_libc = None
SYS_pidfd_getfd = 438  # x86_64 and aarch64 share the generic number


def _syscall():  # noqa: ANN202
    global _libc
    if _libc is None:
        import ctypes

        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc.syscall


class NotTcp(Exception):
    """The fd is a socket, but not a TCP one (unix, UDP, ...)."""


def addresses_of(pid: int, fd: int) -> SockAddrs | None:
    """Addresses of another process's socket, exactly, via pidfd_getfd(2).

    A private duplicate of the fd is asked getsockname/getpeername and closed:
    cheap (~20 us), exact, and it works across network namespaces. None when
    the fd is gone or the kernel refuses; NotTcp when it is not a TCP socket.
    """
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return None
    try:
        dup = _syscall()(SYS_pidfd_getfd, pidfd, fd, 0)
    finally:
        os.close(pidfd)
    if dup < 0:
        return None
    try:
        s = socket.socket(fileno=dup)
    except OSError:
        os.close(dup)
        raise NotTcp() from None
    try:
        if s.family not in (socket.AF_INET, socket.AF_INET6) or s.type != socket.SOCK_STREAM:
            raise NotTcp()
        local = s.getsockname()
        try:
            peer = s.getpeername()
        except OSError:
            peer = ("", 0)
        return SockAddrs(_unmap(local[0]), local[1], _unmap(peer[0]), peer[1])
    finally:
        s.detach()
        os.close(dup)


def fd_exists(pid: int, fd: int) -> bool:
    return os.path.lexists(f"/proc/{pid}/fd/{fd}")


class SocketTable:
    """Inode -> TCP addresses, from a cached sock_diag dump of this netns."""

    def __init__(self, min_refresh_s: float = 0.05) -> None:
        self._by_inode: dict[int, SockAddrs] = {}
        self._last_dump = 0.0
        self._min_refresh_s = min_refresh_s
        self.dumps = 0

    def _dump(self) -> None:
        try:
            from pyroute2 import DiagSocket
        except ImportError:  # pragma: no cover - dependency of the package
            return
        # pyroute2 sets its logger to level 0 on import, so every parsed socket
        # made debug records (a fifth of a dump's time) and flooded -v output.
        logging.getLogger("pyroute2").setLevel(logging.WARNING)
        table: dict[int, SockAddrs] = {}
        try:
            with DiagSocket() as ds:
                ds.bind()
                for fam in (socket.AF_INET, socket.AF_INET6):
                    for m in ds.get_sock_stats(family=fam, states=DUMP_STATES):
                        inode = m.get("idiag_inode")
                        if inode:
                            table[inode] = SockAddrs(
                                _unmap(m.get("idiag_src")),
                                m.get("idiag_sport"),
                                _unmap(m.get("idiag_dst")),
                                m.get("idiag_dport"),
                            )
        except OSError as e:
            log.debug("sock_diag dump failed: %s", e)
            return
        self.dumps += 1
        self._by_inode = table
        self._last_dump = time.monotonic()

    def refresh(self) -> None:
        self._dump()

    def lookup(self, inode: int) -> SockAddrs | None:
        hit = self._by_inode.get(inode)
        if hit is None and time.monotonic() - self._last_dump >= self._min_refresh_s:
            self._dump()
            hit = self._by_inode.get(inode)
        return hit

    def lookup_fd(self, pid: int, fd: int) -> SockAddrs | None:
        inode = socket_inode(pid, fd)
        return self.lookup(inode) if inode else None


def _unmap(addr: str | None) -> str:
    """IPv4-mapped IPv6 ('::ffff:1.2.3.4') is reported as plain IPv4."""
    if not addr:
        return ""
    if addr.startswith("::ffff:") and "." in addr:
        return addr[7:]
    return addr


def format_addr(family: int, raw: bytes) -> str:
    if family == socket.AF_INET:
        return socket.inet_ntop(socket.AF_INET, raw[:4])
    if family == socket.AF_INET6:
        return _unmap(socket.inet_ntop(socket.AF_INET6, raw[:16]))
    return ""
