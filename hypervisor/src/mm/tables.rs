//! Translation tables in real frames: the `TableMemory` the page-table walker uses at EL2.

use super::frames;
use crate::arch::mmu;
use hv_core::pgtable::{TableMemory, PAGE_SIZE};

/// Whose TLB entries a table change must invalidate.
#[derive(Clone, Copy, Debug)]
pub enum TlbScope {
    /// The hypervisor's own EL2 stage-1 translations.
    El2,
    /// One VM's stage-2 translations (its VTTBR_EL2 value, VMID included).
    Stage2 { vttbr: u64 },
}

/// Table frames from the frame allocator, reached through the identity map.
pub struct FrameTables {
    pub scope: TlbScope,
}

impl TableMemory for FrameTables {
    fn alloc_zeroed(&mut self, pages: usize) -> Option<u64> {
        frames::alloc_zeroed(pages)
    }

    fn free(&mut self, pa: u64, pages: usize) {
        frames::free(pa, pages)
    }

    fn read(&self, table: u64, index: usize) -> u64 {
        // SAFETY: `table` is a table frame this walker allocated (identity-mapped), and
        // index < entries in it (the walker's invariant).
        unsafe { core::ptr::read_volatile((table as *const u64).add(index)) }
    }

    fn write(&mut self, table: u64, index: usize, desc: u64) {
        // SAFETY: as for `read`; a volatile aligned 64-bit store is single-copy atomic, so
        // a hardware walker sees either the old or the new descriptor.
        unsafe { core::ptr::write_volatile((table as *mut u64).add(index), desc) }
    }

    fn invalidate_tlb(&mut self, va: u64, size: u64) {
        match self.scope {
            TlbScope::El2 => mmu::invalidate_el2_range(va, size.max(PAGE_SIZE)),
            TlbScope::Stage2 { vttbr } => mmu::invalidate_stage2_range(vttbr, va, size.max(PAGE_SIZE)),
        }
    }
}
