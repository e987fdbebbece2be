//! AArch64 at EL2: boot, exception vectors, guest entry/exit, EL1 context switching,
//! system-register set-up, TLB maintenance and calls to firmware.

pub mod context;
pub mod cpu;
pub mod debug;
pub mod exception;
pub mod firmware;
pub mod fp;
pub mod gic_cpuif;
pub mod idregs;
pub mod mem;
pub mod mmu;
pub mod pauth;
pub mod pmu;
pub mod stacks;

use core::arch::global_asm;
use stacks::{CpuHeader, MAX_CPUS, STACK_STRIDE};
use core::mem::{offset_of, size_of};

global_asm!(
    include_str!("boot.S"),
    MAX_CPUS = const MAX_CPUS,
    STACK_STRIDE = const STACK_STRIDE,
    CPU_HEADER_SIZE = const size_of::<CpuHeader>(),
    STACK_TOP = const offset_of!(CpuHeader, stack_top),
    FAULT_STACK_TOP = const offset_of!(CpuHeader, fault_stack_top),
    FAULT_STACK_SIZE = const stacks::FAULT_STACK_SIZE,
    MAIR = const mmu::MAIR_EL2,
    TCR = const mmu::TCR_EL2,
    SCTLR = const mmu::SCTLR_EL2,
);

global_asm!(
    include_str!("exception.S"),
    REGS_KEYS = const offset_of!(context::VcpuRegs, keys),
    REGS_KEYS_LIVE = const offset_of!(context::VcpuRegs, keys_live),
    REGS_KEY_SWITCHES = const offset_of!(context::VcpuRegs, key_switch_exits),
    FAULT_STACK_TOP = const offset_of!(CpuHeader, fault_stack_top),
    REGS_X18 = const offset_of!(context::VcpuRegs, x) + 18 * 8,
    REGS_X30 = const offset_of!(context::VcpuRegs, x) + 30 * 8,
    STACK_TOP = const offset_of!(CpuHeader, stack_top),
    KIND_SYNC = const exception::ExitKind::Sync as u64,
    KIND_IRQ = const exception::ExitKind::Irq as u64,
    KIND_FIQ = const exception::ExitKind::Fiq as u64,
    KIND_SERROR = const exception::ExitKind::SError as u64,
    FRAME_SIZE = const size_of::<exception::TrapFrame>(),
    EL2_SYNC = const exception::El2Kind::Sync as u64,
    EL2_IRQ = const exception::El2Kind::Irq as u64,
    EL2_FIQ = const exception::El2Kind::Fiq as u64,
    EL2_SERROR = const exception::El2Kind::SError as u64,
    EL2_SP0 = const exception::El2Kind::Sp0 as u64,
);

global_asm!(include_str!("pauth.S"));
global_asm!(include_str!("context.S"));
global_asm!(include_str!("gic_cpuif.S"));
global_asm!(include_str!("idregs.S"));
global_asm!(include_str!("zero.S"));
global_asm!(include_str!("hyp_timer.S"));
global_asm!(include_str!("debug.S"));
global_asm!(include_str!("pmu.S"));
global_asm!(include_str!("fp.S"));

extern "C" {
    fn zero_pages(addr: u64, len: u64);
    /// PSCI CPU_ON entry point of secondary CPUs (boot.S).
    pub fn secondary_entry();
    /// Loads a vCPU's registers from `regs` and returns to the guest (exception.S).
    fn guest_resume(regs: *mut context::VcpuRegs) -> !;
}

/// Zeroes `[addr, addr + len)`: page-aligned memory that is identity-mapped as normal
/// memory and that the caller owns (DC ZVA zeroes a cache line per instruction).
///
/// # Safety
/// Nothing may rely on what the range held, and no Rust reference may point into it.
pub unsafe fn zero(addr: u64, len: u64) {
    debug_assert!(addr % 4096 == 0 && len % 4096 == 0);
    // SAFETY: the caller owns the range; zero.S only stores zeros inside it.
    unsafe { zero_pages(addr, len) }
}

/// Stores `value` at `addr` (4-byte aligned, identity-mapped, owned by the caller) and
/// cleans its cache line to the point of coherency: for memory that a guest reads with its
/// own, possibly non-cacheable, attributes (a device register image).
///
/// # Safety
/// `addr` is valid for a 4-byte store and no Rust reference points at it.
pub unsafe fn store_for_guest(addr: u64, value: u32) {
    // SAFETY: the caller's promise; DC CVAC only cleans the line (no data changes).
    unsafe {
        core::ptr::write_volatile(addr as *mut u32, value);
        core::arch::asm!("dc cvac, {}", in(reg) addr, options(nostack, preserves_flags));
    }
}

/// The current frame pointer (x29): the head of the frame-record chain.
#[inline(always)]
pub fn frame_pointer() -> u64 {
    let fp: u64;
    // SAFETY: reads a register; no memory or flags are touched.
    unsafe { core::arch::asm!("mov {}, x29", out(reg) fp, options(nomem, nostack, preserves_flags)) };
    fp
}

/// A code address without its pointer-authentication signature.
pub fn strip_pac(addr: u64) -> u64 {
    let mut a = addr;
    // SAFETY: XPACLRI (a hint: a NOP without FEAT_PAuth) strips the signature from x30
    // only, which is declared clobbered; no memory is touched.
    unsafe { core::arch::asm!("mov x30, {a}", "xpaclri", "mov {a}, x30", a = inout(reg) a, out("x30") _, options(nomem, nostack, preserves_flags)) };
    a
}

/// Enters the guest whose register frame is `regs`. Its EL1 state, ELR_EL2 and SPSR_EL2
/// must already be loaded on this CPU.
pub fn enter_guest(regs: *mut context::VcpuRegs) -> ! {
    // SAFETY: `regs` points at a loaded vCPU's frame (the scheduler's invariant); the
    // hypervisor's stack is abandoned, as every exit starts from the stack top again.
    unsafe { guest_resume(regs) }
}
