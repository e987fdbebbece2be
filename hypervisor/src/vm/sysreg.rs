//! Trapped system-register accesses (EC 0x18): the few the hypervisor emulates, and UNDEF
//! for the rest.

use super::exit::{skip_instruction, Next};
use super::vcpu::{Vcpu, VcpuRun};
use super::{inject, Vm};
use crate::vdev::vgic;
use aarch64_cpu::registers::*;
use hv_core::esr::Esr;
use hv_core::hypercall::Counter;
use hv_core::idregs::GuestFeatures;
use hv_core::sysreg::{self, SysReg};

enum Emulated {
    /// Reads as this value, writes ignored.
    Value(u64),
    /// A cache-maintenance operation that needs no work.
    Done,
}

fn emulate(vm: &Vm, r: SysReg) -> Option<Emulated> {
    if let Some(host) = crate::arch::idregs::read(r) {
        let features = GuestFeatures { ipa_bits: crate::arch::cpu::ipa_bits(), pauth: vm.spec.params.pauth, pmu: vm.has_pmu(), sve: vm.has_sve() };
        return Some(Emulated::Value(hv_core::idregs::guest_value(r, host, features)));
    }
    match r {
        // ACTLR_EL1 is IMPLEMENTATION DEFINED: the guest sees none of the host's controls.
        sysreg::ACTLR_EL1 => Some(Emulated::Value(0)),
        // Set/way maintenance cannot be made safe for a guest on shared caches; QEMU's TCG
        // has no caches to maintain, so completing it is exact here. (On hardware this
        // must clean the VM's memory by address, as KVM does.)
        sysreg::DC_ISW | sysreg::DC_CSW | sysreg::DC_CISW => Some(Emulated::Done),
        _ => None,
    }
}

/// The GIC CPU-interface registers (ICC_*_EL1: op0 3, op1 0, CRn 12; and ICC_PMR_EL1).
fn is_cpu_interface(r: SysReg) -> bool {
    (r.op0() == 3 && r.op1() == 0 && r.crn() == 12) || r == SysReg::new(3, 0, 4, 6, 0)
}

/// SGI generation registers: ICC_SGI1R_EL1, ICC_ASGI1R_EL1, ICC_SGI0R_EL1.
const ICC_SGI1R_EL1: SysReg = SysReg::new(3, 0, 12, 11, 5);
const ICC_ASGI1R_EL1: SysReg = SysReg::new(3, 0, 12, 11, 6);
const ICC_SGI0R_EL1: SysReg = SysReg::new(3, 2, 12, 11, 7);

#[inline(never)]
pub fn handle(vm: &Vm, vcpu: &Vcpu, run: &mut VcpuRun, esr: Esr) -> Next {
    run.count(Counter::SysregTraps);
    let access = esr.sysreg();
    let r = access.encoding();
    if let (Some(g), false, ICC_SGI1R_EL1 | ICC_ASGI1R_EL1 | ICC_SGI0R_EL1) = (&vm.vgic, access.read, r) {
        let value = if access.reg == 31 { 0 } else { run.regs.x[access.reg as usize] };
        vm.notify(g.send_sgi(vcpu.index, value));
        skip_instruction();
        return Next::Resume;
    }
    if is_cpu_interface(r) && vm.vgic.is_some() && vgic::trapping_group1() {
        // The guest may be about to acknowledge its virtual timer's or PMU's interrupt, held
        // in a list register while its interrupts were masked: drop it if the line fell,
        // then let the access run again untrapped.
        vcpu.sync_lines(run);
        vgic::stop_trapping_group1();
        return Next::Resume;
    }
    // Debug registers (op0 2: breakpoints, watchpoints, MDSCR, the OS lock, DCC): the
    // vCPU's own, from its first access in a residency.
    if r.op0() == 2 && (r.op1() == 0 || r.op1() == 3) {
        return super::debug::take(run);
    }
    if sysreg::is_pmu(r) && vm.has_pmu() {
        return super::pmu::take(run);
    }
    if let Some(reg) = hv_core::timer::physical_timer_reg(r) {
        return super::timer::access(vcpu, run, reg, access.read, access.reg);
    }
    if sysreg::is_pac_key(r) {
        if let Some(next) = super::pauth::trap(vcpu, run) {
            return next;
        }
    }
    match emulate(vm, r) {
        Some(Emulated::Value(v)) => {
            if access.read && access.reg != 31 {
                run.regs.x[access.reg as usize] = v;
            }
            skip_instruction();
            Next::Resume
        }
        Some(Emulated::Done) => {
            skip_instruction();
            Next::Resume
        }
        None => {
            vm.warn(format_args!(
                "vCPU {}: {} of {r} at PC {:#x}: not emulated, UNDEF injected",
                vcpu.index,
                if access.read { "read" } else { "write" },
                ELR_EL2.get()
            ));
            inject::undefined(run)
        }
    }
}
