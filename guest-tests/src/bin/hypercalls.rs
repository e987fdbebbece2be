//! The hypercall ABI: known calls answer as documented, unknown function IDs and bad
//! arguments get error codes, and SMC (trapped) behaves as HVC.

#![no_std]
#![no_main]

use guest_rt::hvc::{self, call, hvc, smc};
use guest_rt::{check, check_eq, println, BootInfo};
use hv_core::hypercall::{id, ret, Counter, CONSOLE_WRITE_MAX, HV_VERSION_VALUE, SMCCC_VERSION_1_1};

/// A few function IDs nobody implements, from every owning entity and both conventions.
const UNKNOWN: &[u32] = &[
    0x8600_ff01, // vendor hypervisor UID query (KVM's): must not look like KVM
    0x8400_0050, // TRNG_VERSION
    0x8000_8000, // SMCCC_ARCH_WORKAROUND_1
    0xc600_1234,
    0x8200_0001, // SiP
    0x8300_0001, // OEM
    0xbf00_0000, // trusted OS
    0x0000_0000, // yielding call, ID 0
    0x4400_0003, // yielding "CPU_ON"
    0xffff_ffff,
];

fn main(info: &BootInfo) -> ! {
    check_eq!(call(id::SMCCC_VERSION, 0, 0, 0), SMCCC_VERSION_1_1 as i64, "SMCCC_VERSION");
    check_eq!(call(id::SMCCC_ARCH_FEATURES, id::SMCCC_ARCH_FEATURES as u64, 0, 0), 0, "ARCH_FEATURES(ARCH_FEATURES)");
    check_eq!(call(id::SMCCC_ARCH_FEATURES, 0x8000_8000, 0, 0), ret::NOT_SUPPORTED, "ARCH_FEATURES(WORKAROUND_1)");
    check_eq!(call(id::SMCCC_ARCH_FEATURES, id::HV_VERSION as u64, 0, 0), ret::NOT_SUPPORTED, "ARCH_FEATURES is for arch calls only");
    check_eq!(hvc::hv_version(), HV_VERSION_VALUE, "HV_VERSION");

    for &f in UNKNOWN {
        check_eq!(call(f, 1, 2, 3), ret::NOT_SUPPORTED, "unknown function {:#x}", f);
    }
    // Only w0 names the function: garbage in the upper half of x0 is ignored.
    check_eq!(hvc(0xdead_beef_0000_0000 | id::SMCCC_VERSION as u64, 0, 0, 0)[0], SMCCC_VERSION_1_1, "upper half of x0");

    // Console writes: a valid buffer, then bad addresses and sizes.
    let msg = b"console hypercall works\n";
    check_eq!(hvc::console_write(msg), msg.len() as i64, "HV_CONSOLE_WRITE of a valid buffer");
    check_eq!(call(id::HV_CONSOLE_WRITE, 0x1000, 8, 0), ret::INVALID_ADDRESS, "buffer below RAM");
    let ram_end = info.ram_base + info.ram_size;
    check_eq!(call(id::HV_CONSOLE_WRITE, ram_end - 4, 8, 0), ret::INVALID_ADDRESS, "buffer across the end of RAM");
    check_eq!(call(id::HV_CONSOLE_WRITE, u64::MAX - 3, 8, 0), ret::INVALID_ADDRESS, "buffer wrapping the address space");
    check_eq!(call(id::HV_CONSOLE_WRITE, info.ram_base, CONSOLE_WRITE_MAX + 1, 0), ret::INVALID_PARAMETERS, "buffer too long");
    check_eq!(call(id::HV_CONSOLE_WRITE, info.ram_base, u64::MAX, 0), ret::INVALID_PARAMETERS, "huge length");
    check_eq!(call(id::HV_CONSOLE_WRITE, 0, 0, 0), 0, "an empty write is fine anywhere");

    // Counters: the hypercall counter moves by exactly the calls made in between.
    let before = hvc::counter(Counter::Hypercalls);
    for _ in 0..10 {
        call(id::SMCCC_VERSION, 0, 0, 0);
    }
    let after = hvc::counter(Counter::Hypercalls);
    check_eq!(after - before, 11, "hypercall counter (10 calls + the reading call)");
    check!(hvc::counter(Counter::Exits) >= after, "exits include hypercalls");
    check_eq!(call(id::HV_COUNTER, 99, 0, 0), ret::INVALID_PARAMETERS, "unknown counter");

    // HVC with a non-zero immediate is not an SMCCC call.
    let r: u64;
    // SAFETY: a hypercall; the hypervisor answers NOT_SUPPORTED in x0 and clobbers nothing else.
    unsafe { core::arch::asm!("hvc #1", inout("x0") id::SMCCC_VERSION as u64 => r, options(nostack)) };
    check_eq!(r as i64, ret::NOT_SUPPORTED, "HVC #1");

    // SMC is trapped and answered like HVC, returning after the SMC instruction.
    check_eq!(smc(id::SMCCC_VERSION as u64, 0, 0, 0)[0], SMCCC_VERSION_1_1, "SMCCC_VERSION over SMC");
    check_eq!(smc(0x8600_ff01, 0, 0, 0)[0] as i64, ret::NOT_SUPPORTED, "unknown call over SMC");

    // SMCCC 1.1: x18..x30 survive a call (checked for the ones Rust lets us name).
    let regs: [u64; 9];
    // SAFETY: an HVC with known values in callee-saved registers, declared in and out.
    unsafe {
        let (mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h, mut i) = (20u64, 21u64, 22u64, 23u64, 24u64, 25u64, 26u64, 27u64, 28u64);
        core::arch::asm!("mov x0, #0x80000000", "hvc #0",
            inout("x20") a, inout("x21") b, inout("x22") c, inout("x23") d, inout("x24") e,
            inout("x25") f, inout("x26") g, inout("x27") h, inout("x28") i,
            out("x0") _, out("x1") _, out("x2") _, out("x3") _, options(nostack));
        regs = [a, b, c, d, e, f, g, h, i];
    }
    check_eq!(regs, [20, 21, 22, 23, 24, 25, 26, 27, 28], "x20..x28 after a hypercall");

    // Many random calls: the hypervisor answers every one and keeps running.
    let mut r = hv_core::rng::Rng::new(0x2545_f491_4f6c_dd1d);
    let mut answered = 0;
    for _ in 0..2000 {
        let seed = r.next();
        let f = (seed as u32) & 0x8fff_ffff | 0x0600_0000 * ((seed >> 40) & 1) as u32;
        // Keep clear of calls that end the VM or print.
        if matches!(f, id::PSCI_SYSTEM_OFF | id::PSCI_SYSTEM_RESET | id::PSCI_CPU_OFF | id::HV_TEST_VERDICT | id::HV_CONSOLE_WRITE) {
            continue;
        }
        hvc(f as u64, seed, seed.rotate_left(17), seed.rotate_left(31));
        answered += 1;
    }
    println!("{} random hypercalls answered", answered);
    guest_rt::pass()
}

guest_rt::guest_main!(main);
