//! The PMU (PMUv3) a guest programs: its counters and controls saved and restored for the
//! vCPU that uses them, the PMU quiesced when it leaves the CPU, and MDCR_EL2's traps on
//! PMU accesses switched per residency (vm/pmu.rs decides).

use aarch64_cpu::registers::{Readable, ID_AA64DFR0_EL1};

/// A vCPU's PMU registers while they are not in the CPU. Offsets are pmu.S's.
#[repr(C)]
#[derive(Clone, Debug)]
pub struct PmuState {
    pub pmcr: u64,
    pub cntenset: u64,
    pub intenset: u64,
    pub ovsset: u64,
    pub selr: u64,
    pub userenr: u64,
    pub ccfiltr: u64,
    pub ccntr: u64,
    pub evtyper: [u64; 31],
    pub evcntr: [u64; 31],
}

impl Default for PmuState {
    fn default() -> Self {
        PmuState { pmcr: 0, cntenset: 0, intenset: 0, ovsset: 0, selr: 0, userenr: 0, ccfiltr: 0, ccntr: 0, evtyper: [0; 31], evcntr: [0; 31] }
    }
}

impl PmuState {
    /// Counting (PMCR_EL0.E and some counter enabled), or an overflow interrupt waiting.
    pub fn in_use(&self) -> bool {
        (self.pmcr & 1 != 0 && self.cntenset != 0) || self.ovsset & self.intenset != 0
    }
}

const _: () = assert!(core::mem::offset_of!(PmuState, evtyper) == 64);
const _: () = assert!(core::mem::offset_of!(PmuState, evcntr) == 312);

extern "C" {
    fn pmu_state_save(state: *mut PmuState, counters: u64);
    fn pmu_state_restore(state: *const PmuState, counters: u64);
    fn pmu_irq_line() -> u64;
}

/// The CPU has PMUv3 (PMUVer 1..=14; 15 is an IMPLEMENTATION DEFINED PMU).
pub fn available() -> bool {
    matches!((ID_AA64DFR0_EL1.get() >> 8) & 0xf, 1..=14)
}

/// Event counters given to guests: MDCR_EL2.HPMN (its reset value is all of them).
fn counters() -> u64 {
    super::cpu::guest_pmu_counters()
}

pub fn save(state: &mut PmuState) {
    // SAFETY: reads the PMU into a live exclusive structure of the layout pmu.S expects,
    // then stops it; only implemented counters are touched.
    unsafe { pmu_state_save(state, counters()) }
}

pub fn restore(state: &PmuState) {
    // SAFETY: writes the PMU, which counts only below EL2 for these counters (HPMD) and
    // interrupts through its PPI, which the hypervisor hands to the loaded vCPU.
    unsafe { pmu_state_restore(state, counters()) }
}

/// The PMU's interrupt line (an enabled counter overflowed), from the CPU's registers.
pub fn irq_line() -> bool {
    // SAFETY: reads two PMU registers.
    unsafe { pmu_irq_line() != 0 }
}

/// MDCR_EL2.TPM and TPMCR: EL1 and EL0 PMU accesses trap.
const PMU_TRAPS: u64 = 1 << 5 | 1 << 6;

/// Traps (or stops trapping) the guest's PMU accesses on this CPU.
pub fn trap_guest_access(trap: bool) {
    super::cpu::mdcr_traps(PMU_TRAPS, trap);
}
