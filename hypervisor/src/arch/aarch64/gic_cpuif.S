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
    mrs     x0, S3_0_C12_C12_4      // ICC_CTLR_EL1
    orr     x0, x0, #(1 << 1)       // EOImode: EOI drops priority, DIR deactivates
    msr     S3_0_C12_C12_4, x0
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

// x0 = INTID to deactivate (ICC_DIR_EL1; EL2 runs with EOImode 1).
.global gic_dir
gic_dir:
    msr     S3_0_C12_C11_1, x0      // ICC_DIR_EL1
    isb
    ret

// The virtual CPU interface's control registers (ICH_*_EL2).
.global ich_vtr
ich_vtr:
    mrs     x0, S3_4_C12_C11_1      // ICH_VTR_EL2
    ret

.global ich_hcr_write
ich_hcr_write:
    msr     S3_4_C12_C11_0, x0      // ICH_HCR_EL2
    isb
    ret

.global ich_hcr_read
ich_hcr_read:
    mrs     x0, S3_4_C12_C11_0
    ret

// x0 = list register number (0..15).
.global ich_lr_read
ich_lr_read:
    adr     x1, 1f
    add     x1, x1, x0, lsl #3
    br      x1
1:
.irp n, 0, 1, 2, 3, 4, 5, 6, 7
    mrs     x0, S3_4_C12_C12_\n
    ret
.endr
.irp n, 0, 1, 2, 3, 4, 5, 6, 7
    mrs     x0, S3_4_C12_C13_\n
    ret
.endr

// x0 = list register number (0..15), x1 = value.
.global ich_lr_write
ich_lr_write:
    adr     x2, 1f
    add     x2, x2, x0, lsl #3
    br      x2
1:
.irp n, 0, 1, 2, 3, 4, 5, 6, 7
    msr     S3_4_C12_C12_\n, x1
    ret
.endr
.irp n, 0, 1, 2, 3, 4, 5, 6, 7
    msr     S3_4_C12_C13_\n, x1
    ret
.endr

// x0 = *mut [u64; 4]: VMCR, AP0R0, AP1R0, HCR.
.global ich_state_save
ich_state_save:
    mrs     x1, S3_4_C12_C11_7      // ICH_VMCR_EL2
    mrs     x2, S3_4_C12_C8_0       // ICH_AP0R0_EL2
    stp     x1, x2, [x0]
    mrs     x1, S3_4_C12_C9_0       // ICH_AP1R0_EL2
    mrs     x2, S3_4_C12_C11_0      // ICH_HCR_EL2
    stp     x1, x2, [x0, #16]
    ret

// x0 = *const [u64; 4]
.global ich_state_restore
ich_state_restore:
    ldp     x1, x2, [x0]
    msr     S3_4_C12_C11_7, x1
    msr     S3_4_C12_C8_0, x2
    ldp     x1, x2, [x0, #16]
    msr     S3_4_C12_C9_0, x1
    msr     S3_4_C12_C11_0, x2
    isb
    ret
