//! A hostile guest: tens of thousands of seeded random hypercalls (HVC and SMC, random
//! function IDs and every known call with bad arguments: addresses outside the VM,
//! overflowing sizes, misaligned ranges, bad vCPU ids, CPU_ON of a vCPU already on, entry
//! points outside RAM), then a sweep of every system-register encoding EL1 can name (reads
//! of all, writes of what was read where the read worked, EL2/EL3 ones included). The
//! hypervisor must answer everything and keep running; the guest ends by checking that it
//! still answers and prints how many inputs it tried.
//!
//! Bootargs: `seed=N` (default: from the counter; printed), `calls=N` (default 20000).

#![no_std]
#![no_main]

use core::arch::asm;
use guest_rt::exceptions::expect_exception;
use guest_rt::hvc::{self, hvc, smc};
use guest_rt::{check, check_eq, println, BootInfo};
use hv_core::hypercall::{id, ret, Counter, HV_VERSION_VALUE};
use hv_core::rng::Rng;

/// Calls that would end or freeze this guest on purpose (it has one vCPU and no timer
/// armed), or decide its verdict: not fuzzed.
const SKIPPED: [u32; 6] = [
    id::PSCI_SYSTEM_OFF,
    id::PSCI_SYSTEM_RESET,
    id::PSCI_CPU_OFF,
    id::PSCI_CPU_SUSPEND_32,
    id::PSCI_CPU_SUSPEND_64,
    id::HV_TEST_VERDICT,
];

const KNOWN: [u32; 20] = [
    id::SMCCC_VERSION, id::SMCCC_ARCH_FEATURES, id::PSCI_VERSION, id::PSCI_CPU_ON_32, id::PSCI_CPU_ON_64,
    id::PSCI_AFFINITY_INFO_32, id::PSCI_AFFINITY_INFO_64, id::PSCI_MIGRATE_INFO_TYPE, id::PSCI_FEATURES, id::HV_VERSION,
    id::HV_CONSOLE_WRITE, id::HV_COUNTER, id::HV_YIELD, id::HV_COUNTERS, id::HV_MEM_UNMAP, id::HV_MEM_PROTECT,
    id::HV_MEM_AGE, id::HV_MEM_RECLAIM, id::HV_MEM_PEEK, id::HV_DEBUG_FAULT,
];

/// An argument that is wrong for most calls: outside the VM, overflowing, misaligned,
/// huge, a bad vCPU id, or an address inside the scratch region (a real one).
fn bad_arg(r: &mut Rng, info: &BootInfo, scratch: (u64, u64)) -> u64 {
    let ram_end = info.ram_base + info.ram_size;
    match r.below(12) {
        0 => 0,
        1 => u64::MAX - r.below(0x2000),
        2 => ram_end + r.below(0x10_0000) * 0x1000,
        3 => info.ram_base - 0x1000 * (1 + r.below(16)),
        4 => 0x0800_0000 + r.below(0x100_0000), // devices, GIC
        5 => 1 << (r.below(64)),
        6 => scratch.0 + r.below(scratch.1 - scratch.0) / 0x1000 * 0x1000,
        7 => scratch.0 + r.below(scratch.1 - scratch.0) + 1, // misaligned
        8 => 0x1000 * r.below(0x400),                         // page-multiple sizes
        9 => r.below(16),                                      // small: vCPU ids, counters, permissions
        10 => 0x8000_0000 | r.below(0x100),                   // MPIDR-like
        _ => r.next(),
    }
}

fn fuzz_calls(info: &BootInfo, r: &mut Rng, calls: u64, scratch: (u64, u64)) -> (u64, [u64; 4]) {
    // Outcomes: success / documented error codes / NOT_SUPPORTED / other values.
    let mut outcomes = [0u64; 4];
    let mut made = 0;
    for i in 0..calls {
        let function = match r.below(4) {
            0 | 1 => KNOWN[r.below(KNOWN.len() as u64) as usize],
            2 => 0xc600_0000 | r.below(0x100) as u32, // our vendor range, known and unknown
            _ => r.next() as u32,
        };
        if SKIPPED.contains(&function) {
            continue;
        }
        let mut a = [bad_arg(r, info, scratch), bad_arg(r, info, scratch), bad_arg(r, info, scratch)];
        match function {
            // Only vCPU 0 exists, and it is on: any CPU_ON must fail, never start anything.
            id::PSCI_CPU_ON_32 | id::PSCI_CPU_ON_64 if r.below(2) == 0 => a[0] = 0,
            // Memory calls stay off the guest's own code and data: only bad ranges, or the
            // scratch region.
            id::HV_MEM_UNMAP | id::HV_MEM_PROTECT | id::HV_MEM_AGE | id::HV_MEM_RECLAIM => {
                let ram_end = info.ram_base + info.ram_size;
                if (scratch.0..scratch.1).contains(&a[0]) && a[0] % 0x1000 == 0 {
                    a[1] = (0x1000 * (1 + r.below(16))).min(scratch.1 - a[0]);
                } else if a[0] < ram_end && a[0].saturating_add(a[1]) > info.ram_base {
                    // It would reach the guest's own memory: keep the call, make the range
                    // overflow instead (refused, as an overflowing range must be).
                    a[1] = u64::MAX - a[0] % 0x1000;
                }
            }
            // Console writes print what they read: short ones only.
            id::HV_CONSOLE_WRITE => a[1] %= 8,
            _ => {}
        }
        let x0 = if i % 2 == 0 { hvc(function as u64, a[0], a[1], a[2])[0] } else { smc(function as u64, a[0], a[1], a[2])[0] } as i64;
        made += 1;
        let k = match x0 {
            0 => 0,
            ret::NOT_SUPPORTED => 2,
            -9..=-2 => 1,
            _ => 3,
        };
        outcomes[k] += 1;
    }
    (made, outcomes)
}

/// An MRS or MSR of (op0, op1, CRn, CRm, op2) with x0, followed by RET, written into `page`.
fn stub(page: u64, read: bool, op0: u32, op1: u32, crn: u32, crm: u32, op2: u32) {
    let base = if read { 0xd530_0000 } else { 0xd510_0000 };
    let insn = base | (op0 & 1) << 19 | op1 << 16 | crn << 12 | crm << 8 | op2 << 5;
    // SAFETY: the stub page is ours (the scratch region, executable at stage 1 and 2); the
    // cache maintenance makes the new instructions visible to the fetch that follows.
    unsafe {
        core::ptr::write_volatile(page as *mut u32, insn);
        core::ptr::write_volatile((page + 4) as *mut u32, 0xd65f_03c0);
        asm!("dc cvau, {p}", "dsb ish", "ic ivau, {p}", "dsb ish", "isb", p = in(reg) page);
    }
}

/// Calls the stub with x0 = `value`; x0 after it, or None if it raised an exception.
fn run_stub(page: u64, value: u64) -> Option<u64> {
    let mut x0 = value;
    // SAFETY: the stub is two instructions ending in RET; an exception is caught and the
    // faulting instruction skipped (then RET runs). x30 and caller-saved registers are
    // declared clobbered.
    let e = expect_exception(|| unsafe {
        asm!("blr {s}", s = in(reg) page, inout("x0") x0, out("x30") _, clobber_abi("C"), options(nostack));
    });
    e.is_none().then_some(x0)
}

/// Encodings whose write would break this guest's own execution even with the value just
/// read (the register may change between the two, or a write has side effects).
fn write_skipped(op0: u32, op1: u32, crn: u32, crm: u32, op2: u32) -> bool {
    matches!(
        (op0, op1, crn, crm, op2),
        (3, 0, 4, 0, 0 | 1) // SPSR_EL1, ELR_EL1: our own exception handling rewrites them
            | (3, 0, 4, 1, 0) // SP_EL0
            | (3, 0, 12, 0, 0) // VBAR_EL1
            | (3, 3, 4, 2, _) // NZCV, DAIF
            | (3, 0, 4, 2, _) // SPSel, CurrentEL, PAN, UAO...
            | (3, 0, 12, 12, _) | (3, 0, 12, 11, _) | (3, 0, 12, 8, _) // ICC EOI/SGI/IAR/DIR
            | (3, 0, 2, 1..=3, _) // PAC keys: the guest rt's own signing (none here, but be safe)
            | (2, 0, 0, 0..=15, 4..=7) // breakpoint/watchpoint registers are fine but hidden
    )
}

fn sweep_sysregs(page: u64) -> (u64, u64, u64) {
    let (mut tried, mut worked, mut faulted) = (0u64, 0u64, 0u64);
    for op0 in [2u32, 3] {
        for op1 in 0..8u32 {
            for crn in 0..16u32 {
                for crm in 0..16u32 {
                    for op2 in 0..8u32 {
                        stub(page, true, op0, op1, crn, crm, op2);
                        tried += 1;
                        let Some(v) = run_stub(page, 0) else {
                            faulted += 1;
                            continue;
                        };
                        worked += 1;
                        if op1 == 0 || op1 == 3 {
                            if !write_skipped(op0, op1, crn, crm, op2) {
                                stub(page, false, op0, op1, crn, crm, op2);
                                tried += 1;
                                if run_stub(page, v).is_none() {
                                    faulted += 1;
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    (tried, worked, faulted)
}

fn main(info: &BootInfo) -> ! {
    let seed = info.arg("seed").unwrap_or_else(|| guest_rt::counter().0 | 1);
    let calls = info.arg("calls").unwrap_or(20_000);
    println!("hostile guest: seed {} ({} calls)", seed, calls);
    let mut r = Rng::new(seed);
    // The scratch region: the 2 MiB below the device tree's slot.
    let scratch_end = info.ram_base + info.ram_size - (2 << 20);
    let scratch = (scratch_end - (2 << 20), scratch_end);
    let hypercalls = hvc::counter(Counter::Hypercalls);
    let (made, outcomes) = fuzz_calls(info, &mut r, calls, scratch);
    // The console writes above printed bytes without a newline: end their line first.
    println!();
    println!("{} hypercalls: {} ok, {} error codes, {} not supported, {} values", made, outcomes[0], outcomes[1], outcomes[2], outcomes[3]);
    check!(hvc::counter(Counter::Hypercalls) - hypercalls >= made, "every call reached the hypervisor");
    check_eq!(hvc::hv_version(), HV_VERSION_VALUE, "the hypervisor still answers");

    // The sweep runs from a page of its own below the scratch region, which the hypercalls
    // above may have unmapped or protected: that one is left alone.
    let page = scratch.0 - 0x1000;
    let (tried, worked, faulted) = sweep_sysregs(page);
    println!("{} system-register accesses: {} read fine, {} raised an exception", tried, worked, faulted);
    check!(faulted > 0 && worked > 0, "both outcomes");
    check_eq!(hvc::hv_version(), HV_VERSION_VALUE, "the hypervisor still answers after the sweep");
    println!("hostile guest: {} inputs tried, hypervisor healthy", made + tried);
    guest_rt::pass()
}

guest_rt::guest_main!(main);
