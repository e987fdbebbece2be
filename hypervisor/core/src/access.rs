//! Access tracking for reclaim, a stage-2 notifier: how many aging passes in a row found
//! each guest page cold. Aging reports every leaf it cleared (young or not) through
//! [`AccessTracker::record`]; an unmap resets the pages it removed (a page that faults
//! back starts warm), so a page is reported cold only while it stays mapped.

use crate::notifier::{IpaRange, Notifier, Reason};
use crate::pgtable::PAGE_SIZE;
use alloc::vec;
use alloc::vec::Vec;
use spin::Mutex;

pub struct AccessTracker {
    base: u64,
    /// Consecutive cold aging passes per page, saturating.
    idle: Mutex<Vec<u8>>,
}

impl AccessTracker {
    /// Tracks `[base, base + size)` (guest RAM).
    pub fn new(base: u64, size: u64) -> AccessTracker {
        AccessTracker { base, idle: Mutex::new(vec![0; (size / PAGE_SIZE) as usize]) }
    }

    /// Page indices of `[start, end)` clipped to the tracked range.
    fn pages(&self, len: usize, start: u64, end: u64) -> core::ops::Range<usize> {
        let top = self.base + len as u64 * PAGE_SIZE;
        let (s, e) = (start.clamp(self.base, top), end.clamp(self.base, top));
        ((s - self.base) / PAGE_SIZE) as usize..((e - self.base).div_ceil(PAGE_SIZE)) as usize
    }

    /// An aging pass saw the leaf `[ipa, ipa + size)` young or not.
    pub fn record(&self, ipa: u64, size: u64, young: bool) {
        let mut idle = self.idle.lock();
        let range = self.pages(idle.len(), ipa, ipa.saturating_add(size));
        for i in &mut idle[range] {
            *i = if young { 0 } else { i.saturating_add(1) };
        }
    }

    /// Pages of `[ipa, ipa + size)` cold for at least `passes` aging passes, as runs
    /// `(start, bytes)`.
    pub fn cold_runs(&self, ipa: u64, size: u64, passes: u8) -> Vec<(u64, u64)> {
        let idle = self.idle.lock();
        let mut runs: Vec<(u64, u64)> = Vec::new();
        for i in self.pages(idle.len(), ipa, ipa.saturating_add(size)) {
            if passes == 0 || idle[i] < passes {
                continue;
            }
            let at = self.base + i as u64 * PAGE_SIZE;
            match runs.last_mut() {
                Some((s, n)) if *s + *n == at => *n += PAGE_SIZE,
                _ => runs.push((at, PAGE_SIZE)),
            }
        }
        runs
    }

    /// Cold passes of the page holding `ipa` (0 outside the tracked range).
    pub fn idle_passes(&self, ipa: u64) -> u8 {
        let idle = self.idle.lock();
        let r = self.pages(idle.len(), ipa & !(PAGE_SIZE - 1), (ipa & !(PAGE_SIZE - 1)) + PAGE_SIZE);
        idle.get(r.start).copied().filter(|_| !r.is_empty()).unwrap_or(0)
    }
}

impl Notifier for AccessTracker {
    fn invalidate_range_start(&self, _: IpaRange, _: Reason) {}

    /// After the pages are gone: they start over when they come back.
    fn invalidate_range_end(&self, range: IpaRange, why: Reason) {
        if why != Reason::Protect {
            let mut idle = self.idle.lock();
            let r = self.pages(idle.len(), range.start, range.end);
            idle[r].fill(0);
        }
    }

    fn release(&self) {
        self.idle.lock().fill(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cold_pages_are_found_after_enough_passes_and_unmap_resets_them() {
        let t = AccessTracker::new(0x4000_0000, 16 * PAGE_SIZE);
        for _ in 0..2 {
            t.record(0x4000_0000, 8 * PAGE_SIZE, false);
            t.record(0x4000_8000, 8 * PAGE_SIZE, true);
        }
        t.record(0x4000_2000, PAGE_SIZE, true);
        assert_eq!(t.cold_runs(0x4000_0000, 16 * PAGE_SIZE, 2), [(0x4000_0000, 0x2000), (0x4000_3000, 0x5000)]);
        assert_eq!(t.cold_runs(0x4000_0000, 16 * PAGE_SIZE, 3), []);
        assert_eq!(t.cold_runs(0x4000_0000, 16 * PAGE_SIZE, 0), [], "0 passes means nothing is cold");
        t.invalidate_range_end(IpaRange::new(0x4000_0000, 0x1000).unwrap(), Reason::Unmap);
        assert_eq!(t.idle_passes(0x4000_0000), 0);
        assert_eq!(t.idle_passes(0x4000_1234), 2);
        // Out-of-range leaves and queries are clipped, never out of bounds.
        t.record(0, u64::MAX, false);
        t.record(0x5000_0000, PAGE_SIZE, false);
        assert_eq!(t.idle_passes(0x3fff_f000), 0);
        assert_eq!(t.idle_passes(0x4001_0000), 0);
        assert_eq!(t.cold_runs(u64::MAX - 5, 100, 1), []);
    }
}
