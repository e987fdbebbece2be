//! Address ranges: carving reserved pieces out of RAM to find what is free.

use alloc::vec::Vec;

/// A half-open range [start, end).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Range {
    pub start: u64,
    pub end: u64,
}

impl Range {
    pub fn new(start: u64, size: u64) -> Range {
        Range { start, end: start.saturating_add(size) }
    }

    pub fn size(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    pub fn contains(&self, addr: u64) -> bool {
        self.start <= addr && addr < self.end
    }

    /// Whether `[start, start + size)` lies wholly inside this range (size 0 never does).
    pub fn contains_range(&self, start: u64, size: u64) -> bool {
        size != 0 && start >= self.start && start.checked_add(size).is_some_and(|end| end <= self.end)
    }

    pub fn overlaps(&self, other: &Range) -> bool {
        self.start < other.end && other.start < self.end
    }
}

/// `ram` minus every range in `reserved`, with each piece shrunk inwards to `align`
/// (a power of two) and empty pieces dropped. Sorted by address.
pub fn subtract(ram: &[Range], reserved: &[Range], align: u64) -> Vec<Range> {
    let mut free: Vec<Range> = ram.to_vec();
    for r in reserved {
        let mut next = Vec::with_capacity(free.len() + 1);
        for f in free {
            if !f.overlaps(r) {
                next.push(f);
                continue;
            }
            if f.start < r.start {
                next.push(Range { start: f.start, end: r.start });
            }
            if r.end < f.end {
                next.push(Range { start: r.end, end: f.end });
            }
        }
        free = next;
    }
    let mut out: Vec<Range> = free
        .into_iter()
        .filter_map(|f| {
            let start = f.start.checked_add(align - 1)? & !(align - 1);
            let end = f.end & !(align - 1);
            (start < end).then_some(Range { start, end })
        })
        .collect();
    out.sort();
    out
}

/// `ranges` grown outwards to `align` (a power of two), sorted, with overlapping and
/// touching ones merged: what to map when several devices share a page.
pub fn cover(ranges: &[Range], align: u64) -> Vec<Range> {
    let mut v: Vec<Range> = ranges
        .iter()
        .filter(|r| r.start < r.end)
        .map(|r| Range { start: r.start & !(align - 1), end: r.end.checked_add(align - 1).map_or(u64::MAX & !(align - 1), |e| e & !(align - 1)) })
        .collect();
    v.sort();
    let mut out: Vec<Range> = Vec::with_capacity(v.len());
    for r in v {
        match out.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carves_reservations_out_of_ram() {
        let ram = [Range::new(0x4000_0000, 0x4000_0000)];
        let reserved = [
            Range::new(0x4020_0000, 0x20_0000),  // image
            Range::new(0x4800_0000, 0x1234),     // device tree, not page sized
            Range::new(0x3000_0000, 0x1000),     // outside RAM: ignored
            Range::new(0x7fff_f000, 0x2000),     // overlapping the end
        ];
        let free = subtract(&ram, &reserved, 0x1000);
        assert_eq!(
            free,
            [
                Range { start: 0x4000_0000, end: 0x4020_0000 },
                Range { start: 0x4040_0000, end: 0x4800_0000 },
                Range { start: 0x4800_2000, end: 0x7fff_f000 },
            ]
        );
    }

    #[test]
    fn drops_pieces_smaller_than_the_alignment() {
        let free = subtract(&[Range::new(0x1000, 0x3000)], &[Range::new(0x1800, 0x1000)], 0x1000);
        assert_eq!(free, [Range { start: 0x3000, end: 0x4000 }]);
        assert!(subtract(&[Range::new(0, 0x1000)], &[Range::new(0, 0x1000)], 0x1000).is_empty());
    }

    #[test]
    fn cover_merges_devices_sharing_pages() {
        let virtio: Vec<Range> = (0..32).map(|n| Range::new(0x0a00_0000 + n * 0x200, 0x200)).collect();
        let mut all = virtio.clone();
        all.push(Range::new(0x0900_0000, 0x1000));
        all.push(Range::new(0x0901_0000, 0x1000));
        all.push(Range::new(0x0900_0800, 0x10));
        assert_eq!(
            cover(&all, 0x1000),
            [
                Range { start: 0x0900_0000, end: 0x0900_1000 },
                Range { start: 0x0901_0000, end: 0x0901_1000 },
                Range { start: 0x0a00_0000, end: 0x0a00_4000 },
            ]
        );
        assert_eq!(cover(&[Range::new(u64::MAX - 10, 5)], 0x1000), [Range { start: u64::MAX & !0xfff, end: u64::MAX & !0xfff }]);
    }

    #[test]
    fn containment_handles_overflow() {
        let r = Range::new(0x4000_0000, 0x1000);
        assert!(r.contains_range(0x4000_0000, 0x1000));
        assert!(!r.contains_range(0x4000_0000, 0x1001));
        assert!(!r.contains_range(0x4000_0fff, u64::MAX));
        assert!(!r.contains_range(0x4000_0000, 0));
    }
}
