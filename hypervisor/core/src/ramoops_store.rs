//! Each VM's ramoops region (guest_dt's reserved-memory node), kept on the pstore disk so
//! that a guest's own pstore survives the machine's power-off: where its areas lie, the
//! header of a saved copy, which copy to restore, which pages a save must write, and the
//! records in a region (Linux's persistent_ram buffers) for the host tool.
//!
//! Disk layout: the pstore zones from offset 0, then, at the end of the disk (64 KiB
//! aligned), one area per possible VM (cmdline::MAX_VMS), each two slots of a header page
//! and a region copy, then a 64 KiB pmsg zone (the VM's persistent messages, pstore/zone's
//! ring format). A save writes the slot not holding the newest copy (data first, then
//! its header, then a flush), so a save cut short by a crash leaves the previous copy whole.
//! Linux's pstore/blk (which reads the whole disk, up to 128 MiB, as 64 KiB kmsg zones)
//! sees the areas as invalid zones: a slot's header has its own magic, and a region copy
//! starts 4 KiB into a zone, so the persistent_ram signatures inside it never sit where a
//! kmsg zone header would.
//!
//! Nothing read from the disk is trusted: bad headers and checksums make a slot invalid.

use crate::cmdline::MAX_VMS;
use crate::guest_dt::{RamoopsSizes, RAMOOPS_SIZE};

pub const MAGIC: [u8; 8] = *b"HVRAMOOP";
/// Where the region's division sits (after the changed-pages bitmap), then the header's
/// own checksum.
const SIZES_AT: usize = 48 + 8 * REGION_PAGES.div_ceil(64);
const HASH_AT: usize = SIZES_AT + 16;
const VERSION: u32 = 2;
/// Version 1 headers (no division: the default one) have their checksum where the
/// division is now; they are still read.
const V1_HASH_AT: usize = SIZES_AT;
/// A slot's header page (one sector is used).
pub const SLOT_HEADER: u64 = 4096;
const ALIGN: u64 = 64 << 10;
/// The pstore zones keep at least this much of the disk.
pub const MIN_ZONES: u64 = 1 << 20;
pub const PAGE: u64 = 4096;
/// Pages of a region.
pub const REGION_PAGES: usize = (RAMOOPS_SIZE / PAGE) as usize;

/// A slot: its header page and the region copy, 64 KiB aligned (so that the copy starts
/// 4 KiB past a kmsg zone boundary).
pub const fn slot_bytes() -> u64 {
    (SLOT_HEADER + RAMOOPS_SIZE).next_multiple_of(ALIGN)
}

/// Each VM's persistent message ring (HV_PMSG_WRITE), a pstore/zone pmsg zone after its
/// two slots.
pub const PMSG_ZONE: u64 = 64 << 10;

pub const fn area_bytes() -> u64 {
    2 * slot_bytes() + PMSG_ZONE
}

/// Byte offset of VM `vm`'s pmsg zone, given the areas' start.
pub fn pmsg_offset(areas: u64, vm: usize) -> u64 {
    areas + vm as u64 * area_bytes() + 2 * slot_bytes()
}

/// Bytes all the areas take, aligned.
pub const fn areas_bytes() -> u64 {
    (MAX_VMS as u64 * area_bytes()).next_multiple_of(ALIGN)
}

/// The smallest disk with zones and every VM's area (what `make run` creates).
pub const fn min_disk() -> u64 {
    MIN_ZONES + areas_bytes()
}

/// Where the areas start on a disk of `disk` bytes: None when it is too small to hold them
/// beside MIN_ZONES of zones (then the zones have the whole disk, as before areas existed).
pub fn areas_start(disk: u64) -> Option<u64> {
    let start = disk.checked_sub(areas_bytes())? & !(ALIGN - 1);
    (start >= MIN_ZONES).then_some(start)
}

/// The bytes the pstore zones may use on a disk of `disk` bytes.
pub fn zone_bytes(disk: u64) -> u64 {
    areas_start(disk).unwrap_or(disk)
}

/// Byte offset of VM `vm`'s slot `slot` (0 or 1), given the areas' start.
pub fn slot_offset(areas: u64, vm: usize, slot: usize) -> u64 {
    areas + vm as u64 * area_bytes() + slot as u64 * slot_bytes()
}

/// 64-bit FNV-1a.
pub fn fnv64(data: &[u8]) -> u64 {
    fnv64_more(FNV_START, data)
}

pub const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a continued over `data` from `h` (a region checksummed page by page).
pub fn fnv64_more(h: u64, data: &[u8]) -> u64 {
    data.iter().fold(h, |h, b| (h ^ *b as u64).wrapping_mul(0x0100_0000_01b3))
}

/// A saved copy's header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotHeader {
    pub vm: u32,
    /// Counts the VM's saves: the valid slot with the larger one is the newest copy.
    pub generation: u64,
    pub region_size: u64,
    /// fnv64 of the whole region copy.
    pub checksum: u64,
    /// Wall-clock seconds of the save.
    pub saved_at: i64,
    /// The pages in which this copy differs from the previous generation's (all, when
    /// that is not known): what the other slot lacks if it holds that generation.
    pub changed: Pages,
    /// How the region was divided when it was saved (the VM's device tree said so).
    pub sizes: RamoopsSizes,
}

impl SlotHeader {
    pub fn encode(&self) -> [u8; 512] {
        let mut s = [0u8; 512];
        s[0..8].copy_from_slice(&MAGIC);
        s[8..12].copy_from_slice(&VERSION.to_le_bytes());
        s[12..16].copy_from_slice(&self.vm.to_le_bytes());
        s[16..24].copy_from_slice(&self.generation.to_le_bytes());
        s[24..32].copy_from_slice(&self.region_size.to_le_bytes());
        s[32..40].copy_from_slice(&self.checksum.to_le_bytes());
        s[40..48].copy_from_slice(&self.saved_at.to_le_bytes());
        for (i, w) in self.changed.0.iter().enumerate() {
            s[48 + 8 * i..56 + 8 * i].copy_from_slice(&w.to_le_bytes());
        }
        let z = self.sizes;
        for (i, v) in [z.record, z.console, z.ftrace, z.pmsg].into_iter().enumerate() {
            s[SIZES_AT + 4 * i..SIZES_AT + 4 * i + 4].copy_from_slice(&v.to_le_bytes());
        }
        let h = fnv64(&s[..HASH_AT]);
        s[HASH_AT..HASH_AT + 8].copy_from_slice(&h.to_le_bytes());
        s
    }

    /// A header for VM `vm`'s region, or None (blank, damaged, another VM's, another size).
    pub fn decode(s: &[u8], vm: usize) -> Option<SlotHeader> {
        let s = s.get(..HASH_AT + 8)?;
        let u64_at = |o: usize| u64::from_le_bytes(s[o..o + 8].try_into().unwrap_or([0; 8]));
        let u32_at = |o: usize| u32::from_le_bytes([s[o], s[o + 1], s[o + 2], s[o + 3]]);
        let (hash_at, sizes) = match u32_at(8) {
            1 => (V1_HASH_AT, RamoopsSizes::DEFAULT),
            VERSION => (HASH_AT, RamoopsSizes { record: u32_at(SIZES_AT), console: u32_at(SIZES_AT + 4), ftrace: u32_at(SIZES_AT + 8), pmsg: u32_at(SIZES_AT + 12) }),
            _ => return None,
        };
        if s[0..8] != MAGIC || u64_at(hash_at) != fnv64(&s[..hash_at]) {
            return None;
        }
        let mut changed = Pages::NONE;
        for (i, w) in changed.0.iter_mut().enumerate() {
            *w = u64_at(48 + 8 * i);
        }
        let h = SlotHeader {
            vm: u32::from_le_bytes([s[12], s[13], s[14], s[15]]),
            generation: u64_at(16),
            region_size: u64_at(24),
            checksum: u64_at(32),
            saved_at: u64_at(40) as i64,
            changed,
            sizes,
        };
        (h.vm as usize == vm && h.region_size == RAMOOPS_SIZE).then_some(h)
    }
}

/// The slot holding the newest copy among two decoded headers (whose regions passed their
/// checksums), if any.
pub fn newest(slots: [Option<SlotHeader>; 2]) -> Option<(usize, SlotHeader)> {
    match slots {
        [Some(a), Some(b)] => Some(if b.generation > a.generation { (1, b) } else { (0, a) }),
        [Some(a), None] => Some((0, a)),
        [None, Some(b)] => Some((1, b)),
        [None, None] => None,
    }
}

/// A set of the region's pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pages(pub [u64; REGION_PAGES.div_ceil(64)]);

impl Pages {
    pub const NONE: Pages = Pages([0; REGION_PAGES.div_ceil(64)]);
    pub const ALL: Pages = Pages([u64::MAX; REGION_PAGES.div_ceil(64)]);

    pub fn insert(&mut self, page: usize) {
        if page < REGION_PAGES {
            self.0[page / 64] |= 1 << (page % 64);
        }
    }

    pub fn contains(&self, page: usize) -> bool {
        page < REGION_PAGES && self.0[page / 64] & 1 << (page % 64) != 0
    }

    pub fn union(&self, other: &Pages) -> Pages {
        let mut u = *self;
        u.0.iter_mut().zip(other.0).for_each(|(a, b)| *a |= b);
        u
    }

    pub fn count(&self) -> usize {
        (0..REGION_PAGES).filter(|p| self.contains(*p)).count()
    }
}

/// What the next save of a VM's region must write, across saves: the slot to write and
/// the pages it lacks. The other slot holds the newest copy; the slot to write holds an
/// older one that lacks `behind` (everything, when nothing is known about it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SaveState {
    pub next_slot: usize,
    pub generation: u64,
    behind: Pages,
    /// The other slot holds the newest copy (false before the first save of a region that
    /// was not restored from the disk).
    other_is_copy: bool,
}

impl SaveState {
    /// After restoring slot `restored` (`newest`'s copy), the other slot holding the copy
    /// of generation `other` if any; or from scratch (None).
    pub fn new(restored: Option<(usize, &SlotHeader)>, other: Option<u64>) -> SaveState {
        match restored {
            Some((slot, newest)) => {
                // The other slot lacks what the newest save changed, if it holds the
                // generation before; otherwise anything.
                let behind = if other == Some(newest.generation.wrapping_sub(1)) { newest.changed } else { Pages::ALL };
                SaveState { next_slot: 1 - slot, generation: newest.generation, behind, other_is_copy: true }
            }
            None => SaveState { next_slot: 0, generation: 0, behind: Pages::ALL, other_is_copy: false },
        }
    }

    /// Nothing restored (the copies are damaged or divided otherwise), the newest copy on
    /// the disk (its slot and generation) if any: the first save writes the whole region,
    /// into the other slot, as a newer generation.
    pub fn replacing(newest: Option<(usize, u64)>) -> SaveState {
        match newest {
            Some((slot, generation)) => SaveState { next_slot: 1 - slot, generation, behind: Pages::ALL, other_is_copy: false },
            None => SaveState::new(None, None),
        }
    }

    /// The pages a save must write, given those the guest changed since the last save.
    pub fn to_write(&self, dirty: &Pages) -> Pages {
        self.behind.union(dirty)
    }

    /// The save of `dirty` into `next_slot` completed: the other slot now lacks `dirty`.
    pub fn saved(&mut self, dirty: &Pages) {
        self.generation += 1;
        self.next_slot = 1 - self.next_slot;
        self.behind = if self.other_is_copy { *dirty } else { Pages::ALL };
        self.other_is_copy = true;
    }
}

/// A record in a region: which part, and its bytes (oldest first for ring buffers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RamRecord {
    /// "dmesg", "console", "ftrace" or "pmsg", as /sys/fs/pstore names them
    /// (dmesg-ramoops-<index>).
    pub kind: &'static str,
    pub index: usize,
    pub text: alloc::vec::Vec<u8>,
}

const PRZ_SIG: u32 = 0x4347_4244;
const PRZ_HEADER: usize = 12;

/// The records in a region divided as `sizes` says, as Linux's ram.c lays it out: the dump
/// records from the start (as many as fit in what the buffers leave, each an even share of
/// that), then the console, ftrace and pmsg buffers; each persistent_ram buffer with its
/// signature, start and size checked.
pub fn region_records(region: &[u8], sizes: RamoopsSizes) -> alloc::vec::Vec<RamRecord> {
    let mut out = alloc::vec::Vec::new();
    let dumps = sizes.records() as usize;
    let zone = if dumps == 0 { 0 } else { (sizes.dump_bytes() as usize / dumps) & !1 };
    let mut parts: alloc::vec::Vec<(&'static str, usize, usize, usize)> = (0..dumps).map(|i| ("dmesg", i, i * zone, zone)).collect();
    let mut at = dumps * zone;
    for (kind, size) in [("console", sizes.console), ("ftrace", sizes.ftrace), ("pmsg", sizes.pmsg)] {
        parts.push((kind, 0, at, size as usize));
        at += size as usize;
    }
    for (kind, index, at, size) in parts {
        let Some(buf) = region.get(at..at + size).filter(|b| b.len() > PRZ_HEADER) else { continue };
        let word = |o: usize| u32::from_le_bytes([buf[o], buf[o + 1], buf[o + 2], buf[o + 3]]) as usize;
        let (start, used, cap) = (word(4), word(8), size - PRZ_HEADER);
        if word(0) as u32 != PRZ_SIG || used == 0 || used > cap || start > cap {
            continue;
        }
        let data = &buf[PRZ_HEADER..PRZ_HEADER + cap];
        // A ring: when full, the oldest byte is at `start`.
        let text = if used < cap { data[..used].to_vec() } else { [&data[start..], &data[..start]].concat() };
        out.push(RamRecord { kind, index, text });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;

    #[test]
    fn areas_sit_at_the_end_of_a_large_enough_disk() {
        assert_eq!(areas_start(1 << 20), None, "a 1 MiB disk keeps all of it for zones");
        assert_eq!(zone_bytes(1 << 20), 1 << 20);
        let d = min_disk();
        assert_eq!(d, 18 * (1 << 20) + (512 << 10), "scripts/qemu.py's PSTORE_SIZE");
        assert_eq!(areas_start(d), Some(MIN_ZONES));
        assert_eq!(areas_start(d - 1), None);
        let big = 200 << 20;
        let a = areas_start(big).unwrap();
        assert_eq!(a % ALIGN, 0);
        assert!(a + areas_bytes() <= big);
        assert_eq!(pmsg_offset(a, MAX_VMS - 1) + PMSG_ZONE, a + MAX_VMS as u64 * area_bytes());
        assert_eq!(slot_offset(a, 1, 0), pmsg_offset(a, 0) + PMSG_ZONE);
        // Region copies never start on a 64 KiB kmsg zone boundary.
        for vm in 0..MAX_VMS {
            for slot in 0..2 {
                assert_ne!((slot_offset(a, vm, slot) + SLOT_HEADER) % ALIGN, 0);
            }
        }
    }

    #[test]
    fn headers_round_trip_and_refuse_damage() {
        let mut changed = Pages::NONE;
        changed.insert(0);
        changed.insert(200);
        let sizes = RamoopsSizes { record: 128 << 10, console: 32 << 10, ftrace: 16 << 10, pmsg: 8 << 10 };
        let h = SlotHeader { vm: 3, generation: 9, region_size: RAMOOPS_SIZE, checksum: 0x1234, saved_at: 1_700_000_000, changed, sizes };
        let s = h.encode();
        assert_eq!(SlotHeader::decode(&s, 3), Some(h));
        assert_eq!(SlotHeader::decode(&s, 2), None, "another VM's");
        for i in 0..HASH_AT + 8 {
            let mut bad = s;
            bad[i] ^= 0x10;
            assert_eq!(SlotHeader::decode(&bad, 3), None, "byte {i} flipped");
        }
        assert_eq!(SlotHeader::decode(&[0u8; 512], 0), None);
        assert_eq!(SlotHeader::decode(&s[..20], 3), None);
        let a = SlotHeader { generation: 4, ..h };
        let b = SlotHeader { generation: 5, ..h };
        assert_eq!(newest([Some(a), Some(b)]), Some((1, b)));
        assert_eq!(newest([Some(b), Some(a)]), Some((0, b)));
        assert_eq!(newest([None, Some(a)]), Some((1, a)));
        assert_eq!(newest([None, None]), None);
        // A version 1 header (an older hypervisor's: no division, its checksum where the
        // division is now) is read, with the default division.
        let mut v1 = [0u8; 512];
        v1[..SIZES_AT].copy_from_slice(&s[..SIZES_AT]);
        v1[8..12].copy_from_slice(&1u32.to_le_bytes());
        let hash = fnv64(&v1[..V1_HASH_AT]);
        v1[V1_HASH_AT..V1_HASH_AT + 8].copy_from_slice(&hash.to_le_bytes());
        assert_eq!(SlotHeader::decode(&v1, 3), Some(SlotHeader { sizes: RamoopsSizes::DEFAULT, ..h }));
    }

    /// Alternating saves of only the changed pages keep both slots' copies right: a model
    /// disk restored from the newest slot after any number of saves equals the region.
    #[test]
    fn saves_of_changed_pages_keep_the_newest_copy_whole() {
        let mut rng = crate::rng::Rng::new(5);
        let mut region = vec![0u8; RAMOOPS_SIZE as usize];
        let mut slots = [vec![0xeeu8; RAMOOPS_SIZE as usize], vec![0xeeu8; RAMOOPS_SIZE as usize]];
        let mut gens = [0u64, 0];
        let mut state = SaveState::new(None, None);
        let mut written = 0;
        for round in 0..200 {
            let mut dirty = Pages::NONE;
            for _ in 0..rng.below(6) {
                let p = rng.below(REGION_PAGES as u64) as usize;
                region[p * PAGE as usize] = rng.next() as u8;
                dirty.insert(p);
            }
            let pages = state.to_write(&dirty);
            let s = state.next_slot;
            for p in (0..REGION_PAGES).filter(|p| pages.contains(*p)) {
                let r = p * PAGE as usize..(p + 1) * PAGE as usize;
                slots[s][r.clone()].copy_from_slice(&region[r]);
                written += 1;
            }
            state.saved(&dirty);
            gens[s] = state.generation;
            let newest = if gens[1] > gens[0] { 1 } else { 0 };
            assert!(slots[newest] == region, "round {round}");
        }
        // The first two saves write everything, the rest only what changed.
        assert!(written < 2 * REGION_PAGES + 200 * 10, "{written} pages written");
        // After a restore, the first save writes everything into the other slot unless it
        // holds the generation before (then what the newest save changed), then changes.
        let mut d = Pages::NONE;
        d.insert(3);
        let newest = SlotHeader { vm: 0, generation: 7, region_size: RAMOOPS_SIZE, checksum: 0, saved_at: 0, changed: d, sizes: RamoopsSizes::DEFAULT };
        for other in [None, Some(5)] {
            let mut st = SaveState::new(Some((1, &newest)), other);
            assert_eq!((st.next_slot, st.to_write(&Pages::NONE)), (0, Pages::ALL));
            st.saved(&d);
            assert_eq!((st.next_slot, st.generation, st.to_write(&Pages::NONE)), (1, 8, d));
        }
        let st = SaveState::new(Some((1, &newest)), Some(6));
        assert_eq!(st.to_write(&Pages::NONE), d, "the other slot lacks only page 3");
        // Nothing restored over a newest copy of generation 7 in slot 1 (damaged, divided
        // otherwise): saves come after it, whole until both slots hold this region.
        let mut st = SaveState::replacing(Some((1, 7)));
        assert_eq!((st.next_slot, st.to_write(&Pages::NONE)), (0, Pages::ALL));
        st.saved(&d);
        assert_eq!((st.next_slot, st.generation, st.to_write(&Pages::NONE)), (1, 8, Pages::ALL));
        st.saved(&d);
        assert_eq!((st.next_slot, st.generation, st.to_write(&Pages::NONE)), (0, 9, d));
        assert_eq!(SaveState::replacing(None).generation, 0);
    }

    #[test]
    fn region_records_are_found_and_checked() {
        let mut region = vec![0u8; RAMOOPS_SIZE as usize];
        let put = |region: &mut [u8], at: usize, start: u32, size: u32, text: &[u8]| {
            region[at..at + 4].copy_from_slice(&PRZ_SIG.to_le_bytes());
            region[at + 4..at + 8].copy_from_slice(&start.to_le_bytes());
            region[at + 8..at + 12].copy_from_slice(&size.to_le_bytes());
            region[at + 12..at + 12 + text.len()].copy_from_slice(text);
        };
        put(&mut region, 0, 0, 14, b"====1.2-D\nOops");
        let d = RamoopsSizes::DEFAULT;
        put(&mut region, d.record as usize, 0, 70000, b"too long");
        let console = RAMOOPS_SIZE as usize - (d.console + d.pmsg) as usize;
        put(&mut region, console, 0, 5, b"hello");
        let r = region_records(&region, d);
        assert_eq!(r.len(), 2, "{r:?}");
        assert_eq!((r[0].kind, r[0].index, &r[0].text[..]), ("dmesg", 0, &b"====1.2-D\nOops"[..]));
        assert_eq!((r[1].kind, &r[1].text[..]), ("console", &b"hello"[..]));
        // A full ring starts at `start`.
        let cap = d.console as usize - PRZ_HEADER;
        put(&mut region, console, 3, cap as u32, b"");
        region[console + 12..console + 12 + cap].fill(b'x');
        region[console + 12..console + 15].copy_from_slice(b"END");
        let r = region_records(&region, d);
        assert!(r[1].text.ends_with(b"END") && r[1].text.len() == cap);
        // Records that do not divide the space evenly (Linux: 968 KiB / 7 records, each
        // 141,604 bytes), then 32 KiB of console, 16 of ftrace, 8 of pmsg.
        let odd = RamoopsSizes { record: 128 << 10, console: 32 << 10, ftrace: 16 << 10, pmsg: 8 << 10 };
        let mut region = vec![0u8; RAMOOPS_SIZE as usize];
        put(&mut region, 141_604, 0, 4, b"two!");
        put(&mut region, 7 * 141_604 + (48 << 10), 0, 4, b"pmsg");
        put(&mut region, 7 * 141_604 + (32 << 10), 0, 6, b"ftrace");
        let r = region_records(&region, odd);
        let got: std::vec::Vec<_> = r.iter().map(|r| (r.kind, r.index, &r.text[..])).collect();
        assert_eq!(got, [("dmesg", 1, &b"two!"[..]), ("ftrace", 0, &b"ftrace"[..]), ("pmsg", 0, &b"pmsg"[..])]);
        // Garbage never panics.
        let mut rng = crate::rng::Rng::new(77);
        for _ in 0..crate::fuzz_tests::iters(50) {
            region.iter_mut().step_by(61).for_each(|b| *b = rng.next() as u8);
            let _ = region_records(&region, RamoopsSizes::DEFAULT);
            let _ = region_records(&region, RamoopsSizes { record: 4 << 10, console: 0, ftrace: 0, pmsg: 0 });
        }
    }
}
