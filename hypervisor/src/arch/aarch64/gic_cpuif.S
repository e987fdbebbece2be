// The GICv3 CPU interface's system registers that aarch64-cpu does not define.
.section .text.gic, "ax"

// Enables the system-register interface at EL2 (and lets EL1 use it): ICC_SRE_EL2 SRE | Enable.
.global gic_cpuif_enable
gic_cpuif_enable:
    mrs     x0, S3_4_C12_C9_5       // ICC_SRE_EL2
    orr     x0, x0, #(1 << 0)       // SRE
    orr     x0, x0, #(1 << 3)       // Enable: EL1 may use ICC_SRE_EL1
    msr     S3_4_C12_C9_5, x0
    isb
    mov     x0, #0xff
    msr     S3_0_C4_C6_0, x0        // ICC_PMR_EL1: every priority passes
    msr     S3_0_C12_C12_3, xzr     // ICC_BPR1_EL1
    mov     x0, #1
    msr     S3_0_C12_C12_7, x0      // ICC_IGRPEN1_EL1: Group 1 on
    isb
    ret

// x0 = ICC_SGI1R_EL1 value.
.global gic_send_sgi
gic_send_sgi:
    dsb     ishst                   // stores before the kick are visible to its target
    msr     S3_0_C12_C11_5, x0      // ICC_SGI1R_EL1
    isb
    ret

// Returns the acknowledged INTID (1020..1023: none).
.global gic_ack
gic_ack:
    mrs     x0, S3_0_C12_C12_0      // ICC_IAR1_EL1
    dsb     sy
    ret

// x0 = INTID to complete (priority drop and deactivation, EOImode 0).
.global gic_eoi
gic_eoi:
    msr     S3_0_C12_C12_1, x0      // ICC_EOIR1_EL1
    isb
    ret
