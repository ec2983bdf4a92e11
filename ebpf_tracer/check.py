"""`ebpf-tracer check`: can this machine trace, and if not, how to fix it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

TRACEFS_CANDIDATES = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))
REQUIRED_TRACEPOINTS = (
    "syscalls/sys_enter_read", "syscalls/sys_exit_read", "syscalls/sys_enter_write",
    "syscalls/sys_enter_accept4", "syscalls/sys_enter_connect", "syscalls/sys_enter_close",
    "syscalls/sys_enter_sendmsg", "syscalls/sys_enter_recvmsg", "syscalls/sys_enter_writev",
    "syscalls/sys_enter_sendfile64", "sched/sched_process_fork", "sched/sched_process_exit",
    "sched/sched_process_exec",
)
CAP_SYS_ADMIN, CAP_PERFMON, CAP_BPF = 21, 38, 39


@dataclass(slots=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


def _cap_eff() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    except OSError:
        pass
    return 0


def check_privileges() -> Check:
    caps = _cap_eff()
    has = lambda c: bool(caps >> c & 1)  # noqa: E731
    if os.geteuid() == 0 and has(CAP_SYS_ADMIN):
        return Check("privileges", True, "root")
    if has(CAP_BPF) and has(CAP_PERFMON):
        return Check("privileges", True, "CAP_BPF and CAP_PERFMON")
    return Check("privileges", False, "not root and no CAP_BPF+CAP_PERFMON",
                 "run as root: sudo ebpf-tracer ... (in Kubernetes: privileged: true)")


def _is_dir(p: Path) -> bool:
    """is_dir() that says False where we may not look (not root)."""
    try:
        return p.is_dir()
    except OSError:
        return False


def tracefs() -> Path | None:
    for p in TRACEFS_CANDIDATES:
        if _is_dir(p / "events"):
            return p
    return None


def check_tracefs() -> Check:
    p = tracefs()
    if p:
        return Check("tracefs", True, str(p))
    if os.geteuid() != 0 and os.path.ismount("/sys/kernel/tracing"):
        return Check("tracefs", False, "mounted, but only root may read it", "run as root")
    return Check("tracefs", False, "tracefs is not mounted",
                 "mount -t tracefs nodev /sys/kernel/tracing (make setup does this)")


def check_tracepoints() -> Check:
    p = tracefs()
    if not p:
        return Check("tracepoints", False, "cannot look without tracefs",
                     "fix tracefs (above) first")
    missing = [t for t in REQUIRED_TRACEPOINTS if not _is_dir(p / "events" / t)]
    if missing:
        return Check("tracepoints", False, "missing: " + ", ".join(missing),
                     "needs a kernel with CONFIG_FTRACE_SYSCALLS=y")
    return Check("tracepoints", True, f"{len(REQUIRED_TRACEPOINTS)} required tracepoints present")


def check_btf() -> Check:
    if Path("/sys/kernel/btf/vmlinux").exists():
        return Check("btf", True, "/sys/kernel/btf/vmlinux")
    return Check("btf", False, "no /sys/kernel/btf/vmlinux (optional today; future probes use it)",
                 "use a kernel built with CONFIG_DEBUG_INFO_BTF=y")


def check_ringbuf() -> Check:
    rel = os.uname().release
    try:
        major, minor = (int(x) for x in rel.split(".")[:2])
    except ValueError:
        return Check("ring buffer", False, f"cannot parse kernel release {rel}", "")
    if (major, minor) >= (5, 8):
        return Check("ring buffer", True, f"kernel {rel} (>= 5.8)")
    return Check("ring buffer", False, f"kernel {rel} is older than 5.8",
                 "upgrade the kernel to 5.8 or newer")


def check_bcc() -> Check:
    try:
        import bcc  # type: ignore[import-not-found]  # noqa: F401
    except ImportError as e:
        return Check("bcc", False, f"cannot import bcc ({e})",
                     "make setup (apt-get install python3-bpfcc, linked into .venv)")
    return Check("bcc", True, f"bcc {getattr(bcc, '__version__', '?')}")


def check_headers() -> Check:
    from .loader import kernel_headers

    h = kernel_headers()
    rel = os.uname().release
    if h is None:
        return Check("kernel headers", False, f"none at /lib/modules/{rel}/build",
                     f"apt-get install linux-headers-{rel}, or `make setup` to link the "
                     "packaged ones (see DEVELOPERS.md)")
    note = "" if rel in h.name else f" (generic headers for kernel {rel})"
    return Check("kernel headers", True, f"{h}{note}")


def check_load() -> Check:
    from .errors import TracerError
    from .loader import LoaderConfig, Probes

    try:
        p = Probes(LoaderConfig(ringbuf_pages=16, max_conns=1024))
    except TracerError as e:
        return Check("load eBPF programs", False, str(e), "fix the items above, then retry")
    n = p.num_tracepoints
    p.close()
    return Check("load eBPF programs", True, f"compiled and attached {n} tracepoints")


def check_tls() -> Check:
    """Which TLS libraries the OpenSSL uprobes can hook (optional: plain HTTP
    is traced without any)."""
    from .tls import system_libssl

    hookable = []
    for path in system_libssl():
        try:
            data = Path(path).read_bytes()
        except OSError:
            continue
        syms = [s for s in ("SSL_read", "SSL_write", "SSL_read_ex", "SSL_write_ex")
                if s.encode() + b"\0" in data]
        if syms:
            hookable.append(f"{path} ({', '.join(syms)})")
    unsupported = ("not hookable yet (their HTTPS is not visible): statically linked TLS, "
                   "e.g. grpcio's BoringSSL, Node's bundled OpenSSL, Go crypto/tls, rustls, and "
                   "other libraries: GnuTLS, NSS, wolfSSL, mbed TLS, Java's JSSE")
    if not hookable:
        return Check("tls", False, "no OpenSSL libssl found: HTTPS traffic is not visible; "
                     + unsupported, "install OpenSSL's libssl (libssl3 or libssl1.1)")
    return Check("tls", True, "can hook OpenSSL " + "; ".join(hookable) + "; " + unsupported)


OPTIONAL = ("btf", "tls")  # missing ones warn, not fail


def run_checks() -> list[Check]:
    checks = [check_privileges(), check_tracefs(), check_tracepoints(), check_btf(),
              check_ringbuf(), check_bcc(), check_headers(), check_tls()]
    if all(c.ok for c in checks if c.name not in OPTIONAL):
        checks.append(check_load())
    else:
        checks.append(Check("load eBPF programs", False, "skipped", "fix the items above"))
    return checks


def can_trace(checks: list[Check]) -> bool:
    return all(c.ok for c in checks if c.name not in OPTIONAL)
