"""Connection identity and lifetime: (pid, fd, generation) -> ConnTracker.

Bounded in number (least recently used trackers are flushed and dropped) and
in time (idle trackers expire), so memory stays flat under churn.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from ..events import EVF_H1_REQ, EVF_HTTP2, EVF_TLS, OpenInfo
from ..model import ConnMeta, Direction, Role
from ..protocols import detect
from ..protocols.http1 import Http1Connection, Http1Record
from ..protocols.http2 import Http2Connection, Http2Record
from .sockets import NotTcp, SocketTable, addresses_of, fd_exists, format_addr, socket_inode
from .tracker import ConnTracker

_DIRECTIONS = (Direction.INGRESS, Direction.EGRESS)  # by value; cheaper than Direction(x)
_ROLES = (Role.UNKNOWN, Role.CLIENT, Role.SERVER)  # the same for Role(x)
_SERVER = Role.SERVER  # Enum class attribute lookups are slow (~0.15 us)
log = logging.getLogger(__name__)

Emitted = list[tuple[ConnMeta, Http1Record | Http2Record]]


@dataclass(slots=True)
class ConnStats:
    opened: int = 0
    closed: int = 0
    evicted: int = 0
    expired: int = 0
    not_sockets: int = 0
    gaps: int = 0
    joined_existing: int = 0
    unparseable: int = 0


class ConnManager:
    def __init__(
        self,
        *,
        max_conns: int = 65536,
        idle_timeout_ns: int = 300 * 10**9,
        sockets: SocketTable | None = None,
        on_not_socket: Callable[[int, int, int], None] | None = None,
        on_unparseable: Callable[[int, int, int], None] | None = None,
        on_parser_done: Callable[[object], None] | None = None,
    ) -> None:
        self._conns: OrderedDict[tuple[int, int], ConnTracker] = OrderedDict()
        self._max = max_conns
        self._idle_ns = idle_timeout_ns
        self._sockets = sockets or SocketTable()
        self._on_not_socket = on_not_socket
        self._on_unparseable = on_unparseable
        self._on_parser_done = on_parser_done
        # pid -> listening fd -> address: dropped whole when the process exits.
        self._listen_addrs: dict[int, dict[int, tuple[str, int] | None]] = {}
        self._pending: Emitted = []  # records flushed by evictions inside _new()
        # Pids that may own trackers: most exits (shells, short commands) own
        # none, and then need no scan of every connection.
        self._pids: set[int] = set()
        self.stats = ConnStats()

    def __len__(self) -> int:
        return len(self._conns)

    def trackers(self) -> list[ConnTracker]:
        return list(self._conns.values())

    # -- lifecycle -----------------------------------------------------------

    def _new(self, pid: int, fd: int, generation: int, role: Role, ts_ns: int) -> ConnTracker:
        t = ConnTracker(ConnMeta(pid, fd, generation, role), None, ts_ns)
        self._conns[(pid, fd)] = t
        if pid not in self._pids:
            if len(self._pids) >= self._max:  # exits missed: recount
                self._pids = {k[0] for k in self._conns}
            self._pids.add(pid)
        self.stats.opened += 1
        if len(self._conns) > self._max:
            _, old = self._conns.popitem(last=False)
            self.stats.evicted += 1
            self._pending.extend(self._flush(old, ts_ns))
        return t

    def _flush(self, t: ConnTracker, ts_ns: int) -> Emitted:
        self.stats.gaps += t.gaps
        out = [(t.meta, r) for r in t.on_close(ts_ns)]
        if t.parser is not None and self._on_parser_done:
            self._on_parser_done(t.parser.stats)
        return out

    def on_open(self, pid: int, fd: int, generation: int, role: int, ts_ns: int,
                info: OpenInfo) -> Emitted:
        out: Emitted = []
        old = self._conns.pop((pid, fd), None)
        if old is not None:  # close() never seen: the fd was reused
            out += self._flush(old, ts_ns)
        t = self._new(pid, fd, generation, _ROLES[role] if role < 3 else Role(role), ts_ns)
        meta = t.meta
        if info.family:
            meta.peer_addr = format_addr(info.family, info.peer_addr)
            meta.peer_port = info.peer_port
        if meta.role is _SERVER:
            local = self._listen_addr(pid, info.listen_fd)
            if local:
                meta.local_addr, meta.local_port = local
            if not info.family:
                self._resolve(t)
        return self._take_pending(out)

    def on_data(self, pid: int, fd: int, generation: int, role: int, direction: int,
                pos: int, length: int, data: bytes, ts_ns: int, tail: bytes = b"",
                flags: int = 0, segs: list[tuple[int, bytes]] | None = None) -> Emitted:
        """One syscall: `data` from its start, `tail` from its end, the rest a gap.

        Or, from the kernel's HTTP/2 frame walk, `segs`: (bytes not copied, bytes
        copied) pairs covering [pos, pos + length) in order, the rest a gap."""
        key = (pid, fd)
        t = self._conns.get(key)
        if (segs is None and t is not None and t.parser is not None
                and t.meta.generation == generation and not self._pending):
            # The common case, kept lean: a known connection's next syscall.
            self._conns.move_to_end(key)
            if flags & EVF_TLS:
                t.meta.tls = True
            if flags & EVF_H1_REQ:
                recs = t.on_h1_request(pos, length, data, ts_ns)
            else:
                recs = t.on_data(_DIRECTIONS[direction], pos, length, data, ts_ns, tail)
            parser = t.parser
            if parser.role is not t.meta.role or getattr(parser, "unparseable", None):
                return self._after_feed(t, key, recs)
            if not recs:
                return recs
            meta = t.meta
            return [(meta, r) for r in recs]
        out: Emitted = []
        if t is None or t.meta.generation != generation:
            if t is not None:
                out += self._flush(self._conns.pop(key), ts_ns)
            t = self._new(pid, fd, generation, _ROLES[role] if role < 3 else Role(role), ts_ns)
            self.stats.joined_existing += 1
            if not self._resolve(t):
                return self._take_pending(out)
        else:
            self._conns.move_to_end(key)
        if t.parser is None:
            first = data if segs is None else next((b for _, b in segs if b), b"")
            t.set_parser(self._choose_parser(t.meta.role, flags, first))
        if flags & EVF_TLS:
            t.meta.tls = True
        if flags & EVF_H1_REQ:
            recs = t.on_h1_request(pos, length, data, ts_ns)
        elif segs is None:
            recs = t.on_data(_DIRECTIONS[direction], pos, length, data, ts_ns, tail)
        else:
            recs = t.on_segments(_DIRECTIONS[direction], pos, length, segs, ts_ns)
        out += self._after_feed(t, key, recs)
        return self._take_pending(out)

    def _after_feed(self, t: ConnTracker, key: tuple[int, int], recs: list) -> Emitted:
        """Take the role the parser found; drop a connection it gave up on."""
        parser = t.parser
        if t.meta.role is Role.UNKNOWN and parser.role is not Role.UNKNOWN:
            t.meta.role = parser.role
        if getattr(parser, "unparseable", None):
            # Not the protocol we took it for: stop the kernel sending it.
            log.debug("pid=%d fd=%d unparseable: %s", key[0], key[1], parser.unparseable)
            self.stats.unparseable += 1
            del self._conns[key]
            if self._on_parser_done:
                self._on_parser_done(parser.stats)
            if self._on_unparseable:
                self._on_unparseable(key[0], key[1], t.meta.generation)
        return [(t.meta, r) for r in recs]

    @staticmethod
    def _choose_parser(role: Role, flags: int, first: bytes):  # noqa: ANN205
        """HTTP/2 when the kernel saw a preface or frames; else by the first
        bytes (an HTTP/1.1 request asking for h2c goes to the HTTP/2 parser,
        which falls back to HTTP/1 if the server declines)."""
        if flags & EVF_HTTP2:
            return Http2Connection(role)
        info = detect(first)
        cls = info.connection if info else Http1Connection
        return cls(role)

    def on_h1_response(self, pid: int, fd: int, generation: int, pos: int, length: int,
                       ts_ns: int, status: int, minor: int, body: int, partial: int,
                       req: tuple[int, int, bytes, int] | None = None) -> Emitted:
        """A response the kernel framed (EVT_H1_RESP), with its request (pos,
        length, bytes, ts) when the kernel held that back; else it came before."""
        key = (pid, fd)
        t = self._conns.get(key)
        if t is None or t.meta.generation != generation:
            return self._take_pending([])  # opened before us, or forgotten: no request
        self._conns.move_to_end(key)
        recs = t.on_h1_response(pos, length, ts_ns, status, minor, body, partial, req)
        meta = t.meta
        out = [(meta, recs[0])] if len(recs) == 1 else [(meta, r) for r in recs]
        return self._take_pending(out) if self._pending else out

    def on_close(self, pid: int, fd: int, generation: int, ts_ns: int) -> Emitted:
        t = self._conns.get((pid, fd))
        if t is None or t.meta.generation != generation:
            return []
        del self._conns[(pid, fd)]
        self.stats.closed += 1
        return self._flush(t, ts_ns)

    def on_process_exit(self, pid: int, ts_ns: int) -> Emitted:
        out: Emitted = []
        self._listen_addrs.pop(pid, None)
        if pid not in self._pids:
            return out
        self._pids.discard(pid)
        for key in [k for k in self._conns if k[0] == pid]:
            out += self._flush(self._conns.pop(key), ts_ns)
        return out

    def expire(self, now_ns: int) -> Emitted:
        """Flush trackers idle for longer than the timeout (close() unseen)."""
        out: Emitted = []
        cutoff = now_ns - self._idle_ns
        while self._conns:
            key, t = next(iter(self._conns.items()))
            if t.last_seen_ns >= cutoff:
                break
            del self._conns[key]
            self.stats.expired += 1
            out += self._flush(t, now_ns)
        return out

    def flush_all(self, ts_ns: int) -> Emitted:
        out: Emitted = []
        while self._conns:
            _, t = self._conns.popitem(last=False)
            out += self._flush(t, ts_ns)
        return out

    def _take_pending(self, out: Emitted) -> Emitted:
        if self._pending:
            out += self._pending
            self._pending = []
        return out

    # -- addresses -----------------------------------------------------------

    def _listen_addr(self, pid: int, listen_fd: int) -> tuple[str, int] | None:
        if listen_fd < 0:
            return None
        per_pid = self._listen_addrs.get(pid)
        if per_pid is None:
            if len(self._listen_addrs) >= self._max:  # exits missed: drop the oldest
                self._listen_addrs.pop(next(iter(self._listen_addrs)))
            per_pid = self._listen_addrs[pid] = {}
        if listen_fd not in per_pid:
            try:
                a = addresses_of(pid, listen_fd) or self._sockets.lookup_fd(pid, listen_fd)
            except NotTcp:
                a = None
            per_pid[listen_fd] = (a.local_addr, a.local_port) if a else None
        return per_pid[listen_fd]

    def _resolve(self, t: ConnTracker) -> bool:
        """Fill addresses the syscalls did not give; False if not a TCP socket."""
        m = t.meta
        try:
            a = addresses_of(m.pid, m.fd)
        except NotTcp:
            a = None
            if fd_exists(m.pid, m.fd):
                return self._not_tcp(t)
        if a is None:
            # pidfd_getfd refused (old kernel, or the fd is gone): sock_diag.
            inode = socket_inode(m.pid, m.fd)
            if inode is None:
                if fd_exists(m.pid, m.fd):
                    return self._not_tcp(t)  # a file or pipe that looked like HTTP
                log.debug("resolve pid=%d fd=%d: gone before it was looked up", m.pid, m.fd)
                return True
            a = self._sockets.lookup(inode)
            if a is None:
                return True
        m.local_addr, m.local_port = a.local_addr, a.local_port
        if a.peer_port:
            m.peer_addr, m.peer_port = a.peer_addr, a.peer_port
        t.addresses_resolved = True
        return True

    def _not_tcp(self, t: ConnTracker) -> bool:
        m = t.meta
        self.stats.not_sockets += 1
        self._conns.pop((m.pid, m.fd), None)
        if self._on_not_socket:
            self._on_not_socket(m.pid, m.fd, m.generation)
        return False
