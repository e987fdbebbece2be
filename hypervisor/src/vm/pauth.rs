//! Pointer-authentication keys of vCPUs: which vCPU owns the key registers while it runs
//! (hv_core::pauth decides, residency by residency) and the trap that hands them over.
//! The keys themselves move in exception.S, through VcpuRegs.keys and keys_live.

use super::exit::Next;
use super::vcpu::{Vcpu, VcpuRun};
use crate::arch::cpu;
use aarch64_cpu::registers::*;
use hv_core::hypercall::Counter;
use hv_core::pauth::Trap;

/// A residency begins: returns the HCR_EL2 value the vCPU runs with (API/APK set when it
/// owns the keys from the start).
pub fn load(run: &mut VcpuRun) -> u64 {
    run.count(Counter::Loads);
    let live = run.pauth.load();
    run.regs.keys_live = live as u64;
    hcr(live)
}

/// HCR_EL2 for a vCPU loaded here: its keys live or not, its WFI trapped while the CPU is
/// shared.
fn hcr(keys_live: bool) -> u64 {
    cpu::guest_hcr(keys_live, crate::percpu::this_cpu().shared())
}

/// The residency ends (the guest's keys are in its frame already: every exit while they
/// were live saved them). `sctlr_el1` is the guest's, as just saved.
pub fn unload(run: &mut VcpuRun) {
    run.pauth.unload(run.el1.sctlr_el1);
    run.regs.keys_live = 0;
}

/// The loaded vCPU's HCR_EL2 again, after what it depends on changed (whether the CPU is
/// shared).
pub fn refresh_hcr(run: &VcpuRun) {
    HCR_EL2.set(hcr(run.regs.keys_live != 0));
}

/// A PAC instruction (EC 0x09) or key-register access (EC 0x18) trapped. With PAuth for
/// this VM, the vCPU takes the keys and the instruction runs again, untrapped: the return
/// to the guest (guest_resume) loads its keys and the vector table that saves them.
pub fn trap(v: &Vcpu, run: &mut VcpuRun) -> Option<Next> {
    match run.pauth.trap() {
        Trap::Unavailable => return None,
        Trap::AlreadyLive => v.vm().warn(format_args!("vCPU {}: PAuth trap while it owned the keys", v.index)),
        Trap::Switched => (),
    }
    run.count(Counter::PauthTraps);
    run.regs.keys_live = 1;
    refresh_hcr(run);
    Some(Next::Resume)
}
