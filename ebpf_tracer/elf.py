"""Where a function lives in an ELF file: the file offset a uprobe is placed at.

The uprobe PMU wants (path, file offset). A symbol's value is a virtual address;
the executable PT_LOAD segment that contains it maps it back to the file
(offset = st_value - p_vaddr + p_offset), as BCC's `bcc_resolve_symname` and
libbpf do. Only 64-bit little-endian files (x86-64, arm64) are read.
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Iterable

_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")  # Elf64_Ehdr
# Elf64_Phdr: type, flags, offset, vaddr, paddr, filesz, memsz, align
_PHDR = struct.Struct("<IIQQQQQQ")
_SHDR = struct.Struct("<IIQQQQIIQQ")  # Elf64_Shdr
_SYM = struct.Struct("<IBBHQQ")  # Elf64_Sym: name, info, other, shndx, value, size

PT_LOAD, PF_X = 1, 1
SHT_SYMTAB, SHT_DYNSYM = 2, 11
STT_FUNC, STT_GNU_IFUNC = 2, 10
SHN_UNDEF = 0


class ElfError(ValueError):
    """Not an ELF file this reader understands."""


def symbol_offsets(path: str, names: Iterable[str]) -> dict[str, int]:
    """File offsets of the named functions defined in `path` (.dynsym, then
    .symtab); names not defined there are absent from the result."""
    with open(path, "rb") as f:
        try:
            data = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
        except ValueError:  # empty file
            raise ElfError("not an ELF file") from None
    try:
        return _offsets(data, {n.encode() for n in names})
    except struct.error:
        raise ElfError("truncated ELF file") from None
    finally:
        data.close()


def _offsets(data: mmap.mmap, wanted: set[bytes]) -> dict[str, int]:
    if len(data) < _EHDR.size or data[:4] != b"\x7fELF":
        raise ElfError("not an ELF file")
    if data[4] != 2 or data[5] != 1:
        raise ElfError("not a 64-bit little-endian ELF file")
    (_, _type, _machine, _version, _entry, phoff, shoff, _flags, _ehsize, phentsize, phnum,
     shentsize, shnum, _shstrndx) = _EHDR.unpack_from(data, 0)
    text = [(vaddr, memsz, off) for ptype, pflags, off, vaddr, _p, _fs, memsz, _a in
            (_PHDR.unpack_from(data, phoff + i * phentsize) for i in range(phnum))
            if ptype == PT_LOAD and pflags & PF_X]
    sections = [_SHDR.unpack_from(data, shoff + i * shentsize) for i in range(shnum)]
    found: dict[str, int] = {}
    # .dynsym first: what the dynamic linker exports is what callers call.
    for kind in (SHT_DYNSYM, SHT_SYMTAB):
        for _n, stype, _f, _a, s_off, s_size, link, _i, _al, entsize in sections:
            if stype != kind or not entsize or link >= len(sections):
                continue
            str_off = sections[link][4]
            for i in range(s_size // entsize):
                st_name, info, _other, shndx, value, _size = _SYM.unpack_from(
                    data, s_off + i * entsize)
                if shndx == SHN_UNDEF or not value or (info & 0xF) not in (STT_FUNC,
                                                                           STT_GNU_IFUNC):
                    continue
                start = str_off + st_name
                name = data[start:data.find(b"\0", start)]
                if name in wanted and name.decode() not in found:
                    off = _file_offset(text, value)
                    if off is not None:
                        found[name.decode()] = off
        if len(found) == len(wanted):
            break
    return found


def _file_offset(segments: list[tuple[int, int, int]], vaddr: int) -> int | None:
    for start, memsz, off in segments:
        if start <= vaddr < start + memsz:
            return vaddr - start + off
    return None
