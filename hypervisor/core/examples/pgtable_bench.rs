//! Host throughput of the stage-2 table code (no TLB, no notifiers): 4 KiB map and unmap
//! operations per second over a 1 GiB range, and map+fold/unmap+split of 2 MiB runs.
//! Prints `BENCH <name> <value> <unit>` lines for scripts/bench.py.

use hv_core::pgtable::{Attrs, PageTable, Regime, TableMemory, PAGE_SIZE};
use std::time::Instant;

/// Table frames in a vector, addressed by index * 4 KiB from a fake base.
struct Frames {
    tables: Vec<[u64; 512]>,
    free: Vec<usize>,
}

const BASE: u64 = 0x100_0000_0000;

impl TableMemory for Frames {
    fn alloc_zeroed(&mut self, pages: usize) -> Option<u64> {
        if pages == 1 {
            if let Some(i) = self.free.pop() {
                self.tables[i] = [0; 512];
                return Some(BASE + i as u64 * PAGE_SIZE);
            }
        }
        // Multi-page roots: fresh, aligned to their size.
        while self.tables.len() % pages != 0 {
            self.free.push(self.tables.len());
            self.tables.push([0; 512]);
        }
        let first = self.tables.len();
        self.tables.extend(std::iter::repeat_n([0; 512], pages));
        Some(BASE + first as u64 * PAGE_SIZE)
    }
    fn free(&mut self, pa: u64, pages: usize) {
        let first = ((pa - BASE) / PAGE_SIZE) as usize;
        self.free.extend(first..first + pages);
    }
    fn read(&self, table: u64, index: usize) -> u64 {
        self.tables[((table - BASE) / PAGE_SIZE) as usize + index / 512][index % 512]
    }
    fn write(&mut self, table: u64, index: usize, desc: u64) {
        self.tables[((table - BASE) / PAGE_SIZE) as usize + index / 512][index % 512] = desc;
    }
    fn invalidate_tlb(&mut self, _: u64, _: u64) {}
}

fn main() {
    let mut m = Frames { tables: Vec::new(), free: Vec::new() };
    let mut t = PageTable::new(&mut m, Regime::Stage2, 40).unwrap();
    const PAGES: u64 = 1 << 18; // 1 GiB
    let ipa = 0x4000_0000;
    // Output addresses off by one page: no folding, pure 4 KiB work.
    let pa = 0x8_0000_1000;
    let mut ops = 0u64;
    let start = Instant::now();
    for _ in 0..4 {
        for i in 0..PAGES {
            t.map(&mut m, ipa + i * PAGE_SIZE, pa + i * PAGE_SIZE, PAGE_SIZE, Attrs::RAM_RW).unwrap();
        }
        for i in 0..PAGES {
            t.unmap(&mut m, ipa + i * PAGE_SIZE, PAGE_SIZE).unwrap();
        }
        ops += 2 * PAGES;
    }
    let secs = start.elapsed().as_secs_f64();
    println!("BENCH host_map_unmap_4k {} ops/s", (ops as f64 / secs) as u64);
    // Aligned output: the last page of each 2 MiB folds the table into a block; unmapping
    // its first page splits it again.
    let start = Instant::now();
    let runs = 2048u64;
    for r in 0..runs {
        let base = ipa + (r % 512) * (2 << 20);
        for i in 0..512 {
            t.map(&mut m, base + i * PAGE_SIZE, 0x8_0000_0000 + (r % 512) * (2 << 20) + i * PAGE_SIZE, PAGE_SIZE, Attrs::RAM_RW).unwrap();
        }
        assert_eq!(t.translate(&m, base).unwrap().size, 2 << 20, "folded");
        t.unmap(&mut m, base, 2 << 20).unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    println!("BENCH host_map_4k_with_fold {} ops/s", ((runs * 513) as f64 / secs) as u64);
}
