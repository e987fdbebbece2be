//! A vCPU's architectural state and the code that switches it on a physical CPU.
//!
//! General-purpose registers are saved on every exit (exception.S). EL1 system registers,
//! ELR_EL2 and SPSR_EL2 stay live in the CPU while the vCPU is loaded and are saved/restored
//! only when the CPU switches to another vCPU (`save`/`restore`). FP/SIMD and SVE registers
//! move lazily, when a vCPU first uses them in a residency (fp.rs, vm/fp.rs).
//! Pointer-authentication keys are not part of that: they move with the exits and entries
//! of a vCPU that owns them (exception.S, vm/pauth.rs).

use aarch64_cpu::registers::Writeable;

/// What exception.S saves and loads through SP: the general-purpose registers at every
/// exit, and the pointer-authentication keys at every exit and entry while the vCPU owns
/// the key registers (`keys_live`, see vm/pauth.rs).
#[repr(C, align(16))]
#[derive(Clone, Debug, Default)]
pub struct VcpuRegs {
    pub x: [u64; 31],
    _pad: u64,
    /// APIA, APIB, APDA, APDB, APGA keys (lo, hi): the guest's values whenever it is not
    /// running with them live.
    pub keys: [u64; 10],
    /// Non-zero while the guest runs with HCR_EL2.API/APK set and its keys in the CPU.
    pub keys_live: u64,
    /// Exits that switched keys (counted by exception.S).
    pub key_switch_exits: u64,
}

impl VcpuRegs {
    /// Architectural reset of the registers (x0..x30 and keys); the ownership of the key
    /// registers and the counter stay.
    pub fn reset(&mut self) {
        self.x = [0; 31];
        self.keys = [0; 10];
    }
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
const _: () = assert!(core::mem::size_of::<El1State>() == 29 * 8);

extern "C" {
    fn el1_state_save(state: *mut El1State);
    fn el1_state_restore(state: *const El1State);
}

/// Saves the loaded vCPU's EL1 state from this CPU (its FP/SIMD state moves lazily: fp.rs).
pub fn save(el1: &mut El1State) {
    // SAFETY: the pointer comes from a live exclusive reference to a structure whose layout
    // context.S expects; the routine only moves system registers to memory.
    unsafe { el1_state_save(el1) };
    // The outgoing vCPU's virtual timer must not fire for whoever runs here next.
    aarch64_cpu::registers::CNTV_CTL_EL0.set(0);
}

/// Loads a vCPU's EL1 state into this CPU.
pub fn restore(el1: &El1State) {
    // SAFETY: as for `save`; writing EL1 registers affects only the guest about to run,
    // the hypervisor runs at EL2 with its own registers.
    unsafe { el1_state_restore(el1) }
}
