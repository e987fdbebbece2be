//! SVE as a guest uses it: the vector length (its maximum, and what ZCR_EL1 asks for),
//! whole-vector arithmetic, predicates and the first-fault register. Each observation is
//! printed as `observe ...`; the same image runs on bare QEMU and the two runs must agree.
//!
//! `share=1 rounds=N tag=T` (two VMs on one CPU): every Z register, full width, and a
//! predicate keep this VM's values across waits in which the other VM fills them with its
//! own. `expect=off`: the VM has no SVE: hidden in the ID registers, its instructions UNDEF.

#![no_std]
#![no_main]

use core::arch::asm;
use guest_rt::exceptions::expect_exception;
use guest_rt::{check, check_eq, counter, gic, println, BootInfo};

/// Vector length in bytes (RDVL).
fn vl() -> u64 {
    let v: u64;
    // SAFETY: RDVL has no side effects.
    unsafe { asm!(".arch_extension sve", "rdvl {}, #1", out(reg) v, options(nomem, nostack)) };
    v
}

fn set_zcr(len: u64) {
    // SAFETY: ZCR_EL1: this guest's own vector-length choice.
    unsafe { asm!("msr S3_0_C1_C2_0, {}", "isb", in(reg) len, options(nostack)) };
}

/// Sum of the 64-bit lanes 1, 2, ... of a vector of `vl` bytes, computed with SVE
/// (INDEX, UADDV over an all-true predicate).
fn lane_sum() -> u64 {
    let v: u64;
    // SAFETY: SVE arithmetic on caller-saved vector registers (declared clobbered).
    unsafe {
        asm!(".arch_extension sve", "ptrue p0.d", "index z0.d, #1, #1", "uaddv d1, p0, z0.d", "fmov {}, d1",
             out(reg) v, out("v0") _, out("v1") _, out("p0") _, options(nomem, nostack));
    }
    v
}

/// Active lanes of WHILELO for `n` 32-bit lanes, counted with CNTP.
fn whilelo_count(n: u64) -> u64 {
    let v: u64;
    // SAFETY: predicate arithmetic only.
    unsafe {
        asm!(".arch_extension sve", "whilelo p1.s, xzr, {n}", "ptrue p2.s", "cntp {v}, p2, p1.s",
             n = in(reg) n, v = out(reg) v, out("p1") _, out("p2") _, options(nomem, nostack));
    }
    v
}

/// FFR after SETFFR, as CNTP over an all-true predicate of bytes.
fn ffr_count() -> u64 {
    let v: u64;
    // SAFETY: FFR and predicate operations only.
    unsafe {
        asm!(".arch_extension sve", "setffr", "rdffr p3.b", "ptrue p4.b", "cntp {}, p4, p3.b",
             out(reg) v, out("p3") _, out("p4") _, options(nomem, nostack));
    }
    v
}

fn single() -> ! {
    let pfr0: u64;
    // SAFETY: reading an ID register.
    unsafe { asm!("mrs {}, id_aa64pfr0_el1", out(reg) pfr0, options(nomem, nostack)) };
    println!("observe PFR0.SVE {}", (pfr0 >> 32) & 0xf);
    set_zcr(0x1ff);
    let max = vl();
    println!("observe longest vector {} bytes", max);
    for len in [0u64, 1, 3, 15] {
        set_zcr(len);
        println!("observe ZCR_EL1.LEN {} gives {} bytes, lane sum {}, WHILELO(5) lanes {}, FFR bytes {}",
                 len, vl(), lane_sum(), whilelo_count(5), ffr_count());
    }
    set_zcr(0x1ff);
    println!("SVE works");
    guest_rt::pass()
}

fn fill(seed: u64) {
    // SAFETY: writes every Z register and P15 (declared clobbered where Rust could see them).
    unsafe {
        asm!(".arch_extension sve",
             "index z0.d, {s}, #1", "index z1.d, {s}, #2", "index z2.d, {s}, #3", "index z3.d, {s}, #4",
             "index z4.d, {s}, #5", "index z5.d, {s}, #6", "index z6.d, {s}, #7", "index z7.d, {s}, #8",
             "index z8.d, {s}, #9", "index z9.d, {s}, #10", "index z10.d, {s}, #11", "index z11.d, {s}, #12",
             "index z12.d, {s}, #13", "index z13.d, {s}, #14", "index z14.d, {s}, #15", "index z15.d, {s}, #-1",
             "index z16.d, {s}, #-2", "index z17.d, {s}, #-3", "index z18.d, {s}, #-4", "index z19.d, {s}, #-5",
             "index z20.d, {s}, #-6", "index z21.d, {s}, #-7", "index z22.d, {s}, #-8", "index z23.d, {s}, #-9",
             "index z24.d, {s}, #-10", "index z25.d, {s}, #-11", "index z26.d, {s}, #-12", "index z27.d, {s}, #-13",
             "index z28.d, {s}, #-14", "index z29.d, {s}, #-15", "index z30.d, {s}, #-16", "index z31.d, {s}, #7",
             "whilelo p15.d, xzr, {n}",
             s = in(reg) seed, n = in(reg) seed & 7,
             out("v0") _, out("v1") _, out("v2") _, out("v3") _, out("v4") _, out("v5") _, out("v6") _, out("v7") _,
             out("v8") _, out("v9") _, out("v10") _, out("v11") _, out("v12") _, out("v13") _, out("v14") _, out("v15") _,
             out("v16") _, out("v17") _, out("v18") _, out("v19") _, out("v20") _, out("v21") _, out("v22") _, out("v23") _,
             out("v24") _, out("v25") _, out("v26") _, out("v27") _, out("v28") _, out("v29") _, out("v30") _, out("v31") _,
             out("p15") _, options(nomem, nostack));
    }
}

/// Checks what `fill(seed)` left, after a wait, in one asm block (the compiler could
/// otherwise use the registers in between): returns the number of Z registers whose every
/// lane is right, and P15's active lanes.
fn fill_wait_check(seed: u64) -> (u64, u64) {
    let (good, p): (u64, u64);
    fill(seed);
    let (now, freq) = counter();
    // SAFETY: the virtual timer ends the wait; the registers are checked lane by lane with
    // SVE compares against INDEX sequences recomputed in z31 (checked last, against itself
    // being rebuilt from its own step).
    unsafe {
        asm!(".arch_extension sve",
             "msr cntv_cval_el0, {w}", "mov {t}, #1", "msr cntv_ctl_el0, {t}", "isb",
             "wfi",
             "msr cntv_ctl_el0, xzr", "isb",
             "ptrue p0.d", "mov {g}, #0",
             ".irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14",
             "index z31.d, {s}, #(\\n + 1)", "cmpne p1.d, p0/z, z\\n\\().d, z31.d", "cntp {t}, p0, p1.d",
             "cmp {t}, #0", "cinc {g}, {g}, eq",
             ".endr",
             ".irp n, 15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30",
             "index z31.d, {s}, #(14 - \\n)", "cmpne p1.d, p0/z, z\\n\\().d, z31.d", "cntp {t}, p0, p1.d",
             "cmp {t}, #0", "cinc {g}, {g}, eq",
             ".endr",
             "cntp {p}, p0, p15.d",
             w = in(reg) now + freq / 50, s = in(reg) seed, t = out(reg) _, g = out(reg) good, p = out(reg) p,
             out("v31") _, out("p0") _, out("p1") _, options(nomem, nostack));
    }
    (good, p)
}

fn shared(info: &BootInfo) -> ! {
    let tag = info.arg("tag").unwrap_or(1);
    let rounds = info.arg("rounds").unwrap_or(30);
    gic::init_distributor();
    gic::init_cpu();
    gic::enable(27);
    set_zcr(0x1ff);
    for round in 0..rounds {
        let seed = tag << 32 | round << 8 | (round & 7);
        let (good, p) = fill_wait_check(seed);
        let intid = gic::ack();
        if intid < 1020 {
            gic::eoi(intid);
        }
        check_eq!(good, 31, "Z registers intact after a wait in round {}", round);
        check_eq!(p, (seed & 7).min(vl() / 8), "P15 after a wait in round {}", round);
    }
    println!("tag {}: {}-byte SVE registers intact across {} waits", tag, vl(), rounds);
    guest_rt::pass()
}

fn off() -> ! {
    let pfr0: u64;
    // SAFETY: reading an ID register.
    unsafe { asm!("mrs {}, id_aa64pfr0_el1", out(reg) pfr0, options(nomem, nostack)) };
    check_eq!((pfr0 >> 32) & 0xf, 0, "PFR0.SVE");
    // SAFETY: one instruction expected to UNDEF; the handler skips it.
    let e = expect_exception(|| unsafe { asm!(".arch_extension sve", "rdvl {}, #1", out(reg) _, options(nomem, nostack)) });
    check!(e.is_some_and(|e| e.ec() == 0), "RDVL without SVE: {:?}", e);
    println!("SVE hidden");
    guest_rt::pass()
}

fn main(info: &BootInfo) -> ! {
    // CPACR_EL1.ZEN: SVE not trapped to EL1 (the runtime enables FP/SIMD only).
    // SAFETY: this guest's own trap control.
    unsafe { asm!("mrs {t}, cpacr_el1", "orr {t}, {t}, #(3 << 16)", "msr cpacr_el1, {t}", "isb", t = out(reg) _, options(nostack)) };
    if info.bootargs.contains("expect=off") {
        off()
    } else if info.arg("share") == Some(1) {
        shared(info)
    } else {
        single()
    }
}

guest_rt::guest_main!(main);
