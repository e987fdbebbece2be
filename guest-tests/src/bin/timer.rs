//! The generic timers as a guest sees them, for both the virtual timer (INTID 27) and the
//! EL1 physical timer (INTID 30): interrupts when due, level semantics (completed while
//! still high: taken again; disabled, masked or moved: no longer pending, neither taken nor
//! shown in GICR_ISPENDR0 or ISR_EL1), a WFI woken by the timer, TVAL arithmetic.
//!
//! Each observation is printed as `observe <timer> <what>: <value>` and checked against the
//! architecture; the same image runs directly on QEMU too (scripts/boottest.py compares the
//! two runs' observations line by line).

#![no_std]
#![no_main]

use core::arch::asm;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use guest_rt::{counter, exceptions, gic, println, BootInfo};
use hv_core::timer::{CTL_ENABLE, CTL_IMASK, CTL_ISTATUS};

#[derive(Clone, Copy)]
struct Timer {
    name: &'static str,
    intid: u32,
    physical: bool,
}

macro_rules! timer_reg {
    ($t:expr, read $v:literal, $p:literal) => {{
        let v: u64;
        // SAFETY: reading a timer register has no side effects.
        unsafe {
            if $t.physical { asm!(concat!("mrs {}, ", $p), out(reg) v, options(nomem, nostack)) }
            else { asm!(concat!("mrs {}, ", $v), out(reg) v, options(nomem, nostack)) }
        }
        v
    }};
    ($t:expr, write $v:literal, $p:literal, $x:expr) => {{
        // SAFETY: this guest's own timer; the isb makes the change take effect here.
        unsafe {
            if $t.physical { asm!(concat!("msr ", $p, ", {}"), "isb", in(reg) $x, options(nostack)) }
            else { asm!(concat!("msr ", $v, ", {}"), "isb", in(reg) $x, options(nostack)) }
        }
    }};
}

impl Timer {
    fn ctl(&self) -> u64 {
        timer_reg!(self, read "cntv_ctl_el0", "cntp_ctl_el0")
    }
    fn set_ctl(&self, v: u64) {
        timer_reg!(self, write "cntv_ctl_el0", "cntp_ctl_el0", v)
    }
    fn cval(&self) -> u64 {
        timer_reg!(self, read "cntv_cval_el0", "cntp_cval_el0")
    }
    fn set_cval(&self, v: u64) {
        timer_reg!(self, write "cntv_cval_el0", "cntp_cval_el0", v)
    }
    fn tval(&self) -> u64 {
        timer_reg!(self, read "cntv_tval_el0", "cntp_tval_el0")
    }
    fn set_tval(&self, v: u64) {
        timer_reg!(self, write "cntv_tval_el0", "cntp_tval_el0", v)
    }
}

/// What the IRQ handler saw, for the timer under test.
static CURRENT: AtomicU32 = AtomicU32::new(0);
static PHYSICAL: AtomicBool = AtomicBool::new(false);
static HITS: AtomicU32 = AtomicU32::new(0);
static OTHERS: AtomicU32 = AtomicU32::new(0);
/// Complete the first interrupt without turning the timer off (it must come again).
static LEAVE_FIRST: AtomicBool = AtomicBool::new(false);
static TAKEN_AT: AtomicU64 = AtomicU64::new(0);
static MISMATCHES: AtomicU32 = AtomicU32::new(0);

fn irq() {
    let intid = gic::ack();
    if intid >= 1020 {
        return; // spurious: withdrawn before it was acknowledged
    }
    if intid == CURRENT.load(Ordering::Relaxed) {
        let n = HITS.fetch_add(1, Ordering::Relaxed) + 1;
        TAKEN_AT.store(counter().0, Ordering::Relaxed);
        if !LEAVE_FIRST.load(Ordering::Relaxed) || n >= 2 {
            let t = Timer { name: "", intid, physical: PHYSICAL.load(Ordering::Relaxed) };
            t.set_ctl(0);
        }
    } else {
        OTHERS.fetch_add(1, Ordering::Relaxed);
    }
    gic::eoi(intid);
}

fn ms(n: u64) -> u64 {
    counter().1 / 1000 * n
}

/// Spins until `done` or `n` ms passed.
fn spin_ms(n: u64, done: impl Fn() -> bool) {
    let end = counter().0 + ms(n);
    while counter().0 < end && !done() {
        core::hint::spin_loop();
    }
}

/// IRQs on for `n` ms (or until `done`), then off again.
fn take_irqs(n: u64, done: impl Fn() -> bool) {
    gic::irqs_on();
    spin_ms(n, done);
    gic::irqs_off();
}

fn observe(t: &Timer, what: &str, got: u64, want: u64) {
    println!("observe {} {}: {}", t.name, what, got);
    if got != want {
        println!("  expected {}", want);
        MISMATCHES.fetch_add(1, Ordering::Relaxed);
    }
}

fn hits() -> u64 {
    HITS.load(Ordering::Relaxed) as u64
}

fn run(t: &Timer) {
    gic::irqs_off();
    t.set_ctl(0);
    CURRENT.store(t.intid, Ordering::Relaxed);
    PHYSICAL.store(t.physical, Ordering::Relaxed);
    HITS.store(0, Ordering::Relaxed);
    gic::enable(t.intid);
    let pending = || gic::pending(t.intid) as u64;

    // Taken once when due, not before.
    let deadline = counter().0 + ms(2);
    t.set_cval(deadline);
    t.set_ctl(CTL_ENABLE);
    take_irqs(200, || hits() >= 1);
    observe(t, "interrupts when due", hits(), 1);
    observe(t, "taken at or after its deadline", (TAKEN_AT.load(Ordering::Relaxed) >= deadline) as u64, 1);

    // Completed while its line is still high: taken again.
    HITS.store(0, Ordering::Relaxed);
    LEAVE_FIRST.store(true, Ordering::Relaxed);
    t.set_cval(0);
    t.set_ctl(CTL_ENABLE);
    take_irqs(200, || hits() >= 2);
    spin_ms(1, || false);
    LEAVE_FIRST.store(false, Ordering::Relaxed);
    observe(t, "interrupts when completed with its line high", hits(), 2);

    // Pending while interrupts are masked; disabling the timer withdraws it.
    HITS.store(0, Ordering::Relaxed);
    t.set_ctl(CTL_ENABLE);
    spin_ms(1, || false);
    observe(t, "pending (masked)", pending(), 1);
    observe(t, "signalled (masked)", gic::irq_signalled() as u64, 1);
    t.set_ctl(0);
    observe(t, "pending after disable", pending(), 0);
    observe(t, "signalled after disable", gic::irq_signalled() as u64, 0);
    take_irqs(2, || false);
    observe(t, "interrupts after disable", hits(), 0);

    // IMASK lowers the line (ISTATUS stays), clearing it raises it again.
    t.set_ctl(CTL_ENABLE);
    spin_ms(1, || false);
    observe(t, "pending when enabled again", pending(), 1);
    t.set_ctl(CTL_ENABLE | CTL_IMASK);
    observe(t, "pending when masked by IMASK", pending(), 0);
    observe(t, "CTL when masked by IMASK", t.ctl(), CTL_ENABLE | CTL_IMASK | CTL_ISTATUS);
    t.set_ctl(CTL_ENABLE);
    spin_ms(1, || false);
    observe(t, "pending when IMASK is cleared", pending(), 1);

    // Disabled with nothing in between, then interrupts unmasked: not taken.
    t.set_ctl(0);
    take_irqs(2, || false);
    observe(t, "interrupts when disabled before unmasking", hits(), 0);

    // Moving the compare value into the future lowers the line.
    t.set_cval(0);
    t.set_ctl(CTL_ENABLE);
    spin_ms(1, || false);
    t.set_cval(u64::MAX);
    observe(t, "pending after the compare value moved ahead", pending(), 0);
    observe(t, "CTL after the compare value moved ahead", t.ctl(), CTL_ENABLE);
    t.set_ctl(0);

    // Fired while disabled at the GIC, then the timer stops: enabling it at the GIC
    // delivers nothing.
    gic::disable(t.intid);
    t.set_cval(0);
    t.set_ctl(CTL_ENABLE);
    spin_ms(1, || false);
    observe(t, "pending while disabled at the GIC", pending(), 1);
    t.set_ctl(0);
    gic::enable(t.intid);
    take_irqs(2, || false);
    observe(t, "interrupts when enabled at the GIC after the timer stopped", hits(), 0);
    observe(t, "pending then", pending(), 0);

    // It wakes a WFI (interrupts masked).
    let deadline = counter().0 + ms(2);
    t.set_cval(deadline);
    t.set_ctl(CTL_ENABLE);
    while counter().0 < deadline {
        // SAFETY: waiting for the timer; WFI may also return early.
        unsafe { asm!("wfi", options(nomem, nostack)) };
    }
    observe(t, "pending after a WFI until its deadline", pending(), 1);
    t.set_ctl(0);

    // TVAL: counts down from what was written; a negative value is in the past.
    let f = counter().1;
    t.set_tval(f);
    let tval = t.tval();
    observe(t, "TVAL within a second after writing one second", (tval > 0 && tval <= f) as u64, 1);
    let now = counter().0;
    observe(t, "CVAL is the counter plus TVAL", (t.cval() > now && t.cval() <= now + f) as u64, 1);
    t.set_tval(-16i64 as u64);
    t.set_ctl(CTL_ENABLE | CTL_IMASK);
    observe(t, "ISTATUS after a negative TVAL", t.ctl() & CTL_ISTATUS, CTL_ISTATUS);
    observe(t, "TVAL reads back negative", (t.tval() as u32 as i32 <= -16) as u64, 1);
    t.set_ctl(0);
    gic::disable(t.intid);
    println!("{}: {} interrupts for other INTIDs", t.name, OTHERS.load(Ordering::Relaxed));
}

fn main(info: &BootInfo) -> ! {
    println!("timer test on {}", if info.hypervisor { "the hypervisor" } else { "bare QEMU" });
    exceptions::on_irq(irq);
    gic::init_distributor();
    gic::init_cpu();
    run(&Timer { name: "vtimer", intid: 27, physical: false });
    run(&Timer { name: "ptimer", intid: 30, physical: true });
    let bad = MISMATCHES.load(Ordering::Relaxed);
    if bad != 0 {
        println!("{} observations differ from the architecture", bad);
        guest_rt::fail(1);
    }
    println!("timers behave as the architecture says");
    guest_rt::pass()
}

guest_rt::guest_main!(main);
