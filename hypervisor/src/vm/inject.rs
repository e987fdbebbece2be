//! Exceptions the hypervisor delivers to a guest, as if its own EL1 had taken them.

use super::exit::Next;
use super::vcpu::VcpuRun;
use super::{Crash, StopReason};
use aarch64_cpu::registers::*;
use hv_core::esr::inject as syndrome;
use hv_core::hypercall::Counter;

const MODE_MASK: u64 = 0xf;
const MODE_EL0T: u64 = 0b0000;
const MODE_EL1T: u64 = 0b0100;
const MODE_EL1H: u64 = 0b0101;
/// PSTATE.nRW: the exception came from AArch32 (a 32-bit EL0).
const PSTATE_NRW: u64 = 1 << 4;
/// SPSR for the handler: EL1h, D, A, I, F masked.
const HANDLER_PSTATE: u64 = 0x3c5;

/// Which of the guest's vector entries a synchronous exception goes to, and whether it
/// was taken from EL1 itself.
fn vector_offset(spsr: u64) -> (u64, bool) {
    if spsr & PSTATE_NRW != 0 {
        return (0x600, false); // lower EL, AArch32
    }
    match spsr & MODE_MASK {
        MODE_EL1T => (0x000, true),
        MODE_EL1H => (0x200, true),
        MODE_EL0T => (0x400, false),
        _ => (0x200, true),
    }
}

/// A guest whose exception vector faults this many times in a row, each fault taken at
/// the vector the previous one was delivered to, can never make progress.
const NESTED_FAULT_LIMIT: u32 = 8;

/// Delivers a synchronous exception with syndrome `esr` (its EC built by `esr_for`), or
/// stops the VM if its exception handling is in a loop (no vectors, or broken ones).
fn deliver(run: &mut VcpuRun, esr_for: impl FnOnce(bool) -> u64, far: Option<u64>) -> Next {
    let spsr = SPSR_EL2.get();
    let pc = ELR_EL2.get();
    let (offset, same_el) = vector_offset(spsr);
    let target = VBAR_EL1.get().wrapping_add(offset);
    run.nested_faults = if pc == run.last_injection { run.nested_faults + 1 } else { 0 };
    run.last_injection = target;
    if run.nested_faults >= NESTED_FAULT_LIMIT {
        log::error!("vCPU faults at its own exception vector {pc:#x} again and again (VBAR_EL1 {:#x})", VBAR_EL1.get());
        return Next::Stop(StopReason::Crashed(Crash::ExceptionLoop));
    }
    ESR_EL1.set(esr_for(same_el));
    if let Some(far) = far {
        FAR_EL1.set(far);
    }
    ELR_EL1.set(pc);
    SPSR_EL1.set(spsr);
    ELR_EL2.set(target);
    SPSR_EL2.set(HANDLER_PSTATE);
    run.count(Counter::InjectedFaults);
    Next::Resume
}

/// The instruction at the guest's PC is UNDEFINED.
pub fn undefined(run: &mut VcpuRun) -> Next {
    deliver(run, |_| syndrome::undefined(), None)
}

/// A synchronous external abort on a data access to `far`.
pub fn data_abort(run: &mut VcpuRun, far: u64, write: bool) -> Next {
    deliver(run, |same_el| syndrome::data_abort(same_el, write), Some(far))
}

/// A synchronous external abort on an instruction fetch from `far`.
pub fn instruction_abort(run: &mut VcpuRun, far: u64) -> Next {
    deliver(run, syndrome::instruction_abort, Some(far))
}
