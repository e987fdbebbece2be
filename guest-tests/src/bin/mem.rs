//! Stage-2 memory management seen from a guest: pages faulting in on first touch,
//! unmapping and refaulting (zeroed, or with their content under `refault=keep`),
//! write and execute protection, aging, reclaim, the hypervisor's translation cache seeing
//! every change, bad ranges refused, and two vCPUs faulting and invalidating the same pages
//! at once.
//!
//! Bootargs: `lazy=1` when the VM populates on first touch (`blocks=1`: in 2 MiB blocks),
//! `keep=1` when unmapped pages
//! keep their content, `rounds=N` for the concurrent part (default 3000).

#![no_std]
#![no_main]

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use guest_rt::exceptions::{probe_exec, probe_write};
use guest_rt::hvc::{self, mem};
use guest_rt::{check, check_eq, println, psci, BootInfo};
use hv_core::hypercall::{mem_perm, ret, Counter};
use hv_core::esr::ec;

const PAGE: u64 = 4096;
const MIB2: u64 = 2 << 20;

fn read(addr: u64) -> u64 {
    // SAFETY: `addr` is in this guest's RAM (identity-mapped), in a test region nothing
    // else of the program uses.
    unsafe { core::ptr::read_volatile(addr as *const u64) }
}

fn write(addr: u64, v: u64) {
    // SAFETY: as for `read`.
    unsafe { core::ptr::write_volatile(addr as *mut u64, v) }
}

fn count(c: Counter) -> u64 {
    hvc::counter(c)
}

/// `f` changes counter `c` by exactly `delta`.
macro_rules! check_delta {
    ($c:expr, $delta:expr, $what:expr, $body:block) => {{
        let before = count($c);
        let r = $body;
        check_eq!(count($c) - before, $delta, "{} after {}", $c.name(), $what);
        r
    }};
}

fn main(info: &BootInfo) -> ! {
    let lazy = info.arg("lazy") == Some(1);
    let blocks = lazy && info.arg("blocks") == Some(1);
    let keep = info.arg("keep") == Some(1);
    let rounds = info.arg("rounds").unwrap_or(3000);
    check!(info.vcpus >= 2, "needs 2 vCPUs");
    // Test regions: 2 MiB-aligned blocks below the device tree's slot (the last 2 MiB).
    let top = info.ram_base + info.ram_size - MIB2;
    let region = top - 4 * MIB2; // first touch, unmap, protect, aging, cache
    let reclaim_region = top - 2 * MIB2;
    let shared = top - MIB2; // the concurrent part
    println!("mem test: lazy={} blocks={} keep={} regions at {:#x}", lazy, blocks, keep, region);

    // 1. First touch: 64 fresh pages fault in (lazy: one by one, or all with the first
    // fault's 2 MiB block) or are already there (eager).
    KEEP.store(keep, Ordering::Release);
    let populated = count(Counter::PagesPopulated);
    check_delta!(Counter::Stage2Faults, if blocks { 1 } else if lazy { 64 } else { 0 }, "touching 64 fresh pages", {
        for i in 0..64 {
            check_eq!(read(region + i * PAGE), 0, "fresh page {} reads zero", i);
            write(region + i * PAGE, 0x1000 + i);
        }
    });
    check_eq!(count(Counter::PagesPopulated) - populated, if blocks { 512 } else if lazy { 64 } else { 0 }, "pages populated by the first touch");
    for i in 0..64 {
        check_eq!(read(region + i * PAGE), 0x1000 + i, "page {} keeps what was written", i);
    }
    println!("first touch: ok");

    // 2. Unmap one page and part of another range; they fault back zeroed or preserved.
    let p = region + 5 * PAGE;
    check_delta!(Counter::Invalidations, 1, "one unmap", {
        check_eq!(mem::unmap(p, PAGE), PAGE as i64, "unmap of a mapped page");
    });
    check_delta!(Counter::Stage2Faults, 1, "touching the unmapped page", {
        check_eq!(read(p), if keep { 0x1005 } else { 0 }, "unmapped page faults back {}", if keep { "with its content" } else { "zeroed" });
    });
    check_eq!(mem::unmap(region + 8 * PAGE, 4 * PAGE), 4 * PAGE as i64, "unmap of 4 pages");
    check_eq!(mem::unmap(region + 8 * PAGE, 4 * PAGE), 0, "unmapping them again finds nothing mapped");
    for i in 8..12 {
        check_eq!(read(region + i * PAGE), if keep { 0x1000 + i } else { 0 }, "page {} after unmap", i);
    }
    println!("unmap and refault: ok");

    // 3. Write protection: writes trap (an abort in the guest), reads work; lifting it
    // lets writes through. Execute protection likewise.
    let w = region + 20 * PAGE;
    check_eq!(mem::protect(w, PAGE, mem_perm::READ), PAGE as i64, "write-protect one page");
    let e = check_delta!(Counter::PermissionFaults, 1, "a write to the protected page", { probe_write(w, 0xbad) });
    match e {
        Err(e) => check_eq!(e.ec(), ec::DABT_CURRENT as u64, "a write to a read-only page gives a data abort"),
        Ok(()) => check!(false, "a write to a write-protected page went through"),
    }
    check_eq!(read(w), 0x1000 + 20, "the protected page kept its content");
    check_eq!(mem::protect(w, PAGE, mem_perm::READ | mem_perm::WRITE | mem_perm::EXEC), PAGE as i64, "unprotect");
    check!(probe_write(w, 0x600d).is_ok(), "a write after unprotect");
    check_eq!(read(w), 0x600d, "the write after unprotect landed");
    // A page holding `ret`: callable while executable, an instruction abort when not.
    let x = region + 21 * PAGE;
    write(x, 0xd65f_03c0); // ret
    // SAFETY: cache maintenance for code just written to a page of ours.
    unsafe { core::arch::asm!("dc cvau, {a}", "dsb ish", "ic ivau, {a}", "dsb ish", "isb", a = in(reg) x) };
    check!(probe_exec(x).is_none(), "code in an executable page runs");
    check_eq!(mem::protect(x, PAGE, mem_perm::READ | mem_perm::WRITE), PAGE as i64, "make a page non-executable");
    match probe_exec(x) {
        Some(e) => check_eq!(e.ec(), ec::IABT_CURRENT as u64, "a fetch from a non-executable page gives an instruction abort"),
        None => check!(false, "code in a non-executable page ran"),
    }
    println!("write and execute protection: ok");

    // 4. Aging, page by page (page 20 stays read-only so the block stays split into pages).
    check_eq!(mem::protect(w, PAGE, mem_perm::READ), PAGE as i64, "protect page 20 again");
    let aged = region + 32 * PAGE;
    let (young, _, _) = mem::age(aged, 8 * PAGE, false);
    check_eq!(young, 8, "all 8 pages were young (touched since mapped)");
    let (young, bitmap, _) = mem::age(aged, 8 * PAGE, true);
    check_eq!((young, bitmap), (0, 0), "nothing young right after aging");
    check_delta!(Counter::AccessFaults, 3, "touching 3 aged pages", {
        for i in [1u64, 3, 5] {
            read(aged + i * PAGE);
        }
    });
    let (young, bitmap, _) = mem::age(aged, 8 * PAGE, true);
    check_eq!((young, bitmap), (3, 0b10_1010), "the touched pages, and only they, are young");
    // The hypervisor's own reads (through its translation cache) count as accesses too.
    mem::age(aged, 8 * PAGE, false);
    check!(mem::peek(aged + 6 * PAGE).is_ok(), "peek");
    let (young, _, hyp) = mem::age(aged, 8 * PAGE, false);
    check!(young == 0 && hyp, "a page only the hypervisor read: stage-2 old ({}), its cache young ({})", young, hyp);
    let (_, _, hyp) = mem::age(aged, 8 * PAGE, false);
    check!(!hyp, "aging cleared the cache's young state");
    println!("aging: ok");

    // 5. The hypervisor's translation cache: hits, sees new content, is invalidated.
    let c = region + 40 * PAGE;
    write(c, 0x1111);
    check_eq!(mem::peek(c), Ok(0x1111), "first read through the cache");
    let hits = count(Counter::CacheHits);
    check_eq!(mem::peek(c), Ok(0x1111), "second read");
    check!(count(Counter::CacheHits) > hits, "the second read hit the cache");
    write(c, 0x2222);
    check_eq!(mem::peek(c), Ok(0x2222), "the cache reads the page's current content");
    check_delta!(Counter::CacheDropped, 1, "unmapping a cached page", {
        check_eq!(mem::unmap(c, PAGE), PAGE as i64, "unmap a cached page");
    });
    check_eq!(mem::peek(c), Ok(if keep { 0x2222 } else { 0 }), "a read after the unmap sees the page as it comes back");
    write(c, 0x3333);
    check_eq!(mem::peek(c), Ok(0x3333), "and the guest's writes after that");
    check_eq!(mem::protect(c, PAGE, mem_perm::READ), PAGE as i64, "protect a cached page");
    check_eq!(mem::peek(c), Ok(0x3333), "a read-only page is still readable by the hypervisor");
    check_eq!(mem::protect(c, PAGE, 0), PAGE as i64, "take every permission away");
    check_eq!(mem::peek(c), Err(ret::INVALID_ADDRESS), "nor does the hypervisor read a page the guest cannot");
    check!(guest_rt::exceptions::probe_read(c).is_err(), "a page without permissions faults on read");
    check_eq!(mem::protect(c, PAGE, mem_perm::READ | mem_perm::WRITE), PAGE as i64, "give them back");
    check_eq!(read(c), 0x3333, "content unchanged");
    println!("translation cache: ok");

    // 6. Reclaim: pages cold for one pass are unmapped; lazy VMs get their memory back.
    // The region's last page is made read-only so that its 2 MiB are mapped page by page
    // (a block ages as one).
    write(reclaim_region + MIB2 - PAGE, 1);
    check_eq!(mem::protect(reclaim_region + MIB2 - PAGE, PAGE, mem_perm::READ), PAGE as i64, "split the reclaim region");
    for i in 0..32 {
        write(reclaim_region + i * PAGE, 0x7000 + i);
    }
    check_eq!(mem::reclaim(reclaim_region, 32 * PAGE, 1), 0, "first pass: everything was young");
    for i in 0..16 {
        read(reclaim_region + i * PAGE);
    }
    let released = count(Counter::PagesReleased);
    check_eq!(mem::reclaim(reclaim_region, 32 * PAGE, 1), 16, "second pass: the 16 untouched pages are cold");
    let freed = count(Counter::PagesReleased) - released;
    check_eq!(freed, if lazy && !keep { 16 } else { 0 }, "pages whose memory went back");
    for i in 0..32 {
        let want = if keep || i < 16 { 0x7000 + i } else { 0 };
        check_eq!(read(reclaim_region + i * PAGE), want, "page {} after reclaim", i);
    }
    println!("reclaim: ok");

    // 7. Bad ranges are refused with an error, never more.
    let ram_end = info.ram_base + info.ram_size;
    check_eq!(mem::unmap(region + 1, PAGE), ret::INVALID_PARAMETERS, "misaligned address");
    check_eq!(mem::unmap(region, 100), ret::INVALID_PARAMETERS, "misaligned size");
    check_eq!(mem::unmap(region, 0), ret::INVALID_ADDRESS, "empty range");
    check_eq!(mem::unmap(0x1000, PAGE), ret::INVALID_ADDRESS, "below RAM");
    check_eq!(mem::unmap(ram_end, PAGE), ret::INVALID_ADDRESS, "just past RAM");
    check_eq!(mem::unmap(ram_end - PAGE, 2 * PAGE), ret::INVALID_ADDRESS, "straddling the end of RAM");
    check_eq!(mem::unmap(region, u64::MAX & !0xfff), ret::INVALID_ADDRESS, "overflowing size");
    check_eq!(mem::unmap(u64::MAX & !0xfff, PAGE), ret::INVALID_ADDRESS, "top of the address space");
    check_eq!(mem::protect(region, PAGE, mem_perm::WRITE), ret::INVALID_PARAMETERS, "write-only permissions");
    check_eq!(mem::protect(region, PAGE, 99), ret::INVALID_PARAMETERS, "unknown permission bits");
    check_eq!(mem::protect(0x0800_0000, PAGE, mem_perm::READ), ret::INVALID_ADDRESS, "protect a device range");
    check_eq!(mem::age(region, 1 << 40, false).0, ret::INVALID_ADDRESS, "aging a huge range");
    check_eq!(mem::reclaim(region, PAGE, 1000), ret::INVALID_PARAMETERS, "absurd pass count");
    check_eq!(mem::reclaim(ram_end, PAGE, 1), ret::INVALID_ADDRESS, "reclaim outside RAM");
    check_eq!(mem::peek(region + 4), Err(ret::INVALID_PARAMETERS), "misaligned peek");
    check_eq!(mem::peek(0x0900_0000), Err(ret::INVALID_ADDRESS), "peek at a device");
    println!("bad ranges refused: ok");

    // 8. Two vCPUs, the same pages: vCPU 1 writes and reads back, vCPU 0 unmaps, ages and
    // reads through the hypervisor's cache, for a bounded number of rounds.
    let retries = count(Counter::FaultRetries);
    check_eq!(guest_rt::start_vcpu(1, writer, shared), 0, "CPU_ON");
    let mut rng = hv_core::rng::Rng::new(0x9e37_79b9_7f4a_7c15);
    let mut unmapped = 0;
    for round in 0..rounds {
        let page = shared + rng.below(16) * PAGE;
        match round % 4 {
            0 | 1 => {
                let r = mem::unmap(page, PAGE);
                check!(r == 0 || r == PAGE as i64, "unmap during the race: {}", r);
                unmapped += (r > 0) as u64;
            }
            2 => check!(mem::age(shared, 16 * PAGE, false).0 >= 0, "aging during the race"),
            _ => {
                // What the hypervisor reads is something the writer wrote there, or zero.
                let v = mem::peek(page);
                check!(matches!(v, Ok(v) if v == 0 || v >> 32 == (page - shared) / PAGE + 1), "peek during the race: {:?}", v);
            }
        }
    }
    STOP.store(true, Ordering::Release);
    while !STOPPED.load(Ordering::Acquire) {
        core::hint::spin_loop();
    }
    check!(WRITER_ERRORS.load(Ordering::Acquire) == 0, "the writer saw {} wrong values", WRITER_ERRORS.load(Ordering::Acquire));
    println!(
        "concurrent: {} rounds, {} unmaps of mapped pages, {} writer checks, {} fault retries",
        rounds,
        unmapped,
        WRITER_CHECKS.load(Ordering::Acquire),
        count(Counter::FaultRetries) - retries
    );
    check!(unmapped > rounds / 8, "the race unmapped pages the writer used");
    println!("stage-2 trace events: {}", mem::trace());
    guest_rt::pass()
}

static STOP: AtomicBool = AtomicBool::new(false);
static STOPPED: AtomicBool = AtomicBool::new(false);
static WRITER_CHECKS: AtomicU64 = AtomicU64::new(0);
static WRITER_ERRORS: AtomicU64 = AtomicU64::new(0);
static KEEP: AtomicBool = AtomicBool::new(false);

/// Writes (page number + 1) << 32 | sequence into the shared pages and reads it back: the
/// read must give what was written, or zero when the page was unmapped in between (unless
/// unmapped pages keep their content, when it must always be what was written).
fn writer(_: usize, shared: u64) -> ! {
    let keep = KEEP.load(Ordering::Acquire);
    let mut seq = 0u64;
    while !STOP.load(Ordering::Acquire) {
        for i in 0..16 {
            seq += 1;
            let v = (i + 1) << 32 | (seq & 0xffff_ffff);
            let a = shared + i * PAGE;
            write(a, v);
            let r = read(a);
            if r != v && (keep || r != 0) {
                if WRITER_ERRORS.fetch_add(1, Ordering::AcqRel) < 4 {
                    println!("writer: page {} read {:#x} after writing {:#x}", i, r, v);
                }
            }
            WRITER_CHECKS.fetch_add(1, Ordering::Relaxed);
        }
    }
    STOPPED.store(true, Ordering::Release);
    psci::cpu_off()
}

guest_rt::guest_main!(main);
