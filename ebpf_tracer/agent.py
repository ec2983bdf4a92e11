"""The agent: ring buffer -> connections -> parsers -> spans -> exporter.

Runs one poll loop on the calling thread; exporting happens on the batcher's
thread so the loop never waits on the network.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from . import cpusched, events
from .config import Config, Mode
from .conn.manager import ConnManager, Emitted
from .conn.sockets import SocketTable
from .errors import TracerError
from .export import make_exporter
from .export.batcher import BatchSpanProcessor
from .export.config import BspConfig
from .loader import POLL_LIMIT, LoaderConfig, Probes
from .metrics import ParserTotals, snapshot
from .model import Span
from .protocols.http1 import Http1Record
from .resources import ResourceCache
from .selection import SelectionConfig, Selector, State
from .spans import http1_span, record_span
from .tls import TlsWatcher

log = logging.getLogger(__name__)

_HDR = events.HDR
_BEHIND = 1 / 16  # ring-buffer fill at which the agent claims CPU (cpusched.claim)
_LATE_S = 0.25  # ... or age of the oldest unread record (the poll pause is <= 50 ms)
_CALM_S = 3.0  # ... until it has kept up this long
_HDR_SIZE = _HDR.size
_DATA = events.EventType.DATA
_OPEN = events.EventType.OPEN
_SEGMENTS = events.EVF_SEGMENTS
_segments = events.segments
_CLOSE = events.EventType.CLOSE
_EXIT = events.EventType.PROC_EXIT
_EXEC = events.EventType.PROC_EXEC
_H1_RESP = events.EventType.H1_RESP
_H1_RESP_INFO = events.H1_RESP
_H1_RESP_SIZE = events.H1_RESP.size


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
        # `exec`: the command owns stdout (pipes like `exec -- curl ... | jq`), so
        # spans printed without --output go to stderr.
        stream = sys.stderr if cfg.mode is Mode.EXEC and not cfg.output else None
        self._exporter = exporter or make_exporter(cfg.exporter, output=cfg.output,
                                                   settings=cfg.export_settings, stream=stream)
        bsp = cfg.bsp or BspConfig(schedule_delay_s=cfg.batch_delay_s)
        self.batcher = BatchSpanProcessor(
            self._exporter,
            max_queue_size=bsp.max_queue_size,
            max_export_batch_size=bsp.max_export_batch_size,
            schedule_delay_s=bsp.schedule_delay_s,
            export_timeout_s=bsp.export_timeout_s,
        )
        # A span queued longer than a schedule delay and this: the export
        # thread is being starved (cpusched idle).
        self._export_late_s = bsp.schedule_delay_s + 0.5
        self._last_late = 0.0  # monotonic time the agent last found itself late
        self.probes: Probes | None = None
        self._sockets = SocketTable()
        self.pod_watcher = None
        self._pod_store = None
        self._k8s_node: str | None = None
        self.resources = self._make_resources(cfg)
        # run mode only: which processes are reported (None: all but the agent).
        self.selector: Selector | None = None
        sel = cfg.selection
        if cfg.mode is Mode.RUN and isinstance(sel, SelectionConfig) and sel:
            self.selector = Selector(sel, self.resources, socket_lookup=self._sockets.lookup)
        # Parse failures of finished connections, for metrics (see metrics.ParserTotals).
        self.parse_totals = ParserTotals()
        self.conns = ConnManager(
            max_conns=cfg.max_conns,
            idle_timeout_ns=int(cfg.idle_timeout_s * 1e9),
            sockets=self._sockets,
            on_not_socket=self._not_socket,
            on_unparseable=self._not_socket,
            on_parser_done=self.parse_totals.add,
        )
        # Kernel timestamps are CLOCK_MONOTONIC; spans want the epoch.
        self.clock_offset_ns = time.time_ns() - time.monotonic_ns()
        self._comms: dict[int, str] = {}
        self.spans_produced = 0
        # Spans made since the last poll: handed to the batcher together (one lock
        # per poll, not one per span) by flush_spans().
        self._ready: list[Span] = []
        self.events_seen = 0
        self.decode_errors = 0
        # Spans with a field the traffic did not tell (metrics: spans_unknown_fields).
        self.spans_unknown_status = 0  # no response seen
        self.spans_unknown_peer = 0  # peer address unresolved
        self.spans_partial = 0  # framing not exact (lost bytes, truncated)
        self.spans_unknown_h2_fields = 0  # HTTP/2 spans with any field unknown
        self.spans_unknown_by_field: dict[str, int] = {}  # e.g. path, authority
        self._stop = False
        self.tls = TlsWatcher()  # OpenSSL uprobes, once per library file

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
        self.tls.attach = self.probes.attach_ssl
        self.tls.start()
        if self.cfg.mode is not Mode.RUN:
            self.add_pids(self.cfg.pids)
        else:
            self.tls.scan_all(exclude=os.getpid())  # libssl in containers; say who is visible
            adopted = sum(self.probes.adopt_inflight(int(p)) for p in os.listdir("/proc")
                          if p.isdigit() and int(p) != os.getpid())
            log.debug("%d syscalls in flight adopted", adopted)
        if self._pod_store is not None:
            self._start_pod_watcher()  # async: spans carry pod attributes once known
        # Warm the address resolver (imports pyroute2, first dump) so the first
        # connections are resolved before short-lived ones close.
        self._sockets.refresh()
        self.probes.open_ring_buffer(self._on_record)
        cpusched.apply(self.cfg.cpu_sched)  # every thread started so far, and later ones
        if self.cfg.ready_file:
            Path(self.cfg.ready_file).write_text(f"{os.getpid()}\n")
        log.info("tracing (%s mode)", self.cfg.mode.value)

    def _make_resources(self, cfg: Config) -> ResourceCache:
        """Pod metadata joins the /proc attributes only when running in a cluster."""
        from .k8s import PodStore, in_cluster

        use_k8s = cfg.k8s if cfg.k8s is not None else in_cluster()
        sel = cfg.selection
        if not use_k8s:
            if isinstance(sel, SelectionConfig) and sel.needs_pods:
                raise TracerError("selecting by Kubernetes namespace or pod label needs pod "
                                  "metadata: run in a cluster or pass --k8s")
            return ResourceCache()
        self._pod_store = PodStore()
        self._k8s_node = cfg.k8s_node_name
        return ResourceCache(pods=self._pod_store)

    def _start_pod_watcher(self) -> None:
        from .k8s import start_watcher

        try:
            self.pod_watcher = start_watcher(self._k8s_node, self._pod_store)
        except ValueError as e:
            sel = self.cfg.selection
            needed = isinstance(sel, SelectionConfig) and sel.needs_pods
            if self.cfg.k8s or needed:  # asked for: say why it cannot be done
                raise TracerError(str(e)) from None
            log.warning("no pod metadata: %s", e)

    def add_pids(self, pids: list[int]) -> None:
        assert self.probes is not None
        for pid in descendants(pids):
            self.probes.trace_pid(pid)
            self.probes.adopt_inflight(pid)  # e.g. an idle server blocked in accept()
            self.resources.get(pid)  # read /proc now, while the process lives
            self.tls.scan(pid)  # hook its libssl; say whether its TLS is visible

    def _exclude(self, pid: int, fd: int, generation: int) -> None:
        """Selection said no: the kernel stops tracing the process (until exec)."""
        if self.probes:
            self.probes.ignore_conn(pid, fd, generation)
            self.probes.exclude_pid(pid)

    def _not_socket(self, pid: int, fd: int, generation: int) -> None:
        if self.probes:
            self.probes.ignore_conn(pid, fd, generation)

    # -- the hot path ----------------------------------------------------------

    def _on_record(self, buf: memoryview) -> None:
        try:
            self.events_seen += 1
            (etype, direction, role, flags, pid, _tid, fd, gen, ts, pos, length,
             copied, tail, _) = _HDR.unpack_from(buf, 0)
            if etype == _DATA:
                if self.selector is not None and self.selector.state(pid) is State.NO:
                    self._exclude(pid, fd, gen)  # e.g. a connection older than us
                    return
                end = _HDR_SIZE + copied
                if flags & _SEGMENTS:  # an HTTP/2 frame walk: segments, gaps between
                    out = self.conns.on_data(pid, fd, gen, role, direction, pos, length, b"", ts,
                                             b"", flags, _segments(buf, copied))
                    if out:
                        self._emit(out)
                    return
                if tail:
                    head = bytes(buf[_HDR_SIZE : end - tail])
                    last = bytes(buf[end - tail : end])
                else:
                    head, last = bytes(buf[_HDR_SIZE:end]), b""
                out = self.conns.on_data(pid, fd, gen, role, direction, pos, length, head, ts,
                                         last, flags)
            elif etype == _OPEN:
                info = events.decode_open(buf)
                if self.selector is not None or pid not in self.resources:
                    comm = info.comm.split(b"\0", 1)[0].decode("utf-8", "replace")
                    if self.selector is not None and self.selector.state(pid, comm) is State.NO:
                        self._exclude(pid, fd, gen)
                        return
                    self.resources.get(pid, comm)  # read /proc while the process lives
                out = self.conns.on_open(pid, fd, gen, role, ts, info)
            elif etype == _H1_RESP:
                (_start, body, _head_len, status, minor, partial, req_ts, req_pos, req_len,
                 req_copied) = _H1_RESP_INFO.unpack_from(buf, _HDR_SIZE)
                req = None
                if req_copied:  # the request, held back to come with its response
                    at = _HDR_SIZE + _H1_RESP_SIZE
                    req = (req_pos, req_len, bytes(buf[at : at + req_copied]), req_ts)
                out = self.conns.on_h1_response(pid, fd, gen, pos, length, ts, status, minor,
                                                body, partial, req)
            elif etype == _CLOSE:
                out = self.conns.on_close(pid, fd, gen, ts)
            elif etype == _EXEC:
                self.resources.forget(pid)  # a new program: read /proc again
                self.tls.on_exec(pid)
                if self.selector is not None:
                    self.selector.forget(pid)
                return
            elif etype == _EXIT:
                out = self.conns.on_process_exit(pid, ts)
                if self.probes is not None:
                    self.probes.drop_held_requests(pid)
                self.tls.forget(pid)
                self.resources.forget(pid)
                if self.selector is not None:
                    self.selector.forget(pid)
            else:
                self.decode_errors += 1
                return
            if out:
                self._emit(out)
        except Exception:  # one bad record must never stop tracing
            self.decode_errors += 1
            log.debug("record dropped", exc_info=True)

    def _emit(self, out: Emitted) -> None:
        selector, resources, on_end = self.selector, self.resources, self._ready.append
        offset = self.clock_offset_ns
        for meta, rec in out:
            if selector is not None and not selector.allows(meta):
                continue
            span = (http1_span if type(rec) is Http1Record else record_span)(
                rec, meta, resources.get(meta.pid), offset)
            self.spans_produced += 1
            # (An HTTP/2 connection may hand back Http1Records, which have no unknown_fields.)
            if (rec.status is None or rec.partial or meta.peer_addr is None
                    or (type(rec) is not Http1Record and rec.unknown_fields)):
                self._count_unknown(rec, meta)
            on_end(span)

    def flush_spans(self) -> None:
        """Queue the spans made since the last call for export."""
        if self._ready:
            ready, self._ready = self._ready, []
            self.batcher.on_end_many(ready)

    def poll(self, timeout_ms: int = 100) -> int:
        """Consume the ring buffer (waiting up to `timeout_ms` for a record) and
        queue the spans it made; returns how many records were handled."""
        n = self.probes.poll(timeout_ms)
        self.flush_spans()
        return n

    def _count_unknown(self, rec, meta) -> None:  # noqa: ANN001
        self.spans_unknown_status += rec.status is None
        self.spans_unknown_peer += meta.peer_addr is None
        self.spans_partial += rec.partial is not None
        # HTTP/2 joined mid-connection: header fields behind HPACK entries never seen.
        fields = getattr(rec, "unknown_fields", None)
        if fields:
            self.spans_unknown_h2_fields += 1
            by_field = self.spans_unknown_by_field
            for name in fields:
                key = name.lstrip(":").replace("-", "_")
                by_field[key] = by_field.get(key, 0) + 1

    # -- loop ------------------------------------------------------------------

    def stop(self) -> None:
        self._stop = True

    def run(self, until: Callable[[], bool] | None = None) -> None:
        assert self.probes is not None
        last_house = last_stats = last_until = self._last_late = time.monotonic()
        if cpusched.idle():
            # Start with a fair share (starting up is the heaviest work, and an
            # idle agent on a busy machine would crawl through it); idle once calm.
            cpusched.claim(True)
            self.probes.on_poll_start = self._claim_cpu_while_late
            self.probes.between_records = cpusched.give_way
        # Most of what the loop allocates lives for one request: a young
        # generation of 700 objects would collect every few records.
        gc.freeze()
        gc.set_threshold(20000, 20, 20)
        while not self._stop:
            self.poll(100)
            self.tls.tick()
            now = time.monotonic()
            if until is not None and now - last_until >= 0.2:  # reads /proc: not per poll
                last_until = now
                if until():
                    break
            if now - last_house >= 1.0:
                last_house = now
                self.resources.refresh()  # pod changes queue up even when idle
                for pid, calls in self.probes.take_ssl_unmapped().items():
                    self.tls.no_socket(pid, calls)
                expired = self.conns.expire(time.monotonic_ns())
                if expired:
                    self._emit(expired)
            if now - last_stats >= self.cfg.stats_interval_s:
                last_stats = now
                log.debug("stats %s", snapshot(self).describe())
                log.debug("agent %s", self.stats())

    def _claim_cpu_while_late(self, backlog: float, lag_s: float) -> None:
        """An idle agent (cpusched) claims a fair share of CPU while it is late
        (its ring buffer backs up; records wait too long: at a low rate the
        buffer never fills; spans wait for the export thread), and idles again
        once it has kept up for a while (a busy machine would starve it again at
        once). Called as a poll begins: before the work a starved agent would
        crawl through."""
        now = time.monotonic()
        if (backlog > _BEHIND or lag_s > _LATE_S
                or self.batcher.oldest_age_s(time.time_ns()) > self._export_late_s):
            cpusched.claim(True)
            self._last_late = now
        elif now - self._last_late > _CALM_S:
            cpusched.claim(False)

    def stats(self) -> dict[str, int]:
        s: dict[str, int] = {
            "events": self.events_seen,
            "spans_produced": self.spans_produced,
            "decode_errors": self.decode_errors,
            "connections_tracked": len(self.conns),
            "processes_cached": len(self.resources),
            "parse_failures_record": self.decode_errors,
            "parse_failures_http1": self.parse_totals.parse_errors_by_protocol["http1"],
            "parse_failures_http2": self.parse_totals.parse_errors_by_protocol["http2"],
            "spans_unknown_status_code": self.spans_unknown_status,
            "spans_unknown_peer_address": self.spans_unknown_peer,
            "spans_unknown_framing": self.spans_partial,
            "tls_calls_without_socket": self.tls.unmapped_calls,
            "unmatched_request_no_response": self.parse_totals.unmatched_requests,
            "unmatched_response_no_request": self.parse_totals.unmatched_responses,
            "unmatched_request_queue_full": self.parse_totals.dropped_requests,
            "spans_unknown_http2_header_fields": self.spans_unknown_h2_fields,
            **{f"spans_unknown_{k}": v for k, v in self.spans_unknown_by_field.items()},
        }
        if self.selector is not None:
            s["selection_cached"] = len(self.selector)
            s["selection_excluded_spans"] = self.selector.excluded_spans
        if self._pod_store is not None:
            s["k8s_pods"] = len(self._pod_store)
            s["k8s_resources_rebuilt"] = self.resources.rebuilt
        if self.probes:
            s.update({f"kernel_{k}": v for k, v in self.probes.counters().items()})
        for k, v in dataclasses.asdict(self.conns.stats).items():
            s[f"conn_{k}"] = v
        return s

    def shutdown(self, timeout_s: float | None = None) -> None:
        """Drain the ring buffer, flush open connections and spans (within
        ``timeout_s``, default OTEL_BSP_EXPORT_TIMEOUT), detach."""
        cpusched.leave()  # the last drain and flush at a normal share of CPU
        if self.probes:
            try:
                while self.probes.poll(0) >= POLL_LIMIT:  # all of it, not one poll's worth
                    pass
            except Exception:  # noqa: BLE001 - detaching matters more
                pass
        self._emit(self.conns.flush_all(time.monotonic_ns()))
        self.flush_spans()
        if self.pod_watcher is not None:
            self.pod_watcher.stop()
        self.batcher.shutdown(timeout_s)
        if self.probes:
            self.probes.close()
            self.probes = None
