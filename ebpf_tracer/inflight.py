"""Syscalls a traced process is already blocked in when tracing starts.

The kernel side learns a syscall's arguments (which buffer, which listening
socket, where accept() writes the peer's address) at its entry tracepoint. A
thread already inside accept() or read() when the probes attach is never seen
entering: its exit alone gives an fd or a byte count. An idle server attached
to is exactly that, so its first connection would arrive without its peer and
its first request on a kept-alive connection would be lost.

Linux shows each blocked thread's syscall number and arguments in
/proc/PID/task/TID/syscall; the loader hands them to the kernel side as if the
entry had been seen (loader.Probes.adopt_inflight). This module only reads and
classifies; the numbers are the x86-64 and arm64 syscall tables.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass

from .events import C

DIR_INGRESS, DIR_EGRESS = C["DIR_INGRESS"], C["DIR_EGRESS"]
K_PLAIN, K_IOV, K_MSG = C["K_PLAIN"], C["K_IOV"], C["K_MSG"]  # args_t.kind
ACCEPT, CONNECT = "accept", "connect"

# name -> (what, direction, kind); what is ACCEPT, CONNECT or "data".
_SYSCALLS = {
    "accept": (ACCEPT, 0, 0), "accept4": (ACCEPT, 0, 0), "connect": (CONNECT, 0, 0),
    "read": ("data", DIR_INGRESS, K_PLAIN), "recvfrom": ("data", DIR_INGRESS, K_PLAIN),
    "readv": ("data", DIR_INGRESS, K_IOV), "recvmsg": ("data", DIR_INGRESS, K_MSG),
    "write": ("data", DIR_EGRESS, K_PLAIN), "sendto": ("data", DIR_EGRESS, K_PLAIN),
    "writev": ("data", DIR_EGRESS, K_IOV), "sendmsg": ("data", DIR_EGRESS, K_MSG),
}
_NUMBERS = {
    "x86_64": {0: "read", 1: "write", 19: "readv", 20: "writev", 42: "connect", 43: "accept",
               44: "sendto", 45: "recvfrom", 46: "sendmsg", 47: "recvmsg", 288: "accept4"},
    "aarch64": {63: "read", 64: "write", 65: "readv", 66: "writev", 202: "accept",
                203: "connect", 206: "sendto", 207: "recvfrom", 211: "sendmsg",
                212: "recvmsg", 242: "accept4"},
}
NUMBERS: dict[int, str] = _NUMBERS.get(platform.machine(), {})


@dataclass(frozen=True, slots=True)
class Blocked:
    """One thread inside a syscall the kernel side follows."""

    tid: int
    what: str  # ACCEPT, CONNECT or "data"
    fd: int
    ptr: int  # buffer, iovec array, msghdr, or sockaddr for accept/connect
    cnt: int  # iovec count (K_IOV)
    direction: int
    kind: int


def parse_syscall_line(tid: int, line: str) -> Blocked | None:
    """One /proc/PID/task/TID/syscall line: `nr arg1 .. arg6 sp pc` (hex args),
    `running`, or `-1 sp pc` when the thread is not in a syscall."""
    parts = line.split()
    if len(parts) < 7 or not parts[0].isdigit():
        return None
    name = NUMBERS.get(int(parts[0]))
    if name is None:
        return None
    what, direction, kind = _SYSCALLS[name]
    try:
        a = [int(x, 16) for x in parts[1:4]]
    except ValueError:
        return None
    fd = a[0] if a[0] < 1 << 31 else a[0] - (1 << 64)
    if fd < 0:
        return None
    return Blocked(tid, what, fd, a[1], a[2] if kind == K_IOV else 0, direction, kind)


def blocked_threads(pid: int) -> list[Blocked]:
    """The threads of `pid` blocked in a followed syscall (none if it is gone)."""
    out: list[Blocked] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for t in tids:
        try:
            with open(f"/proc/{pid}/task/{t}/syscall") as f:
                b = parse_syscall_line(int(t), f.read())
        except (OSError, ValueError):
            continue  # exited, or not ours to read
        if b is not None:
            out.append(b)
    return out
