//! Per-CPU scheduling of vCPUs. Each physical CPU has a run queue of the vCPUs assigned to
//! it; several vCPUs (of one or several VMs) may share a CPU. A CPU switches vCPUs only when
//! the running one gives the CPU away (WFI, CPU_OFF, VM stop): there is no time slicing yet.
//! Switching saves the outgoing vCPU's EL1/FP state and loads the incoming one's; ordinary
//! exits that resume the same vCPU touch none of it.

use super::vcpu::{Power, Vcpu};
use super::{dequeued, pauth, vgic, Vm, NO_VCPU};
use crate::arch::context::{self, El1State, FpState, VcpuRegs};
use crate::arch::cpu;
use crate::percpu::{this_cpu, NO_VM};
use aarch64_cpu::registers::*;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::Ordering;

struct Entry {
    vm: Arc<Vm>,
    vcpu: usize,
}

impl Entry {
    fn vcpu(&self) -> &Vcpu {
        &self.vm.vcpus[self.vcpu]
    }
}

pub struct RunQueue {
    entries: Vec<Entry>,
    /// Index in `entries` of the vCPU whose state is loaded on this CPU.
    loaded: Option<usize>,
}

impl RunQueue {
    pub const fn new() -> RunQueue {
        RunQueue { entries: Vec::new(), loaded: None }
    }
}

/// Adds a vCPU to physical CPU `pcpu`'s run queue.
pub fn assign(pcpu: usize, vm: Arc<Vm>, vcpu: usize) {
    if let Some(c) = crate::percpu::cpu(pcpu) {
        c.runqueue.lock().entries.push(Entry { vm, vcpu });
    }
}

fn runnable(e: &Entry) -> bool {
    !e.vm.is_stopping() && matches!(*e.vcpu().power.lock(), Power::On | Power::OnPending { .. })
}

/// How long a vCPU runs before another one on the same CPU gets its turn.
const SLICE_US: u64 = 10_000;

/// Starts a time slice for the vCPU about to run if another one waits for this CPU, and
/// stops the slice timer if none does.
fn start_slice(rq: &RunQueue) {
    let waiting = rq.entries.iter().enumerate().any(|(k, e)| Some(k) != rq.loaded && runnable(e));
    if waiting {
        cpu::slice_timer_arm(SLICE_US);
    } else {
        cpu::slice_timer_disarm();
    }
}

/// After something may have become runnable here: make sure the running vCPU's time is
/// bounded.
pub fn update_slice() {
    start_slice(&this_cpu().runqueue.lock());
}

/// Whether a vCPU other than the loaded one could run on this CPU.
pub fn others_runnable() -> bool {
    let rq = this_cpu().runqueue.lock();
    rq.entries.iter().enumerate().any(|(k, e)| Some(k) != rq.loaded && runnable(e))
}

/// Chooses what this CPU runs next, loads it, and returns its register frame. With
/// `yield_current`, another runnable vCPU is preferred to the one loaded now. Waits (WFE)
/// while nothing here is runnable.
pub fn schedule(yield_current: bool) -> *mut VcpuRegs {
    let cpu = this_cpu();
    loop {
        let mut retired: Vec<Arc<Vm>> = Vec::new();
        let picked = {
            let mut rq = cpu.runqueue.lock();
            // Drop the vCPUs of VMs that are stopping.
            let mut i = 0;
            while i < rq.entries.len() {
                if rq.entries[i].vm.is_stopping() {
                    if rq.loaded == Some(i) {
                        // Even for a VM that is going away: unloading hands back what this
                        // CPU holds for it (its virtual timer's PPI may be active).
                        unload(rq.entries[i].vcpu());
                    }
                    let e = rq.entries.remove(i);
                    *e.vcpu().power.lock() = Power::Off;
                    rq.loaded = match rq.loaded {
                        Some(l) if l == i => None,
                        Some(l) if l > i => Some(l - 1),
                        other => other,
                    };
                    retired.push(e.vm);
                } else {
                    i += 1;
                }
            }
            let n = rq.entries.len();
            let start = match (rq.loaded, yield_current) {
                (Some(l), true) => l + 1,
                (Some(l), false) => l,
                (None, _) => 0,
            };
            let choice = (0..n).map(|k| (start + k) % n).find(|&k| runnable(&rq.entries[k]));
            match choice {
                Some(k) => {
                    switch_to(&mut rq, k);
                    start_slice(&rq);
                    let e = &rq.entries[k];
                    cpu.current_vm.store(e.vm.id, Ordering::Relaxed);
                    Some(e.vcpu().regs_ptr())
                }
                None => {
                    cpu::slice_timer_disarm();
                    if let Some(l) = rq.loaded.take() {
                        unload(rq.entries[l].vcpu());
                    }
                    cpu.current_vm.store(NO_VM, Ordering::Relaxed);
                    None
                }
            }
        };
        // Outside the run-queue lock: retiring may start a rebooted VM, which queues vCPUs.
        for vm in retired {
            dequeued(vm);
        }
        if let Some(regs) = picked {
            return regs;
        }
        crate::percpu::idle_wait();
    }
}

/// Makes entry `k` the loaded vCPU, starting it if it was just switched on.
fn switch_to(rq: &mut RunQueue, k: usize) {
    let incoming = rq.entries[k].vcpu();
    if rq.loaded != Some(k) {
        if let Some(l) = rq.loaded {
            unload(rq.entries[l].vcpu());
        }
    }
    let mut power = incoming.power.lock();
    if let Power::OnPending { entry, context } = *power {
        // SAFETY: this CPU is the vCPU's assigned CPU and it is not running.
        let run = unsafe { incoming.run_mut() };
        run.regs.reset();
        run.regs.x[0] = context;
        run.el1 = El1State::at_entry(entry, incoming.mpidr);
        run.fp = FpState::default();
        run.last_injection = u64::MAX;
        run.nested_faults = 0;
        *power = Power::On;
        drop(power);
        load(incoming);
    } else if rq.loaded != Some(k) {
        drop(power);
        load(incoming);
    }
    rq.loaded = Some(k);
}

fn load(v: &Vcpu) {
    // SAFETY: this CPU is the vCPU's assigned CPU; it is not running anywhere.
    let run = unsafe { v.run_mut() };
    context::restore(&run.el1, &run.fp);
    VTTBR_EL2.set(v.vm().vttbr());
    HCR_EL2.set(pauth::load(run));
    let last = v.vm().last_vcpu_on[v.pcpu].swap(v.index, Ordering::Relaxed);
    if last != NO_VCPU && last != v.index {
        crate::arch::mmu::flush_local_guest_stage1();
    }
    aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);
    if let Some(g) = &v.vm().vgic {
        vgic::restore(run);
        if v.needs_flush.load(Ordering::Acquire) {
            g.flush(v);
        }
    }
}

fn unload(v: &Vcpu) {
    // SAFETY: as in `load`; the vCPU just exited on this CPU.
    let run = unsafe { v.run_mut() };
    context::save(&mut run.el1, &mut run.fp);
    pauth::unload(run);
    if v.vm().vgic.is_some() {
        vgic::save(run);
    }
}
