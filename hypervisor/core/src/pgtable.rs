//! One 4 KiB-granule translation-table walker for both regimes the hypervisor builds:
//! its own EL2 stage-1 tables and each VM's stage-2 tables.
//!
//! One walk ([`PageTable::walk`]) owns the traversal of a range; every operation (map,
//! unmap, protect, aging, teardown) is a visitor of it with callbacks for leaves and for
//! table entries before and after the walk descends (as Linux KVM's arm64 pgtable.c does):
//! a visitor owns one decision, helpers shared by visitors do block splitting and folding
//! with break-before-make. What differs between regimes is only how attributes are encoded
//! in a leaf descriptor ([`Regime`]). Table memory is reached through [`TableMemory`], so the
//! same code runs on real frames at EL2 and on an arena in host tests.

pub const PAGE_SIZE: u64 = 4096;
const ENTRIES_PER_TABLE: usize = 512;
const DESC_VALID: u64 = 1 << 0;
const DESC_TABLE_OR_PAGE: u64 = 1 << 1;
/// Output address bits [47:12] of any descriptor.
const OA_MASK: u64 = 0x0000_ffff_ffff_f000;
const AF: u64 = 1 << 10;
const SH_INNER: u64 = 3 << 8;
const XN: u64 = 1 << 54;
/// Stage-2 MemAttr[5:2] / stage-1 AttrIndx[4:2] and shareability: a change here needs
/// break-before-make.
const MEMATTR_MASK: u64 = 0xf << 2 | 3 << 8;

/// Attribute bits of a leaf descriptor, access flag excluded.
fn leaf_bits(desc: u64) -> u64 {
    desc & !(OA_MASK | DESC_VALID | DESC_TABLE_OR_PAGE | AF)
}

/// Which translation regime the descriptors are for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Regime {
    /// A VM's stage-2 (IPA -> PA) tables, HCR_EL2.FWB clear.
    Stage2,
    /// The hypervisor's own EL2 stage-1 tables (HCR_EL2.E2H clear), MAIR_EL2 as in [`mair`].
    El2,
}

/// MAIR_EL2 index of each memory type used in EL2 stage-1 descriptors.
pub mod mair {
    /// Attr0: normal memory, inner/outer write-back, read/write-allocate.
    pub const NORMAL_INDEX: u64 = 0;
    /// Attr1: Device-nGnRE.
    pub const DEVICE_INDEX: u64 = 1;
    /// The MAIR_EL2 value matching the indices above.
    pub const VALUE: u64 = 0xff | (0x04 << 8);
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemType {
    Normal,
    Device,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attrs {
    pub mem: MemType,
    pub read: bool,
    pub write: bool,
    pub exec: bool,
}

impl Attrs {
    pub const RAM_RWX: Attrs = Attrs { mem: MemType::Normal, read: true, write: true, exec: true };
    pub const RAM_RW: Attrs = Attrs { mem: MemType::Normal, read: true, write: true, exec: false };
    pub const RAM_RX: Attrs = Attrs { mem: MemType::Normal, read: true, write: false, exec: true };
    pub const RAM_RO: Attrs = Attrs { mem: MemType::Normal, read: true, write: false, exec: false };
    pub const DEVICE_RW: Attrs = Attrs { mem: MemType::Device, read: true, write: true, exec: false };
}

impl Regime {
    /// Attribute bits of a leaf (everything but the type bits and the output address).
    fn leaf_attrs(self, a: Attrs) -> u64 {
        // Device memory is never executable, whatever was asked.
        let xn = if a.exec && a.mem == MemType::Normal { 0 } else { XN };
        match self {
            Regime::Stage2 => {
                let memattr: u64 = match a.mem {
                    MemType::Normal => 0xf, // outer WB, inner WB
                    MemType::Device => 0x1, // Device-nGnRE
                };
                let s2ap = (a.read as u64) << 6 | (a.write as u64) << 7;
                let sh = if a.mem == MemType::Normal { SH_INNER } else { 0 };
                memattr << 2 | s2ap | sh | AF | xn
            }
            Regime::El2 => {
                let idx = match a.mem {
                    MemType::Normal => mair::NORMAL_INDEX,
                    MemType::Device => mair::DEVICE_INDEX,
                };
                // AP[1] is RES1 at EL2; AP[2] set means read-only.
                let ap: u64 = if a.write { 0b01 } else { 0b11 };
                let sh = if a.mem == MemType::Normal { SH_INNER } else { 0 };
                idx << 2 | ap << 6 | sh | AF | xn
            }
        }
    }

    fn decode_attrs(self, desc: u64) -> Attrs {
        let exec = desc & XN == 0;
        match self {
            Regime::Stage2 => Attrs {
                mem: if (desc >> 2) & 0xf == 0xf { MemType::Normal } else { MemType::Device },
                read: desc & (1 << 6) != 0,
                write: desc & (1 << 7) != 0,
                exec,
            },
            Regime::El2 => Attrs {
                mem: if (desc >> 2) & 7 == mair::NORMAL_INDEX { MemType::Normal } else { MemType::Device },
                read: true,
                write: desc & (1 << 7) == 0,
                exec,
            },
        }
    }
}

/// Where table frames come from and how they are read and written.
pub trait TableMemory {
    /// `pages` zeroed, contiguous 4 KiB frames aligned to their total size; their physical address.
    fn alloc_zeroed(&mut self, pages: usize) -> Option<u64>;
    /// Returns frames obtained from `alloc_zeroed`.
    fn free(&mut self, pa: u64, pages: usize);
    fn read(&self, table: u64, index: usize) -> u64;
    /// A single-copy-atomic store of one descriptor.
    fn write(&mut self, table: u64, index: usize, desc: u64);
    /// A valid entry translating `[va, va + size)` was just invalidated: remove it from
    /// every TLB that may hold it before anything else is written there (break-before-make).
    fn invalidate_tlb(&mut self, va: u64, size: u64);
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// An address or size is not a multiple of 4 KiB.
    Misaligned,
    /// The range reaches beyond the table's input address size.
    OutOfRange,
    /// Part of the range is already mapped.
    AlreadyMapped,
    /// No frame for a table.
    NoMemory,
    /// The input address size cannot be expressed with a 4 KiB granule here.
    UnsupportedSize,
}

/// Bits of input address resolved below `level` (the size one entry at that level covers).
const fn entry_shift(level: u8) -> u32 {
    12 + 9 * (3 - level as u32)
}

/// The level a walk of `va_bits` input bits starts at (for VTCR_EL2.SL0). Stage-2 roots may
/// be made of concatenated tables: up to 16 at level 2 (34 bits), up to 8 at level 1 (42
/// bits); stage-1 roots cannot. The later the start, the shorter every walk.
pub fn start_level(regime: Regime, va_bits: u8) -> Option<u8> {
    let max_l1 = match regime {
        Regime::Stage2 => 42,
        Regime::El2 => 39,
    };
    match va_bits {
        32..=34 if regime == Regime::Stage2 => Some(2),
        32..=48 if va_bits <= max_l1 => Some(1),
        32..=48 => Some(0),
        _ => None,
    }
}

/// One table entry a range touches: its index, the address the entry starts translating
/// at, and the part of the range inside it (`[va, va + chunk)`).
#[derive(Clone, Copy)]
struct Step {
    idx: usize,
    entry_va: u64,
    va: u64,
    chunk: u64,
}

/// The steps of a range through one table ([`PageTable::steps`]).
struct Steps {
    shift: u32,
    index_mask: usize,
    va: u64,
    end: u64,
}

impl Iterator for Steps {
    type Item = Step;

    fn next(&mut self) -> Option<Step> {
        if self.va >= self.end {
            return None;
        }
        let block = 1u64 << self.shift;
        let entry_va = self.va & !(block - 1);
        let chunk = (self.end - self.va).min(block - (self.va - entry_va));
        let step = Step { idx: ((self.va >> self.shift) as usize) & self.index_mask, entry_va, va: self.va, chunk };
        self.va += chunk;
        Some(step)
    }
}

/// The type bits of a leaf at `level`: a page at level 3, a block above.
fn leaf_type(level: u8) -> u64 {
    if level == 3 { DESC_VALID | DESC_TABLE_OR_PAGE } else { DESC_VALID }
}

/// One entry the walk reached, as a visitor sees it.
struct Entry {
    level: u8,
    /// The table holding the entry, and its index there.
    table: u64,
    idx: usize,
    /// What the entry translates: `[entry_va, entry_va + size)`.
    entry_va: u64,
    size: u64,
    /// The part of the walked range inside it: `[va, va + chunk)`.
    va: u64,
    chunk: u64,
    desc: u64,
}

impl Entry {
    fn is_table(&self) -> bool {
        self.level < 3 && self.desc & (DESC_VALID | DESC_TABLE_OR_PAGE) == DESC_VALID | DESC_TABLE_OR_PAGE
    }

    /// The walked range covers the whole entry.
    fn covered(&self) -> bool {
        self.chunk == self.size
    }
}

/// One operation on the tables, as callbacks of the walk ([`PageTable::walk`]).
trait Visitor<M: TableMemory> {
    /// Whether empty entries are visited as leaves too (to fill them).
    const INVALID: bool = false;

    /// A valid leaf (page or block), or an empty entry if `INVALID`. Returns the entry as
    /// it left it (a table is then descended into).
    fn leaf(&mut self, pt: &mut PageTable, mem: &mut M, e: &Entry) -> Result<u64, MapError>;

    /// A table entry, before the walk descends into it. Returns the entry as it left it
    /// (no longer a table: nothing to descend into).
    fn table_pre(&mut self, _pt: &mut PageTable, _mem: &mut M, e: &Entry) -> Result<u64, MapError> {
        Ok(e.desc)
    }

    /// A table entry, after the walk came back from it.
    fn table_post(&mut self, _pt: &mut PageTable, _mem: &mut M, _e: &Entry) -> Result<(), MapError> {
        Ok(())
    }
}

/// Stops at the first valid leaf: AlreadyMapped.
struct AnyLeaf;

impl<M: TableMemory> Visitor<M> for AnyLeaf {
    fn leaf(&mut self, _: &mut PageTable, _: &mut M, _: &Entry) -> Result<u64, MapError> {
        Err(MapError::AlreadyMapped)
    }
}

/// Fills empty entries: a leaf where the entry is wholly covered and the output address
/// aligned for it (a page, or a 2 MiB or 1 GiB block), else a new table to descend into;
/// folds tables that became uniform on the way back.
struct Map {
    va: u64,
    pa: u64,
    /// Attribute bits of the new leaves.
    leaf: u64,
}

impl<M: TableMemory> Visitor<M> for Map {
    const INVALID: bool = true;

    fn leaf(&mut self, pt: &mut PageTable, mem: &mut M, e: &Entry) -> Result<u64, MapError> {
        if e.desc & DESC_VALID != 0 {
            return Err(MapError::AlreadyMapped);
        }
        let pa = self.pa + (e.va - self.va);
        let desc = if e.level == 3 || (!pt.pages_only && e.level >= 1 && e.covered() && pa & (e.size - 1) == 0) {
            self.leaf | (pa & OA_MASK) | leaf_type(e.level)
        } else {
            let t = mem.alloc_zeroed(1).ok_or(MapError::NoMemory)?;
            pt.tables += 1;
            t | DESC_VALID | DESC_TABLE_OR_PAGE
        };
        mem.write(e.table, e.idx, desc);
        Ok(desc)
    }

    fn table_post(&mut self, pt: &mut PageTable, mem: &mut M, e: &Entry) -> Result<(), MapError> {
        pt.try_fold(mem, e);
        Ok(())
    }
}

/// Removes what the range covers: a wholly covered entry is broken, invalidated and its
/// memory (or subtree) given back; a partly covered block is split first; a table left
/// empty is freed on the way back.
struct Unmap<'a> {
    gone: &'a mut dyn FnMut(u64, u64, u64),
    bytes: u64,
}

impl<M: TableMemory> Visitor<M> for Unmap<'_> {
    fn leaf(&mut self, pt: &mut PageTable, mem: &mut M, e: &Entry) -> Result<u64, MapError> {
        if !e.covered() {
            return pt.split_block(mem, e);
        }
        mem.write(e.table, e.idx, 0);
        mem.invalidate_tlb(e.entry_va, e.size);
        (self.gone)(e.entry_va, e.desc & OA_MASK, e.size);
        self.bytes += e.size;
        Ok(0)
    }

    fn table_pre(&mut self, pt: &mut PageTable, mem: &mut M, e: &Entry) -> Result<u64, MapError> {
        if !e.covered() {
            return Ok(e.desc);
        }
        // The whole table goes: break it once, then free what hung below.
        mem.write(e.table, e.idx, 0);
        mem.invalidate_tlb(e.entry_va, e.size);
        self.bytes += pt.free_subtree(mem, e, self.gone);
        Ok(0)
    }

    fn table_post(&mut self, pt: &mut PageTable, mem: &mut M, e: &Entry) -> Result<(), MapError> {
        // Empty now? Looked for from where the range ended: a neighbour of what was just
        // removed is the likeliest entry still valid.
        let child = e.desc & OA_MASK;
        let from = pt.index(e.level + 1, e.va + e.chunk - 1);
        if (0..ENTRIES_PER_TABLE).all(|k| mem.read(child, (from + k) % ENTRIES_PER_TABLE) & DESC_VALID == 0) {
            mem.write(e.table, e.idx, 0);
            mem.invalidate_tlb(e.entry_va, e.size);
            mem.free(child, 1);
            pt.tables -= 1;
        }
        Ok(())
    }
}

/// Hands every leaf of a detached subtree to `gone` and frees its tables (no TLB
/// maintenance: nothing can walk it any more).
struct Teardown<'a> {
    gone: &'a mut dyn FnMut(u64, u64, u64),
    bytes: u64,
}

impl<M: TableMemory> Visitor<M> for Teardown<'_> {
    fn leaf(&mut self, _: &mut PageTable, _: &mut M, e: &Entry) -> Result<u64, MapError> {
        (self.gone)(e.entry_va, e.desc & OA_MASK, e.size);
        self.bytes += e.size;
        Ok(e.desc)
    }

    fn table_post(&mut self, pt: &mut PageTable, mem: &mut M, e: &Entry) -> Result<(), MapError> {
        mem.free(e.desc & OA_MASK, 1);
        pt.tables -= 1;
        Ok(())
    }
}

/// New attributes for what the range maps: a wholly covered leaf is rewritten (in place
/// for permissions, break-before-make for the memory type) and invalidated; a partly
/// covered block that would change is split first; tables that became uniform are folded.
struct Protect {
    leaf: u64,
    changed: u64,
    /// The range of leaves whose permissions changed in place, invalidated once at the end
    /// (a region made read-only for dirty tracking is hundreds of pages: one invalidation,
    /// not one per page).
    stale: Option<(u64, u64)>,
}

impl<M: TableMemory> Visitor<M> for Protect {
    fn leaf(&mut self, pt: &mut PageTable, mem: &mut M, e: &Entry) -> Result<u64, MapError> {
        if !e.covered() {
            return if leaf_bits(e.desc) != self.leaf { pt.split_block(mem, e) } else { Ok(e.desc) };
        }
        // Keep the output address, type bits and the access flag; replace the rest.
        let new = e.desc & (OA_MASK | DESC_VALID | DESC_TABLE_OR_PAGE | AF) | self.leaf;
        if new != e.desc {
            if (new ^ e.desc) & MEMATTR_MASK != 0 {
                mem.write(e.table, e.idx, 0);
                mem.invalidate_tlb(e.entry_va, e.size);
                mem.write(e.table, e.idx, new);
            } else {
                mem.write(e.table, e.idx, new);
                let (lo, hi) = self.stale.unwrap_or((e.entry_va, e.entry_va + e.size));
                self.stale = Some((lo.min(e.entry_va), hi.max(e.entry_va + e.size)));
            }
            self.changed += e.size;
        }
        Ok(new)
    }

    fn table_post(&mut self, pt: &mut PageTable, mem: &mut M, e: &Entry) -> Result<(), MapError> {
        pt.try_fold(mem, e);
        Ok(())
    }
}

/// Rewrites every leaf the range touches (a block whole) with `f(leaf_va, leaf_size, desc)`,
/// in place: for changes that need no break-before-make (the access flag), or none at all
/// (reading); the caller does any TLB maintenance. Tables that became uniform are folded.
struct Update<F: FnMut(u64, u64, u64) -> u64>(F);

impl<M: TableMemory, F: FnMut(u64, u64, u64) -> u64> Visitor<M> for Update<F> {
    fn leaf(&mut self, _: &mut PageTable, mem: &mut M, e: &Entry) -> Result<u64, MapError> {
        let new = (self.0)(e.entry_va, e.size, e.desc);
        if new != e.desc {
            mem.write(e.table, e.idx, new);
        }
        Ok(new)
    }

    fn table_post(&mut self, pt: &mut PageTable, mem: &mut M, e: &Entry) -> Result<(), MapError> {
        pt.try_fold(mem, e);
        Ok(())
    }
}

/// A translation table tree. It does not own its memory: pass the same [`TableMemory`] to
/// every call, and call [`PageTable::destroy`] to give the frames back.
#[derive(Debug)]
pub struct PageTable {
    regime: Regime,
    root: u64,
    root_pages: usize,
    start_level: u8,
    va_bits: u8,
    tables: usize,
    /// Leaves are 4 KiB pages only: no blocks are made or folded (`set_pages_only`).
    pages_only: bool,
}

/// A last-level table and the 2 MiB of input addresses it translates (by number), for
/// [`PageTable::translate_near`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeafTable {
    region: u64,
    table: u64,
}

/// The result of a successful translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    pub pa: u64,
    pub attrs: Attrs,
    /// Size of the block or page that maps the address.
    pub size: u64,
    /// The access flag: clear after aging until the next access (faulted in by hand,
    /// the hypervisor leaves hardware updates off).
    pub young: bool,
}

impl PageTable {
    /// An empty tree for `va_bits` of input address (see [`start_level`]).
    pub fn new(mem: &mut impl TableMemory, regime: Regime, va_bits: u8) -> Result<Self, MapError> {
        let start_level = start_level(regime, va_bits).ok_or(MapError::UnsupportedSize)?;
        let root_entries = 1usize << (va_bits as u32 - entry_shift(start_level));
        let root_pages = root_entries.div_ceil(ENTRIES_PER_TABLE);
        let root = mem.alloc_zeroed(root_pages).ok_or(MapError::NoMemory)?;
        Ok(PageTable { regime, root, root_pages, start_level, va_bits, tables: root_pages, pages_only: false })
    }

    /// From now on maps only 4 KiB pages (blocks already mapped stay until split). For a
    /// stage 2 under QEMU's TCG: QEMU takes the larger of the two stages' leaf sizes as the
    /// size of each TLB entry it makes, and a TLB invalidation by address that falls in a
    /// region it knows as a large page flushes the whole TLB of that translation regime.
    pub fn set_pages_only(&mut self) {
        self.pages_only = true;
    }

    /// Physical address of the root (for TTBR0_EL2 or VTTBR_EL2).
    pub fn root(&self) -> u64 {
        self.root
    }

    pub fn start_level(&self) -> u8 {
        self.start_level
    }

    pub fn va_bits(&self) -> u8 {
        self.va_bits
    }

    /// Table frames currently in use, the root included.
    pub fn table_pages(&self) -> usize {
        self.tables
    }

    fn entries(&self, level: u8) -> usize {
        if level == self.start_level {
            self.root_pages * ENTRIES_PER_TABLE
        } else {
            ENTRIES_PER_TABLE
        }
    }

    fn index(&self, level: u8, va: u64) -> usize {
        ((va >> entry_shift(level)) as usize) & (self.entries(level) - 1)
    }

    /// The entries of a table at `level` that `[va, va + size)` touches, in order (the range
    /// is inside the input address space: `check_range`).
    fn steps(&self, level: u8, va: u64, size: u64) -> Steps {
        Steps { shift: entry_shift(level), index_mask: self.entries(level) - 1, va, end: va + size }
    }

    fn check_range(&self, va: u64, size: u64) -> Result<(), MapError> {
        if va % PAGE_SIZE != 0 || size % PAGE_SIZE != 0 {
            return Err(MapError::Misaligned);
        }
        let end = va.checked_add(size).ok_or(MapError::OutOfRange)?;
        if end > 1u64 << self.va_bits {
            return Err(MapError::OutOfRange);
        }
        Ok(())
    }

    /// Maps `[va, va + size)` to `[pa, pa + size)`, using 1 GiB and 2 MiB blocks wherever both
    /// addresses are aligned for them, and folding a table that becomes a uniform run into
    /// a block. The range must be unmapped: if any of it is mapped, nothing changes
    /// (AlreadyMapped). On NoMemory the part mapped before stays mapped.
    pub fn map(&mut self, mem: &mut impl TableMemory, va: u64, pa: u64, size: u64, attrs: Attrs) -> Result<(), MapError> {
        self.check_range(va, size)?;
        if pa % PAGE_SIZE != 0 || pa.checked_add(size).is_none_or(|end| end > OA_MASK + PAGE_SIZE) {
            return Err(MapError::Misaligned);
        }
        // A single page needs no separate check: the map walk finds it mapped before it
        // writes anything (the stage-2 fault path maps single pages).
        if size != PAGE_SIZE {
            self.walk_range(mem, va, size, &mut AnyLeaf)?;
        }
        self.walk_range(mem, va, size, &mut Map { va, pa, leaf: self.regime.leaf_attrs(attrs) })
    }

    /// Removes every mapping in `[va, va + size)`, splitting blocks that are only partly
    /// covered, and frees tables that become empty. Returns the number of bytes that were mapped.
    pub fn unmap(&mut self, mem: &mut impl TableMemory, va: u64, size: u64) -> Result<u64, MapError> {
        self.unmap_with(mem, va, size, &mut |_, _, _| {})
    }

    /// [`PageTable::unmap`], calling `gone(va, pa, size)` for each removed leaf once its TLB
    /// entries are invalidated (from then on nothing can reach `pa` through this table).
    pub fn unmap_with(&mut self, mem: &mut impl TableMemory, va: u64, size: u64, gone: &mut dyn FnMut(u64, u64, u64)) -> Result<u64, MapError> {
        self.check_range(va, size)?;
        let mut unmap = Unmap { gone, bytes: 0 };
        self.walk_range(mem, va, size, &mut unmap)?;
        Ok(unmap.bytes)
    }

    /// Changes the attributes of everything mapped in `[va, va + size)` (unmapped parts are
    /// skipped), splitting blocks that are only partly covered and folding tables that
    /// become uniform again. A change of memory type goes through break-before-make; a
    /// change of permissions only is written in place; either way the old entry's TLB
    /// entries are invalidated before this returns. Returns the bytes whose attributes changed.
    pub fn protect(&mut self, mem: &mut impl TableMemory, va: u64, size: u64, attrs: Attrs) -> Result<u64, MapError> {
        self.check_range(va, size)?;
        let mut protect = Protect { leaf: self.regime.leaf_attrs(attrs) & !AF, changed: 0, stale: None };
        let walked = self.walk_range(mem, va, size, &mut protect);
        // Also after a failed walk: what changed before it failed is in the tables.
        if let Some((lo, hi)) = protect.stale {
            mem.invalidate_tlb(lo, hi - lo);
        }
        walked?;
        Ok(protect.changed)
    }

    /// Aging: clears the access flag of every leaf overlapping `[va, va + size)`, calling
    /// `seen(leaf_va, leaf_size, was_young)` for each, then invalidates the TLB entries of
    /// the leaves that were young, so that their next access faults and marks them again
    /// (clear_flush_young). Returns the number of young leaves.
    pub fn clear_young(&mut self, mem: &mut impl TableMemory, va: u64, size: u64, seen: &mut dyn FnMut(u64, u64, bool)) -> Result<u64, MapError> {
        self.check_range(va, size)?;
        let (mut young, mut lo, mut hi) = (0, u64::MAX, 0);
        self.walk_range(
            mem,
            va,
            size,
            &mut Update(|leaf_va, leaf_size, desc| {
                let was = desc & AF != 0;
                if was {
                    young += 1;
                    lo = lo.min(leaf_va);
                    hi = hi.max(leaf_va + leaf_size);
                }
                seen(leaf_va, leaf_size, was);
                desc & !AF
            }),
        )?;
        if young > 0 {
            mem.invalidate_tlb(lo, hi - lo);
        }
        Ok(young)
    }

    /// An access-flag fault at `va`: marks its leaf young again (no TLB maintenance: an
    /// entry with the flag clear is never cached). Whether a leaf maps `va`.
    pub fn mark_young(&mut self, mem: &mut impl TableMemory, va: u64) -> bool {
        if va >> self.va_bits != 0 {
            return false;
        }
        let mut found = false;
        let marked = self.walk_range(
            mem,
            va & !(PAGE_SIZE - 1),
            PAGE_SIZE,
            &mut Update(|_, _, desc| {
                found = true;
                desc | AF
            }),
        );
        marked.is_ok() && found
    }

    /// Calls `seen(leaf_va, leaf_size, young)` for every leaf overlapping the range, changing
    /// nothing. Returns the number of young leaves.
    pub fn test_young(&mut self, mem: &mut impl TableMemory, va: u64, size: u64, seen: &mut dyn FnMut(u64, u64, bool)) -> Result<u64, MapError> {
        self.check_range(va, size)?;
        let mut young = 0;
        self.walk_range(
            mem,
            va,
            size,
            &mut Update(|leaf_va, leaf_size, desc| {
                young += (desc & AF != 0) as u64;
                seen(leaf_va, leaf_size, desc & AF != 0);
                desc
            }),
        )?;
        Ok(young)
    }

    /// The walk: every entry of the tables under `table` (at `level`) that `[va, va + size)`
    /// touches, in address order, handed to the visitor: a table entry before the walk
    /// descends into it (`table_pre`: it may remove the table) and after (`table_post`), a
    /// valid leaf, or with [`Visitor::INVALID`] an empty entry too (`leaf`: it may turn the
    /// entry into a table, which the walk then descends into). Callbacks return what they
    /// left in the entry. The walk owns the traversal;
    /// a visitor owns one decision. The range must lie inside the input address space.
    fn walk<M: TableMemory, V: Visitor<M>>(&mut self, mem: &mut M, table: u64, level: u8, va: u64, size: u64, v: &mut V) -> Result<(), MapError> {
        let entry_size = 1u64 << entry_shift(level);
        for Step { idx, entry_va, va, chunk } in self.steps(level, va, size) {
            let mut e = Entry { level, table, idx, entry_va, size: entry_size, va, chunk, desc: mem.read(table, idx) };
            e.desc = if e.is_table() {
                v.table_pre(self, mem, &e)?
            } else if e.desc & DESC_VALID != 0 || V::INVALID {
                v.leaf(self, mem, &e)?
            } else {
                continue;
            };
            if e.is_table() {
                self.walk(mem, e.desc & OA_MASK, level + 1, va, chunk, v)?;
                v.table_post(self, mem, &e)?;
            }
        }
        Ok(())
    }

    /// The walk from the root.
    fn walk_range<M: TableMemory, V: Visitor<M>>(&mut self, mem: &mut M, va: u64, size: u64, v: &mut V) -> Result<(), MapError> {
        self.walk(mem, self.root, self.start_level, va, size, v)
    }

    /// Replaces the block at `e` by a table of next-level entries with the same attributes
    /// (break-before-make), which the walk then descends into.
    fn split_block(&mut self, mem: &mut impl TableMemory, e: &Entry) -> Result<u64, MapError> {
        let child = mem.alloc_zeroed(1).ok_or(MapError::NoMemory)?;
        self.tables += 1;
        let child_level = e.level + 1;
        let child_size = 1u64 << entry_shift(child_level);
        let attrs = e.desc & !OA_MASK & !(DESC_VALID | DESC_TABLE_OR_PAGE);
        let ty = leaf_type(child_level);
        let base = e.desc & OA_MASK;
        for i in 0..ENTRIES_PER_TABLE {
            mem.write(child, i, attrs | (base + i as u64 * child_size) | ty);
        }
        mem.write(e.table, e.idx, 0);
        mem.invalidate_tlb(e.entry_va, e.size);
        let table = child | DESC_VALID | DESC_TABLE_OR_PAGE;
        mem.write(e.table, e.idx, table);
        Ok(table)
    }

    /// Frees the subtree under the table entry `e`, already detached and invalidated, with
    /// `gone` for each leaf it held; returns the bytes they mapped.
    fn free_subtree(&mut self, mem: &mut impl TableMemory, e: &Entry, gone: &mut dyn FnMut(u64, u64, u64)) -> u64 {
        let child = e.desc & OA_MASK;
        let mut teardown = Teardown { gone, bytes: 0 };
        // Teardown never fails.
        let _ = self.walk(mem, child, e.level + 1, e.entry_va, e.size, &mut teardown);
        mem.free(child, 1);
        self.tables -= 1;
        teardown.bytes
    }

    /// If the table under entry `e` holds 512 leaves with the same attributes mapping one
    /// aligned, contiguous run, replaces it by one block (break-before-make) and frees it.
    /// Cheap to call when it cannot apply: the last and first entries are looked at before
    /// the rest. Inlined into the walks that fold: the entry stays in registers.
    #[inline(always)]
    fn try_fold(&mut self, mem: &mut impl TableMemory, e: &Entry) {
        if e.level == 0 || e.level >= 3 || self.pages_only {
            return; // no level-0 blocks with a 4 KiB granule
        }
        // The entry still holds the table the walk came back from (`e.desc`).
        if !e.is_table() {
            return;
        }
        let child = e.desc & OA_MASK;
        let child_size = 1u64 << entry_shift(e.level + 1);
        let first = mem.read(child, 0);
        let base = first & OA_MASK;
        if first & (DESC_VALID | DESC_TABLE_OR_PAGE) != leaf_type(e.level + 1) || base & (e.size - 1) != 0 {
            return;
        }
        let expected = |i: usize| first + i as u64 * child_size;
        let last = ENTRIES_PER_TABLE - 1;
        if mem.read(child, last) != expected(last) || (1..last).any(|i| mem.read(child, i) != expected(i)) {
            return;
        }
        mem.write(e.table, e.idx, 0);
        mem.invalidate_tlb(e.entry_va, e.size);
        mem.write(e.table, e.idx, (first & !DESC_TABLE_OR_PAGE) | DESC_VALID);
        mem.free(child, 1);
        self.tables -= 1;
    }
    /// Whether no leaf maps any part of `[va, va + size)`.
    pub fn is_unmapped(&mut self, mem: &mut impl TableMemory, va: u64, size: u64) -> Result<bool, MapError> {
        self.check_range(va, size)?;
        match self.walk_range(mem, va, size, &mut AnyLeaf) {
            Ok(()) => Ok(true),
            Err(MapError::AlreadyMapped) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Looks `va` up as the hardware walker would: one address, one entry per level (no
    /// range to visit, so no visitor).
    pub fn translate(&self, mem: &impl TableMemory, va: u64) -> Option<Translation> {
        self.translate_near(mem, va, &mut None)
    }

    /// `translate`, starting at the last-level table `hint` names when `va` is in the 2 MiB
    /// it covers, and leaving in `hint` the last-level table this walk went through (if
    /// any): a device request's pages, mostly a few per 2 MiB, cost one entry each. The
    /// hint is only good while no table changes (one `Stage2::translating` call holds the
    /// table lock).
    pub fn translate_near(&self, mem: &impl TableMemory, va: u64, hint: &mut Option<LeafTable>) -> Option<Translation> {
        if va >> self.va_bits != 0 {
            return None;
        }
        if let Some(h) = *hint {
            if h.region == va >> entry_shift(2) {
                // The last level, spelled out: the shifts are constants here.
                return self.leaf(mem.read(h.table, self.index(3, va)), 3, va);
            }
        }
        let (mut table, mut level) = (self.root, self.start_level);
        loop {
            let desc = mem.read(table, self.index(level, va));
            if level < 3 && desc & (DESC_VALID | DESC_TABLE_OR_PAGE) == DESC_VALID | DESC_TABLE_OR_PAGE {
                table = desc & OA_MASK;
                level += 1;
                if level == 3 {
                    *hint = Some(LeafTable { region: va >> entry_shift(2), table });
                }
                continue;
            }
            return self.leaf(desc, level, va);
        }
    }

    /// What leaf descriptor `desc` at `level` makes of `va`, if it is a valid leaf.
    #[inline(always)]
    fn leaf(&self, desc: u64, level: u8, va: u64) -> Option<Translation> {
        if desc & DESC_VALID == 0 || (level == 3 && desc & DESC_TABLE_OR_PAGE == 0) {
            return None; // invalid, or the reserved encoding at level 3
        }
        let size = 1u64 << entry_shift(level);
        let pa = (desc & OA_MASK & !(size - 1)) | (va & (size - 1));
        Some(Translation { pa, attrs: self.regime.decode_attrs(desc), size, young: desc & AF != 0 })
    }

    /// Frees every table frame (not the memory the leaves point to), without TLB
    /// maintenance: for tables no CPU can walk any more. Returns the number of table frames
    /// freed. The table is empty and unusable afterwards; a second call frees nothing.
    pub fn destroy(&mut self, mem: &mut impl TableMemory) -> usize {
        let before = self.tables;
        if self.root_pages == 0 {
            return 0;
        }
        let mut teardown = Teardown { gone: &mut |_, _, _| {}, bytes: 0 };
        // Teardown never fails.
        let _ = self.walk_range(mem, 0, 1u64 << self.va_bits, &mut teardown);
        mem.free(self.root, self.root_pages);
        self.root_pages = 0;
        self.tables = 0;
        before
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testmem::Arena;

    const GIB: u64 = 1 << 30;
    const MIB2: u64 = 2 << 20;

    #[test]
    fn stage2_40_bit_root_is_two_concatenated_level1_tables() {
        let mut m = Arena::default();
        let t = PageTable::new(&mut m, Regime::Stage2, 40).unwrap();
        assert_eq!(t.start_level(), 1);
        assert_eq!(t.table_pages(), 2);
        assert_eq!(t.root() % (2 * PAGE_SIZE), 0);
        let t48 = PageTable::new(&mut m, Regime::Stage2, 48).unwrap();
        assert_eq!(t48.start_level(), 0);
        let el2 = PageTable::new(&mut m, Regime::El2, 40).unwrap();
        assert_eq!(el2.start_level(), 0, "stage-1 roots cannot be concatenated");
        assert_eq!(PageTable::new(&mut m, Regime::Stage2, 20).err(), Some(MapError::UnsupportedSize));
    }

    #[test]
    fn stage2_32_bit_root_is_four_concatenated_level2_tables() {
        let mut m = Arena::default();
        let mut t = PageTable::new(&mut m, Regime::Stage2, 32).unwrap();
        assert_eq!((t.start_level(), t.table_pages()), (2, 4));
        assert_eq!(t.root() % (4 * PAGE_SIZE), 0);
        // RAM at 1 GiB up to the top of the 4 GiB: blocks of 2 MiB at most, pages below.
        t.map(&mut m, GIB, 5 * GIB, MIB2 + PAGE_SIZE, Attrs::RAM_RWX).unwrap();
        assert_eq!(t.translate(&m, GIB + 8).map(|x| (x.pa, x.size)), Some((5 * GIB + 8, MIB2)));
        assert_eq!(t.translate(&m, GIB + MIB2).map(|x| x.size), Some(PAGE_SIZE));
        t.map(&mut m, 4 * GIB - PAGE_SIZE, 0x1000, PAGE_SIZE, Attrs::RAM_RW).unwrap();
        assert_eq!(t.map(&mut m, 4 * GIB, 0x1000, PAGE_SIZE, Attrs::RAM_RW), Err(MapError::OutOfRange));
    }

    #[test]
    fn uses_the_largest_blocks_alignment_allows() {
        let mut m = Arena::default();
        let mut t = PageTable::new(&mut m, Regime::Stage2, 40).unwrap();
        // 1 GiB + 2 MiB + 4 KiB, all aligned: one L1 block, one L2 block, one page.
        t.map(&mut m, GIB, 3 * GIB, GIB + MIB2 + PAGE_SIZE, Attrs::RAM_RWX).unwrap();
        assert_eq!(t.translate(&m, GIB + 0x1234).unwrap().size, GIB);
        assert_eq!(t.translate(&m, 2 * GIB + 0x10).unwrap().size, MIB2);
        let last = t.translate(&m, 2 * GIB + MIB2 + 0x20).unwrap();
        assert_eq!(last.size, PAGE_SIZE);
        assert_eq!(last.pa, 4 * GIB + MIB2 + 0x20);
        assert_eq!(t.translate(&m, 2 * GIB + MIB2 + PAGE_SIZE), None);
        // root (2) + L2 table + L3 table
        assert_eq!(t.table_pages(), 4);
    }

    #[test]
    fn a_walk_from_the_hinted_leaf_table_finds_what_a_whole_walk_finds() {
        let mut m = Arena::default();
        let mut t = PageTable::new(&mut m, Regime::Stage2, 32).unwrap();
        // Pages in two 2 MiB regions, a block between them, holes in each.
        t.map(&mut m, GIB + PAGE_SIZE, 5 * GIB, 3 * PAGE_SIZE, Attrs::RAM_RW).unwrap();
        t.map(&mut m, GIB + MIB2, 7 * GIB, MIB2, Attrs::RAM_RWX).unwrap();
        t.map(&mut m, GIB + 2 * MIB2 + 8 * PAGE_SIZE, 6 * GIB, PAGE_SIZE, Attrs::RAM_RO).unwrap();
        // Counts the descriptors a walk reads.
        struct Counting<'a>(&'a Arena, core::cell::Cell<u32>);
        impl TableMemory for Counting<'_> {
            fn alloc_zeroed(&mut self, _: usize) -> Option<u64> {
                None
            }
            fn free(&mut self, _: u64, _: usize) {}
            fn read(&self, table: u64, index: usize) -> u64 {
                self.1.set(self.1.get() + 1);
                self.0.read(table, index)
            }
            fn write(&mut self, _: u64, _: usize, _: u64) {}
            fn invalidate_tlb(&mut self, _: u64, _: u64) {}
        }
        let c = Counting(&m, Default::default());
        let (mut hint, mut hinted) = (None, 0);
        // Back and forth between the regions, so the hint is used, missed and replaced.
        for round in 0..3u64 {
            for va in [GIB, GIB + PAGE_SIZE + 5, GIB + 3 * PAGE_SIZE + 7, GIB + 4 * PAGE_SIZE, GIB + MIB2 + round,
                       GIB + 2 * MIB2 + 8 * PAGE_SIZE + 9, GIB + 2 * MIB2, GIB + 2 * PAGE_SIZE, 4 * GIB - 1] {
                let from_hint = hint.is_some_and(|h: LeafTable| h.region == va >> 21);
                let before = c.1.get();
                assert_eq!(t.translate_near(&c, va, &mut hint), t.translate(&m, va), "{va:#x}");
                // From the hint: the leaf entry alone; else the root's entry, then the leaf
                // table's unless the root's is a block or empty.
                let read = c.1.get() - before;
                assert!(if from_hint { read == 1 } else { read == 1 || read == 2 }, "{read} descriptors read for {va:#x}");
                hinted += from_hint as u32;
            }
        }
        assert_eq!(hinted, 14, "walks that started from the hint");
        assert_eq!(t.translate_near(&m, 1 << 32, &mut hint), None, "outside the input range, hint or not");
    }

    #[test]
    fn pages_only_maps_and_keeps_4k_leaves() {
        let mut m = Arena::default();
        let mut t = PageTable::new(&mut m, Regime::Stage2, 40).unwrap();
        t.set_pages_only();
        t.map(&mut m, GIB, 3 * GIB, 2 * MIB2, Attrs::RAM_RWX).unwrap();
        for off in (0..2 * MIB2).step_by(PAGE_SIZE as usize) {
            let tr = t.translate(&m, GIB + off).unwrap();
            assert_eq!((tr.pa, tr.size), (3 * GIB + off, PAGE_SIZE));
        }
        // A permission change and its undoing leave a uniform table: it is not folded.
        t.protect(&mut m, GIB, PAGE_SIZE, Attrs::RAM_RO).unwrap();
        t.protect(&mut m, GIB, PAGE_SIZE, Attrs::RAM_RWX).unwrap();
        assert_eq!(t.translate(&m, GIB).unwrap().size, PAGE_SIZE);
        // root (2) + L2 table + two L3 tables
        assert_eq!(t.table_pages(), 5);
        assert_eq!(t.unmap(&mut m, GIB, 2 * MIB2), Ok(2 * MIB2));
    }

    #[test]
    fn misaligned_physical_addresses_fall_back_to_pages() {
        let mut m = Arena::default();
        let mut t = PageTable::new(&mut m, Regime::Stage2, 40).unwrap();
        t.map(&mut m, 0x4000_0000, 0x8000_1000, MIB2, Attrs::RAM_RW).unwrap();
        for off in (0..MIB2).step_by(PAGE_SIZE as usize) {
            let tr = t.translate(&m, 0x4000_0000 + off).unwrap();
            assert_eq!(tr.pa, 0x8000_1000 + off);
            assert_eq!(tr.size, PAGE_SIZE);
            assert_eq!(tr.attrs, Attrs::RAM_RW);
        }
    }

    #[test]
    fn attributes_round_trip_in_both_regimes() {
        for regime in [Regime::Stage2, Regime::El2] {
            let mut m = Arena::default();
            let mut t = PageTable::new(&mut m, regime, 39).unwrap();
            let cases = [Attrs::RAM_RWX, Attrs::RAM_RW, Attrs::RAM_RX, Attrs::RAM_RO, Attrs::DEVICE_RW];
            for (i, a) in cases.iter().enumerate() {
                t.map(&mut m, i as u64 * PAGE_SIZE, 0x1000_0000 + i as u64 * PAGE_SIZE, PAGE_SIZE, *a).unwrap();
                assert_eq!(t.translate(&m, i as u64 * PAGE_SIZE).unwrap().attrs, *a, "{regime:?} {a:?}");
            }
            // Device memory is never executable.
            let dx = Attrs { exec: true, ..Attrs::DEVICE_RW };
            t.map(&mut m, 0x10_0000, 0x900_0000, PAGE_SIZE, dx).unwrap();
            assert!(!t.translate(&m, 0x10_0000).unwrap().attrs.exec);
        }
    }

    #[test]
    fn stage2_descriptor_bits_match_the_architecture() {
        let mut m = Arena::default();
        let mut t = PageTable::new(&mut m, Regime::Stage2, 40).unwrap();
        t.map(&mut m, 0, 0x4000_0000, PAGE_SIZE, Attrs::RAM_RW).unwrap();
        let l2 = m.read(t.root(), 0) & OA_MASK;
        let l3 = m.read(l2, 0) & OA_MASK;
        // valid|page, MemAttr 0xf, S2AP RW, SH inner, AF, XN
        assert_eq!(m.read(l3, 0), 0x4000_0000 | 0b11 | 0xf << 2 | 0b11 << 6 | 3 << 8 | 1 << 10 | 1 << 54);
    }

    #[test]
    fn rejects_overlaps_and_bad_ranges() {
        let mut m = Arena::default();
        let mut t = PageTable::new(&mut m, Regime::Stage2, 40).unwrap();
        t.map(&mut m, 0x4000_0000, 0x4000_0000, MIB2, Attrs::RAM_RW).unwrap();
        assert_eq!(t.map(&mut m, 0x4010_0000, 0, PAGE_SIZE, Attrs::RAM_RW), Err(MapError::AlreadyMapped));
        assert_eq!(t.map(&mut m, 0x123, 0, PAGE_SIZE, Attrs::RAM_RW), Err(MapError::Misaligned));
        assert_eq!(t.map(&mut m, 1 << 40, 0, PAGE_SIZE, Attrs::RAM_RW), Err(MapError::OutOfRange));
        assert_eq!(t.map(&mut m, u64::MAX - 0xfff, 0, PAGE_SIZE, Attrs::RAM_RW), Err(MapError::OutOfRange));
        assert_eq!(t.unmap(&mut m, 0x4000_0000, 3), Err(MapError::Misaligned));
    }

    #[test]
    fn unmapping_part_of_a_block_splits_it_with_break_before_make() {
        let mut m = Arena::default();
        let mut t = PageTable::new(&mut m, Regime::Stage2, 40).unwrap();
        t.map(&mut m, GIB, GIB, GIB, Attrs::RAM_RWX).unwrap();
        let hole = GIB + 5 * MIB2 + 3 * PAGE_SIZE;
        assert_eq!(t.unmap(&mut m, hole, PAGE_SIZE).unwrap(), PAGE_SIZE);
        assert_eq!(t.translate(&m, hole), None);
        assert_eq!(t.translate(&m, hole - PAGE_SIZE).unwrap().pa, hole - PAGE_SIZE);
        assert_eq!(t.translate(&m, hole + PAGE_SIZE).unwrap().pa, hole + PAGE_SIZE);
        assert_eq!(t.translate(&m, GIB + 7 * MIB2).unwrap().size, MIB2);
        // The 1 GiB block, then the 2 MiB block, were broken and invalidated before the tables went in.
        assert!(m.invalidations.contains(&(GIB, GIB)));
        assert!(m.invalidations.contains(&(GIB + 5 * MIB2, MIB2)));
    }

    #[test]
    fn a_table_that_becomes_uniform_folds_back_into_a_block() {
        let mut m = Arena::default();
        let mut t = PageTable::new(&mut m, Regime::Stage2, 40).unwrap();
        // Pages one by one (as demand faults map them), the last in the middle.
        for i in (0..512u64).filter(|i| *i != 300) {
            t.map(&mut m, GIB + i * PAGE_SIZE, 3 * GIB + i * PAGE_SIZE, PAGE_SIZE, Attrs::RAM_RW).unwrap();
        }
        assert_eq!(t.translate(&m, GIB).unwrap().size, PAGE_SIZE);
        t.map(&mut m, GIB + 300 * PAGE_SIZE, 3 * GIB + 300 * PAGE_SIZE, PAGE_SIZE, Attrs::RAM_RW).unwrap();
        assert_eq!(t.translate(&m, GIB + 5).unwrap().size, MIB2);
        assert_eq!(t.table_pages(), 2 + 1, "the level-3 table went back");
        // Protect one page (split), then give it its old permissions back (fold).
        assert_eq!(t.protect(&mut m, GIB + 7 * PAGE_SIZE, PAGE_SIZE, Attrs::RAM_RO), Ok(PAGE_SIZE));
        assert_eq!(t.translate(&m, GIB + 7 * PAGE_SIZE).unwrap().attrs, Attrs::RAM_RO);
        assert_eq!(t.translate(&m, GIB).unwrap().size, PAGE_SIZE);
        assert_eq!(t.protect(&mut m, GIB + 7 * PAGE_SIZE, PAGE_SIZE, Attrs::RAM_RW), Ok(PAGE_SIZE));
        assert_eq!(t.translate(&m, GIB).unwrap().size, MIB2);
        assert!(m.bbm_violations.is_empty(), "{:?}", m.bbm_violations);
        // Aging keeps page granularity only as long as the pages differ.
        assert_eq!(t.clear_young(&mut m, GIB, PAGE_SIZE, &mut |_, _, _| {}), Ok(1));
        assert!(!t.translate(&m, GIB + MIB2 - 1).unwrap().young, "a block ages whole");
        assert!(t.mark_young(&mut m, GIB + 0x10));
        assert!(t.translate(&m, GIB + MIB2 - 1).unwrap().young);
    }

    /// A range made read-only page by page (dirty tracking of a 1 MiB region) is one TLB
    /// invalidation covering every page that changed, made before protect returns.
    #[test]
    fn protecting_a_range_invalidates_it_once() {
        let mut m = Arena::default();
        let mut t = PageTable::new(&mut m, Regime::Stage2, 40).unwrap();
        for i in 0..512u64 {
            t.map(&mut m, GIB + i * PAGE_SIZE, 3 * GIB + i * PAGE_SIZE, PAGE_SIZE, Attrs::RAM_RW).unwrap();
        }
        // Distinct pages: keep the table from folding back into a block.
        t.protect(&mut m, GIB + 511 * PAGE_SIZE, PAGE_SIZE, Attrs::RAM_RX).unwrap();
        m.invalidations.clear();
        assert_eq!(t.protect(&mut m, GIB + 16 * PAGE_SIZE, 256 * PAGE_SIZE, Attrs::RAM_RO), Ok(256 * PAGE_SIZE));
        assert_eq!(m.invalidations, [(GIB + 16 * PAGE_SIZE, 256 * PAGE_SIZE)]);
        assert!((16..272).all(|i| t.translate(&m, GIB + i * PAGE_SIZE).unwrap().attrs == Attrs::RAM_RO));
        // Nothing changed: nothing to invalidate.
        m.invalidations.clear();
        assert_eq!(t.protect(&mut m, GIB + 16 * PAGE_SIZE, 256 * PAGE_SIZE, Attrs::RAM_RO), Ok(0));
        assert!(m.invalidations.is_empty());
        assert!(m.bbm_violations.is_empty(), "{:?}", m.bbm_violations);
    }

    #[test]
    fn empty_tables_are_freed_and_destroy_frees_the_rest() {
        let mut m = Arena::default();
        let mut t = PageTable::new(&mut m, Regime::Stage2, 40).unwrap();
        t.map(&mut m, 0x4000_0000, 0x9000_0000, 4 * PAGE_SIZE, Attrs::RAM_RW).unwrap();
        t.map(&mut m, 0x8000_0000, 0xa000_0000, MIB2, Attrs::RAM_RW).unwrap();
        assert_eq!(t.table_pages(), 2 + 2 + 1);
        assert_eq!(t.unmap(&mut m, 0x4000_0000, 4 * PAGE_SIZE).unwrap(), 4 * PAGE_SIZE);
        assert_eq!(t.table_pages(), 2 + 1);
        // Unmapping nothing is fine and reports nothing.
        assert_eq!(t.unmap(&mut m, 0x4000_0000, MIB2).unwrap(), 0);
        assert_eq!(t.destroy(&mut m), 3);
        assert!(m.frames.is_empty(), "every table frame went back");
    }
}
