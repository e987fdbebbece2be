//! The GICv3 CPU interface: the hypervisor's own (ICC_*) and the virtual one of the loaded
//! vCPU (ICH_*_EL2), through aarch64-cpu where it defines the register and gic_cpuif.S
//! where it does not.

use aarch64_cpu::asm::barrier;
use aarch64_cpu::registers::*;

extern "C" {
    fn gic_cpuif_open();
    fn gic_send_sgi(value: u64);
    fn gic_ack() -> u32;
    fn gic_eoi(intid: u32);
    fn gic_dir(intid: u32);
    fn gic_empty_lrs() -> u32;
}

/// Turns on the system-register interface (for EL1 too) and Group 1 interrupts for this
/// CPU, with EOImode 1 (EOI drops the priority, DIR deactivates).
pub fn enable() {
    ICC_SRE_EL2.modify(ICC_SRE_EL2::SRE::SET + ICC_SRE_EL2::ENABLE::SET);
    barrier::isb(barrier::SY);
    // SAFETY: configures this CPU's GIC CPU interface only; interrupts stay masked in
    // PSTATE at EL2, so nothing is taken here.
    unsafe { gic_cpuif_open() }
    ich::reset_hcr();
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
    use crate::arch::stacks::{cpu_index, MAX_CPUS};
    use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

    /// ICH_VTR_EL2's count of list registers, read once: every CPU has the same, and under
    /// QEMU each ICH_* access ends a translation block and takes its global lock (a 4-vCPU
    /// Linux boot read ICH_VTR_EL2 17,000 times).
    static LIST_REGISTERS: AtomicUsize = AtomicUsize::new(0);

    /// Number of list registers.
    #[inline]
    pub fn list_registers() -> usize {
        match LIST_REGISTERS.load(Ordering::Relaxed) {
            0 => {
                let n = ICH_VTR_EL2.read(ICH_VTR_EL2::ListRegs) as usize + 1;
                LIST_REGISTERS.store(n, Ordering::Relaxed);
                n
            }
            n => n,
        }
    }

    /// ICH_ELRSR_EL2: bit n set when list register n holds no interrupt (neither pending
    /// nor active, and no maintenance interrupt asked for at its completion).
    pub fn empty_lrs() -> u32 {
        // SAFETY: reads a register of the loaded vCPU's virtual interface; no side effect.
        unsafe { gic_empty_lrs() }
    }

    /// ICH_HCR_EL2 as last written on each CPU: only the hypervisor changes the bits it
    /// uses (the hardware's EOIcount, which it does not use, is kept by `save`), so they are
    /// read from here and a write that changes nothing is skipped (each ICH_* access costs
    /// an exit from QEMU's translated code and its global lock).
    static HCR: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

    fn hcr_shadow() -> &'static AtomicU64 {
        &HCR[cpu_index()]
    }

    pub fn hcr() -> u64 {
        hcr_shadow().load(Ordering::Relaxed)
    }

    pub fn set_hcr(v: u64) {
        if hcr_shadow().swap(v, Ordering::Relaxed) != v {
            ICH_HCR_EL2.set(v);
            barrier::isb(barrier::SY);
        }
    }

    /// Clears this CPU's ICH_HCR_EL2 (no vCPU loaded: the virtual interface off), and its
    /// copy. At each CPU's start.
    pub fn reset_hcr() {
        hcr_shadow().store(0, Ordering::Relaxed);
        ICH_HCR_EL2.set(0);
        barrier::isb(barrier::SY);
    }

    /// List register `n` (0..16; others read as empty). The match compiles to a jump table.
    pub fn lr(n: usize) -> u64 {
        match n {
            0 => ICH_LR0_EL2.get(),
            1 => ICH_LR1_EL2.get(),
            2 => ICH_LR2_EL2.get(),
            3 => ICH_LR3_EL2.get(),
            4 => ICH_LR4_EL2.get(),
            5 => ICH_LR5_EL2.get(),
            6 => ICH_LR6_EL2.get(),
            7 => ICH_LR7_EL2.get(),
            8 => ICH_LR8_EL2.get(),
            9 => ICH_LR9_EL2.get(),
            10 => ICH_LR10_EL2.get(),
            11 => ICH_LR11_EL2.get(),
            12 => ICH_LR12_EL2.get(),
            13 => ICH_LR13_EL2.get(),
            14 => ICH_LR14_EL2.get(),
            15 => ICH_LR15_EL2.get(),
            _ => 0,
        }
    }

    /// Writes list register `n` (0..16; others ignored): it affects only the loaded
    /// vCPU's interrupts.
    pub fn set_lr(n: usize, v: u64) {
        match n {
            0 => ICH_LR0_EL2.set(v),
            1 => ICH_LR1_EL2.set(v),
            2 => ICH_LR2_EL2.set(v),
            3 => ICH_LR3_EL2.set(v),
            4 => ICH_LR4_EL2.set(v),
            5 => ICH_LR5_EL2.set(v),
            6 => ICH_LR6_EL2.set(v),
            7 => ICH_LR7_EL2.set(v),
            8 => ICH_LR8_EL2.set(v),
            9 => ICH_LR9_EL2.set(v),
            10 => ICH_LR10_EL2.set(v),
            11 => ICH_LR11_EL2.set(v),
            12 => ICH_LR12_EL2.set(v),
            13 => ICH_LR13_EL2.set(v),
            14 => ICH_LR14_EL2.set(v),
            15 => ICH_LR15_EL2.set(v),
            _ => {}
        }
    }

    /// VMCR, AP0R0, AP1R0, HCR of the loaded vCPU.
    pub fn save(state: &mut [u64; 4]) {
        let hcr = ICH_HCR_EL2.get();
        hcr_shadow().store(hcr, Ordering::Relaxed);
        *state = [ICH_VMCR_EL2.get(), ICH_AP0R0_EL2.get(), ICH_AP1R0_EL2.get(), hcr];
    }

    /// Loads a vCPU's own virtual-interface state (as `save` left it).
    pub fn restore(state: &[u64; 4]) {
        ICH_VMCR_EL2.set(state[0]);
        ICH_AP0R0_EL2.set(state[1]);
        ICH_AP1R0_EL2.set(state[2]);
        ICH_HCR_EL2.set(state[3]);
        hcr_shadow().store(state[3], Ordering::Relaxed);
        barrier::isb(barrier::SY);
    }
}
