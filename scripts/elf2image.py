#!/usr/bin/env python3
"""Turns linked aarch64 ELF files into raw arm64 Images (what QEMU's -kernel and the
hypervisor's loader take): the loadable segments laid out from the lowest one, which must
start with the 64-byte Image header.

    elf2image.py SRC_DIR DST_DIR NAME...     SRC_DIR/NAME -> DST_DIR/NAME.bin
    elf2image.py --exec ELF OUT              ELF without sections (symbols, debug info):
                                             what a Linux loader needs, and no more"""
import struct
import sys
from pathlib import Path

PT_LOAD = 1


def elf_to_image(elf: bytes) -> bytes:
    if elf[:4] != b"\x7fELF" or elf[4] != 2 or elf[5] != 1:
        raise ValueError("not a little-endian ELF64 file")
    phoff, = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    segments = []
    for i in range(phnum):
        p_type, _flags, offset, _vaddr, paddr, filesz, _memsz, _align = struct.unpack_from(
            "<IIQQQQQQ", elf, phoff + i * phentsize)
        if p_type == PT_LOAD and filesz > 0:
            segments.append((paddr, elf[offset:offset + filesz]))
    if not segments:
        raise ValueError("no loadable segments")
    base = min(p for p, _ in segments)
    out = bytearray(max(p + len(d) for p, d in segments) - base)
    for paddr, data in segments:
        out[paddr - base:paddr - base + len(data)] = data
    if out[56:60] != b"ARM\x64":
        raise ValueError("the lowest segment does not start with an arm64 Image header")
    return bytes(out)


def strip_to_segments(elf: bytes) -> bytes:
    """The ELF header, program headers and everything the segments map, up to the end of
    the last one in the file; no section headers."""
    phoff, = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    end = phoff + phentsize * phnum
    for i in range(phnum):
        _t, _f, offset, _v, _p, filesz, _m, _a = struct.unpack_from("<IIQQQQQQ", elf, phoff + i * phentsize)
        end = max(end, offset + filesz)
    out = bytearray(elf[:end])
    struct.pack_into("<Q", out, 0x28, 0)  # e_shoff
    struct.pack_into("<HHH", out, 0x3a, 0, 0, 0)  # e_shentsize, e_shnum, e_shstrndx
    return bytes(out)


def main() -> int:
    if sys.argv[1:2] == ["--exec"]:
        src, dst = Path(sys.argv[2]), Path(sys.argv[3])
        data = strip_to_segments(src.read_bytes())
        if not dst.exists() or dst.read_bytes() != data:
            dst.write_bytes(data)
            dst.chmod(0o755)
        return 0
    src, dst, names = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
    for name in names:
        elf_path, img_path = src / name, dst / f"{name}.bin"
        if img_path.exists() and img_path.stat().st_mtime >= elf_path.stat().st_mtime:
            continue
        try:
            img_path.write_bytes(elf_to_image(elf_path.read_bytes()))
        except (OSError, ValueError) as e:
            print(f"elf2image: {elf_path}: {e}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
