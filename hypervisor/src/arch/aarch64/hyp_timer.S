// The EL2 physical timer (CNTHP_*), the hypervisor's own: it ends time slices.
.section .text.hyp_timer, "ax"

// x0 = ticks from now.
.global hyp_timer_arm
hyp_timer_arm:
    msr     S3_4_C14_C2_0, x0       // CNTHP_TVAL_EL2
    mov     x0, #1                  // ENABLE, interrupt not masked
    msr     S3_4_C14_C2_1, x0       // CNTHP_CTL_EL2
    isb
    ret

.global hyp_timer_disarm
hyp_timer_disarm:
    msr     S3_4_C14_C2_1, xzr
    isb
    ret
