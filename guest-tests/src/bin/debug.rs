//! Self-hosted debug as a guest uses it: hardware breakpoints and watchpoints at EL1,
//! breakpoints and single step at EL0 and EL1, the OS lock's reset state; the exceptions are
//! the guest's own (taken at its EL1). Each observation is printed as `observe ...`; the
//! same image runs on bare QEMU and the two runs must agree.
//!
//! With `share=1 rounds=N` (two VMs on one CPU, `tag=1` / `tag=2`): each VM keeps its own
//! breakpoint across waits that hand the CPU to the other one, which never sees or triggers
//! it.

#![no_std]
#![no_main]

use core::arch::{asm, global_asm};
use core::fmt::Write;
use core::sync::atomic::{AtomicU64, Ordering};
use guest_rt::exceptions::{self, Frame};
use guest_rt::text::Text;
use guest_rt::{check, check_eq, counter, gic, mrs, msr, println, BootInfo};

global_asm!(
    ".section .text.debug_targets, \"ax\"",
    ".balign 16",
    ".global bp_target_a", "bp_target_a:", "add x0, x0, #1", "ret",
    ".balign 16",
    ".global bp_target_b", "bp_target_b:", "add x0, x0, #2", "ret",
    // Run at EL0 (through the EL0 window) and stepped at EL1: three adds, then back.
    ".balign 16",
    ".global stepped", "stepped:", "add x0, x0, #1", "add x0, x0, #1", "add x0, x0, #1", "svc #0",
    // x0 = entry, x1 = SPSR, x2 = its x0; returns its x0 when it calls svc #0.
    ".balign 16",
    ".global run_at", "run_at:",
    "stp x29, x30, [sp, #-96]!", "stp x19, x20, [sp, #16]", "stp x21, x22, [sp, #32]",
    "stp x23, x24, [sp, #48]", "stp x25, x26, [sp, #64]", "stp x27, x28, [sp, #80]",
    "msr elr_el1, x0", "msr spsr_el1, x1", "mov x0, x2", "isb", "eret",
    ".global run_returned", "run_returned:",
    "ldp x19, x20, [sp, #16]", "ldp x21, x22, [sp, #32]", "ldp x23, x24, [sp, #48]",
    "ldp x25, x26, [sp, #64]", "ldp x27, x28, [sp, #80]", "ldp x29, x30, [sp], #96", "ret",
);

extern "C" {
    fn bp_target_a(x: u64) -> u64;
    fn bp_target_b(x: u64) -> u64;
    fn stepped();
    fn run_at(entry: u64, spsr: u64, x0: u64) -> u64;
    fn run_returned();
}

const EC_SVC64: u64 = 0x15;
const SPSR_SS: u64 = 1 << 21;
/// EL1h with A, I, F masked and D clear (debug exceptions enabled).
const SPSR_EL1H: u64 = 0x1c5;
/// EL0t with A, I, F masked.
const SPSR_EL0T: u64 = 0x1c0;
const MDSCR_SS: u64 = 1 << 0;
const MDSCR_KDE: u64 = 1 << 13;
const MDSCR_MDE: u64 = 1 << 15;
const WINDOW_VA: u64 = guest_rt::WINDOW_VA;

/// What the hook saw: ECs and ELRs of the debug exceptions, in order (at most 8).
static SEEN: [AtomicU64; 8] = [const { AtomicU64::new(0) }; 8];
static COUNT: AtomicU64 = AtomicU64::new(0);
static FAR: AtomicU64 = AtomicU64::new(0);
/// Keep stepping after a step exception.
static STEPPING: AtomicU64 = AtomicU64::new(0);

#[repr(C, align(8))]
struct Watched(core::cell::UnsafeCell<u64>);
// SAFETY: accessed only by volatile operations of the single running vCPU.
unsafe impl Sync for Watched {}
static WATCHED: Watched = Watched(core::cell::UnsafeCell::new(0));


fn hook(frame: &mut Frame, _kind: u64) -> bool {
    let ec = frame.esr >> 26;
    if ec == EC_SVC64 {
        // Back to run_at's caller, at EL1 with everything masked.
        frame.elr = run_returned as *const () as u64;
        frame.spsr = 0x3c5;
        return true;
    }
    if !(0x30..=0x35).contains(&ec) {
        return false;
    }
    let n = COUNT.fetch_add(1, Ordering::Relaxed) as usize;
    if n < SEEN.len() {
        SEEN[n].store(ec << 48 | (frame.elr & 0xffff_ffff_ffff), Ordering::Relaxed);
    }
    match ec {
        0x30 | 0x31 => msr!("dbgbcr0_el1", 0), // breakpoint: off, then the instruction runs
        0x34 | 0x35 => {
            FAR.store(frame.far, Ordering::Relaxed);
            msr!("dbgwcr0_el1", 0);
        }
        _ => {
            // Software step: step on, unless told to stop.
            if STEPPING.load(Ordering::Relaxed) != 0 {
                frame.spsr |= SPSR_SS;
            }
        }
    }
    true
}

fn reset_seen() {
    COUNT.store(0, Ordering::Relaxed);
    for s in &SEEN {
        s.store(0, Ordering::Relaxed);
    }
}

/// The debug exceptions seen, as `EC@offset` from `base`.
fn seen(base: u64) -> Text<160> {
    let mut line = Text::new();
    let n = (COUNT.load(Ordering::Relaxed) as usize).min(SEEN.len());
    for s in &SEEN[..n] {
        let v = s.load(Ordering::Relaxed);
        let sep = if line.is_empty() { "" } else { " " };
        let _ = write!(line, "{sep}{:#x}@{:+}", v >> 48, (v & 0xffff_ffff_ffff) as i64 - base as i64);
    }
    line
}

fn debug_exceptions(on: bool) {
    // SAFETY: PSTATE.D gates debug exceptions at EL1; the hook handles them.
    unsafe {
        if on {
            asm!("msr daifclr, #8", "isb", options(nostack))
        } else {
            asm!("msr daifset, #8", "isb", options(nostack))
        }
    }
}

fn breakpoint(addr: u64, el0: bool) {
    msr!("dbgbvr0_el1", addr);
    // BAS 0xf, PMC EL1 (0b01) or EL0 (0b10), enabled.
    msr!("dbgbcr0_el1", 0xf << 5 | if el0 { 0b10 << 1 } else { 0b01 << 1 } | 1);
}

/// The EL0 alias of a function or datum in this image (the window maps RAM for EL0).
fn el0(addr: u64, ram_base: u64) -> u64 {
    WINDOW_VA + (addr - (ram_base & !((1 << 30) - 1)))
}

fn single_vm(info: &BootInfo) -> ! {
    let dfr0 = mrs!("id_aa64dfr0_el1");
    println!("observe breakpoints {} watchpoints {}", ((dfr0 >> 12) & 0xf) + 1, ((dfr0 >> 20) & 0xf) + 1);
    println!("observe OSLSR_EL1 at reset: {:#x}", mrs!("oslsr_el1"));
    msr!("oslar_el1", 0);
    println!("observe OSLSR_EL1 after unlock: {:#x}", mrs!("oslsr_el1"));
    msr!("mdscr_el1", MDSCR_MDE | MDSCR_KDE);
    let a = bp_target_a as *const () as u64;

    // EL1 breakpoint: taken at the target, once (the hook disables it), the call completes.
    reset_seen();
    breakpoint(a, false);
    debug_exceptions(true);
    // SAFETY: a leaf function in this image.
    let r = unsafe { bp_target_a(41) };
    debug_exceptions(false);
    println!("observe EL1 breakpoint: {} result {}", seen(a), r);

    // EL1 watchpoint on a store: taken with FAR at the word, the store then completes.
    reset_seen();
    let w = WATCHED.0.get() as u64;
    msr!("dbgwvr0_el1", w);
    // BAS 0xff, LSC load and store, PAC EL1 and EL0, enabled.
    msr!("dbgwcr0_el1", 0xff << 5 | 0b11 << 3 | 0b11 << 1 | 1);
    debug_exceptions(true);
    // SAFETY: the watched word is this guest's.
    unsafe { core::ptr::write_volatile(WATCHED.0.get(), 0x5a) };
    debug_exceptions(false);
    // SAFETY: as above.
    let stored = unsafe { core::ptr::read_volatile(WATCHED.0.get()) };
    println!("observe EL1 watchpoint: {} FAR at the word {} stored {:#x}", (COUNT.load(Ordering::Relaxed) == 1) as u8,
             FAR.load(Ordering::Relaxed) == w, stored);

    // EL1 single step through three instructions (entered with SPSR.SS, KDE, D clear).
    reset_seen();
    let s = stepped as *const () as u64;
    msr!("mdscr_el1", MDSCR_MDE | MDSCR_KDE | MDSCR_SS);
    STEPPING.store(1, Ordering::Relaxed);
    // SAFETY: `stepped` ends with svc #0, which the hook turns into a return here.
    let r = unsafe { run_at(s, SPSR_EL1H | SPSR_SS, 10) };
    STEPPING.store(0, Ordering::Relaxed);
    msr!("mdscr_el1", MDSCR_MDE | MDSCR_KDE);
    println!("observe EL1 single step: {} result {}", seen(s), r);

    // EL0: the same code through the EL0 window: a breakpoint at its second instruction,
    // then single step.
    guest_rt::map_window_el0(info.ram_base);
    let s0 = el0(s, info.ram_base);
    reset_seen();
    breakpoint(s0 + 4, true);
    // SAFETY: as above, at EL0.
    let r = unsafe { run_at(s0, SPSR_EL0T, 20) };
    println!("observe EL0 breakpoint: {} result {}", seen(s0), r);
    reset_seen();
    msr!("mdscr_el1", MDSCR_MDE | MDSCR_KDE | MDSCR_SS);
    STEPPING.store(1, Ordering::Relaxed);
    // SAFETY: as above.
    let r = unsafe { run_at(s0, SPSR_EL0T | SPSR_SS, 30) };
    STEPPING.store(0, Ordering::Relaxed);
    msr!("mdscr_el1", 0);
    println!("observe EL0 single step: {} result {}", seen(s0), r);
    guest_rt::map_window(3 << 30);
    println!("debug exceptions taken by the guest");
    guest_rt::pass()
}

/// Two VMs on one CPU: each arms a breakpoint on its own function and waits (the other VM
/// runs); its breakpoint must still be its own, fire on its function only, and the other's
/// never fire here.
fn shared(info: &BootInfo) -> ! {
    let tag = info.arg("tag").unwrap_or(1);
    let rounds = info.arg("rounds").unwrap_or(50);
    let (mine, theirs) = if tag == 1 { (bp_target_a as *const () as u64, bp_target_b as *const () as u64) } else { (bp_target_b as *const () as u64, bp_target_a as *const () as u64) };
    gic::init_distributor();
    gic::init_cpu();
    gic::enable(27);
    msr!("oslar_el1", 0);
    msr!("mdscr_el1", MDSCR_MDE | MDSCR_KDE);
    // Breakpoint 1 stays on the other VM's function all along: it must never fire here
    // (the other VM arms breakpoint 0 on it).
    for round in 0..rounds {
        reset_seen();
        breakpoint(mine, false);
        let (now, freq) = counter();
        msr!("cntv_cval_el0", now + freq / 50);
        msr!("cntv_ctl_el0", 1);
        // SAFETY: waiting; the other VM runs meanwhile (or the timer ends the wait).
        unsafe { asm!("wfi", options(nomem, nostack)) };
        msr!("cntv_ctl_el0", 0);
        let intid = gic::ack();
        if intid < 1020 {
            gic::eoi(intid);
        }
        check_eq!(mrs!("dbgbvr0_el1"), mine, "breakpoint 0 after a wait in round {}", round);
        debug_exceptions(true);
        // SAFETY: leaf functions in this image.
        let (x, y) = unsafe { (bp_target_a(0), bp_target_b(0)) };
        debug_exceptions(false);
        check_eq!((x, y), (1, 2), "results in round {}", round);
        check_eq!(COUNT.load(Ordering::Relaxed), 1, "breakpoint hits in round {}", round);
        check_eq!(SEEN[0].load(Ordering::Relaxed) & 0xffff_ffff_ffff, mine, "the hit's address in round {}", round);
        let _ = theirs;
    }
    check!(rounds > 0, "rounds");
    println!("tag {}: own breakpoint kept across {} waits", tag, rounds);
    guest_rt::pass()
}

fn main(info: &BootInfo) -> ! {
    exceptions::on_sync(hook);
    if info.arg("share") == Some(1) {
        shared(info)
    } else {
        single_vm(info)
    }
}

guest_rt::guest_main!(main);
