// The EL2 physical timer (CNTHP_*), the hypervisor's own: it ends time slices and wakes
// the CPU when a loaded vCPU's emulated timer is due.
.section .text.hyp_timer, "ax"

// x0 = counter value at which the timer's interrupt rises.
.global hyp_timer_arm_at
hyp_timer_arm_at:
    msr     S3_4_C14_C2_2, x0       // CNTHP_CVAL_EL2
    mov     x0, #1                  // ENABLE, interrupt not masked
    msr     S3_4_C14_C2_1, x0       // CNTHP_CTL_EL2
    isb
    ret

.global hyp_timer_disarm
hyp_timer_disarm:
    msr     S3_4_C14_C2_1, xzr
    isb
    ret
