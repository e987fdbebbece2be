// EL2 entry for the boot CPU (from QEMU, x0 = device tree) and for secondary CPUs
// (from the firmware's PSCI CPU_ON, x0 = CPU index), up to the first Rust function.
//
// Constants in braces come from Rust (global_asm! operands in arch/aarch64/mod.rs).

.section .text.head, "ax"
.global _start
_start:
    // arm64 Image header (Documentation/arch/arm64/booting.rst)
    b       primary_entry
    .long   0
    .quad   0x200000                // text_offset: loaded at a 2 MiB boundary + 2 MiB
    .quad   __image_size            // bytes the image occupies, BSS and stacks included
    .quad   0xa                     // little-endian, 4 KiB pages, anywhere in memory
    .quad   0, 0, 0
    .ascii  "ARM\x64"
    .long   0

primary_entry:
    mov     x19, x0                 // keep the device tree address
    mrs     x1, CurrentEL
    cmp     x1, #(2 << 2)
    b.ne    not_at_el2

    // Zero BSS before anything lives there.
    adrp    x1, __bss_start
    add     x1, x1, :lo12:__bss_start
    adrp    x2, __bss_end
    add     x2, x2, :lo12:__bss_end
1:  cmp     x1, x2
    b.hs    2f
    stp     xzr, xzr, [x1], #16
    b       1b
2:
    mov     x20, #0                 // boot CPU is index 0
    bl      percpu_setup
    bl      build_boot_tables
    adrp    x0, boot_l1_table
    bl      enable_mmu
    mov     x0, x19
    bl      hyp_pac_init_primary    // before the first signed return (pauth.S)
    mov     x0, x19
    bl      hv_main
    b       park

// PSCI CPU_ON entry point: x0 = context id = CPU index.
.global secondary_entry
secondary_entry:
    mov     x20, x0
    cmp     x20, #{MAX_CPUS}
    b.hs    park
    bl      percpu_setup
    adrp    x0, FINAL_TTBR0
    ldr     x0, [x0, :lo12:FINAL_TTBR0]
    bl      enable_mmu
    bl      hyp_pac_install
    mov     x0, x20
    bl      secondary_main
    b       park

// x20 = CPU index: stack pointer, TPIDR_EL2 = &CPU_HEADERS[index] with its stack tops, vectors.
percpu_setup:
    adrp    x1, __stacks_start
    add     x1, x1, :lo12:__stacks_start
    ldr     x2, ={STACK_STRIDE}
    madd    x1, x2, x20, x1
    add     x3, x1, x2              // top of this CPU's stack (guard page at the bottom)
    mov     sp, x3
    adrp    x1, CPU_HEADERS
    add     x1, x1, :lo12:CPU_HEADERS
    ldr     x2, ={CPU_HEADER_SIZE}
    madd    x1, x2, x20, x1
    str     x3, [x1, #{STACK_TOP}]
    adrp    x2, FAULT_STACKS
    add     x2, x2, :lo12:FAULT_STACKS
    ldr     x3, ={FAULT_STACK_SIZE}
    madd    x2, x3, x20, x2
    add     x2, x2, x3                  // top of this CPU's fault stack
    str     x2, [x1, #{FAULT_STACK_TOP}]
    msr     tpidr_el2, x1
    adrp    x1, el2_vectors
    add     x1, x1, :lo12:el2_vectors
    msr     vbar_el2, x1
    isb
    ret

// The boot identity map, used until Rust has built the final tables: 39-bit VA, one level-1
// table of 1 GiB blocks; the first GiB (devices on the virt machine) as Device-nGnRE, the
// next three (RAM, where the image and device tree are) as normal write-back memory.
build_boot_tables:
    adrp    x0, boot_l1_table
    add     x0, x0, :lo12:boot_l1_table
    ldr     x1, =0x0040000000000445  // Device-nGnRE (AttrIndx 1), RW, AF, XN, block
    str     x1, [x0]
    ldr     x1, =0x0000000000000741  // Normal (AttrIndx 0), RW, inner shareable, AF, block
    mov     x2, #1
1:  orr     x3, x1, x2, lsl #30
    str     x3, [x0, x2, lsl #3]
    add     x2, x2, #1
    cmp     x2, #4
    b.lo    1b
    dsb     ish
    ret

// x0 = TTBR0_EL2 value. Turns on the MMU and caches.
enable_mmu:
    ldr     x1, ={MAIR}
    msr     mair_el2, x1
    ldr     x1, ={TCR}
    mrs     x2, id_aa64mmfr0_el1    // PS = the physical address size the CPU has
    and     x2, x2, #7
    bfi     x1, x2, #16, #3
    msr     tcr_el2, x1
    msr     ttbr0_el2, x0
    isb
    tlbi    alle2
    dsb     ish
    isb
    ldr     x1, ={SCTLR}
    msr     sctlr_el2, x1
    isb
    ret

not_at_el2:
park:
    wfe
    b       park

.section .bss.boot_tables, "aw", @nobits
.balign 4096
boot_l1_table:
    .space 4096
