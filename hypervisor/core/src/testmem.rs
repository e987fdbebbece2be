//! Table memory on the host for tests, which also checks break-before-make: a valid
//! descriptor may only be replaced by another valid one if they differ in permissions or
//! the access flag alone; otherwise the entry must be written invalid and a TLB
//! invalidation must follow before the new entry goes in.

use crate::pgtable::{TableMemory, PAGE_SIZE};
use std::collections::{BTreeMap, BTreeSet};
use std::vec::Vec;

/// Bits a live entry may change in place: S2AP / AP, XN, AF.
const IN_PLACE_BITS: u64 = 3 << 6 | 1 << 54 | 1 << 10;

#[derive(Default)]
pub struct Arena {
    pub frames: BTreeMap<u64, Vec<u64>>,
    next: u64,
    pub invalidations: Vec<(u64, u64)>,
    /// Entries written invalid since the last TLB invalidation.
    broken: BTreeSet<(u64, usize)>,
    pub bbm_violations: Vec<std::string::String>,
    pub allocs: u64,
    pub frees: u64,
}

impl Arena {
    fn slot(&self, table: u64, index: usize) -> (u64, usize) {
        (table + (index / 512) as u64 * PAGE_SIZE, index % 512)
    }

    /// Entries broken and never invalidated.
    pub fn uninvalidated(&self) -> usize {
        self.broken.len()
    }
}

impl TableMemory for Arena {
    fn alloc_zeroed(&mut self, pages: usize) -> Option<u64> {
        self.allocs += 1;
        let size = pages as u64 * PAGE_SIZE;
        let pa = (self.next + 0x1000_0000).next_multiple_of(size);
        self.next = pa + size - 0x1000_0000;
        for p in 0..pages as u64 {
            self.frames.insert(pa + p * PAGE_SIZE, std::vec![0; 512]);
        }
        Some(pa)
    }

    fn free(&mut self, pa: u64, pages: usize) {
        self.frees += 1;
        for p in 0..pages as u64 {
            let page = pa + p * PAGE_SIZE;
            assert!(self.frames.remove(&page).is_some(), "double free");
            self.broken.retain(|(t, _)| *t != page);
        }
    }

    fn read(&self, table: u64, index: usize) -> u64 {
        let (page, i) = self.slot(table, index);
        self.frames[&page][i]
    }

    fn write(&mut self, table: u64, index: usize, desc: u64) {
        let (page, i) = self.slot(table, index);
        let old = self.frames[&page][i];
        let (old_valid, new_valid) = (old & 1 != 0, desc & 1 != 0);
        if old_valid && new_valid && (old ^ desc) & !IN_PLACE_BITS != 0 {
            self.bbm_violations.push(std::format!("{page:#x}[{i}]: {old:#x} -> {desc:#x} without break"));
        }
        if new_valid && self.broken.contains(&(page, i)) {
            self.bbm_violations.push(std::format!("{page:#x}[{i}]: remade before the TLB invalidation"));
        }
        if old_valid && !new_valid {
            self.broken.insert((page, i));
        }
        self.frames.get_mut(&page).unwrap()[i] = desc;
    }

    fn invalidate_tlb(&mut self, va: u64, size: u64) {
        self.invalidations.push((va, size));
        self.broken.clear();
    }
}
