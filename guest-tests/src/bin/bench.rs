//! Benchmarks measured inside a guest. Under QEMU's `-icount shift=0` every instruction
//! takes 1 ns of virtual time, so the virtual counter measures instructions executed,
//! deterministically. Prints `BENCH <name> <value> <unit>` lines for scripts/bench.py.
//!
//! Bootargs: `pac=1` makes the guest a PAC user first (keys written, signing enabled, one
//! PACIA), so that its keys are live during the measurement; `residency=1` (with 2 vCPUs
//! on one physical CPU) measures a residency instead: both vCPUs give the CPU to each
//! other in a loop (HV_YIELD), a PAC user signing once in each residency; `s2=1` (in a VM
//! with `populate=lazy`) measures stage-2 faults that map a fresh page and HV_MEM_UNMAP of
//! one page. `uses=fp|sve|debug|pmu` (with `residency=1`) makes both vCPUs use that
//! resource in every residency (one FP/SIMD or SVE instruction; a breakpoint armed with
//! MDSCR_EL1.MDE; the cycle counter running and read), so that it moves at every switch.
//! `latency=1` measures trapped MMIO reads (the UART's flag register, the vGIC
//! distributor's GICD_TYPER) and the virtual timer's interrupt latency (from the counter
//! reaching CVAL to the first instruction of the guest's handler), waiting in WFI and
//! spinning. `ipi=1` (2 vCPUs on 2 CPUs) measures an IPI: from vCPU 0's ICC_SGI1R_EL1
//! write to the first instruction of vCPU 1's handler (vCPU 1 waiting in WFI).

#![no_std]
#![no_main]

use core::arch::asm;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use guest_rt::{check, check_eq, exceptions, gic, hvc, println, psci, BootInfo};
use hv_core::hypercall::SMCCC_VERSION_1_1;

const CALLS: u64 = 20_000;
const YIELDS: u64 = 2_000;
static DONE: AtomicUsize = AtomicUsize::new(0);
static STOP: AtomicUsize = AtomicUsize::new(0);
static PAC: AtomicUsize = AtomicUsize::new(0);
/// What each residency uses besides PAC (USES_*).
static USES: AtomicUsize = AtomicUsize::new(0);
const USES_FP: usize = 1;
const USES_SVE: usize = 2;
const USES_DEBUG: usize = 4;
const USES_PMU: usize = 8;

/// Arms what `USES` names once per vCPU: a breakpoint on an address never executed with
/// monitor debug on, the cycle counter running; SVE enabled at EL1.
fn start_using() {
    let uses = USES.load(Ordering::Acquire);
    // SAFETY: this vCPU's own debug, PMU and trap registers; the breakpoint's address (0) is
    // never executed and PSTATE.D stays set.
    unsafe {
        if uses & USES_DEBUG != 0 {
            asm!("msr oslar_el1, xzr", "msr dbgbvr0_el1, xzr", "mov {t}, #((0xf << 5) | 3)", "msr dbgbcr0_el1, {t}",
                 "mov {t}, #(1 << 15)", "msr mdscr_el1, {t}", "isb", t = out(reg) _, options(nostack));
        }
        if uses & USES_PMU != 0 {
            asm!("mov {t}, #1", "msr pmcr_el0, {t}", "mov {t}, #(1 << 31)", "msr pmcntenset_el0, {t}", "isb",
                 t = out(reg) _, options(nostack));
        }
        if uses & USES_SVE != 0 {
            asm!("mrs {t}, cpacr_el1", "orr {t}, {t}, #(3 << 16)", "msr cpacr_el1, {t}", "isb", t = out(reg) _, options(nostack));
        }
    }
}

/// One use of each resource `USES` names.
fn use_once() {
    let uses = USES.load(Ordering::Relaxed);
    // SAFETY: computations in caller-saved registers (declared clobbered) and reads of this
    // vCPU's own registers.
    unsafe {
        if uses & USES_FP != 0 {
            asm!(".arch_extension fp", "fmov d0, xzr", out("v0") _, options(nomem, nostack));
        }
        if uses & USES_SVE != 0 {
            asm!(".arch_extension sve", "index z0.d, #0, #1", out("v0") _, options(nomem, nostack));
        }
        if uses & USES_DEBUG != 0 {
            asm!("mrs {}, dbgbvr0_el1", out(reg) _, options(nomem, nostack));
        }
        if uses & USES_PMU != 0 {
            asm!("mrs {}, pmccntr_el0", out(reg) _, options(nomem, nostack));
        }
    }
}

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
    use_once();
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
    start_using();
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
    let uses = [("fp", USES_FP), ("sve", USES_SVE), ("debug", USES_DEBUG), ("pmu", USES_PMU)];
    let mask = uses.iter().filter(|(name, _)| info.bootargs.split_whitespace().any(|w| w.strip_prefix("uses=") == Some(*name))).fold(0, |m, (_, b)| m | b);
    USES.store(mask, Ordering::Release);
    start_using();
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

/// Pages each stage-2 measurement covers.
const S2_PAGES: u64 = 2048;

/// Virtual ns for one store into each of `pages` pages from `base` (stride 4 KiB).
fn touch_pages(base: u64, pages: u64) -> u64 {
    let (t0, freq) = guest_rt::counter();
    // SAFETY: stores into this guest's own RAM, in a region nothing else uses.
    unsafe {
        asm!("1:", "str {one}, [{p}]", "add {p}, {p}, #4096", "subs {n}, {n}, #1", "b.ne 1b",
            p = inout(reg) base => _, n = inout(reg) pages => _, one = in(reg) 1u64, options(nostack));
    }
    let (t1, _) = guest_rt::counter();
    (t1 - t0) * 1_000_000_000 / freq
}

/// Stage-2 costs: a fault that maps a fresh page (allocation and zeroing included), and
/// an unmap of one page (TLB maintenance and notifier calls included), per page.
fn stage2(info: &BootInfo) {
    let base = info.ram_base + info.ram_size / 2;
    check!(hvc::counter(hv_core::hypercall::Counter::Stage2Faults) > 0, "s2=1 wants a VM with populate=lazy");
    let fresh = touch_pages(base, S2_PAGES);
    let mapped = touch_pages(base, S2_PAGES);
    println!("{} fresh pages: {} ns, again: {} ns", S2_PAGES, fresh, mapped);
    println!("BENCH stage2_fault_4k {} instructions", (fresh - mapped + S2_PAGES / 2) / S2_PAGES);
    let (t0, freq) = guest_rt::counter();
    for i in 0..S2_PAGES {
        check_eq!(hvc::mem::unmap(base + i * 4096, 4096), 4096, "unmap");
    }
    let (t1, _) = guest_rt::counter();
    let (with, _) = timed_loop(true);
    let (empty, _) = timed_loop(false);
    let null_call = (with - empty) / CALLS;
    let per_unmap = (t1 - t0) * 1_000_000_000 / freq / S2_PAGES;
    println!("BENCH unmap_one_page {} instructions", per_unmap);
    println!("BENCH unmap_one_page_minus_null_call {} instructions", per_unmap.saturating_sub(null_call));
}

/// Blocks each 2 MiB stage-2 measurement covers.
const S2_BLOCKS: u64 = 16;

/// A first touch of an untouched 2 MiB block (blocks=on): one fault maps all of it.
fn stage2_blocks(info: &BootInfo) {
    const BLOCK: u64 = 2 << 20;
    let base = (info.ram_base + info.ram_size / 4 + BLOCK - 1) & !(BLOCK - 1);
    check!(base + S2_BLOCKS * BLOCK <= info.ram_base + info.ram_size / 2, "s2=2 wants at least 128 MiB");
    let faults = hvc::counter(hv_core::hypercall::Counter::Stage2Faults);
    let touch = || {
        let (t0, freq) = guest_rt::counter();
        for i in 0..S2_BLOCKS {
            // SAFETY: a store into this guest's own RAM, in a region nothing else uses.
            unsafe { core::ptr::write_volatile((base + i * BLOCK) as *mut u64, 1) };
        }
        let (t1, _) = guest_rt::counter();
        (t1 - t0) * 1_000_000_000 / freq
    };
    let fresh = touch();
    let mapped = touch();
    check_eq!(hvc::counter(hv_core::hypercall::Counter::Stage2Faults) - faults, S2_BLOCKS, "one fault per block");
    println!("{} fresh blocks: {} ns, again: {} ns", S2_BLOCKS, fresh, mapped);
    println!("BENCH stage2_fault_2m {} instructions", (fresh - mapped + S2_BLOCKS / 2) / S2_BLOCKS);
}

/// Virtual ns for `CALLS` 32-bit loads from `addr` (a trapped device register), or for
/// the loop alone with None.
fn mmio_loop(addr: Option<u64>) -> u64 {
    let (t0, freq) = guest_rt::counter();
    // SAFETY: reads of a device register in the guest's device mapping, a single `ldr`
    // without writeback so that the trap's syndrome is complete.
    unsafe {
        match addr {
            Some(a) => asm!("1:", "ldr {v:w}, [{a}]", "subs {n}, {n}, #1", "b.ne 1b",
                            a = in(reg) a, v = out(reg) _, n = inout(reg) CALLS => _, options(nostack)),
            None => asm!("1:", "subs {n}, {n}, #1", "b.ne 1b", n = inout(reg) CALLS => _, options(nostack)),
        }
    }
    let (t1, _) = guest_rt::counter();
    (t1 - t0) * 1_000_000_000 / freq
}

/// Bytes `uart_write_loop` writes.
const UART_WRITES: u64 = 2_000;

/// Virtual ns for `UART_WRITES` stores of a carriage return to the UART's data register at
/// `uart`, from x21.
fn uart_write_loop(uart: u64) -> u64 {
    let (t0, freq) = guest_rt::counter();
    // SAFETY: stores to the UART's data register in the guest's device mapping, a single
    // `str` without writeback so that the trap's syndrome is complete.
    unsafe {
        asm!("1:", "str w21, [{u}]", "subs {n}, {n}, #1", "b.ne 1b",
             u = in(reg) uart, in("x21") b'\r' as u64, n = inout(reg) UART_WRITES => _, options(nostack));
    }
    let (t1, _) = guest_rt::counter();
    (t1 - t0) * 1_000_000_000 / freq
}

/// The counter value at the virtual timer handler's first instruction, 0 until it ran.
static TIMER_TAKEN: AtomicU64 = AtomicU64::new(0);
const VTIMER_INTID: u32 = hv_core::guest_dt::layout::VTIMER_INTID;
const LATENCY_ROUNDS: usize = 15;

fn timer_irq() {
    let now: u64;
    // SAFETY: reading the virtual counter has no side effects.
    unsafe { asm!("mrs {}, cntvct_el0", out(reg) now, options(nomem, nostack)) };
    let intid = gic::ack();
    if intid == VTIMER_INTID {
        TIMER_TAKEN.store(now, Ordering::Release);
        // SAFETY: this vCPU's own virtual timer, switched off.
        unsafe { asm!("msr cntv_ctl_el0, xzr", "isb", options(nostack)) };
    }
    if intid < 1020 {
        gic::eoi(intid);
    }
}

/// Median instructions from the counter reaching CVAL (`ms` ahead) to the handler.
fn timer_latency(ms: u64, wfi: bool) -> u64 {
    let freq = guest_rt::counter().1;
    let mut samples = [0u64; LATENCY_ROUNDS];
    for s in samples.iter_mut() {
        TIMER_TAKEN.store(0, Ordering::Release);
        let cval = guest_rt::counter().0 + freq / 1000 * ms;
        // SAFETY: this vCPU's own virtual timer: deadline set, enabled, unmasked.
        unsafe { asm!("msr cntv_cval_el0, {}", "mov {t}, #1", "msr cntv_ctl_el0, {t}", "isb", in(reg) cval, t = out(reg) _, options(nostack)) };
        while TIMER_TAKEN.load(Ordering::Acquire) == 0 {
            if wfi {
                // SAFETY: waits for an interrupt; IRQs are unmasked, so the handler runs.
                unsafe { asm!("wfi", options(nomem, nostack)) };
            }
        }
        *s = (TIMER_TAKEN.load(Ordering::Acquire) - cval) * 1_000_000_000 / freq;
    }
    samples.sort_unstable();
    samples[LATENCY_ROUNDS / 2]
}

static IPI_TAKEN: AtomicU64 = AtomicU64::new(0);
static IPI_READY: AtomicUsize = AtomicUsize::new(0);
const IPI_SGI: u32 = 1;

fn ipi_irq() {
    let now: u64;
    // SAFETY: reading the virtual counter has no side effects.
    unsafe { asm!("mrs {}, cntvct_el0", out(reg) now, options(nomem, nostack)) };
    let intid = gic::ack();
    if intid == IPI_SGI {
        IPI_TAKEN.store(now, Ordering::Release);
    }
    if intid < 1020 {
        gic::eoi(intid);
    }
    // SAFETY: wakes vCPU 0 from its WFE.
    unsafe { asm!("dsb ish", "sev", options(nostack)) };
}

/// vCPU 1: takes the IPIs, waiting in WFI.
fn ipi_target(_index: usize, _n: u64) -> ! {
    gic::init_cpu();
    gic::enable(IPI_SGI);
    gic::irqs_on();
    IPI_READY.store(1, Ordering::Release);
    loop {
        // SAFETY: waits for the next IPI; IRQs are unmasked.
        unsafe { asm!("wfi", options(nomem, nostack)) };
    }
}

/// Median instructions from the SGI1R write on vCPU 0 to vCPU 1's handler.
fn ipi(info: &BootInfo) {
    check!(info.vcpus == 2, "ipi=1 needs 2 vCPUs (has {})", info.vcpus);
    exceptions::on_irq(ipi_irq);
    gic::init_distributor();
    gic::init_cpu();
    check_eq!(guest_rt::start_vcpu(1, ipi_target, 0), 0, "CPU_ON(1)");
    let wait = |done: &dyn Fn() -> bool| {
        while !done() {
            // SAFETY: waits for an event (vCPU 1's SEV); other vCPUs may run meanwhile.
            unsafe { asm!("wfe", options(nomem, nostack)) };
        }
    };
    wait(&|| IPI_READY.load(Ordering::Acquire) != 0);
    let freq = guest_rt::counter().1;
    let mut samples = [0u64; LATENCY_ROUNDS + 1];
    for s in samples.iter_mut() {
        IPI_TAKEN.store(0, Ordering::Release);
        let t0 = guest_rt::counter().0;
        // SAFETY: SGI IPI_SGI to the vCPU with affinity 0.0.0.1 (target list bit 1).
        unsafe { asm!("msr S3_0_C12_C11_5, {}", "isb", in(reg) (IPI_SGI as u64) << 24 | 1 << 1, options(nostack)) };
        wait(&|| IPI_TAKEN.load(Ordering::Acquire) != 0);
        *s = (IPI_TAKEN.load(Ordering::Acquire) - t0) * 1_000_000_000 / freq;
    }
    // The first round warms QEMU's translation cache.
    let samples = &mut samples[1..];
    samples.sort_unstable();
    println!("BENCH ipi_latency {} instructions", samples[samples.len() / 2]);
}

fn latency(info: &BootInfo) {
    use hv_core::guest_dt::layout::{GICD_BASE, PVPANIC_BASE, UART_BASE};
    for _ in 0..2 {
        mmio_loop(Some(UART_BASE + 0x18)); // warm QEMU's translation cache
    }
    let empty = mmio_loop(None);
    let uart = mmio_loop(Some(UART_BASE + 0x18));
    let gicd = mmio_loop(Some(GICD_BASE + 4));
    println!("BENCH mmio_read_uart_fr {} instructions", (uart.saturating_sub(empty) + CALLS / 2) / CALLS);
    println!("BENCH mmio_read_gicd_typer {} instructions", (gicd.saturating_sub(empty) + CALLS / 2) / CALLS);
    // A device whose reads always trap, where the machine has one (the hypervisor's VMs;
    // neither bare QEMU's virt nor Xen's dom0 has a pvpanic device).
    if info.fdt.all_nodes().any(|n| n.compatible().is_some_and(|c| c.all().any(|s| s == "qemu,pvpanic-mmio"))) {
        let pvpanic = mmio_loop(Some(PVPANIC_BASE));
        println!("BENCH mmio_read_pvpanic {} instructions", (pvpanic.saturating_sub(empty) + CALLS / 2) / CALLS);
    }
    if info.hypervisor {
        // The UART's data register, written as Linux's console writes it (a byte per store,
        // from a register the exit saves last): every byte printed is an exit. Carriage
        // returns, which show nothing and no console line keeps.
        let written = uart_write_loop(UART_BASE);
        println!("BENCH mmio_write_uart_dr {} instructions", (written.saturating_sub(empty * UART_WRITES / CALLS) + UART_WRITES / 2) / UART_WRITES);
    }
    exceptions::on_irq(timer_irq);
    gic::init_distributor();
    gic::init_cpu();
    gic::enable(VTIMER_INTID);
    gic::irqs_on();
    timer_latency(1, true); // warm up
    println!("BENCH vtimer_latency_wfi {} instructions", timer_latency(10, true));
    println!("BENCH vtimer_latency_busy {} instructions", timer_latency(2, false));
    gic::irqs_off();
}

fn main(info: &BootInfo) -> ! {
    let pac = info.arg("pac") == Some(1);
    if info.arg("latency") == Some(1) {
        latency(info);
        guest_rt::pass()
    }
    if info.arg("ipi") == Some(1) {
        ipi(info);
        guest_rt::pass()
    }
    match info.arg("s2") {
        Some(1) => {
            stage2(info);
            guest_rt::pass()
        }
        Some(2) => {
            stage2_blocks(info);
            guest_rt::pass()
        }
        _ => {}
    }
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
