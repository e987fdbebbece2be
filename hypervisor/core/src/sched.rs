//! The scheduler's choice of what a physical CPU runs next, among the vCPUs in its run
//! queue: round-robin from the one loaded now.

/// The entry to run next out of `n`, or None if none is runnable. The loaded entry (if
/// any) keeps the CPU unless `yield_current` asks for another runnable one first; the
/// others are tried in order after it, wrapping around, so that every runnable entry gets
/// its turn.
pub fn pick_next(n: usize, loaded: Option<usize>, yield_current: bool, runnable: impl Fn(usize) -> bool) -> Option<usize> {
    let start = match (loaded, yield_current) {
        (Some(l), true) => l + 1,
        (Some(l), false) => l,
        (None, _) => 0,
    };
    (0..n).map(|k| (start + k) % n).find(|&k| runnable(k))
}

/// Whether an entry other than the loaded one could run (someone is waiting for the CPU).
pub fn others_waiting(n: usize, loaded: Option<usize>, runnable: impl Fn(usize) -> bool) -> bool {
    (0..n).any(|k| Some(k) != loaded && runnable(k))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loaded_vcpu_keeps_the_cpu_unless_it_yields() {
        assert_eq!(pick_next(3, Some(1), false, |_| true), Some(1));
        assert_eq!(pick_next(3, Some(1), true, |_| true), Some(2));
        assert_eq!(pick_next(3, Some(2), true, |_| true), Some(0), "wraps around");
        // Yielding with nobody else runnable: the same one again.
        assert_eq!(pick_next(3, Some(1), true, |k| k == 1), Some(1));
    }

    #[test]
    fn round_robin_skips_what_cannot_run() {
        assert_eq!(pick_next(4, Some(0), true, |k| k == 3), Some(3));
        assert_eq!(pick_next(4, None, false, |k| k >= 2), Some(2));
        assert_eq!(pick_next(4, Some(1), false, |_| false), None);
        assert_eq!(pick_next(0, None, false, |_| true), None);
        // A loaded vCPU that cannot run hands over to the next one.
        assert_eq!(pick_next(3, Some(1), false, |k| k != 1), Some(2));
    }

    #[test]
    fn every_runnable_entry_gets_a_turn() {
        let (n, mut loaded, mut seen) = (5, None, [0u32; 5]);
        for _ in 0..50 {
            loaded = pick_next(n, loaded, true, |k| k != 2);
            seen[loaded.unwrap()] += 1;
        }
        assert_eq!(seen, [13, 13, 0, 12, 12], "0, then 1, 3, 4, 0, ... in turn");
    }

    #[test]
    fn others_waiting_ignores_the_loaded_one() {
        assert!(!others_waiting(1, Some(0), |_| true));
        assert!(others_waiting(2, Some(0), |_| true));
        assert!(!others_waiting(3, Some(0), |k| k == 0));
        assert!(others_waiting(3, None, |k| k == 0));
    }
}
