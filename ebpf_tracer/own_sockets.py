"""Local ports of the agent's own outgoing connections (its exporters).

In `run` mode the receiving end of an export (a collector on this host) is a
traced process; its server spans for our exports would feed back forever.
Transports note each socket they connect; the agent drops server records
whose client port is one of these.
"""

from __future__ import annotations

import socket
import threading
import time

_KEEP_S = 600.0
_lock = threading.Lock()
_ports: dict[int, float] = {}


def note(sock: socket.socket | None) -> None:
    if sock is None:
        return
    try:
        port = sock.getsockname()[1]
    except OSError:
        return
    now = time.monotonic()
    with _lock:
        _ports[port] = now
        if len(_ports) > 4096:
            for p, t in list(_ports.items()):
                if now - t > _KEEP_S:
                    del _ports[p]


def has(port: int) -> bool:
    return port in _ports


def ports() -> set[int]:
    with _lock:
        return set(_ports)
