"""bpf(2) map operations and perf_event_open(2) uprobes through ctypes.

The agent drives the programs the build child loaded (`bpf_build.py`) with
these alone, so it never maps libbcc (and the LLVM it links). Map keys and
values are bytes in the layout the compiler chose (the child reports sizes and
field offsets)."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import platform
from collections.abc import Iterator
from pathlib import Path

# (bpf, perf_event_open) syscall numbers.
_SYSCALLS = {"x86_64": (321, 298), "aarch64": (280, 241)}

BPF_MAP_LOOKUP_ELEM = 1
BPF_MAP_UPDATE_ELEM = 2
BPF_MAP_DELETE_ELEM = 3
BPF_MAP_GET_NEXT_KEY = 4
BPF_OBJ_GET_INFO_BY_FD = 15
BPF_ANY = 0
BPF_NOEXIST = 1  # update only if the key is absent

# Map types whose values are one slot per possible CPU.
PERCPU_TYPES = {5, 6, 10}  # PERCPU_HASH, PERCPU_ARRAY, LRU_PERCPU_HASH

PERF_FLAG_FD_CLOEXEC = 1 << 3
PERF_EVENT_IOC_ENABLE = 0x2400  # _IO('$', 0)
PERF_EVENT_IOC_SET_BPF = 0x40042408  # _IOW('$', 8, __u32)
UPROBE_PMU = Path("/sys/bus/event_source/devices/uprobe")

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _syscall(*args: int | ctypes.c_void_p) -> int:
    """syscall(2) with every argument a full long: a bare Python int goes
    through ctypes as a C int, and the kernel would read the upper half of the
    register (flags, pointers) as whatever was there."""
    return _libc.syscall(*(a if isinstance(a, ctypes.c_void_p) else ctypes.c_long(a)
                           for a in args))


def _nr() -> tuple[int, int]:
    try:
        return _SYSCALLS[platform.machine()]
    except KeyError:
        raise OSError(errno.ENOSYS, f"bpf(): unsupported architecture {platform.machine()}") \
            from None


class _MapElemAttr(ctypes.Structure):
    """union bpf_attr, as BPF_MAP_*_ELEM and GET_NEXT_KEY read it."""

    _fields_ = [("map_fd", ctypes.c_uint32), ("_pad", ctypes.c_uint32),
                ("key", ctypes.c_uint64), ("value", ctypes.c_uint64),
                ("flags", ctypes.c_uint64)]


class _InfoAttr(ctypes.Structure):
    """union bpf_attr for BPF_OBJ_GET_INFO_BY_FD."""

    _fields_ = [("bpf_fd", ctypes.c_uint32), ("info_len", ctypes.c_uint32),
                ("info", ctypes.c_uint64)]


class _MapInfo(ctypes.Structure):
    """The head of struct bpf_map_info (the kernel fills what fits)."""

    _fields_ = [("type", ctypes.c_uint32), ("id", ctypes.c_uint32),
                ("key_size", ctypes.c_uint32), ("value_size", ctypes.c_uint32),
                ("max_entries", ctypes.c_uint32), ("map_flags", ctypes.c_uint32),
                ("name", ctypes.c_char * 16)]


class _PerfEventAttr(ctypes.Structure):
    """struct perf_event_attr up to config2 (PERF_ATTR_SIZE_VER1), padded to VER5."""

    _fields_ = [("type", ctypes.c_uint32), ("size", ctypes.c_uint32),
                ("config", ctypes.c_uint64), ("sample_period", ctypes.c_uint64),
                ("sample_type", ctypes.c_uint64), ("read_format", ctypes.c_uint64),
                ("flags", ctypes.c_uint64), ("wakeup_events", ctypes.c_uint32),
                ("bp_type", ctypes.c_uint32),
                ("config1", ctypes.c_uint64),  # uprobe_path
                ("config2", ctypes.c_uint64),  # probe_offset
                ("_rest", ctypes.c_uint8 * 40)]


def _bpf(cmd: int, attr: ctypes.Structure) -> int:
    ret = _syscall(_nr()[0], cmd, ctypes.c_void_p(ctypes.addressof(attr)), ctypes.sizeof(attr))
    if ret < 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    return ret


def possible_cpus() -> int:
    """How many CPUs a per-CPU map has a slot for (/sys/devices/system/cpu/possible)."""
    n = 0
    for part in Path("/sys/devices/system/cpu/possible").read_text().strip().split(","):
        lo, _, hi = part.partition("-")
        n += int(hi or lo) - int(lo) + 1
    return n


class BpfMap:
    """One BPF map by fd (its type and sizes asked from the kernel). Keys and
    values are bytes; a per-CPU map's value is `value_size` rounded up to 8,
    once per possible CPU."""

    def __init__(self, fd: int) -> None:
        info = _MapInfo()
        _bpf(BPF_OBJ_GET_INFO_BY_FD, _InfoAttr(bpf_fd=fd, info_len=ctypes.sizeof(info),
                                               info=ctypes.addressof(info)))
        self.fd = fd
        self.map_type = map_type = info.type
        self.key_size = info.key_size
        self.value_size = value_size = info.value_size
        self.max_entries = info.max_entries
        percpu = map_type in PERCPU_TYPES
        self.slots = possible_cpus() if percpu else 1
        self.slot_size = (value_size + 7) & ~7 if percpu else value_size

    def _attr(self, key: ctypes.Array | None, value: ctypes.Array | None,
              flags: int = 0) -> _MapElemAttr:
        """The syscall's argument; it holds bare addresses, so the caller keeps
        `key` and `value` referenced until the syscall returns."""
        return _MapElemAttr(map_fd=self.fd,
                            key=ctypes.addressof(key) if key is not None else 0,
                            value=ctypes.addressof(value) if value is not None else 0,
                            flags=flags)

    def _key(self, key: bytes) -> ctypes.Array:
        if len(key) != self.key_size:
            raise ValueError(f"key of {len(key)} bytes, map wants {self.key_size}")
        return ctypes.create_string_buffer(key, self.key_size)

    def lookup(self, key: bytes) -> bytes | None:
        """The value (all CPUs' slots for a per-CPU map), None if absent."""
        k = self._key(key)
        v = ctypes.create_string_buffer(self.slot_size * self.slots)
        try:
            _bpf(BPF_MAP_LOOKUP_ELEM, self._attr(k, v))
        except OSError as e:
            if e.errno == errno.ENOENT:
                return None
            raise
        return v.raw

    def values(self, key: bytes) -> list[bytes]:
        """A per-CPU map's value, one bytes per possible CPU (absent: [])."""
        raw = self.lookup(key)
        if raw is None:
            return []
        n = self.slot_size
        return [raw[i * n:i * n + self.value_size] for i in range(self.slots)]

    def update(self, key: bytes, value: bytes, flags: int = BPF_ANY) -> None:
        if len(value) != self.slot_size * self.slots:
            raise ValueError(f"value of {len(value)} bytes, map wants "
                             f"{self.slot_size * self.slots}")
        k, v = self._key(key), ctypes.create_string_buffer(value, len(value))
        _bpf(BPF_MAP_UPDATE_ELEM, self._attr(k, v, flags))

    def delete(self, key: bytes) -> bool:
        """False if the key was not there."""
        try:
            k = self._key(key)
            _bpf(BPF_MAP_DELETE_ELEM, self._attr(k, None))
        except OSError as e:
            if e.errno == errno.ENOENT:
                return False
            raise
        return True

    def keys(self) -> Iterator[bytes]:
        """Every key (a hash map changing meanwhile may skip or repeat some)."""
        nxt = ctypes.create_string_buffer(self.key_size)
        cur: ctypes.Array | None = None
        while True:
            try:
                _bpf(BPF_MAP_GET_NEXT_KEY, self._attr(cur, nxt))
            except OSError as e:
                if e.errno == errno.ENOENT:
                    return
                raise
            yield nxt.raw
            cur = ctypes.create_string_buffer(nxt.raw, self.key_size)


def _pmu_type_and_retbit() -> tuple[int, int]:
    try:
        pmu = int((UPROBE_PMU / "type").read_text())
        fmt = (UPROBE_PMU / "format" / "retprobe").read_text().strip()  # e.g. "config:0"
    except OSError as e:
        raise OSError(errno.ENOENT, f"no uprobe PMU ({e}); the kernel must be 4.17 or newer") \
            from None
    field, _, bit = fmt.partition(":")
    if field != "config" or not bit.isdigit():
        raise OSError(errno.EINVAL, f"unexpected uprobe retprobe format {fmt!r}")
    return pmu, int(bit)


def attach_uprobe(prog_fd: int, path: str, offset: int, retprobe: bool = False) -> int:
    """A uprobe (or uretprobe) on `path` at file `offset` in every process
    (pid -1, cpu 0: the program runs on whatever CPU hits it), running
    `prog_fd`. Returns the perf event fd; closing it detaches."""
    pmu, retbit = _pmu_type_and_retbit()
    c_path = ctypes.create_string_buffer(os.fsencode(path))
    attr = _PerfEventAttr(type=pmu, size=ctypes.sizeof(_PerfEventAttr),
                          config=(1 << retbit) if retprobe else 0,
                          sample_period=1, wakeup_events=1,
                          config1=ctypes.addressof(c_path), config2=offset)
    fd = _syscall(_nr()[1], ctypes.c_void_p(ctypes.addressof(attr)), -1, 0, -1,
                  PERF_FLAG_FD_CLOEXEC)
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"perf_event_open(uprobe {path}+{offset:#x}): {os.strerror(err)}")
    try:
        fcntl.ioctl(fd, PERF_EVENT_IOC_SET_BPF, prog_fd)
        fcntl.ioctl(fd, PERF_EVENT_IOC_ENABLE, 0)
    except OSError:
        os.close(fd)
        raise
    return fd
