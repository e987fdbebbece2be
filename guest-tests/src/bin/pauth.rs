//! Pointer authentication per VM (`vmN.pauth=on|off` on the hypervisor's command line):
//! with it, the ID registers show it and PAC instructions and key registers work; without
//! it, the ID fields read as zero and both give UNDEF. Bootargs: expect=1 or expect=0.

#![no_std]
#![no_main]

use core::arch::asm;
use guest_rt::exceptions::expect_exception;
use guest_rt::{check, check_eq, println, BootInfo};

fn main(info: &BootInfo) -> ! {
    let expect = info.arg("expect").unwrap_or(1) == 1;
    let isar1: u64;
    // SAFETY: reading an ID register has no side effects.
    unsafe { asm!("mrs {}, id_aa64isar1_el1", out(reg) isar1, options(nostack)) };
    let fields = [(isar1 >> 4) & 0xf, (isar1 >> 8) & 0xf, (isar1 >> 24) & 0xf, (isar1 >> 28) & 0xf];
    // PACGA x0, x1, x2 (not in the hint space: UNDEFINED without the feature).
    // SAFETY: one instruction that may trap or fault; the armed handler skips it.
    let pacga = expect_exception(|| unsafe { asm!(".inst 0x9ac23020", out("x0") _, options(nostack)) });
    // APIAKeyLo_EL1.
    let key = expect_exception(|| unsafe { asm!("mrs {}, S3_0_C2_C1_0", out(reg) _, options(nostack)) });
    // PACIASP is a hint: a NOP whenever address signing is not enabled (SCTLR_EL1.EnIA).
    // SAFETY: one instruction that may trap or fault; the armed handler skips it.
    let hint = expect_exception(|| unsafe { asm!(".inst 0xd503233f", options(nostack)) });
    check!(hint.is_none(), "PACIASP faulted: {:?}", hint);
    if expect {
        check!(fields[0] != 0 || fields[1] != 0, "ID_AA64ISAR1_EL1 {:#x} shows address authentication", isar1);
        check!(pacga.is_none(), "PACGA faulted: {:?}", pacga);
        check!(key.is_none(), "APIAKeyLo_EL1 faulted: {:?}", key);
        println!("pointer authentication available (ISAR1 {:#x})", isar1);
    } else {
        check_eq!(fields, [0, 0, 0, 0], "ISAR1 APA/API/GPA/GPI");
        check!(pacga.is_some_and(|e| e.ec() == 0), "PACGA without PAuth: {:?}", pacga);
        check!(key.is_some_and(|e| e.ec() == 0), "APIAKeyLo_EL1 without PAuth: {:?}", key);
        println!("pointer authentication hidden: UNDEF for PACGA and the key registers");
    }
    guest_rt::pass()
}

guest_rt::guest_main!(main);
