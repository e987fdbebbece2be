//! A trace subscriber for tests and debugging: the last [`CAPACITY`] notifier events of a
//! VM's stage-2, in order, printable.

use crate::notifier::{IpaRange, Notifier, Reason};
use core::fmt;
use spin::Mutex;

pub const CAPACITY: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Start(Reason),
    End(Reason),
    ClearYoung { young: bool },
    Release,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// Position in the VM's whole event history (0 = first).
    pub index: u64,
    pub kind: EventKind,
    pub range: IpaRange,
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{} ", self.index)?;
        match self.kind {
            EventKind::Start(r) => write!(f, "start {r:?}")?,
            EventKind::End(r) => write!(f, "end {r:?}")?,
            EventKind::ClearYoung { young } => write!(f, "clear_young ({})", if young { "young" } else { "old" })?,
            EventKind::Release => return f.write_str("release"),
        }
        write!(f, " {:#x}..{:#x}", self.range.start, self.range.end)
    }
}

struct Ring {
    events: [Option<Event>; CAPACITY],
    total: u64,
}

pub struct TraceRing {
    ring: Mutex<Ring>,
}

impl Default for TraceRing {
    fn default() -> Self {
        TraceRing::new()
    }
}

impl TraceRing {
    pub const fn new() -> TraceRing {
        TraceRing { ring: Mutex::new(Ring { events: [None; CAPACITY], total: 0 }) }
    }

    fn push(&self, kind: EventKind, range: IpaRange) {
        let mut r = self.ring.lock();
        let index = r.total;
        r.events[(index % CAPACITY as u64) as usize] = Some(Event { index, kind, range });
        r.total += 1;
    }

    /// Events recorded since creation (the ring keeps the last [`CAPACITY`]).
    pub fn total(&self) -> u64 {
        self.ring.lock().total
    }

    /// Calls `f` on the kept events, oldest first.
    pub fn for_each(&self, mut f: impl FnMut(&Event)) {
        let r = self.ring.lock();
        let first = r.total.saturating_sub(CAPACITY as u64);
        for i in first..r.total {
            if let Some(e) = &r.events[(i % CAPACITY as u64) as usize] {
                f(e);
            }
        }
    }
}

impl Notifier for TraceRing {
    fn invalidate_range_start(&self, range: IpaRange, why: Reason) {
        self.push(EventKind::Start(why), range);
    }
    fn invalidate_range_end(&self, range: IpaRange, why: Reason) {
        self.push(EventKind::End(why), range);
    }
    fn clear_young(&self, range: IpaRange) -> bool {
        self.push(EventKind::ClearYoung { young: false }, range);
        false
    }
    fn release(&self) {
        self.push(EventKind::Release, IpaRange { start: 0, end: 0 });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;
    use std::vec::Vec;

    #[test]
    fn keeps_the_last_events_in_order_and_prints_them() {
        let t = TraceRing::new();
        let r = IpaRange::new(0x4000_0000, 0x1000).unwrap();
        for _ in 0..40 {
            t.invalidate_range_start(r, Reason::Unmap);
            t.invalidate_range_end(r, Reason::Unmap);
        }
        t.release();
        assert_eq!(t.total(), 81);
        let mut seen = Vec::new();
        t.for_each(|e| seen.push(*e));
        assert_eq!(seen.len(), CAPACITY);
        assert_eq!(seen[0].index, 81 - CAPACITY as u64);
        assert!(seen.windows(2).all(|w| w[0].index + 1 == w[1].index));
        assert_eq!(seen[CAPACITY - 2].to_string(), "#79 end Unmap 0x40000000..0x40001000");
        assert_eq!(seen[CAPACITY - 1].to_string(), "#80 release");
    }
}
