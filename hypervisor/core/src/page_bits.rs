//! A set of numbered pages (or frames) in a fixed range, a bit each, changed and counted by
//! ranges a word at a time: which pages of a VM went back to the host, which frames are
//! known to hold zeros.

use alloc::vec::Vec;

pub struct PageBits {
    first: u64,
    end: u64,
    words: Vec<u64>,
}

impl PageBits {
    /// Pages `first..first + count`, none in the set.
    pub fn new(first: u64, count: u64) -> PageBits {
        PageBits { first, end: first.saturating_add(count), words: alloc::vec![0; count.div_ceil(64) as usize] }
    }

    pub fn contains(&self, page: u64) -> bool {
        (self.first..self.end).contains(&page) && self.words[((page - self.first) / 64) as usize] & 1 << ((page - self.first) % 64) != 0
    }

    /// Puts pages `first..end` (clipped to the range) in the set, or takes them out;
    /// returns how many changed.
    pub fn set(&mut self, first: u64, end: u64, value: bool) -> u64 {
        let mut changed = 0;
        for (i, m) in masks(self.first, self.end, first, end) {
            let w = &mut self.words[i];
            let flip = if value { m & !*w } else { m & *w };
            changed += flip.count_ones() as u64;
            *w ^= flip;
        }
        changed
    }

    /// How many of pages `first..end` are in the set.
    pub fn count(&self, first: u64, end: u64) -> u64 {
        masks(self.first, self.end, first, end).map(|(i, m)| (self.words[i] & m).count_ones() as u64).sum()
    }

    /// Which of pages `first..first + 64.min(end - first)` are in the set (bit i: page
    /// first + i).
    pub fn mask(&self, first: u64, end: u64) -> u64 {
        (first..end.min(first.saturating_add(64))).filter(|&p| self.contains(p)).fold(0, |m, p| m | 1 << (p - first))
    }
}

/// The words and bit masks of pages `first..end` clipped to a set of pages `lo..hi`.
fn masks(lo: u64, hi: u64, first: u64, end: u64) -> impl Iterator<Item = (usize, u64)> {
    let (mut at, end) = (first.max(lo), end.min(hi));
    core::iter::from_fn(move || {
        if at >= end {
            return None;
        }
        let (i, bit) = (((at - lo) / 64) as usize, (at - lo) % 64);
        let n = (64 - bit).min(end - at);
        at += n;
        Some((i, if n == 64 { u64::MAX } else { ((1u64 << n) - 1) << bit }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agrees_with_a_set_of_pages() {
        let mut p = PageBits::new(1000, 2000);
        let mut model = std::collections::BTreeSet::new();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..5000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let first = 900 + x % 2300;
            let end = first + (x >> 32) % 200;
            let inside = |p: &u64| (1000..3000).contains(p);
            match x % 3 {
                0 => {
                    let new = (first..end).filter(inside).filter(|p| !model.contains(p)).count() as u64;
                    assert_eq!(p.set(first, end, true), new);
                    model.extend((first..end).filter(inside));
                }
                1 => {
                    let gone = (first..end).filter(|p| model.contains(p)).count() as u64;
                    assert_eq!(p.set(first, end, false), gone);
                    (first..end).for_each(|f| {
                        model.remove(&f);
                    });
                }
                _ => {
                    assert_eq!(p.count(first, end), (first..end).filter(|p| model.contains(p)).count() as u64);
                    let want = (first..end.min(first + 64)).filter(|f| model.contains(f)).fold(0u64, |m, f| m | 1 << (f - first));
                    assert_eq!(p.mask(first, end), want);
                }
            }
        }
        assert!(!p.contains(999) && !p.contains(3000), "outside the range");
        assert_eq!(p.set(u64::MAX - 10, u64::MAX, true), 0);
        assert_eq!(PageBits::new(0, 0).set(0, 100, true), 0, "an empty range holds nothing");
    }
}
