//! The self-hosted debug registers a guest programs (breakpoints, watchpoints, the OS lock):
//! saved and restored for the vCPU that uses them, and MDCR_EL2's traps on
//! them switched per residency (vm/debug.rs decides).

use aarch64_cpu::registers::{Readable, ID_AA64DFR0_EL1};

/// A vCPU's debug registers while they are not in the CPU. Offsets are debug.S's.
#[repr(C)]
#[derive(Clone, Debug)]
pub struct DebugState {
    /// DBGBVR<n>_EL1, DBGBCR<n>_EL1.
    pub bp: [[u64; 2]; 16],
    /// DBGWVR<n>_EL1, DBGWCR<n>_EL1.
    pub wp: [[u64; 2]; 16],
    /// OSLSR_EL1.OSLK: the OS lock is locked (the architecture's reset state).
    pub os_lock: u64,
}

impl Default for DebugState {
    fn default() -> Self {
        DebugState { bp: [[0; 2]; 16], wp: [[0; 2]; 16], os_lock: 1 }
    }
}

const _: () = assert!(core::mem::offset_of!(DebugState, wp) == 256);
const _: () = assert!(core::mem::offset_of!(DebugState, os_lock) == 512);

extern "C" {
    fn debug_state_save(state: *mut DebugState, breakpoints: u64, watchpoints: u64);
    fn debug_state_restore(state: *const DebugState, breakpoints: u64, watchpoints: u64);
}

/// Breakpoint and watchpoint pairs this CPU implements.
fn pairs() -> (u64, u64) {
    let dfr0 = ID_AA64DFR0_EL1.get();
    (((dfr0 >> 12) & 0xf) + 1, ((dfr0 >> 20) & 0xf) + 1)
}

pub fn save(state: &mut DebugState) {
    let (b, w) = pairs();
    // SAFETY: reads of EL1 debug registers into a live exclusive structure of the layout
    // debug.S expects; only implemented pairs are read.
    unsafe { debug_state_save(state, b, w) }
}

pub fn restore(state: &DebugState) {
    let (b, w) = pairs();
    // SAFETY: writes EL1 debug registers, which only affect debug exceptions routed to EL1
    // (MDCR_EL2.TDE is 0: none reach EL2); only implemented pairs are written.
    unsafe { debug_state_restore(state, b, w) }
}

/// MDCR_EL2.TDA, TDOSA, TDRA: EL1 and EL0 accesses to the debug registers trap.
const DEBUG_TRAPS: u64 = 1 << 9 | 1 << 10 | 1 << 11;

/// Traps (or stops trapping) the guest's debug-register accesses on this CPU.
pub fn trap_guest_access(trap: bool) {
    super::cpu::mdcr_traps(DEBUG_TRAPS, trap);
}
