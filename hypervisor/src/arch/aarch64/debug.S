// A vCPU's self-hosted debug registers (DebugState in debug.rs): breakpoint and watchpoint
// value/control pairs and the OS lock. Only the pairs the CPU implements
// are touched (others are UNDEFINED): x1 = breakpoints, x2 = watchpoints.
.section .text.debug, "ax"

// Pair n of a kind: skipped (with all after it) when n >= count; else saved to or restored
// from [x0 + base + 16 n].
.macro pair op, v, c, n, base, count
    cmp     \count, #(\n + 1)
    b.lo    9f
    .ifc \op, save
    mrs     x3, \v\n\()_el1
    mrs     x4, \c\n\()_el1
    stp     x3, x4, [x0, #(\base + \n * 16)]
    .else
    ldp     x3, x4, [x0, #(\base + \n * 16)]
    msr     \v\n\()_el1, x3
    msr     \c\n\()_el1, x4
    .endif
.endm

// x0 = DebugState, x1 = breakpoints, x2 = watchpoints
.global debug_state_save
debug_state_save:
    .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15
    pair save, dbgbvr, dbgbcr, \n, 0, x1
    .endr
9:
    .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15
    pair save, dbgwvr, dbgwcr, \n, 256, x2
    .endr
9:
    mrs     x3, oslsr_el1
    ubfx    x3, x3, #1, #1          // OSLK
    add     x5, x0, #512            // past the pairs (beyond stp's reach)
    str     x3, [x5]
    ret

.global debug_state_restore
debug_state_restore:
    .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15
    pair restore, dbgbvr, dbgbcr, \n, 0, x1
    .endr
9:
    .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15
    pair restore, dbgwvr, dbgwcr, \n, 256, x2
    .endr
9:
    add     x5, x0, #512
    ldr     x3, [x5]
    msr     oslar_el1, x3
    isb
    ret
