//! Per-CPU data and stacks. TPIDR_EL2 holds the address of this CPU's `PerCpu`.

use crate::vm::sched::RunQueue;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

/// Physical CPUs the hypervisor uses (more in the device tree are left off).
pub const MAX_CPUS: usize = 8;
pub const STACK_SIZE: usize = 64 * 1024;
/// Each CPU's stack sits above one guard page that the final EL2 tables leave unmapped.
pub const STACK_STRIDE: usize = STACK_SIZE + GUARD_SIZE;
pub const GUARD_SIZE: usize = 4096;

#[repr(C)]
pub struct PerCpu {
    /// Top of this CPU's hypervisor stack: written by boot.S, read by exception.S.
    pub stack_top: AtomicU64,
    /// Top of the stack EL2 exceptions are reported on: written by boot.S.
    pub fault_stack_top: AtomicU64,
    pub online: AtomicBool,
    /// MPIDR affinity of this CPU (for kicks).
    pub mpidr: AtomicU64,
    /// The GIC can interrupt this CPU (its redistributor is set up).
    pub kickable: AtomicBool,
    /// Id of the VM whose vCPU is loaded here (NO_VM when idle), for log prefixes.
    pub current_vm: AtomicUsize,
    /// vCPUs assigned to this CPU.
    pub runqueue: spin::Mutex<RunQueue>,
}

pub const NO_VM: usize = usize::MAX;

impl PerCpu {
    const fn new() -> PerCpu {
        PerCpu {
            stack_top: AtomicU64::new(0),
            fault_stack_top: AtomicU64::new(0),
            online: AtomicBool::new(false),
            mpidr: AtomicU64::new(0),
            kickable: AtomicBool::new(false),
            current_vm: AtomicUsize::new(NO_VM),
            runqueue: spin::Mutex::new(RunQueue::new()),
        }
    }
}

#[repr(C, align(4096))]
pub struct Stacks(UnsafeCell<[[u8; STACK_STRIDE]; MAX_CPUS]>);

// SAFETY: each CPU uses only its own slice, and only through its stack pointer.
unsafe impl Sync for Stacks {}

pub const FAULT_STACK_SIZE: usize = 16 * 1024;

#[repr(C, align(16))]
pub struct FaultStacks(UnsafeCell<[[u8; FAULT_STACK_SIZE]; MAX_CPUS]>);
// SAFETY: each CPU uses only its own, through SP, while reporting a fatal exception.
unsafe impl Sync for FaultStacks {}

/// Stacks for reporting EL2 exceptions (boot.S records each CPU's top).
#[no_mangle]
static FAULT_STACKS: FaultStacks = FaultStacks(UnsafeCell::new([[0; FAULT_STACK_SIZE]; MAX_CPUS]));

/// The stacks; boot.S finds them through __stacks_start.
#[used]
#[link_section = ".stacks"]
static STACKS: Stacks = Stacks(UnsafeCell::new([[0; STACK_STRIDE]; MAX_CPUS]));

/// boot.S sets TPIDR_EL2 to &PERCPU[index].
#[no_mangle]
static PERCPU: [PerCpu; MAX_CPUS] = [const { PerCpu::new() }; MAX_CPUS];

impl PerCpu {
    /// This CPU's index (0 = the boot CPU): its position in PERCPU.
    pub fn index(&self) -> usize {
        (self as *const PerCpu as usize - PERCPU.as_ptr() as usize) / core::mem::size_of::<PerCpu>()
    }
}

/// This CPU's data.
pub fn this_cpu() -> &'static PerCpu {
    use aarch64_cpu::registers::Readable;
    let p = aarch64_cpu::registers::TPIDR_EL2.get() as *const PerCpu;
    // SAFETY: boot.S points TPIDR_EL2 at an element of PERCPU before any Rust code runs,
    // and PERCPU is a static.
    unsafe { &*p }
}

pub fn cpu(index: usize) -> Option<&'static PerCpu> {
    PERCPU.get(index)
}

/// Physical address range of CPU `index`'s guard page.
pub fn stack_guard(index: usize) -> (u64, u64) {
    let base = STACKS.0.get() as u64 + (index * STACK_STRIDE) as u64;
    (base, GUARD_SIZE as u64)
}

/// The CPU whose stack guard page holds `addr`, if any.
pub fn guard_page_owner(addr: u64) -> Option<usize> {
    (0..MAX_CPUS).find(|&c| {
        let (base, size) = stack_guard(c);
        (base..base + size).contains(&addr)
    })
}

/// Marks this CPU online, with its MPIDR, after setting up its GIC redistributor.
pub fn bring_online() {
    let c = this_cpu();
    let mpidr = crate::arch::cpu::mpidr();
    c.mpidr.store(mpidr, Ordering::Relaxed);
    c.kickable.store(crate::dev::gicv3::init_cpu(mpidr), Ordering::Relaxed);
    c.online.store(true, Ordering::Release);
}

/// Makes physical CPU `index` leave its guest (if it runs one) or its idle wait, and look at
/// its run queue. Without a GIC, idle CPUs wait for events instead, and a guest is left
/// only at its next exit.
pub fn kick(index: usize) {
    match cpu(index) {
        Some(c) if c.kickable.load(Ordering::Acquire) => crate::dev::gicv3::kick(c.mpidr.load(Ordering::Relaxed)),
        _ => crate::arch::cpu::send_event(),
    }
}

/// Waits, with nothing to run, until another CPU kicks this one. WFI lets QEMU (or the
/// hardware) put the CPU to sleep; WFE is only a hint under QEMU and would spin.
pub fn idle_wait() {
    if !this_cpu().kickable.load(Ordering::Acquire) {
        crate::arch::cpu::wait_for_event();
        return;
    }
    crate::pstore::idle_sync();
    crate::arch::cpu::wait_for_interrupt();
    let arrived = crate::dev::gicv3::handle_pending();
    if arrived.uart {
        crate::console::input();
    }
    if arrived.vtimer {
        // No vCPU is loaded: nobody to give it to (unloading disables the timer, so this is
        // a late edge). Deactivate it so the next vCPU's timer can fire.
        crate::arch::gic_cpuif::deactivate(crate::dev::gicv3::VTIMER_PPI);
    }
}

/// Set by the panic path: every other CPU parks at its next interrupt.
static STOPPING: AtomicBool = AtomicBool::new(false);
static PARKED: AtomicUsize = AtomicUsize::new(0);
/// The CPU that stops the others (it must not park itself).
static STOPPER: AtomicUsize = AtomicUsize::new(usize::MAX);

/// Stops every other online CPU (they park at the kick, wherever they were, guest or
/// hypervisor), waiting at most `timeout_ms` for them. Returns how many parked.
pub fn stop_others(timeout_ms: u64) -> usize {
    STOPPER.store(this_cpu().index(), Ordering::SeqCst);
    STOPPING.store(true, Ordering::SeqCst);
    let me = this_cpu() as *const PerCpu;
    let mut others = 0;
    for c in PERCPU.iter().filter(|c| c.online.load(Ordering::Acquire) && !core::ptr::eq(*c, me)) {
        others += 1;
        if c.kickable.load(Ordering::Acquire) {
            crate::dev::gicv3::kick(c.mpidr.load(Ordering::Relaxed));
        }
    }
    let (freq, start) = crate::arch::cpu::counter();
    while PARKED.load(Ordering::Acquire) < others && crate::arch::cpu::counter().1 - start < freq / 1000 * timeout_ms {
        core::hint::spin_loop();
    }
    PARKED.load(Ordering::Acquire)
}

/// A CPU taking an interrupt (or polling a device) while another panics stops here for
/// good.
pub fn park_if_stopping() {
    if STOPPING.load(Ordering::Acquire) && STOPPER.load(Ordering::Acquire) != this_cpu().index() {
        PARKED.fetch_add(1, Ordering::AcqRel);
        loop {
            crate::arch::cpu::wait_for_event();
        }
    }
}

/// Whether `[addr, addr + len)` lies inside one of the hypervisor's stacks (for walking
/// frame records without faulting).
pub fn on_a_stack(addr: u64, len: u64) -> bool {
    let inside = |base: u64, size: u64| addr >= base && addr.checked_add(len).is_some_and(|e| e <= base + size);
    let stacks = STACKS.0.get() as u64;
    let faults = FAULT_STACKS.0.get() as u64;
    (0..MAX_CPUS).any(|c| inside(stacks + (c * STACK_STRIDE + GUARD_SIZE) as u64, STACK_SIZE as u64))
        || inside(faults, (FAULT_STACK_SIZE * MAX_CPUS) as u64)
}

pub fn online_cpus() -> usize {
    PERCPU.iter().filter(|c| c.online.load(Ordering::Acquire)).count()
}
