"""Who produced a span: one Resource per traced process, read from /proc."""

from __future__ import annotations

import os
import socket
from urllib.parse import unquote

from . import __version__
from .model import AttrValue, Resource

SDK_ATTRS: dict[str, AttrValue] = {
    "telemetry.sdk.name": "ebpf-tracer",
    "telemetry.sdk.version": __version__,
    "telemetry.sdk.language": "python",
}


def parse_resource_attributes(value: str) -> dict[str, str]:
    """OTEL_RESOURCE_ATTRIBUTES: `k=v,k2=v2`, values percent-encoded."""
    out: dict[str, str] = {}
    for item in value.split(","):
        key, sep, val = item.partition("=")
        key = key.strip()
        if sep and key:
            out[key] = unquote(val.strip())
    return out


def read_environ(pid: int) -> dict[str, str]:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            raw = f.read()
    except OSError:
        return {}
    env: dict[str, str] = {}
    for item in raw.split(b"\0"):
        k, sep, v = item.partition(b"=")
        if sep and k.startswith(b"OTEL_"):
            env[k.decode("utf-8", "replace")] = v.decode("utf-8", "replace")
    return env


def process_attributes(pid: int) -> dict[str, AttrValue]:
    attrs: dict[str, AttrValue] = {"process.pid": pid}
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
        attrs["process.executable.path"] = exe.removesuffix(" (deleted)")
        attrs["process.executable.name"] = os.path.basename(attrs["process.executable.path"])
    except OSError:
        pass
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = [a.decode("utf-8", "replace") for a in f.read().split(b"\0") if a]
        if args:
            attrs["process.command_line"] = " ".join(args)
            attrs.setdefault("process.executable.name", os.path.basename(args[0]))
    except OSError:
        pass
    if "process.executable.name" not in attrs:
        try:
            with open(f"/proc/{pid}/comm") as f:
                attrs["process.executable.name"] = f.read().strip()
        except OSError:
            pass
    return attrs


def process_resource(pid: int, host_name: str | None = None, comm: str | None = None) -> Resource:
    """service.name from the process's own OTEL_* settings, else its executable.

    `comm` (from the kernel) names a process that exited before we looked.
    """
    attrs = process_attributes(pid)
    if comm and "process.executable.name" not in attrs:
        attrs["process.executable.name"] = comm
    env = read_environ(pid)
    own = parse_resource_attributes(env.get("OTEL_RESOURCE_ATTRIBUTES", ""))
    merged: dict[str, AttrValue] = {}
    merged.update(own)
    merged.update(attrs)
    merged.update(SDK_ATTRS)
    merged["host.name"] = host_name or socket.gethostname()
    service = env.get("OTEL_SERVICE_NAME") or own.get("service.name")
    if not service:
        service = str(attrs.get("process.executable.name") or f"pid-{pid}")
    merged["service.name"] = service
    return Resource.from_dict(merged)


class ResourceCache:
    """pid -> Resource, read once per process; bounded."""

    def __init__(self, max_entries: int = 16384) -> None:
        self._cache: dict[int, Resource] = {}
        self._max = max_entries
        self._host = socket.gethostname()

    def get(self, pid: int, comm: str | None = None) -> Resource:
        res = self._cache.get(pid)
        if res is None:
            if len(self._cache) >= self._max:
                self._cache.pop(next(iter(self._cache)))
            res = self._cache[pid] = process_resource(pid, self._host, comm)
        return res

    def forget(self, pid: int) -> None:
        self._cache.pop(pid, None)
