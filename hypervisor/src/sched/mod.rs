//! Scheduling: which vCPU each physical CPU runs. Each CPU has a run queue of the vCPUs
//! assigned to it; several vCPUs (of one or several VMs) may share a CPU. A CPU switches
//! vCPUs when the running one waits (WFI), goes off, its VM stops, or its time slice (the
//! EL2 physical timer) ends while another one waits for the CPU. Switching unloads the
//! outgoing vCPU's state and loads the incoming one's; ordinary exits that resume the same
//! vCPU touch none of it. The choice itself is hv_core::sched's.

mod exit;
pub mod lifecycle;

use crate::arch::cpu;
use crate::arch::stacks::MAX_CPUS;
use crate::percpu::{this_cpu, NO_DEADLINE, NO_VM};
use crate::vm::vcpu::{Power, Vcpu};
use crate::vm::Vm;
use crate::arch::context::VcpuRegs;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::Ordering;
use spin::Mutex;

struct Entry {
    vm: Arc<Vm>,
    vcpu: usize,
}

impl Entry {
    fn vcpu(&self) -> &Vcpu {
        &self.vm.vcpus[self.vcpu]
    }
}

struct RunQueue {
    entries: Vec<Entry>,
    /// Index in `entries` of the vCPU whose state is loaded on this CPU.
    loaded: Option<usize>,
}

/// The vCPUs assigned to each physical CPU.
static RUN_QUEUES: [Mutex<RunQueue>; MAX_CPUS] = [const { Mutex::new(RunQueue { entries: Vec::new(), loaded: None }) }; MAX_CPUS];

fn this_queue() -> &'static Mutex<RunQueue> {
    &RUN_QUEUES[this_cpu().index()]
}

/// Adds a vCPU to physical CPU `pcpu`'s run queue.
fn assign(pcpu: usize, vm: Arc<Vm>, vcpu: usize) {
    if let Some(q) = RUN_QUEUES.get(pcpu) {
        q.lock().entries.push(Entry { vm, vcpu });
    }
}

fn runnable(e: &Entry) -> bool {
    !e.vm.is_stopping() && matches!(*e.vcpu().power.lock(), Power::On | Power::OnPending { .. })
}

/// How long a vCPU runs before another one on the same CPU gets its turn.
const SLICE_US: u64 = 10_000;

fn others_waiting(rq: &RunQueue) -> bool {
    hv_core::sched::others_waiting(rq.entries.len(), rq.loaded, |k| runnable(&rq.entries[k]))
}

/// Starts a time slice for the loaded vCPU if another one waits for this CPU (none if no
/// other does), and arms the hypervisor's timer for it and the vCPU's emulated timer. Its
/// WFI traps only then (PerCpu::shared).
fn start_slice(rq: &RunQueue) {
    let end = if others_waiting(rq) { cpu::now() + cpu::ticks(SLICE_US) } else { NO_DEADLINE };
    let was_shared = this_cpu().shared();
    this_cpu().slice_end.store(end, Ordering::Relaxed);
    if let Some(l) = rq.loaded {
        let vcpu = rq.entries[l].vcpu();
        // SAFETY: the loaded vCPU is assigned to this CPU and stopped in the hypervisor here.
        let run = unsafe { vcpu.run_mut() };
        crate::vm::timer::arm_hyp_timer(run);
        if this_cpu().shared() != was_shared {
            crate::vm::pauth::refresh_hcr(run);
        }
    }
}

/// A kick came while a vCPU ran or waited here: a VM with a vCPU here may be stopping (it
/// is retired, and its stop logged, only once every CPU dropped its vCPUs), or a vCPU may
/// have become runnable here. Returns the frame to run if the CPU must reschedule; else the
/// running vCPU's time is bounded if another one now waits.
fn after_kick() -> Option<*mut VcpuRegs> {
    this_cpu().reschedule.store(false, Ordering::Relaxed);
    let stopping = {
        let rq = this_queue().lock();
        let stopping = rq.entries.iter().any(|e| e.vm.is_stopping());
        if !stopping {
            start_slice(&rq);
        }
        stopping
    };
    stopping.then(|| schedule(false))
}

/// Whether a vCPU other than the loaded one could run on this CPU.
fn others_runnable() -> bool {
    others_waiting(&this_queue().lock())
}

/// Chooses what this CPU runs next, loads it, and returns its register frame. With
/// `yield_current`, another runnable vCPU is preferred to the one loaded now. Sleeps while
/// nothing here is runnable.
pub fn schedule(yield_current: bool) -> *mut VcpuRegs {
    let cpu = this_cpu();
    loop {
        let mut retired: Vec<Arc<Vm>> = Vec::new();
        let picked = {
            let mut rq = this_queue().lock();
            // Drop the vCPUs of VMs that are stopping.
            let mut i = 0;
            while i < rq.entries.len() {
                if rq.entries[i].vm.is_stopping() {
                    if rq.loaded == Some(i) {
                        // Even for a VM that is going away: unloading hands back what this
                        // CPU holds for it (its virtual timer's PPI may be active).
                        rq.entries[i].vcpu().unload();
                    }
                    let e = rq.entries.remove(i);
                    crate::vm::fp::forget(e.vcpu());
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
            let choice = hv_core::sched::pick_next(rq.entries.len(), rq.loaded, yield_current, |k| runnable(&rq.entries[k]));
            match choice {
                Some(k) => {
                    switch_to(&mut rq, k);
                    start_slice(&rq);
                    let e = &rq.entries[k];
                    cpu.current_vm.store(e.vm.id, Ordering::Relaxed);
                    Some(e.vcpu().regs_ptr())
                }
                None => {
                    this_cpu().slice_end.store(NO_DEADLINE, Ordering::Relaxed);
                    cpu::hyp_timer_at(None);
                    if let Some(l) = rq.loaded.take() {
                        rq.entries[l].vcpu().unload();
                    }
                    cpu.current_vm.store(NO_VM, Ordering::Relaxed);
                    None
                }
            }
        };
        // Outside the run-queue lock: retiring may start a rebooted VM, which queues vCPUs.
        for vm in retired {
            lifecycle::dequeued(vm);
        }
        if let Some(regs) = picked {
            return regs;
        }
        idle_wait();
    }
}

/// Makes entry `k` the loaded vCPU, starting it if it was just switched on.
fn switch_to(rq: &mut RunQueue, k: usize) {
    let incoming = rq.entries[k].vcpu();
    let switching = rq.loaded != Some(k);
    if switching {
        if let Some(l) = rq.loaded {
            rq.entries[l].vcpu().unload();
        }
    }
    let starting = matches!(*incoming.power.lock(), Power::OnPending { .. });
    if starting {
        incoming.start_if_pending();
    }
    if switching || starting {
        incoming.load();
    }
    rq.loaded = Some(k);
}

/// Waits, with nothing to run, until another CPU kicks this one or an interrupt comes. WFI
/// lets QEMU (or the hardware) put the CPU to sleep; WFE is only a hint under QEMU and
/// would spin. Idle time also keeps the crash records' console zone up to date.
fn idle_wait() {
    if !this_cpu().kickable.load(Ordering::Acquire) {
        cpu::wait_for_event();
        return;
    }
    crate::pstore::idle_sync();
    // Running VMs' ramoops regions go to the disk now and then; wake up for the next one.
    cpu::hyp_timer_at(Some(crate::vm::save_ramoops_if_due()));
    cpu::wait_for_interrupt();
    let arrived = crate::drivers::gicv3::handle_pending(None);
    if arrived.uart {
        crate::console::input();
        crate::vm::deliver_console_input();
    }
    if arrived.device != 0 {
        crate::vm::host_device_interrupt(arrived.device);
    }
    for intid in crate::drivers::gicv3::GUEST_PPIS.into_iter().filter(|i| arrived.guest_ppis & 1 << i != 0) {
        // No vCPU is loaded: nobody to give it to (unloading stops the timer and the PMU, so
        // this is a late edge). Deactivate it so the next vCPU's can fire.
        crate::arch::gic_cpuif::deactivate(intid);
    }
}
