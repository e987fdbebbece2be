//! Frames known to hold zeros: on a machine whose RAM reads as zero at power-on (QEMU's),
//! a frame nobody used since needs no zeroing before a guest gets it. Zeroing is what
//! populating guest RAM costs most under TCG (a 2 MiB block is 32,768 DC ZVAs, about a
//! millisecond), and it makes the host back memory the guest may never touch. A bit per
//! frame; any allocation takes the frames' bits away for good (a frame freed later holds
//! whatever its user left).

use crate::page_bits::PageBits;

pub struct Pristine(PageBits);

impl Pristine {
    /// Frames `first..first + count`, none known zero yet.
    pub fn new(first: u64, count: u64) -> Pristine {
        Pristine(PageBits::new(first, count))
    }

    /// Frames `first..end` (clipped to the map) hold zeros and nobody uses them.
    pub fn mark(&mut self, first: u64, end: u64) {
        self.0.set(first, end, true);
    }

    /// Frames `first..end` are handed out: returns the mask of those among
    /// `first..first + 64.min(end - first)` that were known zero (bit i: frame first + i),
    /// and forgets every one of `first..end`.
    pub fn take(&mut self, first: u64, end: u64) -> u64 {
        let known = self.0.mask(first, end);
        self.0.set(first, end, false);
        known
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_take_and_forget() {
        let mut p = Pristine::new(100, 300);
        assert_eq!(p.take(100, 164), 0, "nothing known at first");
        p.mark(110, 250);
        assert_eq!(p.take(108, 112), 0b1100);
        assert_eq!(p.take(108, 112), 0, "taken frames are forgotten");
        // A 2 MiB-sized take spanning words, its first 64 reported.
        assert_eq!(p.take(120, 120 + 512), u64::MAX);
        assert_eq!(p.take(120, 184), 0);
        // Outside the map: nothing, and no panic.
        p.mark(0, 1000);
        assert_eq!(p.take(0, 50), 0);
        assert_eq!(p.take(390, 460), 0b11_1111_1111);
        assert_eq!(p.take(u64::MAX - 10, u64::MAX), 0);
    }
}
