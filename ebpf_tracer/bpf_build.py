"""The build child: compile, load and attach the eBPF programs with BCC, hand
the fds to the agent, exit. The only module that imports bcc.

The agent (`loader.py`) starts it as a new interpreter running `main([SOCK_FD,
AGENT_PID])` (`python -m ebpf_tracer.bpf_build SOCK_FD AGENT_PID` does the
same) with a JSON request on stdin, so libbcc and the LLVM/clang it links
(~100 MB of the agent's RSS when loaded in-process, which `malloc_trim` and
MADV_PAGEOUT do not give back) live only for the few seconds of a compile.

Reply, one SOCK_SEQPACKET message on SOCK_FD: JSON and the fds (SCM_RIGHTS).

- ``{"fds": [[kind, name], ...], "layouts": {...}}`` with the fds in that order:
  ``("tracepoint", "cat:name")`` perf event fds of the attached tracepoints
  (closing the last one detaches), ``("map", name)`` every map of the module,
  ``("prog", name)`` the programs the request asked to be loaded.
  ``layouts[table] = {"key": {field: [offset, size]}, "leaf": {...}}`` for the
  tables asked for: the compiler's struct layout, so the C source stays the one
  definition.
- ``{"error": message}``: a message for the user, as the agent prints it.

The child exits with os._exit: BCC's atexit cleanup would disable the perf
events (PERF_EVENT_IOC_DISABLE acts on the event, which the agent now shares)
before closing them. The fds the kernel keeps in flight in the socket hold the
objects; the agent's copies are the only ones once the child is gone.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import sys
from typing import Any

PR_SET_PDEATHSIG = 1
SCM_MAX_FD = 253  # per message (include/net/scm.h)


def import_bcc():  # noqa: ANN201 - bcc has no types
    from .errors import TracerError

    try:
        import bcc  # type: ignore[import-not-found]
    except ImportError as e:
        raise TracerError(
            "BCC's Python module is not importable "
            f"({e}); run `make setup` (installs python3-bpfcc and links it into .venv)"
        ) from None
    return bcc


def _layout(cls: Any) -> dict[str, list[int]]:  # noqa: ANN401 - a BCC ctypes class
    if not hasattr(cls, "_fields_"):  # a scalar key or value
        return {"": [0, ctypes.sizeof(cls)]}
    return {f[0]: [getattr(cls, f[0]).offset, getattr(cls, f[0]).size] for f in cls._fields_}


def build(req: dict) -> tuple[dict, list[int]]:
    from .errors import TracerError

    bcc = import_bcc()
    prog_types = {"tracepoint": bcc.BPF.TRACEPOINT, "kprobe": bcc.BPF.KPROBE}
    try:
        b = bcc.BPF(text=req["text"].encode(), cflags=req["cflags"])
        # Tail-call targets go into their program arrays (the agent holds the
        # arrays' fds: the kernel empties a program array when its last one closes).
        for map_name, slot, prog, ptype in req.get("tail_calls", ()):
            fn = b.load_func(prog.encode(), prog_types[ptype])
            b[map_name.encode()][ctypes.c_int(slot)] = ctypes.c_int(fn.fd)
        progs = [(name, b.load_func(name.encode(), prog_types[ptype]).fd)
                 for name, ptype in req.get("progs", ())]
    except Exception as e:  # bcc raises bare Exception on compile/load errors
        raise TracerError(
            f"could not load the eBPF programs: {e}. Run `ebpf-tracer check` to see what "
            "this machine is missing"
        ) from None
    names: list[list[str]] = []
    fds: list[int] = []
    for tp, fd in b.tracepoint_fds.items():
        names.append(["tracepoint", tp.decode()])
        fds.append(fd)
    lib = bcc.libbcc.lib
    lib.bpf_num_tables.restype = ctypes.c_size_t
    lib.bpf_num_tables.argtypes = [ctypes.c_void_p]
    lib.bpf_table_name.restype = ctypes.c_char_p
    lib.bpf_table_name.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    for i in range(lib.bpf_num_tables(b.module)):
        name = lib.bpf_table_name(b.module, i)
        fd = lib.bpf_table_fd(b.module, name)
        if fd >= 0:
            names.append(["map", name.decode()])
            fds.append(fd)
    for name, fd in progs:
        names.append(["prog", name])
        fds.append(fd)
    layouts = {}
    for table in req.get("layouts", ()):
        t = b[table.encode()]
        layouts[table] = {"key": _layout(t.Key), "leaf": _layout(t.Leaf)}
    if len(fds) > SCM_MAX_FD:
        raise TracerError(f"the eBPF build made {len(fds)} fds, more than one message carries")
    return {"fds": names, "layouts": layouts}, fds


def main(argv: list[str]) -> None:
    from .errors import TracerError

    sock_fd, agent_pid = int(argv[0]), int(argv[1])
    # Die with the agent; the agent alone decides what a Ctrl-C or SIGTERM means
    # (it starts us in our own process group; a SIGTERM to every process of a
    # service, as systemd sends, is ignored once we get here).
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != agent_pid:  # the agent died before prctl
        os._exit(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sock = socket.socket(fileno=sock_fd)
    try:
        reply, fds = build(json.load(sys.stdin))
    except TracerError as e:
        reply, fds = {"error": str(e)}, []
    except Exception as e:  # noqa: BLE001 - anything else still reaches the user
        reply, fds = {"error": f"the eBPF build failed: {type(e).__name__}: {e}"}, []
    socket.send_fds(sock, [json.dumps(reply).encode()], fds)
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1:])
