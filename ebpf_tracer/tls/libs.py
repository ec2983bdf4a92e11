"""Find the TLS libraries a process uses, from /proc/PID/maps (sans-bcc).

A dynamically linked OpenSSL (`libssl.so.1.1`, `libssl.so.3`) is hooked with
uprobes. TLS compiled into a program or extension (grpcio's BoringSSL, Node's
bundled OpenSSL, Go's crypto/tls, rustls) is named so the user knows why that
traffic is missing. Libraries in a container's filesystem are reached through
/proc/PID/root.
"""

from __future__ import annotations

import mmap
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

LIBSSL = re.compile(r"/libssl\.so(\.\d+)*$")
# Libraries never worth scanning for embedded TLS (OpenSSL's own, libc...).
_SKIP = re.compile(r"/(libssl|libcrypto|libc|libm|ld-linux[-\w]*|libpthread|libdl|libgnutls"
                   r"|libz|libstdc\+\+|libgcc_s)\.so")
# Shared TLS libraries other than OpenSSL: named as not visible, never silently missed.
_OTHER_TLS = (
    (re.compile(r"/libgnutls\.so"), "GnuTLS"),
    (re.compile(r"/(libnss3|libssl3)\.so"), "NSS"),
    (re.compile(r"/libwolfssl\.so"), "wolfSSL"),
    (re.compile(r"/libmbedtls\.so"), "mbed TLS"),
    (re.compile(r"/libjvm\.so$"), "Java's TLS (JSSE)"),
)
STATIC_OPENSSL = "statically linked OpenSSL"
_MAX_SCAN = 512 << 20  # bytes: bigger files are not searched
SYSTEM_DIRS = ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib/aarch64-linux-gnu",
               "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/lib64", "/usr/lib", "/lib",
               "/usr/local/lib", "/usr/local/ssl/lib")


@dataclass(frozen=True, slots=True)
class LibInfo:
    """One TLS implementation a process uses."""

    path: str        # as the process sees it
    host_path: str   # as the agent opens it (through /proc/PID/root)
    kind: str        # "openssl" (hookable) or a name of what is not supported
    hookable: bool

    def describe(self) -> str:
        if self.hookable:
            return f"OpenSSL {os.path.basename(self.path)} ({self.path})"
        return f"{self.kind} in {self.path}"


@dataclass(slots=True)
class TlsStatus:
    pid: int
    libs: list[LibInfo] = field(default_factory=list)

    @property
    def uses_tls(self) -> bool:
        return bool(self.libs)

    @property
    def visible(self) -> list[LibInfo]:
        return [lib for lib in self.libs if lib.hookable]

    @property
    def invisible(self) -> list[LibInfo]:
        return [lib for lib in self.libs if not lib.hookable]

    def describe(self) -> str:
        parts = []
        if self.visible:
            parts.append("TLS visible through " + ", ".join(x.describe() for x in self.visible))
        if self.invisible:
            parts.append("TLS NOT visible through " + ", ".join(
                x.describe() for x in self.invisible) + " (not supported yet: only a "
                "dynamically linked OpenSSL libssl is hooked; plaintext traffic is still traced)")
        return "; ".join(parts) or "no TLS library"


def parse_maps(text: str) -> tuple[list[str], list[str]]:
    """(every mapped file, the files mapped executable), in first-seen order."""
    files: dict[str, None] = {}
    execs: dict[str, None] = {}
    for line in text.splitlines():
        parts = line.split(None, 5)
        if len(parts) < 6 or not parts[5].startswith("/"):
            continue
        path = parts[5]
        if path.endswith(" (deleted)"):
            path = path[: -len(" (deleted)")]
        files[path] = None
        if "x" in parts[1]:
            execs[path] = None
    return list(files), list(execs)


def host_path(pid: int, path: str, proc: str = "/proc") -> str:
    """The path the agent opens for a file process `pid` mapped."""
    try:
        if os.readlink(f"{proc}/{pid}/root") == "/":
            return path
    except OSError:
        pass
    return f"{proc}/{pid}/root{path}"


_static_cache: dict[tuple[int, int, int], str | None] = {}


def embedded_tls(path: str) -> str | None:
    """What TLS implementation a program or library carries inside, if any."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    key = (st.st_dev, st.st_ino, st.st_mtime_ns)
    if key in _static_cache:
        return _static_cache[key]
    found = None
    if 0 < st.st_size <= _MAX_SCAN:
        try:
            with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
                if m[:4] == b"\x7fELF":
                    found = _kind(m, path)
        except (OSError, ValueError):
            found = None
    if len(_static_cache) > 4096:
        _static_cache.clear()
    _static_cache[key] = found
    return found


def _kind(m: mmap.mmap, path: str) -> str | None:
    if m.find(b"\xff Go buildinf:") >= 0:
        return "Go crypto/tls" if m.find(b"crypto/tls.") >= 0 else None
    if m.find(b"rustls") >= 0:
        return "rustls"
    if m.find(b"BoringSSL") >= 0:
        name = "grpcio's statically linked BoringSSL" if "cygrpc" in path else \
            "statically linked BoringSSL"
        return name
    if m.find(b"OpenSSL 3.") >= 0 or m.find(b"OpenSSL 1.1.") >= 0:
        if m.find(b"SSL_CTX_new") >= 0:
            return STATIC_OPENSSL
    return None


def classify(pid: int, proc: str = "/proc") -> TlsStatus | None:
    """The TLS libraries of one process; None if it is gone."""
    try:
        text = Path(f"{proc}/{pid}/maps").read_text()
    except OSError:
        return None
    files, execs = parse_maps(text)
    status = TlsStatus(pid)
    for path in files:
        if LIBSSL.search(path):
            status.libs.append(LibInfo(path, host_path(pid, path, proc), "openssl", True))
            continue
        for pattern, kind in _OTHER_TLS:
            if pattern.search(path):
                status.libs.append(LibInfo(path, host_path(pid, path, proc), kind, False))
                break
    for path in execs:
        if _SKIP.search(path) or path.startswith("/memfd:"):
            continue
        kind = embedded_tls(host_path(pid, path, proc))
        if kind == STATIC_OPENSSL and status.visible:
            continue  # names OpenSSL's strings, but calls the shared libssl (nginx)
        if kind:
            status.libs.append(LibInfo(path, host_path(pid, path, proc), kind, False))
    return status


def system_libssl() -> list[str]:
    """OpenSSL libssl files installed on the host (hooked up front, so programs
    started later are covered from their first call)."""
    out: dict[tuple[int, int], str] = {}
    for d in SYSTEM_DIRS:
        try:
            names = os.listdir(d)
        except OSError:
            continue
        for name in sorted(names):
            p = os.path.join(d, name)
            if not LIBSSL.search(p) or name == "libssl.so":  # the dev symlink
                continue
            try:
                st = os.stat(p)
            except OSError:
                continue
            out.setdefault((st.st_dev, st.st_ino), os.path.realpath(p))
    return sorted(set(out.values()))
