//! A VM's guest RAM: where its pages live (allocated at creation, or page by page on first
//! touch), its stage-2 space with the notifiers subscribed to it (the hypervisor's
//! translation cache, access tracking, a trace ring), stage-2 faults, the hypervisor's own
//! reads and writes of guest memory, and reclaim of cold pages.

use super::frames;
use super::tables::{FrameTables, TlbScope};
use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};
use hv_core::access::AccessTracker;
use hv_core::gpa_cache::GpaCache;
use hv_core::hypercall::Counter;
use hv_core::notifier::Reason;
use hv_core::page_bits::PageBits;
use hv_core::pgtable::{Attrs, MapError, PAGE_SIZE};
use hv_core::ramoops_store::{Pages, REGION_PAGES};
use hv_core::ranges::Range;
use hv_core::s2trace::TraceRing;
use hv_core::stage2::{FaultOutcome, Stage2};
use spin::Mutex;

/// One block of guest RAM allocated at creation: IPA range and the host frames behind it.
#[derive(Clone, Copy, Debug)]
struct RamChunk {
    ipa: u64,
    pa: u64,
    size: u64,
    pages: usize,
}

/// Where guest pages come from.
enum Backing {
    /// All RAM allocated at creation: a page unmapped keeps its frame (zeroed unless
    /// unmapped pages keep their content) and gets it back on the next fault.
    Eager(Vec<RamChunk>),
    /// A frame per page, allocated on first touch and freed when the page is unmapped.
    Lazy,
}

/// The block a lazy VM's first touch maps where it can (`blocks=on`).
const BLOCK: u64 = 2 << 20;

/// The aging granule of a reclaim pass: the hypervisor's own young state is asked per
/// granule, the stage-2 access flags per page.
const AGING_GRANULE: u64 = 2 << 20;

/// What a stage-2 fault on guest RAM comes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultResult {
    /// Handled: the guest retries the access.
    Resume,
    /// The access is not allowed (permissions): the guest gets an abort.
    Refused,
    /// No host memory left for the page.
    OutOfMemory,
}

/// Why the hypervisor could not access guest memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessError {
    NotRam,
    /// The guest took the access away (a write to a read-only page, any access to a page
    /// with no permissions).
    Protected,
    NoMemory,
    /// Invalidations of the page kept racing the access.
    Contended,
}

/// The tracked region: its start, the pages written since `take_written`, and each page's
/// host frame (0 once it left the region: unmapped), for the panic path, which may take no
/// table lock.
#[derive(Clone, Copy)]
struct Tracked {
    start: u64,
    written: Pages,
    frames: [u64; REGION_PAGES],
}

/// There is not enough host memory for the VM's RAM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutOfMemory;

/// Rounds a hypervisor access to guest memory tries before giving up.
const ACCESS_ATTEMPTS: usize = 1000;

/// Counters of guest memory, indexed from `Counter::Stage2Faults`.
const OWN_COUNTERS: usize = 8;

pub struct GuestMemory {
    pub space: Stage2<FrameTables>,
    vttbr: u64,
    ram: Range,
    backing: Backing,
    /// Lazy VMs: first touches map 2 MiB blocks where they can.
    blocks: bool,
    keep_unmapped: bool,
    /// Lazy VMs keeping unmapped content: the frames, out of the guest's reach, by IPA.
    kept: Mutex<BTreeMap<u64, u64>>,
    /// Serializes populating faults, so two vCPUs faulting one kept page cannot give it
    /// two different frames.
    populate: Mutex<()>,
    pub cache: Arc<GpaCache>,
    pub tracker: Arc<AccessTracker>,
    pub trace: Arc<TraceRing>,
    counters: [AtomicU64; OWN_COUNTERS],
    /// Lazy VMs: the part of the VM's committed memory not allocated yet.
    committed: AtomicU64,
    /// Lazy VMs: pages the guest gave back to the host (`discard`), a bit per page: neither
    /// backed nor promised; a touch needs a new promise from the host.
    given_back: Mutex<PageBits>,
    /// Bytes given back now (the bits set in `given_back`).
    given_back_bytes: AtomicU64,
    /// Everything was given back (`teardown` ran).
    torn_down: core::sync::atomic::AtomicBool,
    /// A region whose writes are tracked (the guest's ramoops region).
    tracked: Mutex<Option<Tracked>>,
    /// Read-only pages outside RAM that the hypervisor keeps device registers in (`image`):
    /// IPA and host frame of each, freed at teardown.
    images: Mutex<Vec<(u64, u64)>>,
}

impl GuestMemory {
    /// Builds `size` bytes of guest RAM at IPA `base` with an empty or fully mapped stage-2
    /// (`lazy`; with `blocks`, first touches map 2 MiB blocks where they can), tagged with
    /// `vmid`.
    pub fn new(vmid: u64, ipa_bits: u8, base: u64, size: u64, lazy: bool, blocks: bool, keep_unmapped: bool, stage2_blocks: bool) -> Result<GuestMemory, OutOfMemory> {
        let space = Stage2::new(FrameTables { scope: TlbScope::Stage2 { vttbr: 0 } }, ipa_bits).map_err(|_| OutOfMemory)?;
        if !stage2_blocks {
            // A first touch still takes a whole 2 MiB run of frames (`blocks`), mapped as
            // 512 pages (hv_core::cmdline, s2leaf).
            space.set_pages_only();
        }
        let vttbr = space.root() | vmid << 48;
        space.with_mem(|m| m.scope = TlbScope::Stage2 { vttbr });
        let ram = Range::new(base, size);
        let backing = if lazy {
            // The pages come later, but they are this VM's from now on.
            if !frames::commit(size) {
                space.teardown(&mut |_, _, _| {});
                return Err(OutOfMemory);
            }
            Backing::Lazy
        } else {
            let chunks = (frames::uncommitted_bytes() >= size).then(|| alloc_ram(base, size)).flatten();
            let Some(chunks) = chunks else {
                space.teardown(&mut |_, _, _| {});
                return Err(OutOfMemory);
            };
            for c in &chunks {
                if space.map(c.ipa, c.pa, c.size, Attrs::RAM_RWX).is_err() {
                    space.teardown(&mut |_, _, _| {});
                    free_ram(&chunks);
                    return Err(OutOfMemory);
                }
            }
            Backing::Eager(chunks)
        };
        let mem = GuestMemory {
            space,
            vttbr,
            ram,
            backing,
            blocks,
            keep_unmapped,
            kept: Mutex::new(BTreeMap::new()),
            populate: Mutex::new(()),
            cache: Arc::new(GpaCache::new()),
            tracker: Arc::new(AccessTracker::new(base, size)),
            trace: Arc::new(TraceRing::new()),
            counters: Default::default(),
            committed: AtomicU64::new(if lazy { size } else { 0 }),
            given_back: Mutex::new(PageBits::new(0, if lazy { size / PAGE_SIZE } else { 0 })),
            given_back_bytes: AtomicU64::new(0),
            torn_down: core::sync::atomic::AtomicBool::new(false),
            tracked: Mutex::new(None),
            images: Mutex::new(Vec::new()),
        };
        mem.space.notifiers.register(mem.cache.clone());
        mem.space.notifiers.register(mem.tracker.clone());
        mem.space.notifiers.register(mem.trace.clone());
        Ok(mem)
    }

    pub fn vttbr(&self) -> u64 {
        self.vttbr
    }

    /// Bytes of guest RAM.
    pub fn size(&self) -> u64 {
        self.ram.size()
    }

    pub fn is_lazy(&self) -> bool {
        matches!(self.backing, Backing::Lazy)
    }

    /// Whether `[ipa, ipa + len)` is guest RAM.
    pub fn is_ram(&self, ipa: u64, len: u64) -> bool {
        self.ram.contains_range(ipa, len)
    }

    /// Checks a guest-given range: page aligned, non-empty, inside its RAM.
    pub fn guest_range(&self, ipa: u64, size: u64) -> Result<(), MapError> {
        if ipa % PAGE_SIZE != 0 || size % PAGE_SIZE != 0 {
            return Err(MapError::Misaligned);
        }
        if size == 0 || !self.is_ram(ipa, size) {
            return Err(MapError::OutOfRange);
        }
        Ok(())
    }

    fn count(&self, c: Counter, n: u64) {
        self.counters[c as usize - Counter::Stage2Faults as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// A VM-wide counter (None for per-vCPU ones).
    pub fn counter(&self, c: Counter) -> Option<u64> {
        let stats = &self.space.stats;
        Some(match c {
            Counter::Invalidations => stats.invalidations.load(Ordering::Relaxed),
            Counter::FaultRetries => stats.fault_retries.load(Ordering::Relaxed),
            Counter::CacheDropped => self.cache.stats.dropped.load(Ordering::Relaxed),
            Counter::CacheHits => self.cache.stats.hits.load(Ordering::Relaxed),
            Counter::CacheMisses => self.cache.stats.misses.load(Ordering::Relaxed),
            c if c.is_vm_wide() => self.counters.get(c as usize - Counter::Stage2Faults as usize)?.load(Ordering::Relaxed),
            _ => return None,
        })
    }

    /// The host frame behind a guest page of an eager VM.
    fn chunk_frame(chunks: &[RamChunk], ipa: u64) -> Option<u64> {
        chunks.iter().find(|c| Range::new(c.ipa, c.size).contains(ipa)).map(|c| c.pa + (ipa - c.ipa))
    }

    /// Maps the RAM page holding `ipa` (a translation fault, or the hypervisor touching an
    /// unpopulated page): for a lazy VM, the whole 2 MiB block around it where it can.
    /// Retry means an invalidation raced: the caller tries again.
    fn populate(&self, ipa: u64) -> Result<FaultOutcome, MapError> {
        let page = ipa & !(PAGE_SIZE - 1);
        let outcome = match &self.backing {
            Backing::Eager(chunks) => {
                let pa = Self::chunk_frame(chunks, page).ok_or(MapError::OutOfRange)?;
                self.space.fault_in(page, PAGE_SIZE, || Some((pa, Attrs::RAM_RWX)), |_| {})?
            }
            Backing::Lazy => {
                let _one_at_a_time = self.populate.lock();
                match self.populate_block(ipa & !(BLOCK - 1))? {
                    Some(outcome) => outcome,
                    None => self.populate_page(page)?,
                }
            }
        };
        if outcome == FaultOutcome::Mapped {
            self.count(Counter::Stage2Faults, 1);
        }
        Ok(outcome)
    }

    /// A lazy VM's first touch in the untouched 2 MiB block at `block`: maps all of it in
    /// one leaf. None where a block does not fit: blocks are off, the block is not all
    /// RAM, a page of it is mapped or kept, the VM's commitment or the host has no free
    /// aligned 2 MiB run.
    fn populate_block(&self, block: u64) -> Result<Option<FaultOutcome>, MapError> {
        if !self.blocks
            || !self.is_ram(block, BLOCK)
            || (self.keep_unmapped && self.kept.lock().range(block..block + BLOCK).next().is_some())
            || !self.space.is_unmapped(block, BLOCK)?
        {
            return Ok(None);
        }
        let Some(pa) = self.take(block, BLOCK) else { return Ok(None) };
        let outcome = self.space.fault_in(block, BLOCK, || Some((pa, Attrs::RAM_RWX)), |pa| self.give(pa, BLOCK))?;
        if outcome == FaultOutcome::Mapped {
            self.count(Counter::PagesPopulated, BLOCK / PAGE_SIZE);
        }
        Ok(Some(outcome))
    }

    /// A lazy VM's page: its kept frame (refault=keep), or a fresh zeroed one.
    fn populate_page(&self, page: u64) -> Result<FaultOutcome, MapError> {
        let from_kept = core::cell::Cell::new(false);
        let outcome = self.space.fault_in(
            page,
            PAGE_SIZE,
            || {
                let kept = self.kept.lock().remove(&page);
                from_kept.set(kept.is_some());
                kept.or_else(|| self.take(page, PAGE_SIZE)).map(|pa| (pa, Attrs::RAM_RWX))
            },
            |pa| {
                if from_kept.get() {
                    self.kept.lock().insert(page, pa);
                } else {
                    self.give(pa, PAGE_SIZE);
                }
            },
        )?;
        if outcome == FaultOutcome::Mapped {
            self.count(Counter::PagesPopulated, 1);
        }
        Ok(outcome)
    }

    /// Zeroed frames (`size` bytes, a page or a block, aligned to their size) for the lazy
    /// VM's pages at `ipa`, out of what was committed to it; pages it gave back first need
    /// a new promise from the host (none left: None). Called with `populate` held.
    fn take(&self, ipa: u64, size: u64) -> Option<u64> {
        // Nothing given back (the usual case): no bitmap to look at.
        let again = if self.given_back_bytes.load(Ordering::Acquire) == 0 { 0 } else { self.given_back_in(ipa, size) * PAGE_SIZE };
        let own = size - again;
        self.committed.fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| c.checked_sub(own)).ok()?;
        if again > 0 && !frames::commit(again) {
            self.committed.fetch_add(own, Ordering::AcqRel);
            return None;
        }
        let Some(pa) = frames::alloc_zeroed((size / PAGE_SIZE) as usize) else {
            self.committed.fetch_add(own, Ordering::AcqRel);
            frames::uncommit(again);
            return None;
        };
        if again > 0 {
            self.set_given_back(ipa, size, false);
        }
        frames::uncommit(size);
        Some(pa)
    }

    /// Pages in `[ipa, ipa + size)` given back to the host.
    fn given_back_in(&self, ipa: u64, size: u64) -> u64 {
        let first = (ipa - self.ram.start) / PAGE_SIZE;
        self.given_back.lock().count(first, first + size / PAGE_SIZE)
    }

    /// Marks the pages of `[ipa, ipa + size)` given back (or not); returns how many changed.
    fn set_given_back(&self, ipa: u64, size: u64, given: bool) -> u64 {
        let first = (ipa - self.ram.start) / PAGE_SIZE;
        let changed = self.given_back.lock().set(first, first + size / PAGE_SIZE, given);
        if given {
            self.given_back_bytes.fetch_add(changed * PAGE_SIZE, Ordering::AcqRel);
        } else {
            self.given_back_bytes.fetch_sub(changed * PAGE_SIZE, Ordering::AcqRel);
        }
        changed
    }

    /// Bytes of this VM's RAM given back to the host now (`discard`).
    pub fn given_back_bytes(&self) -> u64 {
        self.given_back_bytes.load(Ordering::Acquire)
    }

    /// A lazy VM's frames from `take` (or a page of them) go back: still committed to the VM.
    fn give(&self, pa: u64, size: u64) {
        frames::free(pa, (size / PAGE_SIZE) as usize);
        self.committed.fetch_add(size, Ordering::AcqRel);
        frames::recommit(size);
    }

    /// A stage-2 fault on guest RAM, by fault status code (ESR ISS.xFSC).
    pub fn fault(&self, ipa: u64, fsc: u8) -> FaultResult {
        match fsc & 0x3c {
            // Translation fault: the page is not mapped (yet, or any more).
            0x04 => match self.populate(ipa) {
                Ok(_) => FaultResult::Resume,
                Err(MapError::NoMemory) => FaultResult::OutOfMemory,
                Err(_) => FaultResult::Refused,
            },
            // Access flag: touched again after aging.
            0x08 => {
                self.space.mark_young(ipa);
                self.count(Counter::AccessFaults, 1);
                FaultResult::Resume
            }
            // Permission fault: a write to a write-protected page, a fetch from a
            // non-executable one.
            0x0c => {
                if self.note_tracked_write(ipa) {
                    return FaultResult::Resume;
                }
                self.count(Counter::PermissionFaults, 1);
                FaultResult::Refused
            }
            _ => FaultResult::Refused,
        }
    }

    /// Runs `f(host address)` on the guest bytes `[ipa, ipa + len)`, all in one page, the
    /// way the hypervisor touches guest memory: through its translation cache, populating
    /// the page if needed, never writing a page the guest cannot write. Invalidations in
    /// progress are waited out (a device's DMA, which must not wait, and whose many pages
    /// would evict the cache's hot ones, its rings, uses `translate_ranges`).
    fn access(&self, ipa: u64, len: u64, write: bool, f: &mut dyn FnMut(u64)) -> Result<(), AccessError> {
        if !self.is_ram(ipa, len) {
            return Err(AccessError::NotRam);
        }
        // Each round hits, fills, maps the page, or finds an invalidation in progress and
        // waits for it to end (invalidations are short and bounded). Only a guest unmapping
        // the same page in a tight loop on another vCPU could keep this from succeeding;
        // the bound turns that into an error for the access instead of a stuck CPU.
        for _ in 0..ACCESS_ATTEMPTS {
            if self.cache.with_hit(ipa, write, &mut *f).is_some() {
                return Ok(());
            }
            let filled = self.space.fill_secondary(ipa, || {}, |t| match t {
                Some(t) if !t.attrs.read || (write && !t.attrs.write) => Err(AccessError::Protected),
                Some(t) => {
                    self.cache.fill_with(ipa, t.pa & !(PAGE_SIZE - 1), t.attrs.write, &mut *f);
                    Ok(true)
                }
                None => Ok(false),
            });
            match filled {
                Some(Ok(true)) => return Ok(()),
                Some(Err(e)) => return Err(e),
                Some(Ok(false)) => self.populate_for_access(ipa)?,
                None => self.wait_invalidations(),
            }
        }
        Err(AccessError::Contended)
    }

    /// Calls `copy(host, offset, n)` for each page-sized piece of `[ipa, ipa + len)` in
    /// turn, `offset` counting from the start of the range.
    fn for_each_piece(&self, ipa: u64, len: usize, write: bool, copy: &mut dyn FnMut(u64, usize, usize)) -> Result<(), AccessError> {
        let mut done = 0;
        while done < len {
            let at = ipa + done as u64;
            let n = (len - done).min((PAGE_SIZE - at % PAGE_SIZE) as usize);
            self.access(at, n as u64, write, &mut |host| copy(host, done, n))?;
            done += n;
        }
        Ok(())
    }

    /// For a device's DMA: calls `f(host, n)` for each page-sized piece of the `count`
    /// guest ranges `range(i)` = (ipa, len), in order (populating pages as needed; `write`:
    /// pages the guest may write). An invalidation in progress fails the walk with
    /// `Contended` instead of being waited for: a caller that registered the ranges with
    /// its notifier before the walk (a pin) knows that every translation it got is either
    /// seen by later invalidations (they find the pin) or was not given (the walk failed),
    /// and must not wait on an invalidation that may wait on its pin: it drops the pin and
    /// tries again.
    pub fn translate_ranges(&self, count: usize, range: impl Fn(usize) -> (u64, usize), write: bool, mut f: impl FnMut(u64, usize)) -> Result<(), AccessError> {
        if (0..count).map(&range).any(|(ipa, len)| len != 0 && !self.is_ram(ipa, len as u64)) {
            return Err(AccessError::NotRam);
        }
        // All under one table lock (a 1 MiB request is 256 pages), until a page that is
        // not mapped: it is mapped and the walk goes on from there.
        let (mut i, mut off, mut stalled) = (0usize, 0usize, 0);
        while i < count {
            let before = (i, off);
            let mut stop = Ok(());
            let walked = self.space.translating(|tr| {
                while i < count {
                    let (ipa, len) = range(i);
                    if off >= len {
                        (i, off) = (i + 1, 0);
                        continue;
                    }
                    let at = ipa + off as u64;
                    let n = (len - off).min((PAGE_SIZE - at % PAGE_SIZE) as usize);
                    match tr.translate(at) {
                        Some(t) if !t.attrs.read || (write && !t.attrs.write) => {
                            stop = Err(Some(AccessError::Protected));
                            return;
                        }
                        Some(t) => {
                            f((t.pa & !(PAGE_SIZE - 1)) + at % PAGE_SIZE, n);
                            off += n;
                        }
                        None => {
                            stop = Err(None);
                            return;
                        }
                    }
                }
            });
            match (walked, stop) {
                (None, _) => return Err(AccessError::Contended),
                (Some(()), Ok(())) => {}
                (Some(()), Err(Some(e))) => return Err(e),
                (Some(()), Err(None)) => self.populate_for_access(range(i).0 + off as u64)?,
            }
            // Only a guest unmapping the same page in a tight loop keeps a page from
            // staying mapped until it is translated; bounded as in `access`.
            stalled = if (i, off) == before { stalled + 1 } else { 0 };
            if stalled == ACCESS_ATTEMPTS {
                return Err(AccessError::Contended);
            }
        }
        Ok(())
    }

    /// Maps the page at `ipa` for an access that found it unmapped.
    fn populate_for_access(&self, ipa: u64) -> Result<(), AccessError> {
        match self.populate(ipa) {
            Ok(_) => Ok(()),
            Err(MapError::NoMemory) => Err(AccessError::NoMemory),
            Err(_) => Err(AccessError::NotRam),
        }
    }

    /// Waits until no invalidation of this VM's stage-2 is in progress.
    pub fn wait_invalidations(&self) {
        while self.space.notifiers.seq.in_progress() != 0 {
            core::hint::spin_loop();
        }
    }

    /// Whether `[ipa, ipa + len)` is RAM within one page: the fast path of `read` and
    /// `write` (a device's ring fields and request headers), straight to a cache hit.
    #[inline(always)]
    fn in_one_page(&self, ipa: u64, len: usize) -> bool {
        len != 0 && ipa % PAGE_SIZE + len as u64 <= PAGE_SIZE && self.is_ram(ipa, len as u64)
    }

    /// Copies guest RAM at `ipa` into `buf`.
    #[inline]
    pub fn read(&self, ipa: u64, buf: &mut [u8]) -> Result<(), AccessError> {
        let dst = buf.as_mut_ptr();
        let n = buf.len();
        if self.in_one_page(ipa, n)
            // SAFETY: as in `read_pieces` (a hit holds the cache lock around the copy).
            && self.cache.with_hit(ipa, false, |host| unsafe { copy_small(host as *const u8, dst, n) }).is_some()
        {
            return Ok(());
        }
        self.read_pieces(ipa, buf)
    }

    /// Reads little-endian 64-bit words of guest RAM at `ipa` (a device's descriptor
    /// tables: decoded with word loads, hv_core::virtqueue::GuestRam::read_words).
    pub fn read_words(&self, ipa: u64, words: &mut [u64]) -> Result<(), AccessError> {
        // SAFETY: the bytes of `words`, which any byte pattern is a valid value of; the
        // borrow keeps them ours for the copy.
        let bytes = unsafe { core::slice::from_raw_parts_mut(words.as_mut_ptr() as *mut u8, words.len() * 8) };
        self.read(ipa, bytes)?;
        // The guest's words are little-endian, as this CPU (a no-op here).
        words.iter_mut().for_each(|w| *w = u64::from_le(*w));
        Ok(())
    }

    /// `read` page by page, filling the translation cache (or populating pages) as needed.
    #[inline(never)]
    fn read_pieces(&self, ipa: u64, buf: &mut [u8]) -> Result<(), AccessError> {
        let dst = buf.as_mut_ptr();
        self.for_each_piece(ipa, buf.len(), false, &mut |host, off, n| {
            // SAFETY: `host` is this VM's page for `n` bytes, kept from being freed by the
            // cache lock `access` holds around this call, and `off + n` is within `buf`; the
            // guest may change the page concurrently, which only changes the bytes we copy.
            unsafe { core::ptr::copy_nonoverlapping(host as *const u8, dst.add(off), n) }
        })
    }

    /// Copies `data` into guest RAM at `ipa`.
    #[inline]
    pub fn write(&self, ipa: u64, data: &[u8]) -> Result<(), AccessError> {
        if self.in_one_page(ipa, data.len())
            // SAFETY: as in `write_pieces` (a hit holds the cache lock around the copy).
            && self.cache.with_hit(ipa, true, |host| unsafe { copy_small(data.as_ptr(), host as *mut u8, data.len()) }).is_some()
        {
            return Ok(());
        }
        self.write_pieces(ipa, data)
    }

    /// `write` page by page, as `read_pieces`.
    #[inline(never)]
    fn write_pieces(&self, ipa: u64, data: &[u8]) -> Result<(), AccessError> {
        self.for_each_piece(ipa, data.len(), true, &mut |host, off, n| {
            // SAFETY: as in `read_pieces`; the destination is a writable page of this VM.
            unsafe { core::ptr::copy_nonoverlapping(data[off..off + n].as_ptr(), host as *mut u8, n) }
        })
    }

    /// Host frames of `pages` zeroed pages mapped read-only at `ipa` (page aligned, outside
    /// RAM): a device's register image that the guest reads as memory and whose writes
    /// fault (on their permissions) into the device's emulation. Mapped at the first call
    /// and kept across warm resets: a later call for the same range returns the same
    /// frames. None if host memory ran out or the range is RAM or taken.
    pub fn image(&self, ipa: u64, pages: usize) -> Option<Vec<u64>> {
        let size = pages as u64 * PAGE_SIZE;
        if ipa % PAGE_SIZE != 0 || pages == 0 || self.ram.overlaps(&Range::new(ipa, size)) {
            return None;
        }
        let mut images = self.images.lock();
        let mine: Vec<u64> = (0..pages as u64).filter_map(|i| images.iter().find(|(at, _)| *at == ipa + i * PAGE_SIZE).map(|(_, pa)| *pa)).collect();
        if mine.len() == pages {
            return Some(mine);
        }
        if !mine.is_empty() || !self.space.is_unmapped(ipa, size).ok()? {
            return None;
        }
        let mut frames = Vec::with_capacity(pages);
        for i in 0..pages as u64 {
            let pa = frames::alloc_zeroed(1)?;
            let at = ipa + i * PAGE_SIZE;
            images.push((at, pa));
            // Unmapped on failure by the teardown that frees the frame.
            self.space.map(at, pa, PAGE_SIZE, Attrs::RAM_RO).ok()?;
            frames.push(pa);
        }
        Some(frames)
    }

    /// Maps (`on`) or unmaps the image page at `ipa` (from `image`), keeping its frame and
    /// content: while its device's reads have effects, they must trap. Callers serialize
    /// the calls for one page.
    pub fn show_image(&self, ipa: u64, on: bool) {
        let Some(pa) = self.images.lock().iter().find(|(at, _)| *at == ipa).map(|(_, pa)| *pa) else { return };
        let mapped = self.space.translate(ipa).is_some();
        if on && !mapped {
            let _ = self.space.map(ipa, pa, PAGE_SIZE, Attrs::RAM_RO);
        } else if !on && mapped {
            let _ = self.space.unmap(ipa, PAGE_SIZE, Reason::Unmap, &mut |_, _, _| {});
        }
    }

    /// Makes guest RAM at `ipa` hold `data`, storing only the 8-byte words (and tail bytes)
    /// that differ: a warm reset's rewrite of a boot image. A store to a page QEMU
    /// translated code from throws away the translations it overlaps and takes QEMU's slow
    /// path while any are left on the page; a kernel's text differs from its image only
    /// where it patched itself (alternatives, static keys), so storing just those words
    /// keeps the rest of the page's translations for the next boot. Returns the bytes stored.
    pub fn write_changed(&self, ipa: u64, data: &[u8]) -> Result<usize, AccessError> {
        /// Words compared at once (a cache line).
        const WORDS_PER_LINE: usize = 8;
        let mut stored = 0;
        self.for_each_piece(ipa, data.len(), true, &mut |host, off, n| {
            let piece = &data[off..off + n];
            // Whole aligned words where both sides allow (the target has strict alignment:
            // a misaligned word would be assembled from bytes), then bytes.
            let words = if (piece.as_ptr() as u64 | host) % 8 == 0 { n / 8 } else { 0 };
            let (src, dst) = (piece.as_ptr().cast::<u64>(), host as *mut u64);
            let mut k = 0;
            while k < words {
                let line = (words - k).min(WORDS_PER_LINE);
                // SAFETY: `host` is this VM's writable page for `n` bytes, kept from being
                // freed by the cache lock `access` holds around this call; words k..k+line
                // are within them and within `piece`, both 8-byte aligned. No Rust reference
                // points into guest RAM and nothing runs the guest while its images are
                // written.
                unsafe {
                    // One comparison per line (unrolled for a whole one): most lines of a
                    // changed page are unchanged.
                    let differs = if line == WORDS_PER_LINE {
                        (0..WORDS_PER_LINE).fold(0, |d, i| d | (dst.add(k + i).read() ^ src.add(k + i).read())) != 0
                    } else {
                        (k..k + line).any(|i| dst.add(i).read() != src.add(i).read())
                    };
                    if differs {
                        for i in (k..k + line).filter(|&i| dst.add(i).read() != src.add(i).read()) {
                            dst.add(i).write(src.add(i).read());
                            stored += 8;
                        }
                    }
                }
                k += line;
            }
            for (i, &b) in piece.iter().enumerate().skip(8 * words) {
                let at = (host + i as u64) as *mut u8;
                // SAFETY: as above, a byte within the piece.
                unsafe {
                    if *at != b {
                        *at = b;
                        stored += 1;
                    }
                }
            }
        })?;
        Ok(stored)
    }

    /// Pages left stage-2: the tracked region's frames there are no longer the region's
    /// (the panic path must not read them).
    fn untrack(&self, ipa: u64, size: u64) {
        if let Some(t) = self.tracked.lock().as_mut() {
            let end = t.start + REGION_PAGES as u64 * PAGE_SIZE;
            for p in (ipa.max(t.start)..(ipa + size).min(end)).step_by(PAGE_SIZE as usize) {
                t.frames[((p - t.start) / PAGE_SIZE) as usize] = 0;
            }
        }
    }

    /// A leaf left stage-2 (its TLB entries invalidated): what its memory becomes.
    fn unmapped(&self, ipa: u64, pa: u64, size: u64) {
        self.untrack(ipa, size);
        match &self.backing {
            Backing::Eager(_) => {
                if !self.keep_unmapped {
                    // SAFETY: the VM's own frames, unreachable by the guest now (unmapped
                    // and invalidated), identity-mapped for the hypervisor.
                    unsafe { crate::arch::zero(pa, size) };
                }
            }
            Backing::Lazy if !self.keep_unmapped => {
                // A leaf's frames are one aligned run (a page or a block): one free.
                self.give(pa, size);
                self.count(Counter::PagesReleased, size / PAGE_SIZE);
            }
            Backing::Lazy => {
                let mut released = 0;
                for off in (0..size).step_by(PAGE_SIZE as usize) {
                    if !page_is_zero(pa + off) {
                        self.kept.lock().insert(ipa + off, pa + off);
                    } else {
                        self.give(pa + off, PAGE_SIZE);
                        released += 1;
                    }
                }
                self.count(Counter::PagesReleased, released);
            }
        }
    }

    /// HV_MEM_UNMAP / reclaim: removes the range's mappings. Returns bytes that were mapped.
    pub fn unmap(&self, ipa: u64, size: u64) -> Result<u64, MapError> {
        self.guest_range(ipa, size)?;
        self.space.unmap(ipa, size, Reason::Unmap, &mut |a, p, s| self.unmapped(a, p, s))
    }

    /// The guest gave `[ipa, ipa + size)` back (a balloon's pages, free pages it reported):
    /// the range is unmapped through the notifiers, and for a lazy VM its frames and the
    /// promise of its untouched pages go back to the host, whatever `refault` says (the
    /// content is garbage to the guest). A touch later faults in a zeroed page under a new
    /// promise. An eager VM's pages are only unmapped (zeroed), their frames stay its own.
    /// Returns the bytes the host got back.
    pub fn discard(&self, ipa: u64, size: u64) -> Result<u64, MapError> {
        self.guest_range(ipa, size)?;
        if !self.is_lazy() {
            self.unmap(ipa, size)?;
            return Ok(0);
        }
        // Backed pages: their frames are freed, not kept for the VM, a run of leaves that
        // are contiguous in both spaces at a time (a first touch's 2 MiB comes as 512 pages).
        let mut back = 0;
        let mut run: Option<(u64, u64, u64)> = None;
        let mut give_back = |(a, pa, s): (u64, u64, u64)| {
            self.untrack(a, s);
            frames::free_run(pa, (s / PAGE_SIZE) as usize);
            back += self.set_given_back(a, s, true) * PAGE_SIZE;
        };
        let unmapped = self.space.unmap(ipa, size, Reason::Unmap, &mut |a, pa, s| match &mut run {
            Some((ra, rpa, rs)) if *ra + *rs == a && *rpa + *rs == pa => *rs += s,
            _ => {
                if let Some(r) = run.replace((a, pa, s)) {
                    give_back(r);
                }
            }
        });
        if let Some(r) = run.take() {
            give_back(r);
        }
        unmapped?;
        let kept: Vec<(u64, u64)> = {
            let mut k = self.kept.lock();
            let mut tail = k.split_off(&ipa);
            let mut beyond = tail.split_off(&(ipa + size));
            k.append(&mut beyond);
            tail.into_iter().collect()
        };
        for (page, pa) in kept {
            frames::free(pa, 1);
            back += self.set_given_back(page, PAGE_SIZE, true) * PAGE_SIZE;
        }
        self.count(Counter::PagesReleased, back / PAGE_SIZE);
        // Untouched (or earlier unmapped) pages: the VM's promise of them. No fault may
        // populate one meanwhile; a page kept since (a concurrent unmap) has its frame, not
        // a promise.
        let _one_at_a_time = self.populate.lock();
        let mut promised = 0;
        let mut at = ipa;
        while at < ipa + size {
            let n = (BLOCK - at % BLOCK).min(ipa + size - at);
            let kept_here = self.keep_unmapped && self.kept.lock().range(at..at + n).next().is_some();
            if !kept_here && self.space.is_unmapped(at, n)? {
                promised += self.set_given_back(at, n, true) * PAGE_SIZE;
            } else {
                for page in (at..at + n).step_by(PAGE_SIZE as usize) {
                    if !self.kept.lock().contains_key(&page) && self.space.is_unmapped(page, PAGE_SIZE)? {
                        promised += self.set_given_back(page, PAGE_SIZE, true) * PAGE_SIZE;
                    }
                }
            }
            at += n;
        }
        let _ = self.committed.fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| Some(c.saturating_sub(promised)));
        frames::uncommit(promised);
        Ok(back + promised)
    }

    /// HV_MEM_PROTECT.
    pub fn protect(&self, ipa: u64, size: u64, attrs: Attrs) -> Result<u64, MapError> {
        self.guest_range(ipa, size)?;
        self.space.protect(ipa, size, attrs)
    }

    /// A warm reset of the VM: its RAM keeps its content (as QEMU's and KVM's do), but
    /// whatever the guest write- or execute-protected is RAM again.
    pub fn warm_reset(&self) {
        *self.tracked.lock() = None;
        let _ = self.space.protect(self.ram.start, self.ram.size(), Attrs::RAM_RWX);
    }

    /// Tracks which pages of the REGION_PAGES pages at `start` the guest writes (dirty
    /// logging by write protection, as KVM's): they are mapped now and made read-only; the
    /// first write to each faults, is noted, and gets write access back.
    pub fn track_writes(&self, start: u64) -> Result<(), MapError> {
        let size = REGION_PAGES as u64 * PAGE_SIZE;
        self.guest_range(start, size)?;
        let mut frames = [0u64; REGION_PAGES];
        for (i, page) in (start..start + size).step_by(PAGE_SIZE as usize).enumerate() {
            self.populate(page)?;
            frames[i] = self.space.translate(page).map_or(0, |t| t.pa & !(PAGE_SIZE - 1));
        }
        *self.tracked.lock() = Some(Tracked { start, written: Pages::NONE, frames });
        self.space.protect(start, size, Attrs::RAM_RO).map(|_| ())
    }

    /// A permission fault at `ipa`: if it is in the tracked region, the page is noted as
    /// written and writable again (true: the guest retries).
    fn note_tracked_write(&self, ipa: u64) -> bool {
        let page = {
            let mut t = self.tracked.lock();
            let Some(t) = t.as_mut() else { return false };
            if ipa < t.start || ipa >= t.start + REGION_PAGES as u64 * PAGE_SIZE {
                return false;
            }
            t.written.insert(((ipa - t.start) / PAGE_SIZE) as usize);
            ipa & !(PAGE_SIZE - 1)
        };
        self.space.protect(page, PAGE_SIZE, Attrs::RAM_RWX).is_ok()
    }

    /// Whether the guest wrote the tracked region since the last `take_written`.
    pub fn has_written(&self) -> bool {
        self.tracked.lock().as_ref().is_some_and(|t| t.written != Pages::NONE)
    }

    /// The tracked region's pages written since the last call (all, if nothing is
    /// tracked), each read-only again so that the next write is noted.
    pub fn take_written(&self) -> Pages {
        let Some((start, written)) = self.tracked.lock().as_mut().map(|t| (t.start, core::mem::replace(&mut t.written, Pages::NONE))) else {
            return Pages::ALL;
        };
        for p in (0..REGION_PAGES).filter(|p| written.contains(*p)) {
            let _ = self.space.protect(start + p as u64 * PAGE_SIZE, PAGE_SIZE, Attrs::RAM_RO);
        }
        written
    }

    /// The panic path (every other CPU stopped): the tracked region's written pages and host
    /// frames, without a table lock (and taking the region's lock even if a stopped CPU
    /// held it).
    pub fn region_at_panic(&self) -> Option<(Pages, [u64; REGION_PAGES])> {
        if self.tracked.is_locked() {
            // SAFETY: every other CPU is stopped for good; if this one held the lock, the code
            // that held it never runs again. The data is plain values.
            unsafe { self.tracked.force_unlock() };
        }
        self.tracked.try_lock()?.as_ref().map(|t| (t.written, t.frames))
    }

    /// HV_MEM_AGE: (young pages, bitmap of the first 64 pages, whether the hypervisor's
    /// own accesses made the range young).
    pub fn age(&self, ipa: u64, size: u64, test_only: bool) -> Result<(u64, u64, bool), MapError> {
        self.guest_range(ipa, size)?;
        let (mut pages, mut bitmap) = (0u64, 0u64);
        let mut seen = |leaf: u64, leaf_size: u64, young: bool| {
            if !test_only {
                self.tracker.record(leaf, leaf_size, young);
            }
            if !young {
                return;
            }
            // The part of the leaf inside the range, page by page.
            let (s, e) = (leaf.max(ipa), (leaf + leaf_size).min(ipa + size));
            for p in (s..e).step_by(PAGE_SIZE as usize) {
                pages += 1;
                let i = (p - ipa) / PAGE_SIZE;
                if i < 64 {
                    bitmap |= 1 << i;
                }
            }
        };
        let (_, secondary) = if test_only { self.space.test_young(ipa, size, &mut seen)? } else { self.space.age(ipa, size, &mut seen)? };
        Ok((pages, bitmap, secondary))
    }

    /// A reclaim pass over the range: ages it, then unmaps the pages cold for at least
    /// `passes` passes in a row (memory of lazy VMs goes back to the hypervisor). Returns
    /// the pages reclaimed.
    pub fn reclaim(&self, ipa: u64, size: u64, passes: u8) -> Result<u64, MapError> {
        self.guest_range(ipa, size)?;
        let end = ipa + size;
        let mut at = ipa;
        while at < end {
            let n = (AGING_GRANULE - at % AGING_GRANULE).min(end - at);
            let (_, hypervisor_used) = self.space.age(at, n, &mut |leaf, leaf_size, young| self.tracker.record(leaf, leaf_size, young))?;
            if hypervisor_used {
                self.tracker.record(at, n, true);
            }
            at += n;
        }
        let mut reclaimed = 0;
        for (run, bytes) in self.tracker.cold_runs(ipa, size, passes) {
            reclaimed += self.unmap(run, bytes)? / PAGE_SIZE;
        }
        Ok(reclaimed)
    }

    /// Prints the stage-2 notifier trace.
    pub fn log_trace(&self, vm: usize) {
        log::info!("VM {vm}: stage-2 trace, {} events so far, the last ones:", self.trace.total());
        self.trace.for_each(|e| log::info!("VM {vm}:   {e}"));
    }

    /// Tears everything down; returns (RAM bytes, table frames) freed.
    pub fn teardown(&self) -> (u64, usize) {
        if self.torn_down.swap(true, Ordering::AcqRel) {
            return (0, 0);
        }
        let mut freed = 0;
        let tables = self.space.teardown(&mut |ipa, pa, size| {
            // Images' frames are freed below, from their list.
            if self.is_lazy() && self.ram.contains(ipa) {
                // A leaf's frames are one aligned run (a page or a block).
                frames::free(pa, (size / PAGE_SIZE) as usize);
                freed += size;
            }
        });
        for (_, pa) in core::mem::take(&mut *self.kept.lock()) {
            frames::free(pa, 1);
            freed += PAGE_SIZE;
        }
        for (_, pa) in core::mem::take(&mut *self.images.lock()) {
            frames::free(pa, 1);
        }
        if let Backing::Eager(chunks) = &self.backing {
            free_ram(chunks);
            freed += chunks.iter().map(|c| c.size).sum::<u64>();
        }
        frames::uncommit(self.committed.swap(0, Ordering::AcqRel));
        (freed, tables)
    }
}

impl Drop for GuestMemory {
    /// Whoever drops the last reference without tearing down (an error path) frees it all.
    fn drop(&mut self) {
        self.teardown();
    }
}

/// Copies `n` bytes: the sizes of ring fields, descriptors and request headers as single
/// loads and stores, without a call.
///
/// # Safety
/// As `core::ptr::copy_nonoverlapping`.
#[inline(always)]
unsafe fn copy_small(src: *const u8, dst: *mut u8, n: usize) {
    // SAFETY: the caller's promise; unaligned accesses are allowed on Normal memory (the
    // hypervisor runs with SCTLR_EL2.A clear).
    unsafe {
        match n {
            1 => *dst = *src,
            2 => dst.cast::<u16>().write_unaligned(src.cast::<u16>().read_unaligned()),
            4 => dst.cast::<u32>().write_unaligned(src.cast::<u32>().read_unaligned()),
            8 => dst.cast::<u64>().write_unaligned(src.cast::<u64>().read_unaligned()),
            16 => dst.cast::<u128>().write_unaligned(src.cast::<u128>().read_unaligned()),
            _ => core::ptr::copy_nonoverlapping(src, dst, n),
        }
    }
}

fn page_is_zero(pa: u64) -> bool {
    // SAFETY: a page of this VM's RAM, unmapped from the guest, identity-mapped; read-only.
    let words = unsafe { core::slice::from_raw_parts(pa as *const u64, (PAGE_SIZE / 8) as usize) };
    words.iter().all(|w| *w == 0)
}

/// Allocates `size` bytes of zeroed guest RAM in naturally aligned power-of-two chunks of at
/// least 2 MiB, laid out from IPA `base`.
fn alloc_ram(base: u64, size: u64) -> Option<Vec<RamChunk>> {
    const MIN_CHUNK: u64 = 2 << 20;
    let mut chunks = Vec::new();
    let mut ipa = base;
    let mut left = size;
    while left > 0 {
        let mut chunk = 1u64 << (63 - left.leading_zeros());
        let pa = loop {
            if chunk < MIN_CHUNK {
                free_ram(&chunks);
                return None;
            }
            // Zeroed: whatever the frames held before (another VM's data) must not reach
            // this guest.
            if let Some(pa) = frames::alloc_zeroed((chunk / PAGE_SIZE) as usize) {
                break pa;
            }
            chunk /= 2;
        };
        let pages = (chunk / PAGE_SIZE) as usize;
        chunks.push(RamChunk { ipa, pa, size: chunk, pages });
        ipa += chunk;
        left -= chunk;
    }
    Some(chunks)
}

fn free_ram(chunks: &[RamChunk]) {
    for c in chunks {
        frames::free(c.pa, c.pages);
    }
}
