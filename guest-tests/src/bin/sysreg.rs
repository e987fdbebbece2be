//! Trapped system registers: IMPLEMENTATION DEFINED registers and the PMU give the guest an
//! UNDEF from the hypervisor; ACTLR_EL1, set/way cache maintenance and the EL1 physical
//! timer are emulated; debug registers trap once and are then the guest's; EL2 registers
//! are UNDEFINED at EL1 by the architecture.

#![no_std]
#![no_main]

use core::arch::asm;
use guest_rt::exceptions::{expect_exception, Exception};
use guest_rt::{check, check_eq, hvc, println, BootInfo};
use hv_core::hypercall::Counter;

fn check_undef(what: &str, e: Option<Exception>) {
    match e {
        Some(e) if e.ec() == 0 && e.esr & (1 << 25) != 0 => {}
        other => {
            println!("{}: expected UNDEF, got {:?}", what, other);
            guest_rt::fail(4);
        }
    }
}

fn main(_info: &BootInfo) -> ! {
    // SAFETY (all asm below): single system-register accesses that either trap to the
    // hypervisor or raise UNDEF at EL1; the probe handler skips the instruction.
    check_undef("read of IMPLEMENTATION DEFINED S3_0_C15_C0_0", expect_exception(|| unsafe {
        asm!("mrs {}, S3_0_C15_C0_0", out(reg) _, options(nostack));
    }));
    // SAFETY: one instruction that may trap or fault; the armed handler skips it.
    check_undef("write of IMPLEMENTATION DEFINED S3_1_C11_C0_0", expect_exception(|| unsafe {
        asm!("msr S3_1_C11_C0_0, {}", in(reg) 1u64, options(nostack));
    }));
    // Whether the UNDEF for an IMPLEMENTATION DEFINED encoding comes from the hypervisor
    // (HCR_EL2.TIDCP) or from the CPU depends on whether the CPU implements it (QEMU's do
    // not), so those are not counted below; the rest always trap to the hypervisor.
    let traps = hvc::counter(Counter::SysregTraps);
    let injected = hvc::counter(Counter::InjectedFaults);
    // SAFETY: one instruction that may trap or fault; the armed handler skips it.
    check_undef("read of PMCR_EL0", expect_exception(|| unsafe {
        asm!("mrs {}, S3_3_C9_C12_0", out(reg) _, options(nostack));
    }));
    // The EL1 physical timer is emulated: a trapped read, no fault, off at reset.
    let mut cntp_ctl: u64 = 0xdead;
    // SAFETY: one instruction that may trap or fault; the armed handler skips it.
    let e = expect_exception(|| unsafe { asm!("mrs {}, S3_3_C14_C2_1", out(reg) cntp_ctl, options(nostack)) });
    check!(e.is_none(), "CNTP_CTL_EL0 read faulted: {:?}", e);
    check_eq!(cntp_ctl, 0, "CNTP_CTL_EL0 at reset");

    // ACTLR_EL1: reads as zero, writes ignored, no fault.
    let mut actlr: u64 = 0xdead;
    // SAFETY: one instruction that may trap or fault; the armed handler skips it.
    let e = expect_exception(|| unsafe {
        asm!("msr S3_0_C1_C0_1, {w}", "mrs {r}, S3_0_C1_C0_1", w = in(reg) u64::MAX, r = out(reg) actlr, options(nostack));
    });
    check!(e.is_none(), "ACTLR_EL1 access faulted: {:?}", e);
    check_eq!(actlr, 0, "ACTLR_EL1 value");

    // Set/way cache maintenance completes.
    // SAFETY: one instruction that may trap or fault; the armed handler skips it.
    let e = expect_exception(|| unsafe { asm!("dc cisw, {}", in(reg) 0u64, options(nostack)) });
    check!(e.is_none(), "DC CISW faulted: {:?}", e);

    // EL2 registers do not exist at EL1 (the CPU raises UNDEF without the hypervisor).
    // SAFETY: one instruction that may trap or fault; the armed handler skips it.
    check_undef("read of HCR_EL2 at EL1", expect_exception(|| unsafe {
        asm!("mrs {}, S3_4_C1_C1_0", out(reg) _, options(nostack));
    }));

    // Debug registers are the vCPU's own: the first access traps (the hypervisor hands them
    // over), the rest do not; a breakpoint value and MDSCR_EL1 stick, the OS lock unlocks.
    let (bvr, mdscr, oslsr): (u64, u64, u64);
    // SAFETY: debug-register accesses; MDSCR_EL1.KDE alone (no MDE, PSTATE.D masked)
    // enables no debug exception.
    unsafe {
        asm!("msr S2_0_C0_C0_4, {v}", "mrs {b}, S2_0_C0_C0_4", "msr mdscr_el1, {k}", "mrs {m}, mdscr_el1",
            "msr oslar_el1, xzr", "mrs {o}, S2_0_C1_C1_4", "msr mdscr_el1, xzr",
            v = in(reg) 0x4008_0000u64, k = in(reg) 1u64 << 13, b = out(reg) bvr, m = out(reg) mdscr, o = out(reg) oslsr,
            options(nostack));
    }
    check_eq!((bvr, mdscr, oslsr), (0x4008_0000, 1 << 13, 0b1000), "DBGBVR0, MDSCR, OSLSR");

    let traps = hvc::counter(Counter::SysregTraps) - traps;
    let injected = hvc::counter(Counter::InjectedFaults) - injected;

    // ID registers are the hypervisor's view: no EL2/EL3, SVE, PMU or SME, and a physical
    // address size no larger than the VM's IPA space (40 bits).
    let (pfr0, pfr1, dfr0, mmfr0, zfr0): (u64, u64, u64, u64, u64);
    let before = hvc::counter(Counter::SysregTraps);
    // SAFETY: reads of ID registers have no side effects.
    unsafe {
        asm!("mrs {}, id_aa64pfr0_el1", "mrs {}, id_aa64pfr1_el1", "mrs {}, id_aa64dfr0_el1",
            "mrs {}, id_aa64mmfr0_el1", "mrs {}, S3_0_C0_C4_4",
            out(reg) pfr0, out(reg) pfr1, out(reg) dfr0, out(reg) mmfr0, out(reg) zfr0, options(nostack));
    }
    let field = |v: u64, shift: u32| (v >> shift) & 0xf;
    check_eq!(hvc::counter(Counter::SysregTraps) - before, 5, "ID register reads trap");
    check_eq!((field(pfr0, 8), field(pfr0, 12), field(pfr0, 32)), (0, 0, 0), "PFR0 EL2, EL3, SVE");
    check!(field(pfr0, 0) >= 1, "PFR0 EL0 AArch64 is kept");
    check_eq!((field(pfr1, 8), field(pfr1, 24)), (0, 0), "PFR1 MTE, SME");
    check_eq!(field(dfr0, 8), 0, "DFR0 PMUVer");
    check!(field(dfr0, 0) >= 6, "DFR0 DebugVer kept ({})", field(dfr0, 0));
    check!(field(mmfr0, 0) <= 2, "MMFR0 PARange {} is at most 40 bits", field(mmfr0, 0));
    check_eq!(zfr0, 0, "ZFR0");
    println!("ID registers: PFR0 {:#x} DFR0 {:#x} MMFR0 {:#x}", pfr0, dfr0, mmfr0);
    println!("{} trapped register accesses, {} UNDEFs injected", traps, injected);
    check_eq!(traps, 6, "trapped accesses (PMCR, CNTP_CTL, 2 ACTLR, DC CISW, the first debug register)");
    check_eq!(injected, 1, "UNDEFs injected by the hypervisor (PMCR)");
    guest_rt::pass()
}

guest_rt::guest_main!(main);
