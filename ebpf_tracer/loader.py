"""Compile, attach and read the eBPF programs.

The compile runs in a short-lived child (`bpf_build.py`, the only importer of
bcc): libbcc links LLVM/clang, which would stay mapped in the agent for its
whole life (~100 MB of RSS). The child hands over the fds of the attached
tracepoints, the maps and the uprobe programs over a unix socket and exits;
from then on the agent uses raw bpf()/perf_event_open (`bpfsys.py`). This
module is the only one that knows about the child.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import events
from .bpf_build import SCM_MAX_FD
from .bpf_build import import_bcc as import_bcc  # tests compile their own programs
from .bpfsys import BPF_NOEXIST, BpfMap, attach_uprobe
from .elf import ElfError, symbol_offsets
from .errors import TracerError
from .inflight import ACCEPT, CONNECT, blocked_threads
from .pacing import PollPacer

log = logging.getLogger(__name__)

POLL_LIMIT = 1024  # records per Probes.poll() at most
# Records between two calls of Probes.between_records (~15 us each: a pause
# every ~0.1 ms of work).
PAUSE_EVERY = 8

# OpenSSL functions whose plaintext we read, and each one's entry program.
SSL_FUNCS = (
    ("SSL_read", "ssl_read_enter"),
    ("SSL_write", "ssl_write_enter"),
    ("SSL_read_ex", "ssl_read_ex_enter"),
    ("SSL_write_ex", "ssl_write_ex_enter"),
)
SSL_RET = "ssl_ret"  # one uretprobe program for all four

# Index -> name, from events.h's CNT_* defines (one definition for both sides).
COUNTER_NAMES = tuple(name for _, name in sorted(
    (i, k.removeprefix("CNT_").lower()) for k, i in events.C.items()
    if k.startswith("CNT_") and k != "CNT_COUNT"))


@dataclass(slots=True)
class LoaderConfig:
    max_copy: int = 2048
    tail_copy: int = 256
    ringbuf_pages: int = 4096  # 16 MiB
    max_conns: int = 65536
    trace_all: bool = False
    agent_pid: int = 0
    # After a poll that consumed records, sleep so the next poll finds a batch
    # of about poll_target records, between poll_batch_ms and poll_max_ms (see
    # pacing.py; poll_batch_ms 0: wake per record, poll_target 0: always
    # poll_batch_ms). EBPF_TRACER_POLL_BATCH_MS, _POLL_TARGET and _POLL_MAX_MS
    # override them (bench/ compares).
    poll_batch_ms: float = float(os.environ.get("EBPF_TRACER_POLL_BATCH_MS", "5"))
    poll_target: int = int(os.environ.get("EBPF_TRACER_POLL_TARGET", "64"))
    poll_max_ms: float = float(os.environ.get("EBPF_TRACER_POLL_MAX_MS", "50"))
    # The kernel frames simple HTTP/1 exchanges itself (events.h, h1_resp_info).
    # EBPF_TRACER_KERNEL_HTTP1=0 turns it off (bench/ compares both).
    kernel_http1: bool = os.environ.get("EBPF_TRACER_KERNEL_HTTP1", "1") != "0"


def kernel_headers() -> Path | None:
    """The kernel build tree BCC will use, if any."""
    build = Path("/lib/modules") / os.uname().release / "build"
    if (build / "include").is_dir():
        return build.resolve()
    return None


MAX_COPY_LIMIT = 8192  # per-CPU record buffers hold 2 x max-copy + tail: the kernel caps
# a per-CPU map value at 32 KiB, so 16384 fails at load time


def _check_max_copy(n: int) -> None:
    if n < 256 or n > MAX_COPY_LIMIT or n & (n - 1):
        raise TracerError(f"--max-copy must be a power of two between 256 and "
                          f"{MAX_COPY_LIMIT}, got {n}")


def _main_source(path: Path) -> str:
    """tracer.c with its `#include "x.c"` lines replaced by the files: BCC
    makes programs only of functions in the main file."""
    def sub(m: re.Match) -> str:
        return (path.parent / m.group(1)).read_text()

    return re.sub(r'^#include "(\w+\.c)"\s*$', sub, path.read_text(), flags=re.M)


def _cflags(cfg: LoaderConfig) -> list[str]:
    return [
        f"-I{events.BPF_DIR / 'include'}",
        f"-DMAX_COPY={cfg.max_copy}",
        f"-DTAIL_COPY={cfg.tail_copy}",
        f"-DRINGBUF_PAGES={cfg.ringbuf_pages}",
        f"-DMAX_CONNS={cfg.max_conns}",
        # The agent's pid (not the build child's): the kernel skips its syscalls
        # and marks its own connections (inet_sock_set_state).
        f"-DAGENT_PID={cfg.agent_pid or os.getpid()}",
        f"-DTRACE_ALL={1 if cfg.trace_all else 0}",
        f"-DKERNEL_HTTP1={1 if cfg.kernel_http1 else 0}",
        f"-DEXPECTED_HDR_SIZE={events.HDR.size}",
        f"-DEXPECTED_OPEN_SIZE={events.OPEN_INFO.size}",
        f"-DEXPECTED_SEG_SIZE={events.SEG.size}",
        f"-DEXPECTED_H1_RESP_SIZE={events.H1_RESP.size}",
        "-Wno-macro-redefined",
    ]


def _build_request(cfg: LoaderConfig) -> dict:
    """What the build child compiles, loads and hands back (bpf_build.py)."""
    return {
        "text": _main_source(events.BPF_DIR / "tracer.c"),
        "cflags": _cflags(cfg),
        # The data path is one program every exit tracepoint tail-calls; the
        # HTTP/2 frame walk of TLS plaintext is tail-called by the uprobe program.
        "tail_calls": [["data_prog", i, name, "tracepoint"]
                       for i, name in enumerate(("process_data", "gather", "h2_walk",
                                                 "h1_response", "h1_request"))]
                      + [["tls_prog", 0, "h2_walk_tls", "kprobe"]],
        # Uprobe programs (kprobe-typed), attached here per library file.
        "progs": [[name, "kprobe"] for _, name in SSL_FUNCS] + [[SSL_RET, "kprobe"]],
        "layouts": ["conns", "active_args", "active_accept"],
    }


def _recv_fds(sock: socket.socket) -> tuple[bytes, list[int]]:
    """One message and its fds (close-on-exec: exec'd commands must not inherit them)."""
    fd_size = struct.calcsize("i")
    msg, anc, flags, _ = sock.recvmsg(1 << 16, socket.CMSG_SPACE(SCM_MAX_FD * fd_size),
                                      socket.MSG_CMSG_CLOEXEC)
    fds: list[int] = []
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            n = len(data) // fd_size
            fds.extend(struct.unpack(f"{n}i", data[:n * fd_size]))
    if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
        for fd in fds:
            os.close(fd)
        raise TracerError("the eBPF build's reply was truncated; run with -v and report it")
    return msg, fds


def _died(proc: subprocess.Popen, stderr: str) -> TracerError:
    rc = proc.returncode
    if rc is not None and rc < 0:
        try:
            how = f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            how = f"killed by signal {-rc}"
        if rc == -signal.SIGKILL:
            how += " (out of memory? the compile needs ~150 MB for a few seconds)"
    else:
        how = f"exit status {rc}"
    tail = stderr.strip().splitlines()[-5:]
    said = (": " + " | ".join(tail)) if tail else ""
    return TracerError(
        f"the eBPF build process ({sys.executable}, ebpf_tracer.bpf_build) ended "
        f"without loading the programs ({how}){said}. Retry; if it happens again, run "
        "`ebpf-tracer check` and see its output with -v")


# The child runs this very package, wherever the agent imported it from (a
# checkout, PYTHONPATH, an install), whatever the working directory holds.
_CHILD_MAIN = (f"import sys; sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r}); "
               "from ebpf_tracer.bpf_build import main; main(sys.argv[1:])")


def _build(request: dict) -> tuple[dict, list[int]]:
    """Run bpf_build in a child (never a fork of the agent: its threads) and
    take its reply. The child's stderr (clang and verifier output) is shown as
    it was when the compile ran in-process: on failure always, else at -v."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with ours, tempfile.TemporaryFile() as out:
        try:
            proc = subprocess.Popen(
                [sys.executable, "-c", _CHILD_MAIN, str(theirs.fileno()), str(os.getpid())],
                stdin=subprocess.PIPE, stdout=out, stderr=out, pass_fds=[theirs.fileno()],
                # Its own process group: a terminal's Ctrl-C is the agent's to handle
                # (the CLI remembers it and stops once loaded), not the compile's.
                process_group=0)
        except OSError as e:
            raise TracerError(f"cannot start the eBPF build process ({sys.executable}): "
                              f"{e}") from None
        finally:
            theirs.close()
        try:
            try:
                with proc.stdin:
                    proc.stdin.write(json.dumps(request).encode())
            except BrokenPipeError:
                pass  # it died: the empty reply below says so
            msg, fds = _recv_fds(ours)
        except BaseException:  # e.g. KeyboardInterrupt where no handler is installed
            proc.kill()
            proc.wait()
            raise
        proc.wait()
        out.seek(0)
        text = out.read().decode(errors="replace")
    if not msg:
        raise _died(proc, text)
    reply = json.loads(msg)
    if "error" in reply:
        if text:
            sys.stderr.write(text if text.endswith("\n") else text + "\n")
        raise TracerError(reply["error"])
    for line in text.splitlines():
        log.debug("bpf build: %s", line)
    return reply, fds


class Probes:
    """The loaded programs: traced-PID map, ring buffer, counters."""

    def __init__(self, cfg: LoaderConfig) -> None:
        _check_max_copy(cfg.max_copy)
        self._batch_s = cfg.poll_batch_ms / 1000
        self._pacer = PollPacer(self._batch_s, cfg.poll_max_ms / 1000, cfg.poll_target,
                                time.monotonic())
        if kernel_headers() is None:
            raise TracerError(
                f"no kernel headers at /lib/modules/{os.uname().release}/build; "
                "run `make setup` (installs linux-headers-amd64 and links them), "
                "or mount the host's /lib/modules and /usr/src"
            )
        log.debug("compiling the eBPF programs (a few seconds)")
        reply, fds = _build(_build_request(cfg))
        self._fds = fds  # closed by close(): the tracepoints detach, the maps go
        self._tracepoints: list[int] = []
        self._maps: dict[str, BpfMap] = {}
        self._progs: dict[str, int] = {}
        try:
            for (kind, name), fd in zip(reply["fds"], fds, strict=True):
                if kind == "tracepoint":
                    self._tracepoints.append(fd)
                elif kind == "map":
                    self._maps[name] = BpfMap(fd)
                elif kind == "prog":
                    self._progs[name] = fd
            conns = reply["layouts"]["conns"]
            self._conn_key = {k: tuple(v) for k, v in conns["key"].items()}
            self._conn_leaf = {k: tuple(v) for k, v in conns["leaf"].items()}
            self._args_leaf = {k: tuple(v) for k, v in
                               reply["layouts"]["active_args"]["leaf"].items()}
            self._accept_leaf = {k: tuple(v) for k, v in
                                 reply["layouts"]["active_accept"]["leaf"].items()}
            self._inflight = {ACCEPT: self._maps["active_accept"],
                              CONNECT: self._maps["active_connect"],
                              "data": self._maps["active_args"]}
            self._traced = self._maps["traced_pids"]
            self._excluded = self._maps["excluded_pids"]
            self._counters = self._maps["counters"]
            self._conns = self._maps["conns"]
            self._unmapped = self._maps["ssl_unmapped"]
            self._events = self._maps["events"]
            self._held = self._maps["h1_holds"]
        except (KeyError, ValueError, OSError) as e:
            self.close()
            raise TracerError(f"the eBPF build handed back an unexpected set of objects "
                              f"({type(e).__name__}: {e}); is the build child from another "
                              "version of ebpf-tracer?") from None
        self._cb: Callable[[memoryview], object] = lambda _v: None
        self._ring = None
        # Called as each poll begins with how late the agent is: the ring buffer's
        # fill (0-1) and the age (s) of its oldest unread record (Agent: cpusched).
        self.on_poll_start: Callable[[float, float], None] | None = None
        # Called every PAUSE_EVERY records of a poll while more follow (cpusched.give_way).
        self.between_records: Callable[[], None] | None = None
        self._ssl_attached: set[str] = set()
        self._uprobes: list[int] = []
        log.debug("attached %d tracepoints (max_copy=%d)", self.num_tracepoints, cfg.max_copy)

    @property
    def num_tracepoints(self) -> int:
        return len(self._tracepoints)

    def attach_ssl(self, path: str) -> int:
        """Uprobes on one OpenSSL library file (every process mapping it; the
        kernel keeps to the traced set). Returns how many functions were hooked."""
        if path in self._ssl_attached:
            return 0
        self._ssl_attached.add(path)
        try:
            offsets = symbol_offsets(path, (sym for sym, _ in SSL_FUNCS))
        except (OSError, ElfError) as e:
            log.debug("uprobes %s: %s", path, e)
            return 0
        n = 0
        for sym, enter in SSL_FUNCS:
            off = offsets.get(sym)
            if off is None:  # e.g. SSL_read_ex absent (OpenSSL 1.1.0)
                log.debug("uprobe %s:%s: no such function", path, sym)
                continue
            try:
                fd = attach_uprobe(self._progs[enter], path, off)
            except OSError as e:
                if e.errno == errno.EINVAL and n == 0:
                    log.warning(
                        "TLS: the kernel refused a uprobe on %s:%s (%s). Another tracer "
                        "probably holds one at the same place with a different reference "
                        "counter (kernel log: 'ref_ctr_offset mismatch'): BCC 0.26's Python "
                        "attach_uprobe sets a stray one, e.g. in an older ebpf-tracer",
                        path, sym, e.strerror)
                log.debug("uprobe %s:%s: %s", path, sym, e)
                continue
            try:
                rfd = attach_uprobe(self._progs[SSL_RET], path, off, retprobe=True)
            except OSError as e:
                log.debug("uretprobe %s:%s: %s", path, sym, e)
                os.close(fd)
                continue
            self._uprobes += (fd, rfd)
            n += 1
        log.debug("TLS: hooked %d functions in %s", n, path)
        return n

    def trace_pid(self, pid: int) -> None:
        self._traced.update(_U32.pack(pid), b"\x01")

    def adopt_inflight(self, pid: int) -> int:
        """Hand the kernel side the syscalls `pid`'s threads are already blocked
        in (inflight.py), as if it had seen them enter; returns how many. Never
        overwrites: a thread that has since entered a syscall the probes saw
        already has the right entry, and a stale one is replaced at the next entry."""
        n = 0
        for b in blocked_threads(pid):
            m = self._inflight[b.what]
            leaf = bytearray(m.value_size)
            if b.what == "data":
                lay = self._args_leaf
                _put(leaf, lay["kind"], b.kind)
                _put(leaf, lay["direction"], b.direction)
                _put(leaf, lay["ptr"], b.ptr)
                _put(leaf, lay["cnt"], b.cnt)
            else:
                lay = self._accept_leaf
                _put(leaf, lay["addr"], b.ptr)
            _put(leaf, lay["fd"], b.fd)
            try:
                m.update(_U64.pack(pid << 32 | b.tid), bytes(leaf), BPF_NOEXIST)
                n += 1
            except OSError:  # EEXIST: it entered a traced syscall meanwhile
                pass
        return n

    def drop_held_requests(self, pid: int) -> None:
        """`pid` exited: HTTP/1 requests the kernel held back for its responses
        (tracer.c, h1_holds) will get none, and an exit closes no fd by close()."""
        pid_field = self._conn_key["pid"]
        for key in [k for k in self._held.keys() if _get(k, pid_field) == pid]:
            self._held.delete(key)

    def exclude_pid(self, pid: int) -> None:
        """run mode: stop tracing a process until it execs another program."""
        self._excluded.update(_U32.pack(pid), b"\x01")

    def untrace_pid(self, pid: int) -> None:
        self._traced.delete(_U32.pack(pid))

    def traced_pids(self) -> set[int]:
        """The kernel's traced set (tests: what the kernel added and removed)."""
        return {_U32.unpack(k)[0] for k in self._traced.keys()}

    def ignore_conn(self, pid: int, fd: int, generation: int) -> None:
        """Stop sending a connection the agent found is not a TCP socket or not
        HTTP. Only that generation: the agent decides behind the kernel, and by
        then the fd may name the next connection, which must stay traced."""
        key = bytearray(self._conns.key_size)
        _put(key, self._conn_key["pid"], pid)
        _put(key, self._conn_key["fd"], fd)
        leaf = self._conns.lookup(bytes(key))
        if leaf is None:
            return
        if _get(leaf, self._conn_leaf["generation"]) != generation:
            return
        leaf = bytearray(leaf)
        _put(leaf, self._conn_leaf["proto"], events.Proto.NONE)
        _put(leaf, self._conn_leaf["tls_proto"], events.Proto.NONE)
        self._conns.update(bytes(key), bytes(leaf))

    def open_ring_buffer(self, callback: Callable[[memoryview], None]) -> None:
        """Call `callback` with each record's bytes (valid only during the call)."""
        from .ringbuf import RingBuffer

        self._cb = callback
        self._ring = RingBuffer(self._events.fd, self._events.max_entries)

    def poll(self, timeout_ms: int = 100) -> int:
        """Consume what the kernel submitted (at most POLL_LIMIT records, so a
        caller falling behind still gets control back), waiting up to
        `timeout_ms` for the first record; returns how many were handled."""
        ring, cb = self._ring, self._cb
        backlog = ring.available() / ring.size
        if self.on_poll_start is not None:  # before the work: how late are we?
            first = ring.first()
            # Records carry bpf_ktime_get_ns(): CLOCK_MONOTONIC, as time.monotonic_ns().
            lag_s = 0.0 if first is None else (time.monotonic_ns() - events.record_ts(first)) / 1e9
            self.on_poll_start(backlog, lag_s)
        n = self._consume(ring, cb)
        if not n and timeout_ms and ring.wait(timeout_ms / 1000):
            n = self._consume(ring, cb)
        if n and n < POLL_LIMIT and timeout_ms and self._batch_s:
            # Caught up: let the next batch accumulate (fewer wakeups per record).
            pause = self._pacer.pause(n, time.monotonic())
            # A ring buffer (--ringbuf-mb) filling up: no long sleeps.
            time.sleep(pause if backlog < 1 / 32 else self._batch_s)
        return n

    def _consume(self, ring, cb) -> int:  # noqa: ANN001
        pause = self.between_records
        if pause is None:
            return ring.consume(cb, POLL_LIMIT)
        return ring.consume_paced(cb, POLL_LIMIT, PAUSE_EVERY, pause)

    def take_ssl_unmapped(self) -> dict[int, int]:
        """Processes whose SSL calls had no socket to tie them to, since the
        last call (and clear): their TLS traffic is not visible."""
        table = self._unmapped
        out = {}
        for key in list(table.keys()):
            value = table.lookup(key)
            table.delete(key)
            if value is not None:
                out[_U32.unpack(key)[0]] = _U64.unpack(value)[0]
        return out

    def counters(self) -> dict[str, int]:
        out = {}
        for i, name in enumerate(COUNTER_NAMES):
            vals = self._counters.values(_U32.pack(i))
            out[name] = sum(_U64.unpack(v)[0] for v in vals)
        return out

    def close(self) -> None:
        if self._ring is not None:
            self._ring.close()
            self._ring = None
        # Closing a perf event fd detaches its program; the maps and programs go
        # with their last fd.
        fds, self._fds = getattr(self, "_uprobes", []) + self._fds, []
        self._uprobes = []
        self._tracepoints = []
        for m in self._maps.values():  # a late call must not reach a reused fd number
            m.fd = -1
        for fd in fds:
            try:
                os.close(fd)
            except OSError as e:  # detaching must not hide the real exit status
                log.debug("close fd %d: %s", fd, e)


_U32 = struct.Struct("=I")  # native order, as the kernel stores them
_U64 = struct.Struct("=Q")


def _get(buf: bytes, field: tuple[int, int]) -> int:
    """Read an unsigned integer field at its compiler-given (offset, size)."""
    off, size = field
    return int.from_bytes(buf[off:off + size], sys.byteorder)


def _put(buf: bytearray, field: tuple[int, int], value: int) -> None:
    """Store an integer field at its compiler-given (offset, size)."""
    off, size = field
    buf[off:off + size] = value.to_bytes(size, sys.byteorder, signed=value < 0)
