//! A budget of log messages per time window, so that a guest that misbehaves in a loop
//! cannot flood the hypervisor's console (and slow everything down with it).

#[derive(Clone, Debug)]
pub struct RateLimit {
    per_window: u32,
    window: u64,
    window_start: u64,
    used: u32,
    suppressed: u64,
}

/// What to do with one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Print it; `suppressed` messages were dropped since the last one printed.
    Print { suppressed: u64 },
    Drop,
}

impl RateLimit {
    /// At most `per_window` messages per `window` time units.
    pub const fn new(per_window: u32, window: u64) -> RateLimit {
        RateLimit { per_window, window, window_start: 0, used: 0, suppressed: 0 }
    }

    /// Decides on one message at time `now` (any monotonic unit, the same as `window`).
    pub fn check(&mut self, now: u64) -> Verdict {
        if now.wrapping_sub(self.window_start) >= self.window || now < self.window_start {
            self.window_start = now;
            self.used = 0;
        }
        if self.used < self.per_window {
            self.used += 1;
            let suppressed = core::mem::take(&mut self.suppressed);
            Verdict::Print { suppressed }
        } else {
            self.suppressed += 1;
            Verdict::Drop
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_a_budget_per_window_and_counts_the_rest() {
        let mut r = RateLimit::new(3, 100);
        assert_eq!(r.check(1000), Verdict::Print { suppressed: 0 });
        assert_eq!(r.check(1001), Verdict::Print { suppressed: 0 });
        assert_eq!(r.check(1002), Verdict::Print { suppressed: 0 });
        assert_eq!(r.check(1003), Verdict::Drop);
        assert_eq!(r.check(1050), Verdict::Drop);
        // A new window: the first message says how many were dropped.
        assert_eq!(r.check(1100), Verdict::Print { suppressed: 2 });
        assert_eq!(r.check(1101), Verdict::Print { suppressed: 0 });
    }

    #[test]
    fn a_clock_going_backwards_starts_a_new_window() {
        let mut r = RateLimit::new(1, 100);
        assert_eq!(r.check(500), Verdict::Print { suppressed: 0 });
        assert_eq!(r.check(10), Verdict::Print { suppressed: 0 });
    }
}
