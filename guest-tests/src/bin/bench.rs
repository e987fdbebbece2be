//! Benchmarks measured inside a guest. Under QEMU's `-icount shift=0` every instruction
//! takes 1 ns of virtual time, so the virtual counter measures instructions executed,
//! deterministically. Prints `BENCH <name> <value> <unit>` lines for scripts/bench.py.
//!
//! Bootargs: `pac=1` makes the guest a PAC user first (keys written, signing enabled, one
//! PACIA), so that its keys are live during the measurement; `residency=1` (with 2 vCPUs
//! on one physical CPU) measures a residency instead: both vCPUs give the CPU to each
//! other in a loop (HV_YIELD), a PAC user signing once in each residency.

#![no_std]
#![no_main]

use core::arch::asm;
use core::sync::atomic::{AtomicUsize, Ordering};
use guest_rt::{check, check_eq, hvc, println, psci, BootInfo};
use hv_core::hypercall::SMCCC_VERSION_1_1;

const CALLS: u64 = 20_000;
const YIELDS: u64 = 2_000;
static DONE: AtomicUsize = AtomicUsize::new(0);
static STOP: AtomicUsize = AtomicUsize::new(0);
static PAC: AtomicUsize = AtomicUsize::new(0);

/// Becomes a PAC user: keys, signing enabled (SCTLR_EL1.EnIA), one signed value.
fn use_pac() {
    // SAFETY: this guest has no signed return addresses; the keys and the enable affect
    // only PAC instructions of this vCPU.
    unsafe {
        asm!(".arch_extension pauth",
            "msr S3_0_C2_C1_0, {k}", "msr S3_0_C2_C1_1, {k}",
            "mrs {t}, sctlr_el1", "orr {t}, {t}, #(1 << 31)", "msr sctlr_el1, {t}", "isb",
            "pacia {k}, sp",
            k = inout(reg) 0x1234_5678_9abc_def0u64 => _, t = out(reg) _, options(nostack));
    }
}

/// Gives the CPU away, then (a PAC user) signs once: one residency of the other vCPU
/// and one of this one.
fn residency_step(pac: bool) {
    hvc::yield_cpu();
    if pac {
        // SAFETY: PACIA computes in a register.
        unsafe { asm!(".arch_extension pauth", "pacia {x}, sp", x = inout(reg) 0x4000u64 => _, options(nostack)) };
    }
}

/// vCPU 1: the partner, stepping until vCPU 0 has measured.
fn secondary(_index: usize, _n: u64) -> ! {
    let pac = PAC.load(Ordering::Acquire) != 0;
    if pac {
        use_pac();
    }
    while STOP.load(Ordering::Acquire) == 0 {
        residency_step(pac);
    }
    DONE.store(1, Ordering::Release);
    psci::cpu_off()
}

/// Virtual ns per residency with two vCPUs handing one CPU to each other.
fn residency(info: &BootInfo, pac: bool) {
    check!(info.vcpus == 2, "residency needs 2 vCPUs on one CPU (has {})", info.vcpus);
    PAC.store(pac as usize, Ordering::Release);
    if pac {
        use_pac();
    }
    check_eq!(guest_rt::start_vcpu(1, secondary, 2), 0, "CPU_ON(1)");
    // Warm up: both running, translations cached.
    for _ in 0..YIELDS {
        residency_step(pac);
    }
    let (t0, freq) = guest_rt::counter();
    for _ in 0..YIELDS {
        residency_step(pac);
    }
    let (t1, _) = guest_rt::counter();
    STOP.store(1, Ordering::Release);
    while DONE.load(Ordering::Acquire) == 0 {
        hvc::yield_cpu();
    }
    // vCPU 0's loop spans its own YIELDS residencies and as many of vCPU 1.
    let ns = (t1 - t0) * 1_000_000_000 / freq;
    println!("{} residencies in {} ns", 2 * YIELDS, ns);
    println!("BENCH residency {} instructions", (ns + YIELDS) / (2 * YIELDS));
}

/// Virtual nanoseconds (= instructions under -icount shift=0) for `CALLS` iterations of
/// `mov x0, #SMCCC_VERSION; [hvc #0]; subs; b.ne`.
fn timed_loop(with_hvc: bool) -> (u64, u64) {
    let (t0, freq) = guest_rt::counter();
    let mut x0: u64 = 0;
    // SAFETY: a counted loop of SMCCC_VERSION calls; SMCCC 1.1 lets the call change x0..x17
    // (declared clobbered) and keeps x20, the loop counter.
    unsafe {
        if with_hvc {
            asm!("1:", "mov x0, #0x80000000", "hvc #0", "subs x20, x20, #1", "b.ne 1b",
                inout("x20") CALLS => _, out("x0") x0, out("x1") _, out("x2") _, out("x3") _,
                out("x4") _, out("x5") _, out("x6") _, out("x7") _, out("x8") _, out("x9") _,
                out("x10") _, out("x11") _, out("x12") _, out("x13") _, out("x14") _, out("x15") _,
                out("x16") _, out("x17") _, options(nostack));
        } else {
            asm!("1:", "mov x0, #0x80000000", "subs x20, x20, #1", "b.ne 1b",
                inout("x20") CALLS => _, out("x0") _, options(nostack));
        }
    }
    let (t1, _) = guest_rt::counter();
    if with_hvc {
        check_eq!(x0, SMCCC_VERSION_1_1, "SMCCC_VERSION answer");
    }
    ((t1 - t0) * 1_000_000_000 / freq, freq)
}

fn main(info: &BootInfo) -> ! {
    let pac = info.arg("pac") == Some(1);
    if info.arg("residency") == Some(1) {
        residency(info, pac);
        guest_rt::pass()
    }
    if pac {
        use_pac();
    }
    // Warm QEMU's translation cache so the timed runs measure steady state.
    timed_loop(true);
    timed_loop(false);
    let (with, freq) = timed_loop(true);
    let (empty, _) = timed_loop(false);
    println!("counter frequency {} Hz; {} calls: {} ns with HVC, {} ns empty loop", freq, CALLS, with, empty);
    // Per call: the HVC and everything at EL2 until the guest runs again (the loop's own
    // instructions are subtracted).
    println!("BENCH null_hypercall_round_trip {} instructions", (with - empty + CALLS / 2) / CALLS);
    guest_rt::pass()
}

guest_rt::guest_main!(main);
