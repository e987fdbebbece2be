//! A vCPU's architectural state and the code that switches it on a physical CPU.
//!
//! General-purpose registers are saved on every exit (exception.S). EL1 system registers,
//! FP/SIMD registers, ELR_EL2 and SPSR_EL2 stay live in the CPU while the vCPU is loaded and
//! are saved/restored only when the CPU switches to another vCPU (`save`/`restore`).

use super::cpu;
use aarch64_cpu::registers::Writeable;

/// General-purpose registers, saved at every exit. exception.S stores to it through SP.
#[repr(C, align(16))]
#[derive(Clone, Debug, Default)]
pub struct VcpuRegs {
    pub x: [u64; 31],
    _pad: u64,
}

/// EL1/EL0 system registers; field order is the index order in context.S.
#[repr(C)]
#[derive(Clone, Debug, Default)]
pub struct El1State {
    pub sctlr_el1: u64,
    pub cpacr_el1: u64,
    pub ttbr0_el1: u64,
    pub ttbr1_el1: u64,
    pub tcr_el1: u64,
    pub mair_el1: u64,
    pub amair_el1: u64,
    pub esr_el1: u64,
    pub far_el1: u64,
    pub afsr0_el1: u64,
    pub afsr1_el1: u64,
    pub vbar_el1: u64,
    pub contextidr_el1: u64,
    pub tpidr_el0: u64,
    pub tpidrro_el0: u64,
    pub tpidr_el1: u64,
    pub sp_el0: u64,
    pub sp_el1: u64,
    pub elr_el1: u64,
    pub spsr_el1: u64,
    pub par_el1: u64,
    pub cntkctl_el1: u64,
    pub cntv_ctl_el0: u64,
    pub cntv_cval_el0: u64,
    pub csselr_el1: u64,
    pub mdscr_el1: u64,
    pub vmpidr_el2: u64,
    /// The guest's PC and PSTATE while it is not loaded.
    pub elr_el2: u64,
    pub spsr_el2: u64,
    /// Pointer-authentication keys (APIA, APIB, APDA, APDB, APGA; lo, hi): indices 29..38
    /// of context.S.
    pub keys: [u64; 10],
}

/// FP/SIMD registers: q0..q31, FPSR, FPCR.
#[repr(C, align(16))]
#[derive(Clone, Debug)]
pub struct FpState {
    pub q: [u128; 32],
    pub fpsr: u64,
    pub fpcr: u64,
}

impl Default for FpState {
    fn default() -> Self {
        FpState { q: [0; 32], fpsr: 0, fpcr: 0 }
    }
}

/// SPSR value for entering a guest: EL1h, D, A, I and F masked.
pub const SPSR_EL1H_MASKED: u64 = 0x3c5;
/// SCTLR_EL1 at reset: RES1 bits only (MMU and caches off, little-endian).
pub const SCTLR_EL1_RESET: u64 = 0x30d0_0800;

impl El1State {
    /// The state a vCPU starts in (arm64 boot protocol: EL1h, MMU off, interrupts masked).
    pub fn at_entry(pc: u64, mpidr: u64) -> El1State {
        El1State {
            sctlr_el1: SCTLR_EL1_RESET,
            vmpidr_el2: mpidr | (1 << 31),
            elr_el2: pc,
            spsr_el2: SPSR_EL1H_MASKED,
            ..Default::default()
        }
    }
}

// context.S addresses every field by its index in El1State.
const _: () = assert!(core::mem::offset_of!(El1State, keys) == 29 * 8);

extern "C" {
    fn el1_state_save(state: *mut El1State);
    fn el1_state_restore(state: *const El1State);
    /// Save/restore `keys`, addressed from the start of the El1State (index 29 on).
    fn el1_keys_save(state: *mut El1State);
    fn el1_keys_restore(state: *const El1State);
    fn fp_state_save(state: *mut FpState);
    fn fp_state_restore(state: *const FpState);
}

/// Saves the loaded vCPU's EL1 and FP state from this CPU.
pub fn save(el1: &mut El1State, fp: &mut FpState) {
    // SAFETY: the pointers come from live exclusive references to structures whose layout
    // context.S expects; the routines only move system and FP registers to memory.
    unsafe {
        el1_state_save(el1);
        if cpu::features().pauth {
            el1_keys_save(el1);
        }
        fp_state_save(fp);
    }
    // The outgoing vCPU's virtual timer must not fire for whoever runs here next.
    aarch64_cpu::registers::CNTV_CTL_EL0.set(0);
}

/// Loads a vCPU's EL1 and FP state into this CPU.
pub fn restore(el1: &El1State, fp: &FpState) {
    // SAFETY: as for `save`; writing EL1 registers affects only the guest about to run,
    // the hypervisor runs at EL2 with its own registers.
    unsafe {
        el1_state_restore(el1);
        if cpu::features().pauth {
            el1_keys_restore(el1);
        }
        fp_state_restore(fp);
    }
}
