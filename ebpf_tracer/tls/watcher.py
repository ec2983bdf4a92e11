"""Attach the OpenSSL uprobes once per library file and report, once per
process, whether its TLS traffic is visible (and if not, why).

No bcc here: the loader's `Probes.attach_ssl(path)` is passed in.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

from .libs import TlsStatus, classify, system_libssl

log = logging.getLogger(__name__)

# After exec the dynamic loader maps the libraries: look again a few times.
RESCAN_AFTER_S = (0.05, 0.3, 1.5)
MAX_PIDS = 65536


class TlsWatcher:
    def __init__(self, attach: Callable[[str], int] | None = None, proc: str = "/proc") -> None:
        self.attach = attach
        self._proc = proc
        self._hooked: dict[tuple[int, int], str] = {}  # (dev, ino) -> path hooked
        self._said: dict[int, str] = {}  # pid -> what we last logged about it
        self._due: dict[int, list[float]] = {}  # pid -> rescan times (monotonic)
        self.statuses: dict[int, TlsStatus] = {}
        self.unmapped_calls = 0  # SSL calls with no socket (memory BIOs)
        self._said_no_socket: set[int] = set()  # pids warned about that, once each

    def start(self) -> None:
        """Hook the host's own libssl files up front: programs started later
        (exec children, run mode) are seen from their first SSL call."""
        for path in system_libssl():
            self._hook(path)

    def _hook(self, host_path: str) -> None:
        try:
            st = os.stat(host_path)
        except OSError:
            return
        key = (st.st_dev, st.st_ino)
        if key in self._hooked or self.attach is None:
            return
        self._hooked[key] = host_path
        try:
            n = self.attach(host_path)
        except Exception as e:  # noqa: BLE001 - one library must not stop tracing
            log.warning("TLS: cannot hook %s: %s", host_path, e)
            return
        if n:
            log.debug("TLS: hooked %s (%d functions)", host_path, n)
        else:
            log.warning("TLS: no SSL_read/SSL_write symbols to hook in %s", host_path)

    def hooked(self) -> list[str]:
        return sorted(self._hooked.values())

    def scan(self, pid: int) -> TlsStatus | None:
        status = classify(pid, self._proc)
        if status is None:
            self.forget(pid)
            return None
        for lib in status.visible:
            self._hook(lib.host_path)
        if len(self.statuses) >= MAX_PIDS:
            self.statuses.clear()
            self._said.clear()
        self.statuses[pid] = status
        self._report(pid, status)
        return status

    def scan_all(self, exclude: int = 0) -> None:
        """run mode: every process already running."""
        for entry in os.listdir(self._proc):
            if entry.isdigit() and int(entry) != exclude:
                self.scan(int(entry))

    def _report(self, pid: int, status: TlsStatus) -> None:
        text = status.describe()
        if self._said.get(pid) == text:
            return
        self._said[pid] = text
        if not status.uses_tls:
            return
        name = _comm(pid, self._proc)
        if status.invisible:
            log.warning("pid %d (%s): %s", pid, name, text)
        else:
            log.info("pid %d (%s): %s", pid, name, text)

    def no_socket(self, pid: int, calls: int) -> None:
        """The kernel saw SSL calls of ``pid`` it could not tie to a socket."""
        self.unmapped_calls += calls
        if pid in self._said_no_socket:
            return
        self._said_no_socket.add(pid)
        log.warning("pid %d (%s): TLS NOT visible: OpenSSL is used through memory BIOs "
                    "(e.g. Python asyncio, or an event loop doing its own socket I/O), so its "
                    "SSL calls cannot be tied to a connection; not supported yet (%d calls so "
                    "far)", pid, _comm(pid, self._proc), calls)

    def on_exec(self, pid: int, now: float | None = None) -> None:
        """A traced process started a new program: its libraries load now."""
        now = time.monotonic() if now is None else now
        self._said.pop(pid, None)
        self.statuses.pop(pid, None)
        if self.scan(pid) is not None and len(self._due) < MAX_PIDS:
            self._due[pid] = [now + d for d in RESCAN_AFTER_S]

    def forget(self, pid: int) -> None:
        self._said.pop(pid, None)
        self._said_no_socket.discard(pid)
        self._due.pop(pid, None)
        self.statuses.pop(pid, None)

    def tick(self, now: float | None = None) -> None:
        if not self._due:
            return
        now = time.monotonic() if now is None else now
        for pid in [p for p, times in self._due.items() if times[0] <= now]:
            times = self._due[pid]
            while times and times[0] <= now:
                times.pop(0)
            if not times:
                del self._due[pid]
            self.scan(pid)


def _comm(pid: int, proc: str) -> str:
    try:
        with open(f"{proc}/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"
