//! Each CPU's hypervisor stacks and the small header the assembly finds through TPIDR_EL2
//! (boot.S fills it, exception.S switches to the stack it names). Everything else a CPU
//! keeps lives in the per-CPU layer above, indexed by `cpu_index`.

use aarch64_cpu::registers::{Readable, TPIDR_EL2};
use core::cell::UnsafeCell;
use core::sync::atomic::AtomicU64;

/// Physical CPUs the hypervisor uses (more in the device tree are left off).
pub const MAX_CPUS: usize = 8;
pub const STACK_SIZE: usize = 64 * 1024;
pub const GUARD_SIZE: usize = 4096;
/// Each CPU's stack sits above one guard page that the final EL2 tables leave unmapped.
pub const STACK_STRIDE: usize = STACK_SIZE + GUARD_SIZE;
pub const FAULT_STACK_SIZE: usize = 16 * 1024;

/// What the assembly reads through TPIDR_EL2.
#[repr(C)]
pub struct CpuHeader {
    /// Top of this CPU's hypervisor stack: written by boot.S, read by exception.S.
    pub stack_top: AtomicU64,
    /// Top of the stack EL2 exceptions are reported on: written by boot.S.
    pub fault_stack_top: AtomicU64,
}

/// boot.S sets TPIDR_EL2 to &CPU_HEADERS[index].
#[no_mangle]
static CPU_HEADERS: [CpuHeader; MAX_CPUS] = [const { CpuHeader { stack_top: AtomicU64::new(0), fault_stack_top: AtomicU64::new(0) } }; MAX_CPUS];

#[repr(C, align(4096))]
struct Stacks(UnsafeCell<[[u8; STACK_STRIDE]; MAX_CPUS]>);
// SAFETY: each CPU uses only its own slice, and only through its stack pointer.
unsafe impl Sync for Stacks {}

#[repr(C, align(16))]
struct FaultStacks(UnsafeCell<[[u8; FAULT_STACK_SIZE]; MAX_CPUS]>);
// SAFETY: each CPU uses only its own, through SP, while reporting a fatal exception.
unsafe impl Sync for FaultStacks {}

/// Stacks for reporting EL2 exceptions (boot.S records each CPU's top).
#[no_mangle]
static FAULT_STACKS: FaultStacks = FaultStacks(UnsafeCell::new([[0; FAULT_STACK_SIZE]; MAX_CPUS]));

/// The stacks; boot.S finds them through __stacks_start.
#[used]
#[link_section = ".stacks"]
static STACKS: Stacks = Stacks(UnsafeCell::new([[0; STACK_STRIDE]; MAX_CPUS]));

/// This CPU's index (0 = the boot CPU): the position of its header, which boot.S put in
/// TPIDR_EL2 before any Rust code ran.
pub fn cpu_index() -> usize {
    let header = TPIDR_EL2.get() as usize;
    (header - CPU_HEADERS.as_ptr() as usize) / core::mem::size_of::<CpuHeader>()
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

/// Whether `[addr, addr + len)` lies inside one of the hypervisor's stacks (for walking
/// frame records without faulting).
pub fn on_a_stack(addr: u64, len: u64) -> bool {
    let inside = |base: u64, size: u64| addr >= base && addr.checked_add(len).is_some_and(|e| e <= base + size);
    let stacks = STACKS.0.get() as u64;
    let faults = FAULT_STACKS.0.get() as u64;
    (0..MAX_CPUS).any(|c| inside(stacks + (c * STACK_STRIDE + GUARD_SIZE) as u64, STACK_SIZE as u64))
        || inside(faults, (FAULT_STACK_SIZE * MAX_CPUS) as u64)
}
