//! The hypervisor's guest-physical -> host translation cache, a stage-2 notifier: whenever
//! the hypervisor reads or writes guest memory (hypercall buffers, device queues) it looks
//! the page up here before walking the tables.
//!
//! A stale hit is impossible: `invalidate_range_start` drops every entry in the range
//! before stage-2 breaks anything, fills happen under the table lock only when no
//! invalidation ran since the filler's snapshot ([`crate::stage2::Stage2::fill_secondary`]),
//! and an access runs under the cache lock, so an invalidation waits for an access that
//! found the entry to finish before the page can be freed.
//!
//! Each entry has a young bit, set by accesses and cleared by aging: the hypervisor's own
//! accesses keep a page warm, as a secondary MMU's do in Linux.

use crate::notifier::{IpaRange, Notifier, Reason};
use crate::pgtable::PAGE_SIZE;
use core::sync::atomic::{AtomicU64, Ordering};
use spin::Mutex;

/// Entries (direct-mapped by page number).
pub const ENTRIES: usize = 64;
const EMPTY: u64 = u64::MAX;

#[derive(Clone, Copy, Debug)]
struct Entry {
    /// Guest page number, or EMPTY.
    page: u64,
    /// Host address of the page.
    host: u64,
    writable: bool,
    young: bool,
}

const EMPTY_ENTRY: Entry = Entry { page: EMPTY, host: 0, writable: false, young: false };

#[derive(Debug, Default)]
pub struct CacheStats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    /// Entries dropped by invalidations.
    pub dropped: AtomicU64,
}

pub struct GpaCache {
    entries: Mutex<[Entry; ENTRIES]>,
    pub stats: CacheStats,
}

impl Default for GpaCache {
    fn default() -> Self {
        GpaCache::new()
    }
}

impl GpaCache {
    pub const fn new() -> GpaCache {
        GpaCache {
            entries: Mutex::new([EMPTY_ENTRY; ENTRIES]),
            stats: CacheStats { hits: AtomicU64::new(0), misses: AtomicU64::new(0), dropped: AtomicU64::new(0) },
        }
    }

    fn slot(page: u64) -> usize {
        page as usize % ENTRIES
    }

    /// On a hit, runs `f(host address of ipa)` under the cache lock. A write needs a
    /// writable entry. None on a miss.
    #[inline]
    pub fn with_hit<R>(&self, ipa: u64, write: bool, f: impl FnOnce(u64) -> R) -> Option<R> {
        let page = ipa / PAGE_SIZE;
        let mut entries = self.entries.lock();
        let e = &mut entries[Self::slot(page)];
        if e.page != page || (write && !e.writable) {
            self.stats.misses.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        e.young = true;
        self.stats.hits.fetch_add(1, Ordering::Relaxed);
        Some(f(e.host + ipa % PAGE_SIZE))
    }

    /// Installs the page holding `ipa` (call under the table lock, after the retry check)
    /// and runs `f` on it as [`GpaCache::with_hit`] would.
    pub fn fill_with<R>(&self, ipa: u64, host_page: u64, writable: bool, f: impl FnOnce(u64) -> R) -> R {
        let page = ipa / PAGE_SIZE;
        let mut entries = self.entries.lock();
        entries[Self::slot(page)] = Entry { page, host: host_page, writable, young: true };
        f(host_page + ipa % PAGE_SIZE)
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        self.entries.lock().iter().filter(|e| e.page != EMPTY).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn in_range(e: &Entry, r: &IpaRange) -> bool {
        e.page != EMPTY && r.overlaps(&IpaRange { start: e.page * PAGE_SIZE, end: e.page * PAGE_SIZE + PAGE_SIZE })
    }
}

impl Notifier for GpaCache {
    fn invalidate_range_start(&self, range: IpaRange, _: Reason) {
        let mut dropped = 0;
        for e in self.entries.lock().iter_mut().filter(|e| Self::in_range(e, &range)) {
            *e = EMPTY_ENTRY;
            dropped += 1;
        }
        self.stats.dropped.fetch_add(dropped, Ordering::Relaxed);
    }

    fn invalidate_range_end(&self, _: IpaRange, _: Reason) {}

    fn clear_young(&self, range: IpaRange) -> bool {
        let mut young = false;
        for e in self.entries.lock().iter_mut().filter(|e| Self::in_range(e, &range)) {
            young |= e.young;
            e.young = false;
        }
        young
    }

    fn test_young(&self, range: IpaRange) -> bool {
        self.entries.lock().iter().any(|e| Self::in_range(e, &range) && e.young)
    }

    fn release(&self) {
        *self.entries.lock() = [EMPTY_ENTRY; ENTRIES];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hits_misses_invalidation_and_young_state() {
        let c = GpaCache::new();
        assert_eq!(c.with_hit(0x4000_1008, false, |h| h), None);
        assert_eq!(c.fill_with(0x4000_1008, 0x9000_0000, false, |h| h), 0x9000_0008);
        assert_eq!(c.with_hit(0x4000_1ff0, false, |h| h), Some(0x9000_0ff0));
        assert_eq!(c.with_hit(0x4000_1ff0, true, |h| h), None, "read-only entry");
        let r = |s, n| IpaRange::new(s, n).unwrap();
        assert!(c.test_young(r(0x4000_1000, 0x1000)));
        assert!(c.clear_young(r(0x4000_0000, 0x10_0000)));
        assert!(!c.test_young(r(0x4000_0000, 0x10_0000)));
        c.with_hit(0x4000_1000, false, |_| ());
        assert!(c.test_young(r(0x4000_1000, 1)));
        // A neighbour's invalidation leaves it; its own drops it.
        c.invalidate_range_start(r(0x4000_2000, 0x1000), Reason::Unmap);
        assert_eq!(c.len(), 1);
        c.invalidate_range_start(r(0x4000_1fff, 2), Reason::Protect);
        assert_eq!((c.len(), c.stats.dropped.load(Ordering::Relaxed)), (0, 1));
        assert_eq!(c.with_hit(0x4000_1000, false, |h| h), None);
        c.fill_with(0x5000_0000, 0xa000_0000, true, |_| ());
        c.release();
        assert!(c.is_empty());
    }

    #[test]
    fn pages_sharing_a_slot_replace_each_other() {
        let c = GpaCache::new();
        c.fill_with(0, 0x1000_0000, true, |_| ());
        c.fill_with(ENTRIES as u64 * PAGE_SIZE, 0x2000_0000, true, |_| ());
        assert_eq!(c.with_hit(0, false, |h| h), None);
        assert_eq!(c.with_hit(ENTRIES as u64 * PAGE_SIZE + 4, true, |h| h), Some(0x2000_0004));
    }
}
