//! Exceptions taken by the guest at EL1. An exception is expected only inside a probe
//! (`probe_read`, `probe_write`, `expect_exception`): it is recorded and the faulting
//! instruction skipped. Any other exception fails the test with a report.

use core::arch::asm;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

#[repr(C)]
pub struct Frame {
    pub x: [u64; 31],
    pub elr: u64,
    pub spsr: u64,
    pub esr: u64,
    pub far: u64,
    _pad: u64,
}

/// A recorded exception.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exception {
    pub esr: u64,
    pub far: u64,
    pub elr: u64,
}

impl Exception {
    pub fn ec(&self) -> u64 {
        self.esr >> 26
    }
}

const N: usize = crate::MAX_VCPUS;
static ARMED: [AtomicBool; N] = [const { AtomicBool::new(false) }; N];
static TAKEN: [AtomicBool; N] = [const { AtomicBool::new(false) }; N];
static ESR: [AtomicU64; N] = [const { AtomicU64::new(0) }; N];
static FAR: [AtomicU64; N] = [const { AtomicU64::new(0) }; N];
static ELR: [AtomicU64; N] = [const { AtomicU64::new(0) }; N];

/// The IRQ handler (a `fn()` as usize; 0: IRQs are unexpected).
static IRQ_HANDLER: AtomicU64 = AtomicU64::new(0);

/// IRQs from EL1 (vector 5) call `handler`, which acknowledges and completes them.
pub fn on_irq(handler: fn()) {
    IRQ_HANDLER.store(handler as usize as u64, Ordering::Release);
}

/// The synchronous-exception hook (a `fn(&mut Frame, u64) -> bool` as usize; 0: none).
static SYNC_HOOK: AtomicU64 = AtomicU64::new(0);

/// Synchronous exceptions from EL1 (vector 4) and from EL0 (vector 8) go to `hook` first,
/// with the vector; it returns true if it handled one (the frame, ELR and SPSR included, is
/// then restored and the exception returns).
pub fn on_sync(hook: fn(&mut Frame, u64) -> bool) {
    SYNC_HOOK.store(hook as usize as u64, Ordering::Release);
}

#[no_mangle]
extern "C" fn rt_exception(frame: &mut Frame, kind: u64) {
    let cpu = crate::vcpu_index() % N;
    let hook = SYNC_HOOK.load(Ordering::Acquire);
    if (kind == 4 || kind == 8) && hook != 0 {
        // SAFETY: only `on_sync` stores here, and it stores a `fn(&mut Frame, u64) -> bool`.
        let hook: fn(&mut Frame, u64) -> bool = unsafe { core::mem::transmute(hook as usize) };
        if hook(frame, kind) {
            return;
        }
    }
    let irq = IRQ_HANDLER.load(Ordering::Acquire);
    if kind == 5 && irq != 0 {
        // SAFETY: only `on_irq` stores here, and it stores a `fn()`.
        let handler: fn() = unsafe { core::mem::transmute(irq as usize) };
        handler();
        return;
    }
    // Synchronous exceptions from EL1 with SP_ELx (vector 4) are the ones probes cause.
    if kind == 4 && ARMED[cpu].swap(false, Ordering::AcqRel) {
        ESR[cpu].store(frame.esr, Ordering::Relaxed);
        FAR[cpu].store(frame.far, Ordering::Relaxed);
        ELR[cpu].store(frame.elr, Ordering::Relaxed);
        TAKEN[cpu].store(true, Ordering::Release);
        // A faulting fetch (probe_exec) returns to its caller; anything else skips the
        // faulting instruction.
        let iabt = frame.esr >> 26 == hv_core::esr::ec::IABT_CURRENT as u64;
        frame.elr = if iabt { frame.x[30] } else { frame.elr + 4 };
        return;
    }
    crate::println!(
        "unexpected exception (vector {}) on vCPU {}: ESR {:#x} (EC {:#x}) ELR {:#x} FAR {:#x}",
        kind,
        cpu,
        frame.esr,
        frame.esr >> 26,
        frame.elr,
        frame.far
    );
    crate::fail(0xe0 + kind);
}

/// Runs `f` expecting at most one synchronous exception, which is skipped over.
pub fn expect_exception(f: impl FnOnce()) -> Option<Exception> {
    let cpu = crate::vcpu_index() % N;
    TAKEN[cpu].store(false, Ordering::Relaxed);
    ARMED[cpu].store(true, Ordering::Release);
    f();
    ARMED[cpu].store(false, Ordering::Release);
    TAKEN[cpu].load(Ordering::Acquire).then(|| Exception {
        esr: ESR[cpu].load(Ordering::Relaxed),
        far: FAR[cpu].load(Ordering::Relaxed),
        elr: ELR[cpu].load(Ordering::Relaxed),
    })
}

/// Reads 8 bytes at `addr`; the exception if the read faulted.
pub fn probe_read(addr: u64) -> Result<u64, Exception> {
    let mut v = 0;
    // SAFETY: a single load from an arbitrary address: a fault is caught by the armed
    // handler, which skips the instruction; no Rust memory is involved.
    let e = expect_exception(|| unsafe { asm!("ldr {v}, [{a}]", a = in(reg) addr, v = inout(reg) v, options(nostack)) });
    match e {
        Some(e) => Err(e),
        None => Ok(v),
    }
}

/// Writes 8 bytes at `addr`; the exception if the write faulted.
pub fn probe_write(addr: u64, value: u64) -> Result<(), Exception> {
    // SAFETY: a single store to an address outside the guest's own memory; a fault is
    // caught and skipped, and a store that lands changes no Rust-visible memory.
    let e = expect_exception(|| unsafe { asm!("str {v}, [{a}]", a = in(reg) addr, v = in(reg) value, options(nostack)) });
    match e {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Branches to `addr` with a link (as a call would); the exception if the fetch faulted.
pub fn probe_exec(addr: u64) -> Option<Exception> {
    // SAFETY: `blr` to an address expected to fault on fetch; the handler returns to the
    // link register, so execution continues after the branch. x30 and the caller-saved
    // registers are declared clobbered in case the target did execute and returned.
    expect_exception(|| unsafe {
        asm!("blr {t}", t = in(reg) addr, out("x30") _, clobber_abi("C"), options(nostack))
    })
}
