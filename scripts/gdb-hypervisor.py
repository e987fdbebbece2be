"""gdb helpers for the EL2 image. Load them with

    gdb-multiarch target/cross/aarch64-unknown-none-softfloat/release/hypervisor \
        -x scripts/gdb-hypervisor.py -ex 'target remote :1234'

hvbt [N]   a backtrace of the hypervisor (at most N frames, 32 by default) through its frame
           records (the x29 chain: the hypervisor keeps frame pointers), each return address
           with its pointer-authentication signature stripped. gdb's own `bt` stops at the
           first signed return address: QEMU 7.2's gdb stub does not give gdb the PAC masks.
"""
import struct

import gdb

# EL2 virtual addresses have 39 bits; the bits above hold a signed return address's PAC.
VA_MASK = (1 << 39) - 1


def where(addr: int) -> str:
    """`function (file:line)` for a code address, inlined callers included."""
    try:
        block = gdb.block_for_pc(addr)
    except RuntimeError:
        block = None
    names = []
    while block is not None:
        if block.function is not None:
            names.append(block.function.print_name)
            if not block.is_global and block.superblock is not None and block.superblock.function is None:
                break
        block = block.superblock
    sal = gdb.find_pc_line(addr)
    line = f" at {sal.symtab.filename}:{sal.line}" if sal.symtab is not None else ""
    return (" <- ".join(dict.fromkeys(names)) or "??") + line


class HvBacktrace(gdb.Command):
    """Backtrace of the hypervisor through its frame records, PAC signatures stripped."""

    def __init__(self) -> None:
        super().__init__("hvbt", gdb.COMMAND_STACK)

    def invoke(self, arg: str, from_tty: bool) -> None:
        limit = int(arg) if arg.strip() else 32
        frame = gdb.selected_frame()
        pc = int(frame.read_register("pc")) & VA_MASK
        fp = int(frame.read_register("x29"))
        memory = gdb.selected_inferior()
        print(f"#0  {pc:#x} in {where(pc)}")
        for n in range(1, limit):
            if fp == 0 or fp % 16:
                break
            try:
                next_fp, lr = struct.unpack("<QQ", bytes(memory.read_memory(fp, 16)))
            except gdb.MemoryError:
                break
            lr &= VA_MASK
            if lr == 0:
                break
            # The call is the instruction before the return address.
            print(f"#{n}  {lr:#x} in {where(lr - 4)}")
            if next_fp <= fp:
                break
            fp = next_fp


HvBacktrace()
