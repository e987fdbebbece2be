//! The guest's self-hosted debug: breakpoints, watchpoints, single step and the OS lock are
//! the CPU's own while the vCPU uses them. Their accesses trap (MDCR_EL2) until the vCPU
//! first touches one in a residency; then its saved registers go into the CPU and the
//! access runs again untrapped. A vCPU whose MDSCR_EL1 enables debug (MDE, KDE or SS) gets
//! them at load; one that never used them pays nothing at its exits and a flag test at its
//! loads. The registers another vCPU left in the CPU are never visible (reads trap first)
//! and never fire (MDSCR_EL1, switched with the EL1 state, gates them).

use super::exit::Next;
use super::vcpu::VcpuRun;
use crate::arch::debug;

/// MDSCR_EL1: software step, kernel debug, monitor debug (breakpoints and watchpoints).
const MDSCR_SS: u64 = 1 << 0;
const MDSCR_KDE: u64 = 1 << 13;
const MDSCR_MDE: u64 = 1 << 15;

/// A trapped access to a debug register: the vCPU's own registers go into the CPU and the
/// access runs again, untrapped.
pub fn take(run: &mut VcpuRun) -> Next {
    if !run.debug_live {
        debug::restore(&run.debug);
        run.debug_live = true;
    }
    debug::trap_guest_access(false);
    Next::Resume
}

/// The vCPU is being loaded (its EL1 state, MDSCR_EL1 included, is in the CPU).
pub fn load(run: &mut VcpuRun) {
    let in_use = run.el1.mdscr_el1 & (MDSCR_SS | MDSCR_KDE | MDSCR_MDE) != 0;
    if in_use {
        debug::restore(&run.debug);
    }
    run.debug_live = in_use;
    debug::trap_guest_access(!in_use);
}

/// The vCPU is being unloaded: its registers, if it had them in the CPU, are saved.
pub fn unload(run: &mut VcpuRun) {
    if run.debug_live {
        debug::save(&mut run.debug);
        run.debug_live = false;
    }
}
