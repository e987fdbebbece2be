//! The PMU (PMUv3) as a guest uses it: what it reports (version, counters, events), the
//! cycle counter counting, stopping and filtering by exception level, event counter 0
//! counting software increments exactly, its overflow interrupt (PPI 7, INTID 23) taken,
//! and the interrupt withdrawn when the overflow is cleared before it is taken. Each
//! observation is printed as `observe ...`; the same image runs on bare QEMU and the two
//! runs must agree.
//!
//! With `share=1 rounds=N tag=T` (two VMs on one CPU): each VM's counter keeps its own
//! configuration and value across waits that hand the CPU to the other VM.

#![no_std]
#![no_main]

use core::arch::asm;
use core::sync::atomic::{AtomicU32, Ordering};
use guest_rt::{check_eq, counter, exceptions, gic, mrs, msr, println, BootInfo};


const PMCR_E: u64 = 1 << 0;
const PMCR_LC: u64 = 1 << 6;
const CYCLES: u64 = 1 << 31;
const PMU_INTID: u32 = 23;

static TAKEN: AtomicU32 = AtomicU32::new(0);
static LAST: AtomicU32 = AtomicU32::new(0);

fn irq() {
    let intid = gic::ack();
    if intid >= 1020 {
        return;
    }
    LAST.store(intid, Ordering::Relaxed);
    TAKEN.fetch_add(1, Ordering::Relaxed);
    if intid == PMU_INTID {
        msr!("pmovsclr_el0", 1u64);
    }
    gic::eoi(intid);
}

fn spin(n: u64) {
    for i in 0..n {
        core::hint::black_box(i);
    }
}

fn cycles_over(n: u64) -> u64 {
    let a = mrs!("pmccntr_el0");
    spin(n);
    mrs!("pmccntr_el0").wrapping_sub(a)
}

fn single(_info: &BootInfo) -> ! {
    let dfr0 = mrs!("id_aa64dfr0_el1");
    println!("observe PMUVer {}", (dfr0 >> 8) & 0xf);
    let pmcr = mrs!("pmcr_el0");
    let n = (pmcr >> 11) & 0x1f;
    println!("observe PMCR_EL0.N {} IMP {:#x}", n, pmcr >> 24);
    println!("observe PMCEID0 {:#x} PMCEID1 {:#x}", mrs!("pmceid0_el0"), mrs!("pmceid1_el0"));

    // The cycle counter counts EL1 while enabled; not when disabled; not at EL1 when
    // PMCCFILTR_EL0.P filters EL1 out.
    msr!("pmccfiltr_el0", 0u64);
    msr!("pmcr_el0", PMCR_E | PMCR_LC);
    msr!("pmcntenset_el0", CYCLES);
    println!("observe cycle counter counts: {}", cycles_over(10_000) > 0);
    msr!("pmcntenclr_el0", CYCLES);
    println!("observe cycle counter stopped: {}", cycles_over(10_000) == 0);
    msr!("pmccfiltr_el0", 1u64 << 31);
    msr!("pmcntenset_el0", CYCLES);
    println!("observe cycle counter with EL1 filtered out: {}", cycles_over(10_000));
    msr!("pmcntenclr_el0", CYCLES);
    msr!("pmccfiltr_el0", 0u64);

    // Event counter 0 on SW_INCR (event 0): exactly the increments written.
    msr!("pmevtyper0_el0", 0u64);
    msr!("pmevcntr0_el0", 0u64);
    msr!("pmcntenset_el0", 1u64);
    for _ in 0..5 {
        msr!("pmswinc_el0", 1u64);
    }
    println!("observe software increments counted: {}", mrs!("pmevcntr0_el0"));

    // Overflow with its interrupt enabled: INTID 23 taken once, overflow flag cleared by
    // the handler, the counter wrapped to 0.
    exceptions::on_irq(irq);
    gic::init_distributor();
    gic::init_cpu();
    gic::enable(PMU_INTID);
    msr!("pmevcntr0_el0", 0xffff_fffeu64);
    msr!("pmintenset_el1", 1u64);
    gic::irqs_on();
    msr!("pmswinc_el0", 1u64);
    msr!("pmswinc_el0", 1u64);
    let end = counter().0 + counter().1 / 100;
    while TAKEN.load(Ordering::Relaxed) == 0 && counter().0 < end {
        core::hint::spin_loop();
    }
    gic::irqs_off();
    println!("observe overflow interrupts {} intid {} overflow flags after {:#x} counter {:#x}",
             TAKEN.load(Ordering::Relaxed), LAST.load(Ordering::Relaxed), mrs!("pmovsset_el0"), mrs!("pmevcntr0_el0"));

    // Overflow while interrupts are masked: pending; cleared before it is taken: withdrawn.
    TAKEN.store(0, Ordering::Relaxed);
    msr!("pmevcntr0_el0", 0xffff_ffffu64);
    msr!("pmswinc_el0", 1u64);
    spin(1000);
    println!("observe overflow pending while masked: {}", gic::pending(PMU_INTID));
    msr!("pmovsclr_el0", 1u64);
    println!("observe pending after the overflow is cleared: {}", gic::pending(PMU_INTID));
    gic::irqs_on();
    spin(10_000);
    gic::irqs_off();
    println!("observe interrupts after the overflow is cleared: {}", TAKEN.load(Ordering::Relaxed));
    // Overflow, cleared with no exit in between, then unmasked: not taken either.
    msr!("pmevcntr0_el0", 0xffff_ffffu64);
    msr!("pmswinc_el0", 1u64);
    spin(1000);
    msr!("pmovsclr_el0", 1u64);
    gic::irqs_on();
    spin(10_000);
    gic::irqs_off();
    println!("observe interrupts when cleared before unmasking: {}", TAKEN.load(Ordering::Relaxed));
    msr!("pmintenclr_el1", 1u64);
    msr!("pmcntenclr_el0", 1u64);
    msr!("pmcr_el0", 0u64);
    println!("PMU works");
    guest_rt::pass()
}

/// Two VMs on one CPU: each counts its own software increments on counter 0 (a different
/// starting value per VM) and waits; the other VM's counting never shows here.
fn shared(info: &BootInfo) -> ! {
    let tag = info.arg("tag").unwrap_or(1);
    let rounds = info.arg("rounds").unwrap_or(50);
    gic::init_distributor();
    gic::init_cpu();
    gic::enable(27);
    msr!("pmevtyper0_el0", 0u64);
    msr!("pmevcntr0_el0", tag << 24);
    msr!("pmcr_el0", PMCR_E);
    msr!("pmcntenset_el0", 1u64);
    for round in 0..rounds {
        for _ in 0..tag {
            msr!("pmswinc_el0", 1u64);
        }
        let (now, freq) = counter();
        msr!("cntv_cval_el0", now + freq / 50);
        msr!("cntv_ctl_el0", 1u64);
        // SAFETY: waiting; the other VM runs meanwhile (or the timer ends the wait).
        unsafe { asm!("wfi", options(nomem, nostack)) };
        msr!("cntv_ctl_el0", 0u64);
        let intid = gic::ack();
        if intid < 1020 {
            gic::eoi(intid);
        }
        check_eq!(mrs!("pmevcntr0_el0"), (tag << 24) + tag * (round + 1), "counter 0 after a wait in round {}", round);
        check_eq!(mrs!("pmevtyper0_el0") & 0xffff, 0, "counter 0's event in round {}", round);
    }
    println!("tag {}: own counter kept across {} waits", tag, rounds);
    guest_rt::pass()
}

fn main(info: &BootInfo) -> ! {
    if info.arg("share") == Some(1) {
        shared(info)
    } else {
        single(info)
    }
}

guest_rt::guest_main!(main);
