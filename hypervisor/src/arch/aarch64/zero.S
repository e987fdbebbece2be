// Zeroes whole pages with DC ZVA, one cache-line-sized block per instruction (DCZID_EL0
// gives the block size); used for guest RAM and fresh tables. x0 = address (page aligned),
// x1 = bytes (a multiple of 4 KiB).
.section .text.zero, "ax"
.global zero_pages
zero_pages:
    mrs     x2, dczid_el0
    tbnz    x2, #4, 2f              // DZP: DC ZVA prohibited, use stores
    and     x2, x2, #0xf
    mov     x3, #4
    lsl     x3, x3, x2              // block size in bytes
    add     x1, x0, x1
1:  dc      zva, x0
    add     x0, x0, x3
    cmp     x0, x1
    b.lo    1b
    dsb     ish
    ret
2:  add     x1, x0, x1
3:  stp     xzr, xzr, [x0], #16
    cmp     x0, x1
    b.lo    3b
    ret
