// A vCPU's PMUv3 state (PmuState in pmu.rs). x1 = event counters implemented (PMCR_EL0.N);
// only those are touched (others are UNDEFINED).
.section .text.pmu, "ax"

.macro counter op, n, count
    cmp     \count, #(\n + 1)
    b.lo    9f
    .ifc \op, save
    mrs     x2, pmevtyper\n\()_el0
    str     x2, [x0, #(64 + \n * 8)]
    mrs     x2, pmevcntr\n\()_el0
    str     x2, [x0, #(312 + \n * 8)]
    .else
    ldr     x2, [x0, #(64 + \n * 8)]
    msr     pmevtyper\n\()_el0, x2
    ldr     x2, [x0, #(312 + \n * 8)]
    msr     pmevcntr\n\()_el0, x2
    .endif
.endm

// x0 = PmuState, x1 = counters. Saves, then quiesces the PMU: nothing counts, no overflow
// flag or interrupt stays set (its interrupt line falls).
.global pmu_state_save
pmu_state_save:
    mrs     x2, pmcr_el0
    str     x2, [x0, #0]
    mrs     x2, pmcntenset_el0
    str     x2, [x0, #8]
    mov     w4, #-1
    msr     pmcntenclr_el0, x4
    isb
    mrs     x2, pmintenset_el1
    str     x2, [x0, #16]
    mrs     x2, pmovsset_el0
    str     x2, [x0, #24]
    mrs     x2, pmselr_el0
    str     x2, [x0, #32]
    mrs     x2, pmuserenr_el0
    str     x2, [x0, #40]
    mrs     x2, pmccfiltr_el0
    str     x2, [x0, #48]
    mrs     x2, pmccntr_el0
    str     x2, [x0, #56]
    .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30
    counter save, \n, x1
    .endr
9:
    msr     pmintenclr_el1, x4
    msr     pmovsclr_el0, x4
    msr     pmcr_el0, xzr
    isb
    ret

// x0 = PmuState, x1 = counters.
.global pmu_state_restore
pmu_state_restore:
    mov     w4, #-1
    msr     pmcntenclr_el0, x4
    msr     pmintenclr_el1, x4
    msr     pmovsclr_el0, x4
    ldr     x2, [x0, #0]
    bic     x2, x2, #6              // P and C reset counters when written as 1
    msr     pmcr_el0, x2
    ldr     x2, [x0, #32]
    msr     pmselr_el0, x2
    ldr     x2, [x0, #40]
    msr     pmuserenr_el0, x2
    ldr     x2, [x0, #48]
    msr     pmccfiltr_el0, x2
    ldr     x2, [x0, #56]
    msr     pmccntr_el0, x2
    .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30
    counter restore, \n, x1
    .endr
9:
    ldr     x2, [x0, #24]
    msr     pmovsset_el0, x2
    ldr     x2, [x0, #16]
    msr     pmintenset_el1, x2
    ldr     x2, [x0, #8]
    msr     pmcntenset_el0, x2
    isb
    ret

// Returns non-zero if an enabled overflow interrupt is requested (the PMU's line is high).
.global pmu_irq_line
pmu_irq_line:
    mrs     x0, pmovsset_el0
    mrs     x1, pmintenset_el1
    and     x0, x0, x1
    ret
