"""Compile, attach and read the eBPF programs. The only module that imports bcc."""

from __future__ import annotations

import ctypes
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import events
from .errors import TracerError

log = logging.getLogger(__name__)

# OpenSSL functions whose plaintext we read, and each one's entry program.
SSL_FUNCS = (
    ("SSL_read", b"ssl_read_enter"),
    ("SSL_write", b"ssl_write_enter"),
    ("SSL_read_ex", b"ssl_read_ex_enter"),
    ("SSL_write_ex", b"ssl_write_ex_enter"),
)

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
    # After a poll that consumed records, sleep this long so the next poll finds a
    # batch: one wakeup per batch instead of one per record (0: wake per record).
    # EBPF_TRACER_POLL_BATCH_MS overrides it (bench/ compares 0 and the default).
    poll_batch_ms: float = float(os.environ.get("EBPF_TRACER_POLL_BATCH_MS", "5"))


def kernel_headers() -> Path | None:
    """The kernel build tree BCC will use, if any."""
    build = Path("/lib/modules") / os.uname().release / "build"
    if (build / "include").is_dir():
        return build.resolve()
    return None


def import_bcc():  # noqa: ANN201 - bcc has no types
    try:
        import bcc  # type: ignore[import-not-found]
    except ImportError as e:
        raise TracerError(
            "BCC's Python module is not importable "
            f"({e}); run `make setup` (installs python3-bpfcc and links it into .venv)"
        ) from None
    return bcc


def _release_compiler_memory() -> None:
    """Hand the heap clang/LLVM freed after the compile back to the system
    (measured: ~35 MB of RSS); glibc keeps it otherwise."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


def _check_max_copy(n: int) -> None:
    if n < 256 or n > 16384 or n & (n - 1):
        raise TracerError(f"--max-copy must be a power of two between 256 and 16384, got {n}")


def _main_source(path: Path) -> str:
    """tracer.c with its `#include "x.c"` lines replaced by the files: BCC
    makes programs only of functions in the main file."""
    def sub(m: re.Match) -> str:
        return (path.parent / m.group(1)).read_text()

    return re.sub(r'^#include "(\w+\.c)"\s*$', sub, path.read_text(), flags=re.M)


class Probes:
    """The loaded programs: traced-PID map, ring buffer, counters."""

    def __init__(self, cfg: LoaderConfig) -> None:
        _check_max_copy(cfg.max_copy)
        bcc = import_bcc()
        self._batch_s = cfg.poll_batch_ms / 1000
        if kernel_headers() is None:
            raise TracerError(
                f"no kernel headers at /lib/modules/{os.uname().release}/build; "
                "run `make setup` (installs linux-headers-amd64 and links them), "
                "or mount the host's /lib/modules and /usr/src"
            )
        src = _main_source(events.BPF_DIR / "tracer.c")
        cflags = [
            f"-I{events.BPF_DIR / 'include'}",
            f"-DMAX_COPY={cfg.max_copy}",
            f"-DTAIL_COPY={cfg.tail_copy}",
            f"-DRINGBUF_PAGES={cfg.ringbuf_pages}",
            f"-DMAX_CONNS={cfg.max_conns}",
            f"-DAGENT_PID={cfg.agent_pid or os.getpid()}",
            f"-DTRACE_ALL={1 if cfg.trace_all else 0}",
            f"-DEXPECTED_HDR_SIZE={events.HDR.size}",
            f"-DEXPECTED_OPEN_SIZE={events.OPEN_INFO.size}",
            f"-DEXPECTED_SEG_SIZE={events.SEG.size}",
            "-Wno-macro-redefined",
        ]
        log.debug("compiling the eBPF programs (a few seconds)")
        try:
            self.bpf = bcc.BPF(text=src.encode(), cflags=cflags)
        except Exception as e:  # bcc raises bare Exception on compile/load errors
            raise TracerError(
                f"could not load the eBPF programs: {e}. Run `ebpf-tracer check` to see what "
                "this machine is missing"
            ) from None
        # The data path is one program every exit tracepoint tail-calls.
        progs = self.bpf[b"data_prog"]
        for i, name in enumerate((b"process_data", b"gather", b"h2_walk")):
            fn = self.bpf.load_func(name, bcc.BPF.TRACEPOINT)
            progs[ctypes.c_int(i)] = ctypes.c_int(fn.fd)
        # The HTTP/2 frame walk of TLS plaintext, tail-called by the uprobe program.
        fn = self.bpf.load_func(b"h2_walk_tls", bcc.BPF.KPROBE)
        self.bpf[b"tls_prog"][ctypes.c_int(0)] = ctypes.c_int(fn.fd)
        self._traced = self.bpf[b"traced_pids"]
        self._excluded = self.bpf[b"excluded_pids"]
        self._counters = self.bpf[b"counters"]
        self._conns = self.bpf[b"conns"]
        self._cb: Callable[[memoryview], object] = lambda _v: None
        self._ring = None
        self._ring_bytes = cfg.ringbuf_pages * os.sysconf("SC_PAGE_SIZE")
        self._ssl_attached: set[str] = set()
        _release_compiler_memory()
        n_tp = self.bpf.num_open_tracepoints()
        log.debug("attached %d tracepoints (max_copy=%d)", n_tp, cfg.max_copy)

    def attach_ssl(self, path: str) -> int:
        """Uprobes on one OpenSSL library file (every process mapping it; the
        kernel keeps to the traced set). Returns how many functions were hooked."""
        if path in self._ssl_attached:
            return 0
        self._ssl_attached.add(path)
        n = 0
        for sym, enter in SSL_FUNCS:
            try:
                self.bpf.attach_uprobe(name=path, sym=sym, fn_name=enter, pid=-1)
            except Exception as e:  # noqa: BLE001 - e.g. SSL_read_ex absent (OpenSSL 1.1.0)
                log.debug("uprobe %s:%s: %s", path, sym, e)
                continue
            try:
                self.bpf.attach_uretprobe(name=path, sym=sym, fn_name=b"ssl_ret", pid=-1)
            except Exception as e:  # noqa: BLE001
                log.debug("uretprobe %s:%s: %s", path, sym, e)
                self.bpf.detach_uprobe(name=path, sym=sym, pid=-1)
                continue
            n += 1
        log.debug("TLS: hooked %d functions in %s", n, path)
        return n

    def trace_pid(self, pid: int) -> None:
        self._traced[ctypes.c_uint32(pid)] = ctypes.c_uint8(1)

    def exclude_pid(self, pid: int) -> None:
        """run mode: stop tracing a process until it execs another program."""
        self._excluded[ctypes.c_uint32(pid)] = ctypes.c_uint8(1)

    def untrace_pid(self, pid: int) -> None:
        try:
            del self._traced[ctypes.c_uint32(pid)]
        except KeyError:
            pass

    def ignore_conn(self, pid: int, fd: int) -> None:
        """Forget a connection the agent found is not a TCP socket."""
        key = self._conns.Key(pid, fd)
        try:
            leaf = self._conns[key]
        except KeyError:
            return
        leaf.proto = events.Proto.NONE
        leaf.tls_proto = events.Proto.NONE
        self._conns[key] = leaf

    def open_ring_buffer(self, callback: Callable[[memoryview], None]) -> None:
        """Call `callback` with each record's bytes (valid only during the call)."""
        from .ringbuf import RingBuffer

        self._cb = callback
        self._ring = RingBuffer(self.bpf[b"events"].map_fd, self._ring_bytes)

    def poll(self, timeout_ms: int = 100) -> int:
        """Consume what the kernel submitted, waiting up to `timeout_ms` for the
        first record; returns how many records were handled."""
        ring, cb = self._ring, self._cb
        n = ring.consume(cb)
        if not n and timeout_ms and ring.wait(timeout_ms / 1000):
            n = ring.consume(cb)
        if n and timeout_ms and self._batch_s:
            # Let the next batch accumulate: fewer wakeups per record.
            time.sleep(self._batch_s)
        return n

    def take_ssl_unmapped(self) -> dict[int, int]:
        """Processes whose SSL calls had no socket to tie them to, since the
        last call (and clear): their TLS traffic is not visible."""
        table = self.bpf[b"ssl_unmapped"]
        out = {k.value: v.value for k, v in table.items()}
        for pid in out:
            try:
                del table[ctypes.c_uint32(pid)]
            except KeyError:
                pass
        return out

    def counters(self) -> dict[str, int]:
        out = {}
        for i, name in enumerate(COUNTER_NAMES):
            vals = self._counters[ctypes.c_int(i)]
            out[name] = int(sum(vals))
        return out

    def close(self) -> None:
        if self._ring is not None:
            self._ring.close()
            self._ring = None
        try:
            self.bpf.cleanup()
        except Exception as e:  # detaching must not hide the real exit status
            log.debug("cleanup: %s", e)
