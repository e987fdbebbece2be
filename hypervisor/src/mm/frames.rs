//! The physical frame allocator (buddy system, so multi-frame blocks are naturally aligned)
//! and the heap carved out of it.

use buddy_system_allocator::{FrameAllocator, LockedHeap};
use core::sync::atomic::{AtomicU64, Ordering};
use hv_core::pgtable::PAGE_SIZE;
use hv_core::pristine::Pristine;
use hv_core::ranges::Range;
use spin::Mutex;

static FRAMES: Mutex<FrameAllocator<32>> = Mutex::new(FrameAllocator::new());
static FREE_BYTES: AtomicU64 = AtomicU64::new(0);

#[global_allocator]
static HEAP: LockedHeap<32> = LockedHeap::empty();

/// Hands free RAM to the allocator.
pub fn add(free: &[Range]) {
    let mut f = FRAMES.lock();
    for r in free {
        f.add_frame((r.start / PAGE_SIZE) as usize, (r.end / PAGE_SIZE) as usize);
        FREE_BYTES.fetch_add(r.size(), Ordering::Relaxed);
    }
}

/// Frames known to hold zeros (`trust_zeroed`), or None: every frame is zeroed when asked.
static PRISTINE: Mutex<Option<Pristine>> = Mutex::new(None);

/// `pages` contiguous frames aligned to their size rounded up to a power of two.
/// Not zeroed.
pub fn alloc(pages: usize) -> Option<u64> {
    let pa = take(pages)?;
    if let Some(p) = PRISTINE.lock().as_mut() {
        let first = pa / PAGE_SIZE;
        p.take(first, first + pages.next_power_of_two() as u64);
    }
    Some(pa)
}

/// The frames of `alloc`, zeroed: those known to hold zeros already are left alone.
pub fn alloc_zeroed(pages: usize) -> Option<u64> {
    let pa = take(pages)?;
    let first = pa / PAGE_SIZE;
    let (pages, block) = (pages as u64, pages.next_power_of_two() as u64);
    for chunk in (0..pages).step_by(64) {
        let n = (pages - chunk).min(64);
        let known = PRISTINE.lock().as_mut().map_or(0, |p| p.take(first + chunk, first + chunk + n));
        // Runs of frames not known to be zero.
        let mut i = 0;
        while i < n {
            if known >> i & 1 != 0 {
                i += 1;
                continue;
            }
            let start = i;
            while i < n && known >> i & 1 == 0 {
                i += 1;
            }
            // SAFETY: the frames were just allocated to us, are identity-mapped read/write,
            // and nothing else refers to them.
            unsafe { crate::arch::zero(pa + (chunk + start) * PAGE_SIZE, (i - start) * PAGE_SIZE) };
        }
    }
    if let Some(p) = PRISTINE.lock().as_mut() {
        p.take(first + pages, first + block);
    }
    Some(pa)
}

/// The allocator's part of `alloc`.
fn take(pages: usize) -> Option<u64> {
    let frame = FRAMES.lock().alloc(pages)?;
    FREE_BYTES.fetch_sub(pages.next_power_of_two() as u64 * PAGE_SIZE, Ordering::Relaxed);
    Some(frame as u64 * PAGE_SIZE)
}

/// Set at every boot, in memory no image loads and nothing zeroes (`.noinit`): found set,
/// the machine was reset without its RAM being cleared (QEMU's system reset reloads the
/// images and keeps the rest).
#[link_section = ".noinit"]
static BOOTED: AtomicU64 = AtomicU64::new(0);
const BOOTED_MAGIC: u64 = 0x6876_2062_6f6f_7465;

/// Whether this is the machine's first boot since power-on (as far as `BOOTED` tells);
/// call once.
pub fn first_boot_since_power_on() -> bool {
    BOOTED.swap(BOOTED_MAGIC, Ordering::AcqRel) != BOOTED_MAGIC
}

/// The machine's RAM read as zero at power-on: the free frames at or above `above` (below
/// it, QEMU puts its boot code) that nobody has used (`used`: taken since `add`) hold zeros,
/// and `alloc_zeroed` leaves them alone until they are first handed out.
pub fn trust_zeroed(free: &[Range], used: &[Range], above: u64) {
    let (Some(lo), Some(hi)) = (free.iter().map(|r| r.start).min(), free.iter().map(|r| r.end).max()) else { return };
    let lo = lo.max(above);
    if lo >= hi {
        return;
    }
    let mut p = Pristine::new(lo / PAGE_SIZE, (hi - lo) / PAGE_SIZE);
    for r in free {
        p.mark(r.start.max(lo) / PAGE_SIZE, r.end / PAGE_SIZE);
    }
    for r in used {
        p.take(r.start / PAGE_SIZE, r.end.div_ceil(PAGE_SIZE));
    }
    *PRISTINE.lock() = Some(p);
}

/// Returns frames from `alloc` (same `pages`).
pub fn free(pa: u64, pages: usize) {
    FRAMES.lock().dealloc((pa / PAGE_SIZE) as usize, pages);
    FREE_BYTES.fetch_add(pages.next_power_of_two() as u64 * PAGE_SIZE, Ordering::Relaxed);
}

/// Returns a run of `pages` frames at `pa` that came from one or more `alloc`s (of
/// aligned power-of-two sizes, or pieces of them), as the largest aligned power-of-two
/// chunks it holds.
pub fn free_run(mut pa: u64, mut pages: usize) {
    while pages > 0 {
        let align = 1usize << ((pa / PAGE_SIZE).trailing_zeros().min(usize::BITS - 1));
        let chunk = align.min(1 << (usize::BITS - 1 - pages.leading_zeros()));
        free(pa, chunk);
        pa += chunk as u64 * PAGE_SIZE;
        pages -= chunk;
    }
}

pub fn free_bytes() -> u64 {
    FREE_BYTES.load(Ordering::Relaxed)
}

/// Bytes promised to VMs that populate their RAM lazily and not allocated yet: a VM that
/// was built can always get its pages (what is promised is not promised again).
static COMMITTED: AtomicU64 = AtomicU64::new(0);

/// Free memory nobody was promised.
pub fn uncommitted_bytes() -> u64 {
    free_bytes().saturating_sub(COMMITTED.load(Ordering::Acquire))
}

/// Promises `bytes` of the uncommitted memory; false if there is not that much.
pub fn commit(bytes: u64) -> bool {
    let mut current = COMMITTED.load(Ordering::Acquire);
    loop {
        if free_bytes().saturating_sub(current) < bytes {
            return false;
        }
        match COMMITTED.compare_exchange_weak(current, current + bytes, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return true,
            Err(now) => current = now,
        }
    }
}

/// Gives back a promise (`bytes` were allocated by its holder, or are no longer needed).
pub fn uncommit(bytes: u64) {
    let _ = COMMITTED.fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| Some(c.saturating_sub(bytes)));
}

/// A holder of a promise freed `bytes` it had allocated under it: they are its again.
pub fn recommit(bytes: u64) {
    COMMITTED.fetch_add(bytes, Ordering::AcqRel);
}

/// A small heap in BSS for what boot needs before frames are known (parsing results).
const BOOTSTRAP_HEAP: usize = 256 * 1024;

#[repr(C, align(4096))]
struct BootstrapHeap(core::cell::UnsafeCell<[u8; BOOTSTRAP_HEAP]>);
// SAFETY: handed to the heap allocator once, which serializes all use.
unsafe impl Sync for BootstrapHeap {}
static BOOTSTRAP: BootstrapHeap = BootstrapHeap(core::cell::UnsafeCell::new([0; BOOTSTRAP_HEAP]));

/// Gives the heap its bootstrap region. Call once, first thing on the boot CPU.
// Not inlined: as hv_main's first call it makes gdb's `break hv_main` stop in hv_main, not
// inside the heap lock's inlined atomic.
#[inline(never)]
pub fn init_bootstrap_heap() {
    // SAFETY: BOOTSTRAP is used by nothing but the heap, and this runs once before any
    // allocation.
    unsafe { HEAP.lock().init(BOOTSTRAP.0.get() as usize, BOOTSTRAP_HEAP) };
}

/// Adds `size` bytes of frames to the heap.
pub fn grow_heap(size: u64) -> Option<Range> {
    let pages = (size / PAGE_SIZE) as usize;
    let pa = alloc(pages)?;
    // SAFETY: the region was just taken from the frame allocator, so nothing else uses it,
    // and it is identity-mapped read/write.
    unsafe { HEAP.lock().add_to_heap(pa as usize, pa as usize + pages * PAGE_SIZE as usize) };
    Some(Range::new(pa, size))
}
