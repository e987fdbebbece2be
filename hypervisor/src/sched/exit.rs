//! The slow path of a guest exit (exception.S calls it with the whole frame saved): the VM
//! layer handles the exit, and what it asks for next (resume, wait, yield, off, stop)
//! decides which vCPU this CPU runs.

use super::{after_kick, others_runnable, schedule};
use crate::arch::context::VcpuRegs;
use crate::vm::exit::{handle_slow, take_interrupts, Next};
use crate::vm::vcpu::{Power, Vcpu};
use crate::vm::{StopReason, Vm};

/// Returns the frame of the vCPU to run next.
#[no_mangle]
extern "C" fn handle_exit_slow(regs: *mut VcpuRegs) -> *mut VcpuRegs {
    // SAFETY: exception.S passes the frame SP pointed at, which the scheduler set to the
    // loaded vCPU's `regs`.
    let vcpu = unsafe { Vcpu::from_regs(regs) };
    let vm = vcpu.vm();
    let next = handle_slow(vcpu);
    if crate::vm::take_memory_given_back() {
        super::lifecycle::start_waiting(false);
    }
    if let Next::ResumeAfterKick = next {
        if let Some(regs) = after_kick() {
            return regs;
        }
    }
    if matches!(next, Next::Resume | Next::ResumeAfterKick) && !vm.is_stopping() {
        vcpu.flush_interrupts();
        return regs;
    }
    leave(vm, vcpu, next)
}

/// The exit did not simply resume: the vCPU waits, goes off, or its VM stops.
#[inline(never)]
fn leave(vm: &Vm, vcpu: &Vcpu, next: Next) -> *mut VcpuRegs {
    match next {
        Next::Resume | Next::ResumeAfterKick => schedule(false),
        Next::Wait => wait(vm, vcpu),
        Next::Preempt => schedule(true),
        Next::Off => {
            *vcpu.power.lock() = Power::Off;
            if vm.vcpus_on() == 0 {
                vm.request_stop(StopReason::AllVcpusOff);
            }
            schedule(false)
        }
        Next::Stop(reason) => {
            vm.request_stop(reason);
            schedule(false)
        }
    }
}

/// WFI: run another vCPU if one is runnable here; else, unless an interrupt is already
/// waiting for this vCPU, sleep until a physical interrupt arrives (the vCPU's own virtual
/// timer stays live while it is loaded, and other CPUs kick), then resume it. Waking early
/// is allowed: WFI may complete spuriously.
fn wait(vm: &Vm, vcpu: &Vcpu) -> *mut VcpuRegs {
    if others_runnable() {
        return schedule(true);
    }
    if vm.vgic.is_some() {
        // SAFETY: the vCPU is loaded on this CPU, its assigned one, and stopped here.
        let run = unsafe { vcpu.run_mut() };
        // An interrupt its timer took back since must not end the wait.
        let mut lrs = vcpu.sync_lines(run);
        if !vcpu.has_interrupt(&mut lrs) && !vm.is_stopping() {
            crate::arch::cpu::wait_for_interrupt();
            let arrived = take_interrupts(vm, vcpu, run, None);
            if let Some(regs) = arrived.kick.then(after_kick).flatten() {
                return regs;
            }
            if arrived.hyp_timer && crate::vm::timer::slice_over() && others_runnable() {
                return schedule(true);
            }
        }
        vcpu.flush_interrupts();
    }
    if vm.is_stopping() {
        return schedule(false);
    }
    vcpu.regs_ptr()
}
