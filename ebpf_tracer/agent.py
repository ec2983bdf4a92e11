"""The agent: ring buffer -> connections -> parsers -> spans -> exporter.

Runs one poll loop on the calling thread; exporting happens on the batcher's
thread so the loop never waits on the network.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from . import events, own_sockets
from .config import Config, Mode
from .conn.manager import ConnManager, Emitted
from .conn.sockets import SocketTable
from .export import make_exporter
from .export.batcher import BatchSpanProcessor
from .loader import LoaderConfig, Probes
from .resources import ResourceCache
from .spans import http1_span

log = logging.getLogger(__name__)

_HDR = events.HDR
_HDR_SIZE = _HDR.size
_DATA = events.EventType.DATA
_OPEN = events.EventType.OPEN
_CLOSE = events.EventType.CLOSE
_EXIT = events.EventType.PROC_EXIT
_EXEC = events.EventType.PROC_EXEC


def descendants(pids: list[int]) -> set[int]:
    """The given pids plus every living descendant (e.g. nginx workers)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out: set[int] = set()
    todo = list(pids)
    while todo:
        p = todo.pop()
        if p not in out:
            out.add(p)
            todo.extend(children.get(p, ()))
    return out


class Agent:
    def __init__(self, cfg: Config, exporter=None) -> None:  # noqa: ANN001
        self.cfg = cfg
        self._exporter = exporter or make_exporter(cfg.exporter, output=cfg.output)
        self.batcher = BatchSpanProcessor(self._exporter, schedule_delay_s=cfg.batch_delay_s)
        self.resources = ResourceCache()
        self.probes: Probes | None = None
        self._sockets = SocketTable()
        # Only in run mode can the receiving end of our own exports be traced.
        self._check_own = cfg.mode is Mode.RUN
        self._own_ports: set[int] = set()
        self._own_ports_at = 0.0
        self.own_traffic_dropped = 0
        self.conns = ConnManager(
            max_conns=cfg.max_conns,
            idle_timeout_ns=int(cfg.idle_timeout_s * 1e9),
            sockets=self._sockets,
            on_not_socket=self._not_socket,
        )
        # Kernel timestamps are CLOCK_MONOTONIC; spans want the epoch.
        self.clock_offset_ns = time.time_ns() - time.monotonic_ns()
        self._comms: dict[int, str] = {}
        self.spans_produced = 0
        self.events_seen = 0
        self.decode_errors = 0
        self.http2_events = 0
        self._stop = False

    # -- setup ---------------------------------------------------------------

    def start(self) -> None:
        self.probes = Probes(
            LoaderConfig(
                max_copy=self.cfg.max_copy,
                ringbuf_pages=self.cfg.ringbuf_pages,
                max_conns=self.cfg.max_conns,
                trace_all=self.cfg.mode is Mode.RUN,
                agent_pid=os.getpid(),
            )
        )
        if self.cfg.mode is not Mode.RUN:
            self.add_pids(self.cfg.pids)
        # Warm the address resolver (imports pyroute2, first dump) so the first
        # connections are resolved before short-lived ones close.
        self._sockets.refresh()
        self.probes.open_ring_buffer(self._on_record)
        if self.cfg.ready_file:
            Path(self.cfg.ready_file).write_text(f"{os.getpid()}\n")
        log.info("tracing (%s mode)", self.cfg.mode.value)

    def add_pids(self, pids: list[int]) -> None:
        assert self.probes is not None
        for pid in descendants(pids):
            self.probes.trace_pid(pid)
            self.resources.get(pid)  # read /proc now, while the process lives

    def _not_socket(self, pid: int, fd: int) -> None:
        if self.probes:
            self.probes.ignore_conn(pid, fd)

    # -- the hot path ----------------------------------------------------------

    def _on_record(self, buf: memoryview) -> None:
        try:
            self.events_seen += 1
            (etype, direction, role, flags, pid, _tid, fd, gen, ts, pos, length,
             copied) = _HDR.unpack_from(buf, 0)
            if etype == _DATA:
                if flags & events.EVF_HTTP2:
                    self.http2_events += 1  # HTTP/2 parsing lands with its own issue
                    return
                data = bytes(buf[_HDR_SIZE : _HDR_SIZE + copied])
                out = self.conns.on_data(pid, fd, gen, role, direction, pos, length, data, ts)
            elif etype == _OPEN:
                info = events.decode_open(buf)
                comm = info.comm.split(b"\0", 1)[0].decode("utf-8", "replace")
                self.resources.get(pid, comm)  # read /proc while the process lives
                out = self.conns.on_open(pid, fd, gen, role, ts, info)
            elif etype == _CLOSE:
                out = self.conns.on_close(pid, fd, gen, ts)
            elif etype == _EXEC:
                self.resources.forget(pid)  # a new program: read /proc again
                return
            elif etype == _EXIT:
                out = self.conns.on_process_exit(pid, ts)
                self.resources.forget(pid)
            else:
                self.decode_errors += 1
                return
            if out:
                self._emit(out)
        except Exception:  # one bad record must never stop tracing
            self.decode_errors += 1
            log.debug("record dropped", exc_info=True)

    def _is_own_traffic(self, meta) -> bool:  # noqa: ANN001
        """A server span whose client is this agent (its exporter): never traced."""
        port = meta.peer_port
        if port is None or meta.role != 2:
            return False
        if port in self._own_ports:
            return True
        now = time.monotonic()
        if now - self._own_ports_at < 0.2:
            return False
        # Noted by our transports at connect time, plus whatever we hold open
        # (e.g. grpcio's sockets, which we cannot hook).
        self._own_ports_at = now
        self._own_ports = own_sockets.ports() | self._sockets.own_ports()
        return port in self._own_ports

    def _emit(self, out: Emitted) -> None:
        for meta, rec in out:
            if self._check_own and self._is_own_traffic(meta):
                self.own_traffic_dropped += 1
                continue
            span = http1_span(rec, meta, self.resources.get(meta.pid),
                              clock_offset_ns=self.clock_offset_ns)
            self.spans_produced += 1
            self.batcher.on_end(span)

    # -- loop ------------------------------------------------------------------

    def stop(self) -> None:
        self._stop = True

    def run(self, until: Callable[[], bool] | None = None) -> None:
        assert self.probes is not None
        last_house = last_stats = time.monotonic()
        while not self._stop:
            self.probes.poll(100)
            now = time.monotonic()
            if now - last_house >= 1.0:
                last_house = now
                expired = self.conns.expire(time.monotonic_ns())
                if expired:
                    self._emit(expired)
            if until is not None and until():
                break
            if now - last_stats >= self.cfg.stats_interval_s:
                last_stats = now
                log.debug("stats %s", self.stats())

    def stats(self) -> dict[str, int]:
        s: dict[str, int] = {
            "events": self.events_seen,
            "spans_produced": self.spans_produced,
            "decode_errors": self.decode_errors,
            "http2_events_ignored": self.http2_events,
            "own_traffic_dropped": self.own_traffic_dropped,
            "connections_tracked": len(self.conns),
        }
        if self.probes:
            s.update({f"kernel_{k}": v for k, v in self.probes.counters().items()})
        for k, v in dataclasses.asdict(self.conns.stats).items():
            s[f"conn_{k}"] = v
        return s

    def shutdown(self, timeout_s: float = 10.0) -> None:
        """Drain the ring buffer, flush open connections and spans, detach."""
        if self.probes:
            try:
                self.probes.poll(0)
            except Exception:  # noqa: BLE001 - detaching matters more
                pass
        self._emit(self.conns.flush_all(time.monotonic_ns()))
        self.batcher.shutdown(timeout_s)
        if self.probes:
            self.probes.close()
            self.probes = None
