//! The guest's generic timers. Its virtual timer runs in the hardware while the vCPU is
//! loaded (the vGIC follows its line: vdev/vgic.rs); its EL1 physical timer is emulated here
//! (CNTHCTL_EL2 traps every access), its line driven into the vGIC as PPI 14 (INTID 30),
//! level-triggered. The hypervisor's own timer wakes the CPU at the earlier of the loaded
//! vCPU's emulated deadline and the end of the CPU's time slice.

use super::exit::{skip_instruction, Next};
use super::vcpu::{Vcpu, VcpuRun};
use crate::arch::cpu;
use crate::drivers::gicv3::VTIMER_PPI;
use crate::vdev::vgic::LrSnapshot;
use crate::percpu::{this_cpu, NO_DEADLINE};
use aarch64_cpu::registers::{Readable, CNTVCT_EL0, CNTV_CTL_EL0, CNTV_CVAL_EL0};
use core::sync::atomic::Ordering;
use hv_core::guest_dt::layout::PTIMER_INTID;
use hv_core::timer::{line_level_with, TimerReg};

/// A trapped access to the EL1 physical timer: register `reg`, general register `rt`.
pub fn access(vcpu: &Vcpu, run: &mut VcpuRun, reg: TimerReg, read: bool, rt: u8) -> Next {
    let now = cpu::now();
    let rt = rt as usize;
    if read {
        if rt != 31 {
            run.regs.x[rt] = run.ptimer.read(reg, now);
        }
    } else {
        run.ptimer.write(reg, if rt == 31 { 0 } else { run.regs.x[rt] }, now);
        sync_physical(vcpu, run, &mut LrSnapshot::default());
        arm_hyp_timer(run);
    }
    skip_instruction();
    Next::Resume
}

/// Drives the emulated physical timer's line, as it is now, into the vGIC. The vCPU is
/// loaded here.
pub fn sync_physical(vcpu: &Vcpu, run: &VcpuRun, lrs: &mut LrSnapshot) {
    if let Some(g) = &vcpu.vm().vgic {
        // A timer the guest never armed (Linux uses the virtual one) needs no counter read.
        let level = run.ptimer.can_rise() && run.ptimer.level(cpu::now());
        if g.set_private_level(vcpu.index, PTIMER_INTID, level, lrs) {
            vcpu.needs_flush.store(true, Ordering::Release);
        }
    }
}

/// Brings the vGIC up to date with both timer lines of the vCPU loaded here. A virtual
/// timer line that is high (by its registers: the counter past the compare value) but whose
/// physical PPI has not been taken for the vCPU yet (not active: it was just loaded, or the
/// deadline passed an instant ago, and its guest reads its interrupt state at once) is
/// pending for the guest already; the physical PPI, when it comes, finds it so.
pub fn sync(vcpu: &Vcpu, run: &VcpuRun, lrs: &mut LrSnapshot) {
    if let Some(g) = &vcpu.vm().vgic {
        let level = line_level_with(CNTV_CTL_EL0.get(), || (CNTV_CVAL_EL0.get(), CNTVCT_EL0.get()));
        g.sync_hw_line(vcpu.index, VTIMER_PPI, level, lrs);
        if level && crate::drivers::gicv3::guest_ppis_active() & 1 << VTIMER_PPI == 0 {
            g.hw_ppi_fired(vcpu.index, VTIMER_PPI);
            vcpu.needs_flush.store(true, Ordering::Release);
        }
    }
    sync_physical(vcpu, run, lrs);
}

/// Arms the hypervisor's timer for the earlier of this CPU's slice end (if still ahead)
/// and the loaded vCPU's emulated-timer deadline; stops it if there is neither.
pub fn arm_hyp_timer(run: &VcpuRun) {
    let now = cpu::now();
    let slice = Some(this_cpu().slice_end.load(Ordering::Relaxed)).filter(|&end| end != NO_DEADLINE && end > now);
    let deadline = match (slice, run.ptimer.deadline(now)) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    cpu::hyp_timer_at(deadline);
}

/// This CPU's time slice has ended.
pub fn slice_over() -> bool {
    let end = this_cpu().slice_end.load(Ordering::Relaxed);
    end != NO_DEADLINE && cpu::now() >= end
}
