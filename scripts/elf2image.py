#!/usr/bin/env python3
"""Turns linked aarch64 ELF files into raw arm64 Images (what QEMU's -kernel and the
hypervisor's loader take): the loadable segments laid out from the lowest one, which must
start with the 64-byte Image header.

    elf2image.py SRC_DIR DST_DIR NAME...     SRC_DIR/NAME -> DST_DIR/NAME.bin
    elf2image.py --exec ELF OUT              ELF without sections (symbols, debug info):
                                             what a Linux loader needs, and no more
    elf2image.py --rebase ADDR ELF OUT       the Image moved to run at ADDR (a multiple of
                                             4 KiB): the guests are linked with
                                             --emit-relocs, and a move of the whole image
                                             changes only its absolute 64-bit addresses
                                             (PC-relative code stays right). The bench
                                             guest runs so as Xen's dom0, which Xen loads
                                             at its RAM bank's address."""
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


# AArch64 relocation types (ELF for the Arm 64-bit Architecture).
R_AARCH64_NONE, R_AARCH64_ABS64 = 0, 257
# PC-relative, or the low 12 bits of an address: unchanged by a move of the whole image by a
# multiple of 4 KiB (ADRP computes page differences).
MOVE_INVARIANT = {
    261, 262,  # PREL32, PREL16
    273, 274, 275, 276,  # LD_PREL_LO19, ADR_PREL_LO21, ADR_PREL_PG_HI21(_NC)
    277, 278, 284, 285, 286, 299,  # ADD_ABS_LO12_NC, LDST8/16/32/64/128_ABS_LO12_NC
    279, 280, 282, 283,  # TSTBR14, CONDBR19, JUMP26, CALL26
}
SHT_RELA, SHF_ALLOC, SHN_UNDEF, SHN_ABS = 4, 2, 0, 0xFFF1


def rebase(elf: bytes, addr: int) -> bytes:
    """The Image of `elf` for load address `addr` instead of its link address."""
    image = bytearray(elf_to_image(elf))
    shoff, = struct.unpack_from("<Q", elf, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", elf, 0x3a)
    sections = [struct.unpack_from("<IIQQQQIIQQ", elf, shoff + i * shentsize) for i in range(shnum)]
    # (name, type, flags, addr, offset, size, link, info, addralign, entsize)
    base = min(s[3] for s in sections if s[2] & SHF_ALLOC and s[5] and s[1] != 8)  # NOBITS has no bytes
    delta = addr - base
    if delta % 4096:
        raise ValueError(f"{addr:#x} is not {base:#x} plus a multiple of 4 KiB")
    if any(s[2] & SHF_ALLOC and s[1] in (SHT_RELA, 9) for s in sections):
        raise ValueError("dynamic relocations: link the guest statically")
    for rel in sections:
        if rel[1] != SHT_RELA or not sections[rel[7]][2] & SHF_ALLOC:
            continue  # debug sections' relocations
        symtab = sections[rel[6]]
        for off in range(rel[4], rel[4] + rel[5], 24):
            where, info, _addend = struct.unpack_from("<QQq", elf, off)
            kind, sym = info & 0xFFFFFFFF, info >> 32
            shndx, = struct.unpack_from("<H", elf, symtab[4] + sym * 24 + 6)
            if kind == R_AARCH64_NONE or (shndx == SHN_ABS and kind not in MOVE_INVARIANT):
                continue  # a constant (e.g. __image_size)
            if kind in MOVE_INVARIANT and shndx not in (SHN_ABS, SHN_UNDEF):
                continue
            if kind == R_AARCH64_ABS64 and shndx != SHN_UNDEF:
                value, = struct.unpack_from("<Q", image, where - base)
                struct.pack_into("<Q", image, where - base, value + delta)
                continue
            raise ValueError(f"relocation type {kind} at {where:#x} cannot be moved")
    return bytes(image)


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
    if sys.argv[1:2] == ["--rebase"]:
        addr, src, dst = int(sys.argv[2], 0), Path(sys.argv[3]), Path(sys.argv[4])
        try:
            dst.write_bytes(rebase(src.read_bytes(), addr))
        except (OSError, ValueError) as e:
            print(f"elf2image: {src}: {e}", file=sys.stderr)
            return 1
        return 0
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
