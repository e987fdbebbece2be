// The GICv3 CPU-interface registers aarch64-cpu 10 does not define (ICC_PMR_EL1,
// ICC_BPR1_EL1, ICC_IGRPEN1_EL1, ICC_SGI1R_EL1, ICC_IAR1_EL1, ICC_EOIR1_EL1, ICC_DIR_EL1,
// ICH_ELRSR_EL2) or defines read-only (ICC_CTLR_EL1); gic_cpuif.rs reaches the rest (ICC_SRE_EL2,
// ICH_*_EL2) through the crate.
.section .text.gic, "ax"

// Every priority passes, no binary-point grouping, EOImode 1, Group 1 on (after
// ICC_SRE_EL2.SRE).
.global gic_cpuif_open
gic_cpuif_open:
    mov     x0, #0xff
    msr     S3_0_C4_C6_0, x0        // ICC_PMR_EL1
    msr     S3_0_C12_C12_3, xzr     // ICC_BPR1_EL1
    mrs     x0, S3_0_C12_C12_4      // ICC_CTLR_EL1
    orr     x0, x0, #(1 << 1)       // EOImode: EOI drops priority, DIR deactivates
    msr     S3_0_C12_C12_4, x0
    mov     x0, #1
    msr     S3_0_C12_C12_7, x0      // ICC_IGRPEN1_EL1
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

// x0 = INTID whose priority drops (EL2 runs with EOImode 1: deactivation is separate).
.global gic_eoi
gic_eoi:
    msr     S3_0_C12_C12_1, x0      // ICC_EOIR1_EL1
    isb
    ret

// x0 = INTID to deactivate.
.global gic_dir
gic_dir:
    msr     S3_0_C12_C11_1, x0      // ICC_DIR_EL1
    isb
    ret

// Returns ICH_ELRSR_EL2: bit n set when list register n holds no interrupt.
.global gic_empty_lrs
gic_empty_lrs:
    mrs     x0, S3_4_C12_C11_5      // ICH_ELRSR_EL2
    ret
