//! A VM's life on the machine's CPUs: started (its vCPUs join their CPUs' run queues), or
//! waiting for memory (`start=wait`) until other VMs give some back or stop, retired by the
//! CPU that drops its last run-queue entry (rebuilt there after a SYSTEM_RESET), and the
//! machine's power-off once no VM is left.

use super::assign;
use crate::boot::loader::LoadError;
use crate::vm::{self, StopReason, Vm, VmSpec};
use alloc::sync::Arc;
use alloc::vec::Vec;
use spin::Mutex;
use core::sync::atomic::Ordering;
use hv_core::outcome::{self, status};

/// `outcome::REBOOT_LOOP` reboots within this many seconds stop a VM.
const REBOOT_LOOP_SECONDS: u64 = 10;
/// Boots that end in a kernel panic within this long of the previous reboot count towards
/// a panic loop.
const PANIC_LOOP_SECONDS: u64 = 60;

/// Makes a VM runnable: its vCPUs join their physical CPUs' run queues.
pub fn start(vm: Arc<Vm>) {
    vm::register(vm.clone());
    vm.queued.store(vm.vcpus.len(), Ordering::Release);
    for v in &vm.vcpus {
        assign(v.pcpu, vm.clone(), v.index);
    }
    for v in &vm.vcpus {
        crate::drivers::gicv3::kick_cpu_to_reschedule(v.pcpu);
    }
}

/// A VM that did not fit yet: built when memory is given back or another VM stops.
struct Waiting {
    id: usize,
    spec: VmSpec,
    pcpus: Vec<usize>,
}

static WAITING: Mutex<Vec<Waiting>> = Mutex::new(Vec::new());

/// Builds and starts a VM on `pcpus`; one that does not fit in the host's memory waits
/// if its spec says so (`start=wait`). Whether it started.
pub fn create_and_start(id: usize, spec: VmSpec, pcpus: &[usize]) -> Result<bool, LoadError> {
    let wait = spec.params.wait_for_memory;
    let mem = spec.params.mem;
    match Vm::create(id, spec.clone(), pcpus, None) {
        Ok(vm) => {
            start(vm);
            Ok(true)
        }
        Err(LoadError::OutOfMemory) if wait => {
            log::info!(
                "VM {id}: waiting for memory (start=wait): it needs {} MiB, the host has {} MiB free for new VMs",
                mem >> 20,
                crate::mm::frames::uncommitted_bytes() >> 20
            );
            WAITING.lock().push(Waiting { id, spec, pcpus: pcpus.to_vec() });
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// Builds the VMs waiting for memory that fit now, in order; with `last_chance` (no VM
/// runs that could give memory back) the ones that still do not fit are refused. Returns
/// how many started.
pub fn start_waiting(last_chance: bool) -> usize {
    let waiting = core::mem::take(&mut *WAITING.lock());
    let mut started = 0;
    let mut still = Vec::new();
    for w in waiting {
        match Vm::create(w.id, w.spec.clone(), &w.pcpus, None) {
            Ok(vm) => {
                log::info!("VM {}: there is memory for it now: starting", w.id);
                start(vm);
                started += 1;
            }
            Err(LoadError::OutOfMemory) if !last_chance => still.push(w),
            Err(e) => {
                log::error!("VM {}: cannot start: {e}", w.id);
                vm::raise_exit_status(status::VM_CRASHED);
            }
        }
    }
    WAITING.lock().extend(still);
    started
}

/// Called by the CPU that removed one of the VM's run-queue entries.
pub fn dequeued(vm: Arc<Vm>) {
    if vm.queued.fetch_sub(1, Ordering::AcqRel) == 1 {
        retire(vm);
    }
}

fn retire(vm: Arc<Vm>) {
    vm.uart.flush();
    vm.save_ramoops();
    crate::pstore::sync();
    let reason = vm.stop_reason().unwrap_or(StopReason::AllVcpusOff);
    let verdict = vm.verdict();
    vm::raise_exit_status(outcome::vm_status(matches!(reason, StopReason::Crashed(_)), verdict));
    let verdict_text = match verdict.code() {
        None => alloc::string::String::from("no test verdict"),
        Some(0) => alloc::string::String::from("test verdict PASS"),
        Some(code) => alloc::format!("test verdict FAIL (code {code})"),
    };
    log::info!("VM {}: stopped ({:?}), {verdict_text}", vm.id, reason);
    vm.log_counters();
    let (freq, now) = crate::arch::cpu::counter();
    let (id, mut spec) = (vm.id, vm.spec.clone());
    let reboot_loop = if reason == StopReason::Reset {
        spec.reboots.reboot(now, REBOOT_LOOP_SECONDS * freq, vm.panicked(), PANIC_LOOP_SECONDS * freq)
    } else {
        None
    };
    let rebooting = reason == StopReason::Reset && reboot_loop.is_none();
    let mut remaining = vm::unregister(&vm, rebooting);
    if !rebooting && crate::console::focus() == id {
        if let Some(next) = vm::first_running() {
            vm::focus_console(next, &alloc::format!(" (VM {id} stopped)"));
        }
    }
    let pcpus: Vec<usize> = vm.vcpus.iter().map(|v| v.pcpu).collect();
    // A reboot keeps the VM's RAM (a warm reset, as on QEMU and KVM: what the guest left in
    // memory is there on its next boot, and nothing is zeroed or mapped again).
    let ram = rebooting.then(|| vm.mem.clone());
    vm.detach_devices();
    drop(vm); // last reference: RAM and tables are freed here, unless kept
    if let Some(kind) = reboot_loop {
        match kind {
            outcome::RebootLoop::Quick => log::error!(
                "VM {id}: rebooted {} times within {REBOOT_LOOP_SECONDS} s, a crash-reboot loop (its console above says why): stopped",
                outcome::REBOOT_LOOP
            ),
            outcome::RebootLoop::Panics => log::error!(
                "VM {id}: its kernel panicked in {} boots in a row, a crash-reboot loop (the panic is above; too little memory?): stopped",
                outcome::PANIC_LOOP
            ),
        }
        vm::raise_exit_status(status::VM_CRASHED);
    } else if rebooting {
        spec.boot_count += 1;
        log::info!("VM {id}: rebooting (boot {})", spec.boot_count);
        match Vm::create(id, spec, &pcpus, ram) {
            Ok(vm) => {
                start(vm);
                // The rebuilt VM may have stopped already (and not shut the machine down,
                // as this one still counted as rebooting).
                remaining = vm::rebooted();
            }
            Err(e) => {
                log::error!("VM {id}: reboot failed: {e}");
                vm::raise_exit_status(status::VM_CRASHED);
                remaining = vm::rebooted();
            }
        }
    }
    // Its memory is free now.
    remaining += start_waiting(remaining == 0);
    if remaining == 0 {
        shutdown();
    }
}

/// All VMs are gone: power the machine off with the worst outcome as exit status.
pub fn shutdown() -> ! {
    let code = vm::exit_status();
    if let Some(nic) = crate::drivers::virtio_net::uplink().and_then(|u| u.nic.try_lock()) {
        log::info!("uplink card: {}", nic.describe());
    }
    log::info!("all VMs stopped; machine exit status {code}");
    crate::pstore::sync();
    crate::arch::firmware::exit(code)
}
