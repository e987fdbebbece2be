//! Guest exits: decoded by exception class and handed to the handler for it. Called from
//! exception.S with the guest's general-purpose registers saved in its frame.

use super::vcpu::{Power, Vcpu, VcpuRun};
use super::{hypercall, inject, mmio, sched, sysreg, StopReason, Vm};
use crate::arch::context::VcpuRegs;
use crate::arch::exception::ExitKind;
use aarch64_cpu::registers::*;
use hv_core::esr::{ec, Esr};
use hv_core::hypercall::Counter;

/// What happens after an exit was handled.
pub enum Next {
    /// Back to the same vCPU.
    Resume,
    /// The vCPU waits (WFI): let another vCPU on this CPU run if one can.
    Yield,
    /// The vCPU switched itself off (PSCI CPU_OFF).
    Off,
    /// The whole VM stops.
    Stop(StopReason),
}

#[no_mangle]
extern "C" fn handle_exit(regs: *mut VcpuRegs, kind: u64) -> *mut VcpuRegs {
    // SAFETY: exception.S passes the frame SP pointed at, which the scheduler set to the
    // loaded vCPU's `regs`.
    let vcpu = unsafe { Vcpu::from_regs(regs) };
    // SAFETY: the vCPU is loaded on this CPU, its assigned one; nothing else touches it.
    let run = unsafe { vcpu.run_mut() };
    let vm = vcpu.vm();
    run.count(Counter::Exits);
    let next = match ExitKind::from_raw(kind) {
        ExitKind::Sync => sync_exit(vm, vcpu, run),
        // No physical interrupt is enabled yet; one arriving is logged and ignored.
        ExitKind::Irq | ExitKind::Fiq => {
            log::warn!("unexpected physical interrupt while vCPU {} ran", vcpu.index);
            Next::Resume
        }
        ExitKind::SError => Next::Stop(StopReason::Crashed("SError while the guest ran")),
    };
    match next {
        Next::Resume if !vm.is_stopping() => regs,
        Next::Resume => sched::schedule(false),
        Next::Yield => sched::schedule(true),
        Next::Off => {
            *vcpu.power.lock() = Power::Off;
            if vm.vcpus_on() == 0 {
                vm.request_stop(StopReason::AllVcpusOff);
            }
            sched::schedule(false)
        }
        Next::Stop(reason) => {
            vm.request_stop(reason);
            sched::schedule(false)
        }
    }
}

fn sync_exit(vm: &Vm, vcpu: &Vcpu, run: &mut VcpuRun) -> Next {
    let esr = Esr(ESR_EL2.get());
    match esr.ec() {
        ec::HVC64 => {
            if esr.imm16() != 0 {
                // SMCCC calls use HVC #0 only.
                run.regs.x[0] = hv_core::hypercall::ret::NOT_SUPPORTED as u64;
                return Next::Resume;
            }
            hypercall::handle(vm, vcpu, run)
        }
        ec::SMC64 => {
            // A trapped SMC returns to the SMC itself: step over it.
            skip_instruction();
            hypercall::handle(vm, vcpu, run)
        }
        ec::WFX => {
            run.count(Counter::WfxTraps);
            skip_instruction();
            // WFI: nothing can wake it here (no virtual interrupts yet), so completing it at
            // once is the architected "spurious wake-up"; give the CPU to others first.
            Next::Yield
        }
        ec::SYSREG => sysreg::handle(vm, vcpu, run, esr),
        ec::DABT_LOWER => mmio::handle_data_abort(vm, vcpu, run, esr),
        ec::IABT_LOWER => {
            let far = FAR_EL2.get();
            log::warn!(
                "vCPU {}: instruction fetch from IPA {:#x} (not executable guest RAM) at PC {:#x}: abort injected",
                vcpu.index,
                mmio::fault_ipa(far),
                ELR_EL2.get()
            );
            inject::instruction_abort(run, far);
            Next::Resume
        }
        class => {
            // SVE, a PAC instruction with keys trapped, or anything the hypervisor does not
            // emulate: UNDEFINED for the guest.
            log::warn!(
                "vCPU {}: {} (EC {:#x}, ISS {:#x}) at PC {:#x}: UNDEF injected",
                vcpu.index,
                esr.class_name(),
                class,
                esr.iss(),
                ELR_EL2.get()
            );
            inject::undefined(run);
            Next::Resume
        }
    }
}

/// Moves the guest's PC past the trapped 32-bit instruction.
pub fn skip_instruction() {
    ELR_EL2.set(ELR_EL2.get() + 4);
}
