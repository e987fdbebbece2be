// Entry of every test guest: arm64 Image header, then EL1 set-up (stack, vectors, an
// identity map with caches on) before Rust. vCPU 0 comes in at _start with x0 = device
// tree; other vCPUs at secondary_start (PSCI CPU_ON) with x0 = their index.
// {STACK_SIZE} {MAX_VCPUS}

.section .text.head, "ax"
.global _start
_start:
    b       primary
    .long   0
    .quad   0x80000                 // text_offset
    .quad   __image_size
    .quad   0xa                     // little-endian, 4 KiB pages, anywhere
    .quad   0, 0, 0
    .ascii  "ARM\x64"
    .long   0

primary:
    mov     x19, x0
    adrp    x1, __bss_start
    add     x1, x1, :lo12:__bss_start
    adrp    x2, __bss_end
    add     x2, x2, :lo12:__bss_end
1:  cmp     x1, x2
    b.hs    2f
    stp     xzr, xzr, [x1], #16
    b       1b
2:  mov     x20, #0
    bl      cpu_setup
    bl      build_tables
    bl      enable_mmu
    mov     x0, x19
    bl      rt_primary
3:  wfe
    b       3b

.global secondary_start
secondary_start:
    mov     x20, x0
    cmp     x20, #{MAX_VCPUS}
    b.hs    3b
    bl      cpu_setup
    bl      enable_mmu
    mov     x0, x20
    bl      rt_secondary
    b       3b

// x20 = vCPU index: stack and vectors.
cpu_setup:
    adrp    x1, STACKS
    add     x1, x1, :lo12:STACKS
    ldr     x2, ={STACK_SIZE}
    add     x3, x20, #1
    madd    x1, x2, x3, x1
    mov     sp, x1
    adrp    x1, guest_vectors
    add     x1, x1, :lo12:guest_vectors
    msr     vbar_el1, x1
    mov     x1, #(3 << 20)          // CPACR_EL1.FPEN: no FP/SIMD traps
    msr     cpacr_el1, x1
    isb
    ret

// 1 GiB blocks over the first 4 GiB: devices below RAM, normal memory from 1 GiB.
build_tables:
    adrp    x0, GUEST_L1
    add     x0, x0, :lo12:GUEST_L1
    ldr     x1, =0x0060000000000405  // Device-nGnRE (AttrIndx 1), AF, UXN|PXN, block
    str     x1, [x0]
    ldr     x1, =0x0000000000000701  // Normal WB (AttrIndx 0), EL1 RW, inner shareable, AF
    mov     x2, #1
1:  orr     x3, x1, x2, lsl #30
    str     x3, [x0, x2, lsl #3]
    add     x2, x2, #1
    cmp     x2, #4
    b.lo    1b
    dsb     ish
    ret

enable_mmu:
    ldr     x1, =0x04ff             // Attr0 normal WB RWA, Attr1 Device-nGnRE
    msr     mair_el1, x1
    // T0SZ 25, WBWA walks, inner shareable, 4 KiB, EPD1 (no TTBR1), IPS 40 bits
    ldr     x1, =(25 | (1 << 8) | (1 << 10) | (3 << 12) | (1 << 23) | (2 << 32))
    msr     tcr_el1, x1
    adrp    x1, GUEST_L1
    add     x1, x1, :lo12:GUEST_L1
    msr     ttbr0_el1, x1
    isb
    tlbi    vmalle1
    dsb     nsh
    isb
    ldr     x1, =(0x30d00800 | 1 | (1 << 2) | (1 << 12))   // RES1, M, C, I
    msr     sctlr_el1, x1
    isb
    ret

// Exception vectors: every entry saves a frame and calls rt_exception(frame, kind).
.macro vector kind
    .balign 0x80
    sub     sp, sp, #288
    stp     x0, x1, [sp, #16 * 0]
    mov     x0, #\kind
    b       save_rest
.endm

.balign 0x800
.global guest_vectors
guest_vectors:
    vector 0
    vector 1
    vector 2
    vector 3
    vector 4
    vector 5
    vector 6
    vector 7
    vector 8
    vector 9
    vector 10
    vector 11
    vector 12
    vector 13
    vector 14
    vector 15

save_rest:
    stp     x2, x3, [sp, #16 * 1]
    stp     x4, x5, [sp, #16 * 2]
    stp     x6, x7, [sp, #16 * 3]
    stp     x8, x9, [sp, #16 * 4]
    stp     x10, x11, [sp, #16 * 5]
    stp     x12, x13, [sp, #16 * 6]
    stp     x14, x15, [sp, #16 * 7]
    stp     x16, x17, [sp, #16 * 8]
    stp     x18, x19, [sp, #16 * 9]
    stp     x20, x21, [sp, #16 * 10]
    stp     x22, x23, [sp, #16 * 11]
    stp     x24, x25, [sp, #16 * 12]
    stp     x26, x27, [sp, #16 * 13]
    stp     x28, x29, [sp, #16 * 14]
    mrs     x2, elr_el1
    stp     x30, x2, [sp, #16 * 15]
    mrs     x2, spsr_el1
    mrs     x3, esr_el1
    stp     x2, x3, [sp, #16 * 16]
    mrs     x2, far_el1
    str     x2, [sp, #16 * 17]
    mov     x1, x0
    mov     x0, sp
    bl      rt_exception
    // Returns if the exception was handled: resume at the (possibly updated) ELR, with the
    // (possibly updated) SPSR.
    ldr     x2, [sp, #16 * 15 + 8]
    msr     elr_el1, x2
    ldr     x2, [sp, #16 * 16]
    msr     spsr_el1, x2
    ldp     x2, x3, [sp, #16 * 1]
    ldp     x4, x5, [sp, #16 * 2]
    ldp     x6, x7, [sp, #16 * 3]
    ldp     x8, x9, [sp, #16 * 4]
    ldp     x10, x11, [sp, #16 * 5]
    ldp     x12, x13, [sp, #16 * 6]
    ldp     x14, x15, [sp, #16 * 7]
    ldp     x16, x17, [sp, #16 * 8]
    ldp     x18, x19, [sp, #16 * 9]
    ldp     x20, x21, [sp, #16 * 10]
    ldp     x22, x23, [sp, #16 * 11]
    ldp     x24, x25, [sp, #16 * 12]
    ldp     x26, x27, [sp, #16 * 13]
    ldp     x28, x29, [sp, #16 * 14]
    ldr     x30, [sp, #16 * 15]
    ldp     x0, x1, [sp, #16 * 0]
    add     sp, sp, #288
    eret

.section .bss.tables, "aw", @nobits
.balign 4096
.global GUEST_L1
GUEST_L1:
    .space 4096
