"""TLS visibility: which processes' encrypted traffic the OpenSSL uprobes see.

`libs` finds the TLS libraries a process maps (and statically linked ones we
cannot hook yet); `watcher` attaches the uprobes once per library file and
says, once per process, whether its TLS traffic is visible and if not why.
The kernel side is bpf/tls.c.
"""

from .libs import LibInfo, TlsStatus, classify, system_libssl
from .watcher import TlsWatcher

__all__ = ["LibInfo", "TlsStatus", "TlsWatcher", "classify", "system_libssl"]
