//! Guest exits: decoded by exception class and handed to the handler for it. The fast path
//! (`handle_exit`) is called from exception.S with part of the guest's registers saved; the
//! rest (`handle_slow`) runs from the scheduler's slow-path entry, which decides what runs
//! next from the `Next` returned here.

use crate::vdev::vgic::LrSnapshot;
use super::vcpu::{Vcpu, VcpuRun};
use super::{hypercall, inject, mmio, pauth, sysreg, Crash, StopReason, Vm};
use crate::arch::context::VcpuRegs;
use crate::arch::exception::ExitKind;
use crate::drivers::gicv3::{self, Arrived};
use crate::mm::guest::FaultResult;
use aarch64_cpu::registers::*;
use core::sync::atomic::Ordering;
use hv_core::esr::{ec, Esr};
use hv_core::hypercall::Counter;

/// What happens after an exit was handled.
#[derive(Clone, Copy, Debug)]
pub enum Next {
    /// Back to the same vCPU.
    Resume,
    /// Back to the same vCPU, but a kick came: something may have become runnable on this
    /// CPU (CPU_ON, a new VM), so the scheduler bounds this vCPU's time.
    ResumeAfterKick,
    /// The vCPU waits for an interrupt (WFI, CPU_SUSPEND): another vCPU on this CPU runs if
    /// one can; otherwise the CPU sleeps until an interrupt for this vCPU may have arrived.
    Wait,
    /// Its time slice is over: another vCPU waiting for this CPU runs.
    Preempt,
    /// The vCPU switched itself off (PSCI CPU_OFF).
    Off,
    /// The whole VM stops.
    Stop(StopReason),
}

/// Set in `handle_exit`'s result when exception.S must save the rest of the frame and
/// call `handle_exit_slow` (frames are 16-byte aligned, so bits 0 and 1 are free).
const SLOW: usize = 1;
/// With SLOW: an MMIO access from x19..x29, for `handle_exit_full` once the whole frame is
/// saved.
const FULL: usize = 2;

/// The fast path, with only x0..x18 and x30 saved. A hypercall that asks for a constant
/// (a guest's null call: SMCCC_VERSION and the like) is answered first, by code that calls
/// nothing and keeps no state; then `exit_fast` handles the other hypercalls, which read and
/// write nothing else, and MMIO accesses whose transfer register is one of those saved (the
/// UART's flag and data registers at every byte a guest prints). Everything else is left
/// to `handle_exit_slow` once the whole frame is saved.
#[no_mangle]
extern "C" fn handle_exit(regs: *mut VcpuRegs, kind: u64) -> usize {
    // SAFETY: exception.S passes the frame SP pointed at, which the scheduler set to the
    // loaded vCPU's `regs`.
    let vcpu = unsafe { Vcpu::from_regs(regs) };
    // SAFETY: the vCPU is loaded on this CPU, its assigned one; nothing else touches it.
    let run = unsafe { vcpu.run_mut() };
    if kind != ExitKind::Sync as u64 {
        run.count(Counter::Exits);
        if kind == ExitKind::Irq as u64 {
            return irq_exit_fast(vcpu, run, regs);
        }
        run.pending = Pending::Exit(ExitKind::from_raw(kind));
        return regs as usize | SLOW;
    }
    let esr = Esr(ESR_EL2.get());
    if esr.ec() == ec::HVC64 && esr.imm16() == 0 {
        if let Some(answer) = hv_core::hypercall::Call::constant_answer(run.regs.x[0]) {
            // No stop check: a stopping VM's CPUs are kicked, and the kick's interrupt
            // exits through the slow path as soon as the guest runs. Counted as an exit
            // and a hypercall (VcpuRun::counter).
            run.constant_calls += 1;
            run.regs.x[0] = answer;
            return regs as usize;
        }
    }
    run.count(Counter::Exits);
    sync_exit_fast(vcpu, run, regs, esr)
}

/// The rest of the fast path for synchronous exits (see `handle_exit`).
#[inline(never)]
fn sync_exit_fast(vcpu: &Vcpu, run: &mut VcpuRun, regs: *mut VcpuRegs, esr: Esr) -> usize {
    let vm = vcpu.vm();
    let next = match esr.ec() {
        ec::DABT_LOWER if transfer_register_saved(esr) => return emulate_access(vcpu, run, regs, esr),
        ec::HVC64 | ec::SMC64 if esr.ec() == ec::SMC64 || esr.imm16() == 0 => {
            if esr.ec() == ec::SMC64 {
                // A trapped SMC returns to the SMC itself: step over it.
                skip_instruction();
            }
            let next = hypercall::handle(vm, vcpu, run);
            if matches!(next, Next::Resume) && !vm.is_stopping() {
                return regs as usize;
            }
            next
        }
        // Pending nothing: `handle_exit_full` handles it or says what is pending.
        ec::DABT_LOWER if transfer_register_valid(esr) => return regs as usize | SLOW | FULL,
        _ => {
            run.pending = Pending::Exit(ExitKind::Sync);
            return regs as usize | SLOW;
        }
    };
    run.pending = Pending::Handled(next);
    regs as usize | SLOW
}

/// An MMIO access whose transfer register is one of x19..x29 (`sync_exit_fast` left it
/// pending), with the whole frame saved now: handled as the fast path handles the others.
#[no_mangle]
extern "C" fn handle_exit_full(regs: *mut VcpuRegs) -> usize {
    // SAFETY: as in `handle_exit`: the loaded vCPU's frame, from exception.S.
    let vcpu = unsafe { Vcpu::from_regs(regs) };
    // SAFETY: as in `handle_exit`.
    let run = unsafe { vcpu.run_mut() };
    emulate_access(vcpu, run, regs, Esr(ESR_EL2.get()))
}

/// Emulates a data abort whose transfer register is in the frame; `regs` (the guest
/// resumes) unless something needs the slow path: interrupts to put in list registers (the
/// UART's, say), a stopping VM, an exit that does not simply resume.
#[inline(always)]
fn emulate_access(vcpu: &Vcpu, run: &mut VcpuRun, regs: *mut VcpuRegs, esr: Esr) -> usize {
    let vm = vcpu.vm();
    let next = mmio::handle_data_abort(vm, vcpu, run, esr);
    if matches!(next, Next::Resume) && !vm.is_stopping() && !vcpu.needs_flush.load(Ordering::Acquire) {
        return regs as usize;
    }
    run.pending = Pending::Handled(next);
    regs as usize | SLOW
}

/// An interrupt exit, its interrupt acknowledged here. The vCPU's own timer or PMU
/// interrupt, when it alone is to be delivered and a list register is free, goes there and
/// the guest resumes: the virtual timer firing while the guest runs costs no more. So does
/// the interrupt of a host disk of the vCPU's VM (its completions answered here, the
/// guest's interrupt delivered the same way). Anything else goes to the slow path,
/// acknowledged.
#[inline(never)]
fn irq_exit_fast(vcpu: &Vcpu, run: &mut VcpuRun, regs: *mut VcpuRegs) -> usize {
    let intid = gicv3::acknowledge();
    if intid == gicv3::KICK_SGI {
        return kick_exit(vcpu, run, regs);
    }
    let ppi = gicv3::GUEST_PPIS.contains(&intid);
    if (ppi || gicv3::is_device_spi(intid)) && !vcpu.needs_flush.load(Ordering::Acquire) && !vcpu.vm().is_stopping() {
        let vm = vcpu.vm();
        if let Some(g) = vm.vgic.as_ref().filter(|_| ppi) {
            if g.deliver_lone(vcpu.index, intid, guest_irqs_masked()) {
                gicv3::drop_priority(intid);
                return regs as usize;
            }
        } else if super::disk_interrupt_on_exit(vm, vcpu, intid, guest_irqs_masked()) {
            // Done, unless the guest's interrupt could not go straight to a list register.
            if !vcpu.needs_flush.load(Ordering::Acquire) {
                return regs as usize;
            }
            run.pending = Pending::Handled(Next::Resume);
            return regs as usize | SLOW;
        }
    }
    run.pending = Pending::Irq(intid);
    regs as usize | SLOW
}

/// A kick: another CPU made interrupts pending for this vCPU (its list registers are
/// flushed here and it resumes), or changed this CPU's run queue or a VM on it is stopping
/// (PerCpu::reschedule; the slow path's `after_kick` looks at the run queue).
#[inline(never)]
fn kick_exit(vcpu: &Vcpu, run: &mut VcpuRun, regs: *mut VcpuRegs) -> usize {
    crate::percpu::park_if_stopping();
    gicv3::complete_kick();
    if crate::percpu::this_cpu().reschedule.load(Ordering::Acquire) || vcpu.vm().is_stopping() {
        run.pending = Pending::Handled(Next::ResumeAfterKick);
        return regs as usize | SLOW;
    }
    vcpu.flush_interrupts();
    regs as usize
}

/// Whether the loaded vCPU has its interrupts masked (PSTATE.I, bit 7 of SPSR_EL2, which
/// holds its PSTATE while it is loaded).
fn guest_irqs_masked() -> bool {
    SPSR_EL2.get() & 1 << 7 != 0
}

/// A data abort with a syndrome whose transfer register the fast path saved (x0..x18,
/// x30, or XZR): the access can be emulated without the rest of the frame.
fn transfer_register_saved(esr: Esr) -> bool {
    let reg = esr.data_abort().reg;
    transfer_register_valid(esr) && (reg <= 18 || reg >= 30)
}

/// A data abort with a valid syndrome (an access that can be emulated, given its register).
fn transfer_register_valid(esr: Esr) -> bool {
    let da = esr.data_abort();
    da.isv && !da.s1ptw
}

/// What the fast path left for the slow one.
#[derive(Clone, Copy, Debug)]
pub enum Pending {
    /// An exit not handled yet.
    Exit(ExitKind),
    /// A handled exit whose outcome is not a plain resume.
    Handled(Next),
    /// An interrupt exit, the interrupt (its INTID) acknowledged already.
    Irq(u32),
}

/// The slow path's handling, with the whole frame saved: any exit the fast path left, or
/// the outcome it already decided. Inlined into the scheduler's entry: it is on every slow
/// exit's path.
#[inline(always)]
pub fn handle_slow(vcpu: &Vcpu) -> Next {
    // SAFETY: the vCPU is loaded on this CPU, its assigned one; nothing else touches it.
    let run = unsafe { vcpu.run_mut() };
    let vm = vcpu.vm();
    if let Some(stop) = vm.panic_dump_overdue() {
        return stop;
    }
    match run.pending {
        Pending::Handled(next) => next,
        Pending::Exit(ExitKind::Sync) => sync_exit(vm, vcpu, run),
        Pending::Irq(intid) => irq_exit(vm, vcpu, run, intid),
        Pending::Exit(kind) => async_exit(vcpu, kind),
    }
}

/// Acknowledges this CPU's physical interrupts and hands them on: the virtual timer to the
/// loaded vCPU, the maintenance interrupt as a reason to refill its list registers (and
/// look at its timer lines again), console input to the VMs it is for, the hypervisor's
/// timer to the emulated timer (and re-armed). Kicks and the end of the time slice are the
/// caller's to act on (the scheduler's). `first`: one acknowledged already.
pub fn take_interrupts(vm: &Vm, vcpu: &Vcpu, run: &VcpuRun, first: Option<u32>) -> Arrived {
    let arrived = gicv3::handle_pending(first);
    if arrived.uart {
        crate::console::input();
        super::deliver_console_input();
    }
    if arrived.device != 0 {
        super::host_device_interrupt(arrived.device);
    }
    if let Some(g) = &vm.vgic {
        if arrived.guest_ppis != 0 {
            for intid in gicv3::GUEST_PPIS.into_iter().filter(|i| arrived.guest_ppis & 1 << i != 0) {
                // Alone and with the list registers flushed, it goes straight into one.
                if vcpu.needs_flush.load(Ordering::Acquire) || !g.deliver_lone(vcpu.index, intid, guest_irqs_masked()) {
                    g.hw_ppi_fired(vcpu.index, intid);
                    vcpu.needs_flush.store(true, Ordering::Release);
                }
            }
        }
        if arrived.maintenance {
            // A level-triggered interrupt was completed: is its line still high?
            vm.after_uart_activity();
            super::timer::sync_physical(vcpu, run, &mut LrSnapshot::default());
            vcpu.needs_flush.store(true, Ordering::Release);
        }
    }
    if arrived.hyp_timer {
        super::timer::sync_physical(vcpu, run, &mut LrSnapshot::default());
        super::timer::arm_hyp_timer(run);
    }
    arrived
}

/// An interrupt exit the fast path did not finish: `first` acknowledged there.
fn irq_exit(vm: &Vm, vcpu: &Vcpu, run: &VcpuRun, first: u32) -> Next {
    let arrived = take_interrupts(vm, vcpu, run, Some(first));
    if arrived.hyp_timer && super::timer::slice_over() {
        Next::Preempt
    } else if arrived.kick {
        Next::ResumeAfterKick
    } else {
        Next::Resume
    }
}

#[cold]
fn async_exit(vcpu: &Vcpu, kind: ExitKind) -> Next {
    match kind {
        ExitKind::Irq | ExitKind::Sync => Next::Resume,
        ExitKind::Fiq => {
            log::warn!("unexpected FIQ while vCPU {} ran", vcpu.index);
            Next::Resume
        }
        ExitKind::SError => Next::Stop(StopReason::Crashed(Crash::SError)),
    }
}

fn sync_exit(vm: &Vm, vcpu: &Vcpu, run: &mut VcpuRun) -> Next {
    let esr = Esr(ESR_EL2.get());
    match esr.ec() {
        // HVC #0 and SMC were handled on the fast path; SMCCC calls use HVC #0 only.
        ec::HVC64 => {
            run.regs.x[0] = hv_core::hypercall::ret::NOT_SUPPORTED as u64;
            Next::Resume
        }
        ec::WFX => {
            run.count(Counter::WfxTraps);
            skip_instruction();
            Next::Wait
        }
        ec::PAC => pauth::trap(vcpu, run).unwrap_or_else(|| not_emulated(vcpu, run, esr)),
        ec::FP_ASIMD => super::fp::trap(vcpu, run, false),
        ec::SVE => super::fp::trap(vcpu, run, true),
        ec::SYSREG => sysreg::handle(vm, vcpu, run, esr),
        ec::DABT_LOWER => mmio::handle_data_abort(vm, vcpu, run, esr),
        ec::IABT_LOWER => instruction_abort(vm, vcpu, run, esr),
        _ => not_emulated(vcpu, run, esr),
    }
}

fn instruction_abort(vm: &Vm, vcpu: &Vcpu, run: &mut VcpuRun, esr: Esr) -> Next {
    let far = FAR_EL2.get();
    let ipa = mmio::fault_ipa(far);
    if vm.is_ram(ipa, 1) {
        return ram_fault(vm, vcpu, run, ipa, far, (esr.iss() & 0x3f) as u8, "instruction fetch");
    }
    device_fetch(vcpu, run, far)
}

/// A stage-2 fault on guest RAM (its own access, or its stage-1 walk): the page is mapped
/// on first touch, marked young after aging, or the access refused with an abort.
pub fn ram_fault(vm: &Vm, vcpu: &Vcpu, run: &mut VcpuRun, ipa: u64, far: u64, fsc: u8, access: &str) -> Next {
    match vm.mem.fault(ipa, fsc) {
        FaultResult::Resume => Next::Resume,
        FaultResult::Refused => {
            vm.warn(format_args!(
                "vCPU {}: {access} at IPA {ipa:#x} (VA {far:#x}, PC {:#x}): not allowed by its stage-2 permissions (FSC {fsc:#x}): abort injected",
                vcpu.index,
                ELR_EL2.get()
            ));
            if access == "instruction fetch" {
                inject::instruction_abort(run, far)
            } else {
                inject::data_abort(run, far, access == "write")
            }
        }
        FaultResult::OutOfMemory => {
            log::error!("VM {}: vCPU {}: no host memory left for IPA {ipa:#x}", vm.id, vcpu.index);
            Next::Stop(StopReason::Crashed(Crash::OutOfMemory))
        }
    }
}

#[cold]
#[inline(never)]
fn device_fetch(vcpu: &Vcpu, run: &mut VcpuRun, far: u64) -> Next {
    vcpu.vm().warn(format_args!(
        "vCPU {}: instruction fetch from IPA {:#x} (not guest RAM) at PC {:#x}: abort injected",
        vcpu.index,
        mmio::fault_ipa(far),
        ELR_EL2.get()
    ));
    inject::instruction_abort(run, far)
}

/// SVE, a PAC instruction with keys trapped, or anything else the hypervisor does not
/// emulate: UNDEFINED for the guest.
#[cold]
#[inline(never)]
fn not_emulated(vcpu: &Vcpu, run: &mut VcpuRun, esr: Esr) -> Next {
    vcpu.vm().warn(format_args!(
        "vCPU {}: {} (EC {:#x}, ISS {:#x}) at PC {:#x}: UNDEF injected",
        vcpu.index,
        esr.class_name(),
        esr.ec(),
        esr.iss(),
        ELR_EL2.get()
    ));
    inject::undefined(run)
}

/// Moves the guest's PC past the trapped 32-bit instruction.
pub fn skip_instruction() {
    ELR_EL2.set(ELR_EL2.get() + 4);
}
