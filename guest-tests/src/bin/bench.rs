//! Benchmarks measured inside a guest. Under QEMU's `-icount shift=0` every instruction
//! takes 1 ns of virtual time, so the virtual counter measures instructions executed,
//! deterministically. Prints `BENCH <name> <value> <unit>` lines for scripts/bench.py.

#![no_std]
#![no_main]

use core::arch::asm;
use guest_rt::{check_eq, println, BootInfo};
use hv_core::hypercall::SMCCC_VERSION_1_1;

const CALLS: u64 = 20_000;

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

fn main(_info: &BootInfo) -> ! {
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
