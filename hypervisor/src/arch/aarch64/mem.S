// memcpy, memmove, memset, memcmp and bcmp for the whole hypervisor (Rust's copies, fills
// and comparisons call them). compiler_builtins' versions, which these replace (theirs are
// weak symbols), move 8 bytes per iteration when both pointers are aligned alike and
// assemble words byte by byte when they are not: a 4 KiB page copy took about 2,000
// instructions and 33 MB of kernel copied into a VM 38 million. These move 64 bytes per
// iteration in general-purpose register pairs (the hypervisor never touches FP/SIMD
// registers: they may hold a guest's state), with unaligned accesses, which Normal memory
// allows at EL2 (SCTLR_EL2.A is clear); nothing calls them on Device memory. Only
// caller-saved registers other than x18 are used.
.section .text.mem, "ax"

// x0 = destination, x1 = source, x2 = bytes; returns x0. Every piece is loaded before it
// is stored, so a forward copy is also right for overlapping ranges with x0 < x1 (memmove
// relies on it).
.global memcpy
memcpy:
    mov     x3, x0
    cmp     x2, #64
    b.lo    2f
1:  ldp     x4, x5, [x1]
    ldp     x6, x7, [x1, #16]
    ldp     x8, x9, [x1, #32]
    ldp     x10, x11, [x1, #48]
    add     x1, x1, #64
    sub     x2, x2, #64
    stp     x4, x5, [x3]
    stp     x6, x7, [x3, #16]
    stp     x8, x9, [x3, #32]
    stp     x10, x11, [x3, #48]
    add     x3, x3, #64
    cmp     x2, #64
    b.hs    1b
    // Fewer than 64 bytes left: by their size bits.
2:  tbz     x2, #5, 3f
    ldp     x4, x5, [x1]
    ldp     x6, x7, [x1, #16]
    add     x1, x1, #32
    stp     x4, x5, [x3]
    stp     x6, x7, [x3, #16]
    add     x3, x3, #32
3:  tbz     x2, #4, 4f
    ldp     x4, x5, [x1], #16
    stp     x4, x5, [x3], #16
4:  tbz     x2, #3, 5f
    ldr     x4, [x1], #8
    str     x4, [x3], #8
5:  tbz     x2, #2, 6f
    ldr     w4, [x1], #4
    str     w4, [x3], #4
6:  tbz     x2, #1, 7f
    ldrh    w4, [x1], #2
    strh    w4, [x3], #2
7:  tbz     x2, #0, 8f
    ldrb    w4, [x1]
    strb    w4, [x3]
8:  ret

// x0 = destination, x1 = source, x2 = bytes (the ranges may overlap); returns x0. Forward
// when the destination is below the source or past its end, else backward from the end.
.global memmove
memmove:
    sub     x3, x0, x1
    cmp     x3, x2
    b.hs    memcpy
    add     x1, x1, x2
    add     x3, x0, x2
    cmp     x2, #64
    b.lo    2f
1:  ldp     x4, x5, [x1, #-16]
    ldp     x6, x7, [x1, #-32]
    ldp     x8, x9, [x1, #-48]
    ldp     x10, x11, [x1, #-64]
    sub     x1, x1, #64
    sub     x2, x2, #64
    stp     x4, x5, [x3, #-16]
    stp     x6, x7, [x3, #-32]
    stp     x8, x9, [x3, #-48]
    stp     x10, x11, [x3, #-64]
    sub     x3, x3, #64
    cmp     x2, #64
    b.hs    1b
2:  tbz     x2, #5, 3f
    ldp     x4, x5, [x1, #-16]
    ldp     x6, x7, [x1, #-32]!
    stp     x4, x5, [x3, #-16]
    stp     x6, x7, [x3, #-32]!
3:  tbz     x2, #4, 4f
    ldp     x4, x5, [x1, #-16]!
    stp     x4, x5, [x3, #-16]!
4:  tbz     x2, #3, 5f
    ldr     x4, [x1, #-8]!
    str     x4, [x3, #-8]!
5:  tbz     x2, #2, 6f
    ldr     w4, [x1, #-4]!
    str     w4, [x3, #-4]!
6:  tbz     x2, #1, 7f
    ldrh    w4, [x1, #-2]!
    strh    w4, [x3, #-2]!
7:  tbz     x2, #0, 8f
    ldrb    w4, [x1, #-1]
    strb    w4, [x3, #-1]
8:  ret

// x0 = destination, w1 = byte value, x2 = bytes; returns x0.
.global memset
memset:
    and     w1, w1, #0xff
    orr     w1, w1, w1, lsl #8
    orr     w1, w1, w1, lsl #16
    orr     x1, x1, x1, lsl #32
    mov     x3, x0
    cmp     x2, #64
    b.lo    2f
1:  stp     x1, x1, [x3]
    stp     x1, x1, [x3, #16]
    stp     x1, x1, [x3, #32]
    stp     x1, x1, [x3, #48]
    add     x3, x3, #64
    sub     x2, x2, #64
    cmp     x2, #64
    b.hs    1b
2:  tbz     x2, #5, 3f
    stp     x1, x1, [x3]
    stp     x1, x1, [x3, #16]
    add     x3, x3, #32
3:  tbz     x2, #4, 4f
    stp     x1, x1, [x3], #16
4:  tbz     x2, #3, 5f
    str     x1, [x3], #8
5:  tbz     x2, #2, 6f
    str     w1, [x3], #4
6:  tbz     x2, #1, 7f
    strh    w1, [x3], #2
7:  tbz     x2, #0, 8f
    strb    w1, [x3]
8:  ret

// x0, x1 = the two byte strings, x2 = bytes; returns w0 < 0, 0 or > 0 as the first
// differing byte (unsigned) of x0's is below, equal to or above x1's. Eight bytes at a
// time; a differing word is compared byte-reversed, which orders it by its first byte.
.global memcmp
.global bcmp
memcmp:
bcmp:
    cmp     x2, #8
    b.lo    2f
1:  ldr     x3, [x0], #8
    ldr     x4, [x1], #8
    cmp     x3, x4
    b.ne    4f
    sub     x2, x2, #8
    cmp     x2, #8
    b.hs    1b
2:  cbz     x2, 3f
    ldrb    w3, [x0], #1
    ldrb    w4, [x1], #1
    subs    w5, w3, w4
    b.ne    5f
    sub     x2, x2, #1
    b       2b
3:  mov     w0, #0
    ret
4:  rev     x3, x3
    rev     x4, x4
    cmp     x3, x4
    mov     w0, #1
    cneg    w0, w0, lo
    ret
5:  mov     w0, w5
    ret
