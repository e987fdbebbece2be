//! The physical frame allocator (buddy system, so multi-frame blocks are naturally aligned)
//! and the heap carved out of it.

use buddy_system_allocator::{FrameAllocator, LockedHeap};
use core::sync::atomic::{AtomicU64, Ordering};
use hv_core::pgtable::PAGE_SIZE;
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

/// `pages` contiguous frames aligned to their size rounded up to a power of two.
/// Not zeroed.
pub fn alloc(pages: usize) -> Option<u64> {
    let frame = FRAMES.lock().alloc(pages)?;
    FREE_BYTES.fetch_sub(pages.next_power_of_two() as u64 * PAGE_SIZE, Ordering::Relaxed);
    Some(frame as u64 * PAGE_SIZE)
}

pub fn alloc_zeroed(pages: usize) -> Option<u64> {
    let pa = alloc(pages)?;
    // SAFETY: the frames were just allocated to us, are identity-mapped read/write, and
    // nothing else refers to them.
    unsafe { crate::arch::zero(pa, pages as u64 * PAGE_SIZE) };
    Some(pa)
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
