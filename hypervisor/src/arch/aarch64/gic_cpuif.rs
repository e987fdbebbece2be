//! The GICv3 CPU interface (system registers, gic_cpuif.S).

extern "C" {
    fn gic_cpuif_enable();
    fn gic_send_sgi(value: u64);
    fn gic_ack() -> u32;
    fn gic_eoi(intid: u32);
}

/// Turns on the system-register interface and Group 1 interrupts for this CPU.
pub fn enable() {
    // SAFETY: configures this CPU's GIC CPU interface only; interrupts stay masked in
    // PSTATE at EL2, so nothing is taken here.
    unsafe { gic_cpuif_enable() }
}

/// Writes ICC_SGI1R_EL1.
pub fn send_sgi(value: u64) {
    // SAFETY: generating an SGI has no effect on this CPU's state.
    unsafe { gic_send_sgi(value) }
}

/// Reads ICC_IAR1_EL1 (acknowledges the highest-priority pending interrupt).
pub fn ack() -> u32 {
    // SAFETY: acknowledging an interrupt changes only GIC state, completed by `eoi`.
    unsafe { gic_ack() }
}

/// Writes ICC_EOIR1_EL1.
pub fn eoi(intid: u32) {
    // SAFETY: completes an interrupt this CPU acknowledged.
    unsafe { gic_eoi(intid) }
}
