//! The GICv3 CPU interface (system registers, gic_cpuif.S).

extern "C" {
    fn gic_cpuif_enable();
    fn gic_send_sgi(value: u64);
    fn gic_ack() -> u32;
    fn gic_eoi(intid: u32);
    fn gic_dir(intid: u32);
    fn ich_vtr() -> u64;
    fn ich_hcr_read() -> u64;
    fn ich_hcr_write(v: u64);
    fn ich_lr_read(n: usize) -> u64;
    fn ich_lr_write(n: usize, v: u64);
    fn ich_state_save(state: *mut [u64; 4]);
    fn ich_state_restore(state: *const [u64; 4]);
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

/// Writes ICC_EOIR1_EL1: drops the running priority (EL2 runs with EOImode 1).
pub fn eoi(intid: u32) {
    // SAFETY: completes an interrupt this CPU acknowledged.
    unsafe { gic_eoi(intid) }
}

/// Writes ICC_DIR_EL1: deactivates an interrupt.
pub fn deactivate(intid: u32) {
    // SAFETY: deactivates an interrupt this CPU acknowledged.
    unsafe { gic_dir(intid) }
}

/// The virtual CPU interface (ICH_*_EL2): registers of the vCPU loaded on this CPU.
pub mod ich {
    use super::*;

    /// Number of list registers (ICH_VTR_EL2.ListRegs + 1).
    pub fn list_registers() -> usize {
        // SAFETY: reading ICH_VTR_EL2 has no side effects.
        (unsafe { ich_vtr() } & 0x1f) as usize + 1
    }

    pub fn hcr() -> u64 {
        // SAFETY: as above.
        unsafe { ich_hcr_read() }
    }

    pub fn set_hcr(v: u64) {
        // SAFETY: ICH_HCR_EL2 controls only the virtual CPU interface of the loaded vCPU.
        unsafe { ich_hcr_write(v) }
    }

    pub fn lr(n: usize) -> u64 {
        assert!(n < 16);
        // SAFETY: n is a list register number (0..16), the table's size.
        unsafe { ich_lr_read(n) }
    }

    pub fn set_lr(n: usize, v: u64) {
        assert!(n < 16);
        // SAFETY: as above; a list register only affects the loaded vCPU's interrupts.
        unsafe { ich_lr_write(n, v) }
    }

    /// VMCR, AP0R0, AP1R0, HCR of the loaded vCPU.
    pub fn save(state: &mut [u64; 4]) {
        // SAFETY: stores four registers into `state`.
        unsafe { ich_state_save(state) }
    }

    pub fn restore(state: &[u64; 4]) {
        // SAFETY: loads the vCPU's own virtual-interface state.
        unsafe { ich_state_restore(state) }
    }
}
