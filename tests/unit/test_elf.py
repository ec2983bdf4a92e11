"""Symbol -> file offset (the uprobe PMU's probe_offset) on real files, against
binutils' readelf and BCC's own resolution."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from ebpf_tracer.elf import ElfError, symbol_offsets

SSL_SYMS = ["SSL_read", "SSL_write", "SSL_read_ex", "SSL_write_ex"]


def _libssl() -> str:
    out = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout
    m = re.search(r"libssl\.so\.3 \(libc6,x86-64\) => (\S+)", out) or re.search(
        r"libssl\.so\.\S+ \([^)]*\) => (\S+)", out)
    if not m:
        pytest.skip("no libssl in ldconfig -p")
    return m.group(1)


def _readelf(args: list[str], path: str) -> str:
    exe = shutil.which("readelf")
    if not exe:
        pytest.skip("readelf (binutils) is not installed")
    return subprocess.run([exe, "-W", *args, path], capture_output=True, text=True,
                          check=True).stdout


def _readelf_offsets(path: str, names: list[str]) -> dict[str, int]:
    """readelf's symbol values mapped through its executable LOAD segments."""
    segs = []
    for line in _readelf(["-l"], path).splitlines():
        f = line.split()
        if f and f[0] == "LOAD" and "E" in f[6:-1]:
            segs.append((int(f[2], 16), int(f[5], 16), int(f[1], 16)))  # vaddr, memsz, off
    out: dict[str, int] = {}
    for line in _readelf(["--dyn-syms", "--syms"], path).splitlines():
        f = line.split()
        # Num: Value Size Type Bind Vis Ndx Name
        if len(f) >= 8 and f[3] in ("FUNC", "IFUNC") and f[6] != "UND":
            name = f[7].split("@")[0]
            if name in names and name not in out:
                value = int(f[1], 16)
                for vaddr, memsz, off in segs:
                    if vaddr <= value < vaddr + memsz:
                        out[name] = value - vaddr + off
    return out


def _non_pie_executable() -> tuple[str, list[str]]:
    """An executable whose text is mapped at an address unlike its file offset
    (a non-PIE binary: vaddr 0x400000+), so the conversion is really tested."""
    for path in ("/usr/bin/python3.11", "/usr/bin/python3", "/usr/bin/cc", "/usr/bin/cpp"):
        if not Path(path).exists():
            continue
        segs = [line.split() for line in _readelf(["-l"], path).splitlines()
                if line.split()[:1] == ["LOAD"]]
        if any("E" in s[6:-1] and s[1] != s[2] for s in segs):
            funcs = [f.split()[7] for f in _readelf(["--dyn-syms"], path).splitlines()
                     if len(f.split()) >= 8 and f.split()[3] == "FUNC"
                     and f.split()[6] != "UND" and "@" not in f.split()[7]]
            if funcs:
                return path, funcs[:20]
    pytest.skip("no non-PIE executable to test the address -> offset mapping on")


def test_libssl_functions_match_readelf() -> None:
    path = _libssl()
    got = symbol_offsets(path, [*SSL_SYMS, "no_such_function"])
    assert "no_such_function" not in got
    assert {"SSL_read", "SSL_write"} <= got.keys()
    assert got == _readelf_offsets(path, SSL_SYMS)


def test_non_pie_executable_offsets_are_file_offsets_not_addresses() -> None:
    path, funcs = _non_pie_executable()
    got = symbol_offsets(path, funcs)
    assert got and got == _readelf_offsets(path, funcs)
    size = Path(path).stat().st_size
    assert all(off < size for off in got.values())  # in the file, not at 0x400000+


def test_offsets_match_bccs_own_resolution() -> None:
    bcc = pytest.importorskip("bcc")
    for path, names in ((_libssl(), SSL_SYMS), _non_pie_executable()):
        got = symbol_offsets(path, names)
        for name in names:
            _, addr = bcc.BPF._check_path_symbol(path.encode(), name.encode(), None, -1)
            assert got[name] == addr, (path, name)


def test_not_elf(tmp_path: Path) -> None:
    f = tmp_path / "x"
    f.write_bytes(b"#!/bin/sh\necho hi\n")
    with pytest.raises(ElfError):
        symbol_offsets(str(f), ["main"])
    f.write_bytes(b"")
    with pytest.raises(ElfError):
        symbol_offsets(str(f), ["main"])
    f.write_bytes(Path(_libssl()).read_bytes()[:200])  # header only: sections cut off
    with pytest.raises(ElfError):
        symbol_offsets(str(f), ["SSL_read"])
