// Save and restore the EL1/EL0 state of a vCPU (El1State in context.rs, field order must
// match), called only when a physical CPU changes the vCPU it runs, never on an ordinary
// exit; and its FP/SIMD registers, called when they move (fp.rs).

.macro sysregs op
    \op     sctlr_el1, 0
    \op     cpacr_el1, 1
    \op     ttbr0_el1, 2
    \op     ttbr1_el1, 3
    \op     tcr_el1, 4
    \op     mair_el1, 5
    \op     amair_el1, 6
    \op     esr_el1, 7
    \op     far_el1, 8
    \op     afsr0_el1, 9
    \op     afsr1_el1, 10
    \op     vbar_el1, 11
    \op     contextidr_el1, 12
    \op     tpidr_el0, 13
    \op     tpidrro_el0, 14
    \op     tpidr_el1, 15
    \op     sp_el0, 16
    \op     sp_el1, 17
    \op     elr_el1, 18
    \op     spsr_el1, 19
    \op     par_el1, 20
    \op     cntkctl_el1, 21
    \op     cntv_ctl_el0, 22
    \op     cntv_cval_el0, 23
    \op     csselr_el1, 24
    \op     mdscr_el1, 25
    \op     vmpidr_el2, 26
    \op     elr_el2, 27
    \op     spsr_el2, 28
.endm

.macro save reg, idx
    mrs     x1, \reg
    str     x1, [x0, #8 * \idx]
.endm

.macro restore reg, idx
    ldr     x1, [x0, #8 * \idx]
    msr     \reg, x1
.endm

.section .text.context, "ax"

// x0 = *mut El1State
.global el1_state_save
el1_state_save:
    sysregs save
    ret

// x0 = *const El1State
.global el1_state_restore
el1_state_restore:
    sysregs restore
    isb
    ret

.arch_extension fp
.arch_extension simd

// x0 = *mut FpState (q0..q31, then FPSR, FPCR)
.global fp_state_save
fp_state_save:
    stp     q0, q1, [x0, #32 * 0]
    stp     q2, q3, [x0, #32 * 1]
    stp     q4, q5, [x0, #32 * 2]
    stp     q6, q7, [x0, #32 * 3]
    stp     q8, q9, [x0, #32 * 4]
    stp     q10, q11, [x0, #32 * 5]
    stp     q12, q13, [x0, #32 * 6]
    stp     q14, q15, [x0, #32 * 7]
    stp     q16, q17, [x0, #32 * 8]
    stp     q18, q19, [x0, #32 * 9]
    stp     q20, q21, [x0, #32 * 10]
    stp     q22, q23, [x0, #32 * 11]
    stp     q24, q25, [x0, #32 * 12]
    stp     q26, q27, [x0, #32 * 13]
    stp     q28, q29, [x0, #32 * 14]
    stp     q30, q31, [x0, #32 * 15]
    mrs     x1, fpsr
    mrs     x2, fpcr
    add     x0, x0, #512
    stp     x1, x2, [x0]
    ret

// x0 = *const FpState
.global fp_state_restore
fp_state_restore:
    ldp     q0, q1, [x0, #32 * 0]
    ldp     q2, q3, [x0, #32 * 1]
    ldp     q4, q5, [x0, #32 * 2]
    ldp     q6, q7, [x0, #32 * 3]
    ldp     q8, q9, [x0, #32 * 4]
    ldp     q10, q11, [x0, #32 * 5]
    ldp     q12, q13, [x0, #32 * 6]
    ldp     q14, q15, [x0, #32 * 7]
    ldp     q16, q17, [x0, #32 * 8]
    ldp     q18, q19, [x0, #32 * 9]
    ldp     q20, q21, [x0, #32 * 10]
    ldp     q22, q23, [x0, #32 * 11]
    ldp     q24, q25, [x0, #32 * 12]
    ldp     q26, q27, [x0, #32 * 13]
    ldp     q28, q29, [x0, #32 * 14]
    ldp     q30, q31, [x0, #32 * 15]
    add     x0, x0, #512
    ldp     x1, x2, [x0]
    msr     fpsr, x1
    msr     fpcr, x2
    ret

// Registers aarch64-cpu does not define.
.global read_mdcr_el2
read_mdcr_el2:
    mrs     x0, mdcr_el2
    ret

.global write_mdcr_el2
write_mdcr_el2:
    msr     mdcr_el2, x0
    isb
    ret
