//! Stage-2 invalidation hooks, after Linux's MMU notifiers: whatever caches guest-physical
//! translations (the hypervisor's GPA -> host cache, access tracking, traces) registers a
//! [`Notifier`] with its VM and hears of every change that removes or weakens a mapping.
//!
//! Ordering (what [`Registry::invalidate`] guarantees):
//! 1. the invalidation is counted in progress ([`InvalidateSeq`]), under the table lock, so
//!    no fault path can install a translation of the old state from now on;
//! 2. every notifier's `invalidate_range_start` runs, before any entry is broken;
//! 3. the change itself runs under the table lock (break-before-make and TLB maintenance,
//!    by the caller);
//! 4. every notifier's `invalidate_range_end` runs, after the TLB maintenance completed;
//! 5. the sequence number moves on and the in-progress count drops, under the table lock.
//!
//! Nested and concurrent invalidations are allowed (the in-progress count is a count).
//! Registering and unregistering take the registry's write lock, so an unregistered
//! notifier is never called after `unregister` returns; callbacks must not register or
//! unregister themselves (they run under the read lock).
//!
//! The retry protocol of a fault path, or of any cache filled from stage-2 (KVM's
//! mmu_invalidate_retry): take [`InvalidateSeq::snapshot`] before preparing a mapping, then,
//! under the same table lock, install it only if [`InvalidateSeq::must_retry`] says no;
//! otherwise let the guest fault again. The lock is what makes it exact: counting the
//! invalidation in progress outside it would let a fill that checked just before slip in
//! after the notifiers dropped their entries.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};
use spin::{Mutex, RwLock};

/// A guest-physical range `[start, end)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IpaRange {
    pub start: u64,
    pub end: u64,
}

impl IpaRange {
    /// `[start, start + size)`, or None if it is empty or overflows.
    pub fn new(start: u64, size: u64) -> Option<IpaRange> {
        let end = start.checked_add(size)?;
        (size != 0).then_some(IpaRange { start, end })
    }

    pub fn overlaps(&self, other: &IpaRange) -> bool {
        self.start < other.end && other.start < self.end
    }
}

/// Why mappings change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Removed (a guest request, reclaim of cold pages).
    Unmap,
    /// Permissions reduced (write-protect).
    Protect,
    /// The VM is being torn down.
    Teardown,
}

/// A secondary cache of a VM's stage-2 translations.
pub trait Notifier: Send + Sync {
    fn invalidate_range_start(&self, range: IpaRange, reason: Reason);
    fn invalidate_range_end(&self, range: IpaRange, reason: Reason);
    /// Clears the young (accessed) state of `range`; whether any of it was young.
    fn clear_young(&self, _range: IpaRange) -> bool {
        false
    }
    /// Whether any of `range` is young, without changing it.
    fn test_young(&self, _range: IpaRange) -> bool {
        false
    }
    /// The VM goes away: drop everything.
    fn release(&self);
}

/// The invalidation sequence number and in-progress count of one VM.
#[derive(Debug, Default)]
pub struct InvalidateSeq {
    seq: AtomicU64,
    in_progress: AtomicU64,
}

impl InvalidateSeq {
    pub const fn new() -> InvalidateSeq {
        InvalidateSeq { seq: AtomicU64::new(0), in_progress: AtomicU64::new(0) }
    }

    /// An invalidation starts (before any notifier or entry is touched).
    pub fn begin(&self) {
        self.in_progress.fetch_add(1, Ordering::AcqRel);
    }

    /// An invalidation is complete (after the TLB maintenance and the notifiers' `end`).
    pub fn end(&self) {
        // The new sequence is visible before the count drops, so a fault path that sees
        // the count at zero also sees the sequence moved.
        self.seq.fetch_add(1, Ordering::AcqRel);
        self.in_progress.fetch_sub(1, Ordering::AcqRel);
    }

    /// Taken by a fault path before it looks anything up.
    pub fn snapshot(&self) -> u64 {
        self.seq.load(Ordering::Acquire)
    }

    /// Under the table lock, before installing what was prepared since `snapshot`: whether
    /// an invalidation ran or is running meanwhile (then the result may be stale).
    pub fn must_retry(&self, snapshot: u64) -> bool {
        self.in_progress.load(Ordering::Acquire) != 0 || self.seq.load(Ordering::Acquire) != snapshot
    }

    pub fn in_progress(&self) -> u64 {
        self.in_progress.load(Ordering::Acquire)
    }
}

/// Handle returned by [`Registry::register`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotifierId(u64);

/// One VM's notifiers and invalidation sequence.
#[derive(Default)]
pub struct Registry {
    notifiers: RwLock<Vec<(NotifierId, Arc<dyn Notifier>)>>,
    next_id: AtomicU64,
    pub seq: InvalidateSeq,
}

impl Registry {
    pub fn new() -> Registry {
        Registry::default()
    }

    pub fn register(&self, n: Arc<dyn Notifier>) -> NotifierId {
        let id = NotifierId(self.next_id.fetch_add(1, Ordering::Relaxed));
        self.notifiers.write().push((id, n));
        id
    }

    /// Removes a notifier; it is not called again once this returns. False if unknown.
    pub fn unregister(&self, id: NotifierId) -> bool {
        let mut list = self.notifiers.write();
        let before = list.len();
        list.retain(|(i, _)| *i != id);
        list.len() != before
    }

    pub fn len(&self) -> usize {
        self.notifiers.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Runs `change` (breaking entries and the TLB maintenance) on the table behind
    /// `table` (the lock fault paths install under) between the notifiers' start and end,
    /// in the order the module documentation gives.
    pub fn invalidate<T, R>(&self, table: &Mutex<T>, range: IpaRange, reason: Reason, change: impl FnOnce(&mut T) -> R) -> R {
        {
            let _t = table.lock();
            self.seq.begin();
        }
        let list = self.notifiers.read();
        for (_, n) in list.iter() {
            n.invalidate_range_start(range, reason);
        }
        let result = change(&mut table.lock());
        for (_, n) in list.iter() {
            n.invalidate_range_end(range, reason);
        }
        drop(list);
        let _t = table.lock();
        self.seq.end();
        result
    }

    /// Aging: clears the young state everywhere (`clear_stage2` clears the stage-2 access
    /// flags and says whether any was set); whether anything was young.
    pub fn clear_young(&self, range: IpaRange, clear_stage2: impl FnOnce() -> bool) -> bool {
        let mut young = clear_stage2();
        for (_, n) in self.notifiers.read().iter() {
            young |= n.clear_young(range);
        }
        young
    }

    pub fn test_young(&self, range: IpaRange) -> bool {
        self.notifiers.read().iter().any(|(_, n)| n.test_young(range))
    }

    /// The VM is torn down: every notifier releases what it holds and is dropped.
    pub fn release(&self) {
        let list = core::mem::take(&mut *self.notifiers.write());
        for (_, n) in list {
            n.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::String;
    use std::sync::atomic::AtomicBool;
    use std::sync::Mutex as StdMutex;
    use std::vec;

    /// Records calls as text, into a shared log with the change itself.
    struct Recorder {
        name: &'static str,
        log: Arc<Mutex<Vec<String>>>,
    }

    impl Notifier for Recorder {
        fn invalidate_range_start(&self, r: IpaRange, why: Reason) {
            self.log.lock().push(std::format!("{} start {:#x}..{:#x} {:?}", self.name, r.start, r.end, why));
        }
        fn invalidate_range_end(&self, r: IpaRange, why: Reason) {
            self.log.lock().push(std::format!("{} end {:#x}..{:#x} {:?}", self.name, r.start, r.end, why));
        }
        fn clear_young(&self, _: IpaRange) -> bool {
            self.log.lock().push(std::format!("{} clear_young", self.name));
            true
        }
        fn release(&self) {
            self.log.lock().push(std::format!("{} release", self.name));
        }
    }

    #[test]
    fn start_before_the_change_end_after() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let reg = Registry::new();
        reg.register(Arc::new(Recorder { name: "a", log: log.clone() }));
        let b = reg.register(Arc::new(Recorder { name: "b", log: log.clone() }));
        let range = IpaRange::new(0x4000_0000, 0x2000).unwrap();
        let table = Mutex::new(());
        let in_progress = reg.invalidate(&table, range, Reason::Unmap, |_| {
            log.lock().push("break + tlbi".into());
            reg.seq.in_progress()
        });
        assert_eq!(in_progress, 1);
        assert_eq!(reg.seq.in_progress(), 0);
        assert_eq!(
            *log.lock(),
            vec![
                "a start 0x40000000..0x40002000 Unmap",
                "b start 0x40000000..0x40002000 Unmap",
                "break + tlbi",
                "a end 0x40000000..0x40002000 Unmap",
                "b end 0x40000000..0x40002000 Unmap",
            ]
        );
        log.lock().clear();
        assert!(reg.unregister(b));
        assert!(!reg.unregister(b));
        assert!(reg.clear_young(range, || false));
        reg.release();
        assert!(reg.is_empty());
        assert_eq!(*log.lock(), vec!["a clear_young", "a release"]);
    }

    #[test]
    fn nested_invalidations_keep_fault_paths_out() {
        let reg = Registry::new();
        let snap = reg.seq.snapshot();
        let outer = IpaRange::new(0, 0x20_0000).unwrap();
        let (t1, t2) = (Mutex::new(()), Mutex::new(()));
        reg.invalidate(&t1, outer, Reason::Protect, |_| {
            reg.invalidate(&t2, IpaRange::new(0x1000, 0x1000).unwrap(), Reason::Unmap, |_| {
                assert_eq!(reg.seq.in_progress(), 2);
            });
            assert!(reg.seq.must_retry(reg.seq.snapshot()), "still in progress");
        });
        assert!(reg.seq.must_retry(snap), "sequence moved");
        assert!(!reg.seq.must_retry(reg.seq.snapshot()));
    }

    #[test]
    fn ranges() {
        assert_eq!(IpaRange::new(0, 0), None);
        assert_eq!(IpaRange::new(u64::MAX, 2), None);
        let a = IpaRange::new(0x1000, 0x1000).unwrap();
        assert!(a.overlaps(&IpaRange::new(0x1fff, 1).unwrap()));
        assert!(!a.overlaps(&IpaRange::new(0x2000, 1).unwrap()));
    }

    /// A secondary cache of one translation, filled by a racing "fault path" under the
    /// retry protocol: after every invalidation it must never hold the old translation.
    #[test]
    fn fault_path_racing_invalidations_never_installs_stale() {
        struct Cache {
            // (generation of the primary it was filled from) or u64::MAX when empty
            entry: StdMutex<u64>,
        }
        impl Notifier for Cache {
            fn invalidate_range_start(&self, _: IpaRange, _: Reason) {
                *self.entry.lock().unwrap() = u64::MAX;
            }
            fn invalidate_range_end(&self, _: IpaRange, _: Reason) {}
            fn release(&self) {}
        }
        let reg = Arc::new(Registry::new());
        let cache = Arc::new(Cache { entry: StdMutex::new(u64::MAX) });
        reg.register(cache.clone());
        // The primary: its generation, changed only inside invalidations, under this lock
        // (the table lock).
        let primary = Arc::new(Mutex::new(0u64));
        let stop = Arc::new(AtomicBool::new(false));
        let installed = Arc::new(AtomicU64::new(0));
        let retries = Arc::new(AtomicU64::new(0));
        let faults = {
            let (reg, cache, primary, stop, count, retry_count) =
                (reg.clone(), cache.clone(), primary.clone(), stop.clone(), installed.clone(), retries.clone());
            std::thread::spawn(move || {
                let (mut installed, mut retried) = (0u64, 0u64);
                while !stop.load(Ordering::Acquire) {
                    let snap = reg.seq.snapshot();
                    let seen = *primary.lock(); // look up, lock dropped: may go stale
                    std::thread::yield_now();
                    let table = primary.lock();
                    if reg.seq.must_retry(snap) {
                        retried += 1;
                        retry_count.store(retried, Ordering::Release);
                    } else {
                        *cache.entry.lock().unwrap() = seen;
                        installed += 1;
                        count.store(installed, Ordering::Release);
                    }
                    drop(table);
                }
                (installed, retried)
            })
        };
        let range = IpaRange::new(0, 0x1000).unwrap();
        // At least 20000 invalidations, and until the fault path got some installs through
        // (bounded: the assertion below reports a starved fault path).
        let started = std::time::Instant::now();
        let mut rounds = 0;
        while (rounds < 20_000 || installed.load(Ordering::Acquire) < 100 || retries.load(Ordering::Acquire) == 0)
            && started.elapsed().as_secs() < 20
        {
            rounds += 1;
            if rounds % 64 == 0 {
                std::thread::yield_now();
            }
            reg.invalidate(&primary, range, Reason::Unmap, |generation| {
                *generation += 1;
            });
            let table = primary.lock();
            let cached = *cache.entry.lock().unwrap();
            assert!(cached == u64::MAX || cached == *table, "stale entry {cached} after generation {}", *table);
            drop(table);
        }
        stop.store(true, Ordering::Release);
        let (installed, retried) = faults.join().unwrap();
        assert!(installed > 0 && retried > 0, "installed {installed}, retried {retried}");
    }
}
