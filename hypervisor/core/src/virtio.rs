//! Split-virtqueue bookkeeping and virtio-blk requests for the hypervisor's own drivers:
//! where the rings live, how descriptor chains are written and freed, and what the
//! device's used ring may be trusted for. The memory is reached through
//! [`QueueMemory`] (volatile accesses to a DMA area in the hypervisor, a vector in tests).
//!
//! The device is not trusted: a used element naming a descriptor that was not submitted,
//! a used index that jumps, or a length beyond what was offered is an error, never a panic
//! or an out-of-bounds access.

#[cfg(feature = "alloc")]
use alloc::vec::Vec;

/// Little-endian accesses to the queue's memory at byte offsets.
pub trait QueueMemory {
    fn read16(&self, off: usize) -> u16;
    fn read32(&self, off: usize) -> u32;
    fn write16(&mut self, off: usize, v: u16);
    fn write32(&mut self, off: usize, v: u32);
    fn write64(&mut self, off: usize, v: u64);
    /// Orders the ring writes before the index write the device polls (a store barrier).
    fn publish_barrier(&mut self);
}

pub const DESC_NEXT: u16 = 1;
pub const DESC_WRITE: u16 = 2;
pub const DESC_INDIRECT: u16 = 4;
pub const DESC_SIZE: usize = 16;
/// The ring feature bit for indirect descriptor tables.
pub const F_INDIRECT_DESC: u32 = 28;

/// Indirect descriptor tables, one per descriptor of the ring, in the queue's memory: with
/// them a chain takes one ring descriptor however many segments it has, so a full-size
/// request no longer fills the ring alone. Table `d` is `entries` descriptors at byte
/// `offset + d * entries * 16`, where the device finds it at `addr` plus the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndirectTables {
    pub offset: usize,
    pub addr: u64,
    pub entries: u16,
}

/// Byte offsets of a split virtqueue of `size` entries in one area.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueLayout {
    pub size: u16,
    pub desc: usize,
    pub avail: usize,
    pub used: usize,
    /// Bytes the whole queue takes.
    pub bytes: usize,
}

impl QueueLayout {
    /// `align` is where the used ring starts: 4096 for legacy (version 1) transports, 4
    /// for modern ones. `size` must be a power of two.
    pub fn new(size: u16, align: usize) -> Option<QueueLayout> {
        if size == 0 || !size.is_power_of_two() || !align.is_power_of_two() {
            return None;
        }
        let n = size as usize;
        let desc = 0;
        let avail = n * DESC_SIZE;
        let used = (avail + 6 + 2 * n).next_multiple_of(align.max(4));
        let bytes = used + 6 + 8 * n;
        Some(QueueLayout { size, desc, avail, used, bytes })
    }
}

/// One buffer of a request: its (host-physical) address, length, and whether the device
/// writes it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    pub addr: u64,
    pub len: u32,
    pub device_writes: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UsedError {
    /// The used index moved by more than the chains in flight.
    IndexJump { expected: u16, found: u16 },
    /// The element names a chain that is not in flight.
    UnknownId(u32),
    /// More bytes reported written than the device-writable buffers hold.
    BadLength(u32),
}

/// One completed chain: its head descriptor (the token `submit` returned) and the bytes the
/// device says it wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Used {
    pub head: u16,
    pub len: u32,
}

/// A split virtqueue, driver side, with any number of chains in flight (as many as its
/// descriptors hold). Which descriptors belong to which chain is kept here, never read
/// back from the table the device can write. Everything is allocated by `new`: submitting,
/// polling and `reset` do not allocate (the panic path uses them).
#[cfg(feature = "alloc")]
pub struct SplitQueue {
    layout: QueueLayout,
    avail_idx: u16,
    used_idx: u16,
    /// Free descriptors, a stack.
    free: Vec<u16>,
    /// Our own copy of each descriptor's link within its chain.
    next: Vec<u16>,
    /// Per head descriptor of a chain in flight: its length in descriptors (0: not in
    /// flight) and the bytes the device may write.
    chain_len: Vec<u16>,
    writable: Vec<u32>,
    in_flight: u16,
    indirect: Option<IndirectTables>,
}

#[cfg(feature = "alloc")]
impl SplitQueue {
    pub fn new(layout: QueueLayout) -> SplitQueue {
        let n = layout.size as usize;
        let mut q = SplitQueue {
            layout,
            avail_idx: 0,
            used_idx: 0,
            free: Vec::with_capacity(n),
            next: alloc::vec![0; n],
            chain_len: alloc::vec![0; n],
            writable: alloc::vec![0; n],
            in_flight: 0,
            indirect: None,
        };
        q.reset();
        q
    }

    /// Forgets every chain (after the device was reset, or with the ring memory zeroed).
    pub fn reset(&mut self) {
        self.avail_idx = 0;
        self.used_idx = 0;
        self.free.clear();
        self.free.extend((0..self.layout.size).rev());
        self.chain_len.fill(0);
        self.in_flight = 0;
    }

    pub fn layout(&self) -> QueueLayout {
        self.layout
    }

    /// Chains submitted and not completed.
    pub fn in_flight(&self) -> usize {
        self.in_flight as usize
    }

    /// Descriptors free for new chains.
    pub fn free_descriptors(&self) -> usize {
        self.free.len()
    }

    /// Chains of more than one segment go into indirect tables from now on (None: into
    /// the ring's descriptors). Only while nothing is in flight.
    pub fn set_indirect(&mut self, tables: Option<IndirectTables>) {
        self.indirect = tables.filter(|t| t.entries >= 2);
    }

    /// The table a chain of `n` segments would go to (None: the ring's descriptors).
    fn table_for(&self, n: usize) -> Option<IndirectTables> {
        self.indirect.filter(|t| n > 1 && n <= t.entries as usize)
    }

    /// Whether a chain of `n` segments fits now.
    pub fn has_room(&self, n: usize) -> bool {
        n != 0 && self.free.len() >= if self.table_for(n).is_some() { 1 } else { n }
    }

    /// Calls `f(head)` for each chain in flight (to fail them when the device is reset).
    pub fn for_each_in_flight(&self, mut f: impl FnMut(u16)) {
        self.chain_len.iter().enumerate().filter(|(_, n)| **n != 0).for_each(|(h, _)| f(h as u16));
    }

    /// The head the next chain will get (its first descriptor), if any is free.
    pub fn next_head(&self) -> Option<u16> {
        self.free.last().copied()
    }

    /// Writes the chain into free descriptors and makes it available; returns its head
    /// (the token its completion carries). None if it is empty or does not fit now.
    pub fn submit(&mut self, mem: &mut impl QueueMemory, chain: &[Segment]) -> Option<u16> {
        self.submit_parts(mem, &[chain])
    }

    /// `submit` of the chain the slices of `parts` make one after the other (a request's
    /// header, data and status without collecting them first).
    pub fn submit_parts(&mut self, mem: &mut impl QueueMemory, parts: &[&[Segment]]) -> Option<u16> {
        let n: usize = parts.iter().map(|p| p.len()).sum();
        if n == 0 || !self.has_room(n) {
            return None;
        }
        if let Some(t) = self.table_for(n) {
            // One ring descriptor, the chain in its table (links are table indices).
            let head = *self.free.last()?;
            let table = head as usize * t.entries as usize * DESC_SIZE;
            let writable = write_chain(mem, n, parts, |i| t.offset + table + i * DESC_SIZE, |i| i as u16 + 1);
            self.free.pop();
            let at = self.layout.desc + head as usize * DESC_SIZE;
            mem.write64(at, t.addr + table as u64);
            mem.write32(at + 8, (n * DESC_SIZE) as u32);
            mem.write16(at + 12, DESC_INDIRECT);
            mem.write16(at + 14, 0);
            self.next[head as usize] = 0;
            return Some(self.make_available(mem, head, 1, writable));
        }
        let descs = &self.free[self.free.len() - n..];
        let head = descs[n - 1];
        let (layout, next) = (self.layout, &mut self.next);
        let link = |i: usize| if i + 1 < n { descs[n - 2 - i] } else { 0 };
        let writable = write_chain(mem, n, parts, |i| layout.desc + descs[n - 1 - i] as usize * DESC_SIZE, link);
        for i in 0..n {
            next[descs[n - 1 - i] as usize] = link(i);
        }
        self.free.truncate(self.free.len() - n);
        Some(self.make_available(mem, head, n as u16, writable))
    }

    /// Records the chain at `head` (`descs` ring descriptors, `writable` bytes the device
    /// may write) as in flight and publishes it in the available ring.
    fn make_available(&mut self, mem: &mut impl QueueMemory, head: u16, descs: u16, writable: u32) -> u16 {
        self.chain_len[head as usize] = descs;
        self.writable[head as usize] = writable;
        self.in_flight += 1;
        let slot = self.layout.avail + 4 + 2 * (self.avail_idx % self.layout.size) as usize;
        mem.write16(slot, head);
        mem.publish_barrier();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        mem.write16(self.layout.avail + 2, self.avail_idx);
        mem.publish_barrier();
        head
    }

    /// The next completion the device published, if any. After an error the device must
    /// be reset (and the queue with it): its ring can no longer be trusted.
    pub fn poll(&mut self, mem: &impl QueueMemory) -> Option<Result<Used, UsedError>> {
        if self.in_flight == 0 {
            return None;
        }
        let idx = mem.read16(self.layout.used + 2);
        if idx == self.used_idx {
            return None;
        }
        if idx.wrapping_sub(self.used_idx) > self.in_flight {
            let expected = self.used_idx.wrapping_add(1);
            return Some(Err(UsedError::IndexJump { expected, found: idx }));
        }
        let elem = self.layout.used + 4 + 8 * (self.used_idx % self.layout.size) as usize;
        self.used_idx = self.used_idx.wrapping_add(1);
        let (id, len) = (mem.read32(elem), mem.read32(elem + 4));
        let n = match self.chain_len.get(id as usize) {
            Some(&n) if n != 0 => n,
            _ => return Some(Err(UsedError::UnknownId(id))),
        };
        let head = id as u16;
        // The chain is over whatever it reports: its descriptors are free again.
        let mut d = head;
        for _ in 0..n {
            self.free.push(d);
            d = self.next[d as usize];
        }
        self.chain_len[head as usize] = 0;
        self.in_flight -= 1;
        if len > self.writable[head as usize] {
            return Some(Err(UsedError::BadLength(len)));
        }
        Some(Ok(Used { head, len }))
    }
}

/// Writes the `n` segments of `parts` as linked descriptors, the i-th at byte `at(i)` of
/// the queue memory linking to `link(i)`; the bytes the device may write.
#[cfg(feature = "alloc")]
fn write_chain(mem: &mut impl QueueMemory, n: usize, parts: &[&[Segment]], at: impl Fn(usize) -> usize, link: impl Fn(usize) -> u16) -> u32 {
    let (mut writable, mut i) = (0u32, 0);
    for s in parts.iter().flat_map(|p| p.iter()) {
        let last = i + 1 == n;
        let o = at(i);
        let flags = if last { 0 } else { DESC_NEXT } | if s.device_writes { DESC_WRITE } else { 0 };
        mem.write64(o, s.addr);
        mem.write32(o + 8, s.len);
        mem.write16(o + 12, flags);
        mem.write16(o + 14, if last { 0 } else { link(i) });
        if s.device_writes {
            writable = writable.saturating_add(s.len);
        }
        i += 1;
    }
    writable
}

/// virtio-blk request types.
pub mod blk {
    pub const T_IN: u32 = 0;
    pub const T_OUT: u32 = 1;
    pub const T_FLUSH: u32 = 4;
    pub const T_GET_ID: u32 = 8;
    pub const T_DISCARD: u32 = 11;
    pub const T_WRITE_ZEROES: u32 = 13;
    pub const S_OK: u8 = 0;
    pub const ID_BYTES: usize = 20;
    /// Feature bits.
    pub const F_SEG_MAX: u32 = 2;
    pub const F_RO: u32 = 5;
    pub const F_FLUSH: u32 = 9;
    pub const F_DISCARD: u32 = 13;
    pub const F_WRITE_ZEROES: u32 = 14;
    pub const F_VERSION_1: u32 = 32;

    /// The 16-byte request header.
    pub fn header(kind: u32, sector: u64) -> [u8; 16] {
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&kind.to_le_bytes());
        h[8..16].copy_from_slice(&sector.to_le_bytes());
        h
    }

    /// The serial from a GET_ID answer (NUL-padded, at most 20 bytes).
    pub fn serial(id: &[u8]) -> &[u8] {
        let id = &id[..id.len().min(ID_BYTES)];
        let end = id.iter().position(|b| *b == 0).unwrap_or(id.len());
        &id[..end]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;
    use std::vec::Vec;

    /// Queue memory plus buffers, all in one vector addressed from 0.
    struct Mem(Vec<u8>);

    impl QueueMemory for Mem {
        fn read16(&self, o: usize) -> u16 {
            u16::from_le_bytes([self.0[o], self.0[o + 1]])
        }
        fn read32(&self, o: usize) -> u32 {
            u32::from_le_bytes(self.0[o..o + 4].try_into().unwrap())
        }
        fn write16(&mut self, o: usize, v: u16) {
            self.0[o..o + 2].copy_from_slice(&v.to_le_bytes())
        }
        fn write32(&mut self, o: usize, v: u32) {
            self.0[o..o + 4].copy_from_slice(&v.to_le_bytes())
        }
        fn write64(&mut self, o: usize, v: u64) {
            self.0[o..o + 8].copy_from_slice(&v.to_le_bytes())
        }
        fn publish_barrier(&mut self) {}
    }

    /// A virtio-blk device over a disk vector, as the spec says it behaves.
    struct Device {
        layout: QueueLayout,
        seen: u16,
        used: u16,
        disk: Vec<u8>,
    }

    impl Device {
        fn run(&mut self, m: &mut Mem) {
            let l = self.layout;
            while self.seen != m.read16(l.avail + 2) {
                let head = m.read16(l.avail + 4 + 2 * (self.seen % l.size) as usize);
                self.seen = self.seen.wrapping_add(1);
                let mut chain = Vec::new();
                // (table base, index): the ring's descriptors, or an indirect table.
                let (mut table, mut d) = (l.desc, head as usize);
                loop {
                    let at = table + d * DESC_SIZE;
                    let addr = u64::from_le_bytes(m.0[at..at + 8].try_into().unwrap()) as usize;
                    let len = m.read32(at + 8) as usize;
                    let flags = m.read16(at + 12);
                    if flags & DESC_INDIRECT != 0 {
                        assert_eq!(flags, DESC_INDIRECT, "nothing else on an indirect descriptor");
                        assert!(table == l.desc && len % DESC_SIZE == 0 && len >= 2 * DESC_SIZE);
                        (table, d) = (addr, 0);
                        continue;
                    }
                    chain.push((addr, len, flags & DESC_WRITE != 0));
                    if flags & DESC_NEXT == 0 {
                        break;
                    }
                    d = m.read16(at + 14) as usize;
                }
                let kind = m.read32(chain[0].0);
                let sector = u64::from_le_bytes(m.0[chain[0].0 + 8..chain[0].0 + 16].try_into().unwrap()) as usize;
                let mut written = 1;
                let mut off = sector * 512;
                for &(addr, len, dw) in &chain[1..chain.len() - 1] {
                    match kind {
                        blk::T_IN => {
                            assert!(dw);
                            m.0[addr..addr + len].copy_from_slice(&self.disk[off..off + len]);
                            written += len;
                        }
                        blk::T_OUT => self.disk[off..off + len].copy_from_slice(&m.0[addr..addr + len]),
                        blk::T_GET_ID => {
                            m.0[addr..addr + 20].fill(0);
                            m.0[addr..addr + 9].copy_from_slice(b"hv-pstore");
                            written += 20;
                        }
                        _ => {}
                    }
                    off += len;
                }
                let status = chain.last().unwrap().0;
                m.0[status] = blk::S_OK;
                let elem = l.used + 4 + 8 * (self.used % l.size) as usize;
                m.write32(elem, head as u32);
                m.write32(elem + 4, written as u32);
                self.used = self.used.wrapping_add(1);
                m.write16(l.used + 2, self.used);
            }
        }
    }

    const HDR: u64 = 0x3000;
    const DATA: u64 = 0x4000;
    const STATUS: u64 = 0x3100;

    fn request(q: &mut SplitQueue, m: &mut Mem, dev: &mut Device, kind: u32, sector: u64, len: u32) -> Result<u32, UsedError> {
        m.0[HDR as usize..HDR as usize + 16].copy_from_slice(&blk::header(kind, sector));
        let data_writes = kind == blk::T_IN || kind == blk::T_GET_ID;
        let chain = [
            Segment { addr: HDR, len: 16, device_writes: false },
            Segment { addr: DATA, len, device_writes: data_writes },
            Segment { addr: STATUS, len: 1, device_writes: true },
        ];
        let chain = if kind == blk::T_FLUSH { &[chain[0], chain[2]][..] } else { &chain[..] };
        let head = q.submit(m, chain).expect("room for the chain");
        assert_eq!(q.poll(m), None, "not answered yet");
        dev.run(m);
        let used = q.poll(m).unwrap()?;
        assert_eq!(used.head, head);
        assert_eq!(q.in_flight(), 0);
        Ok(used.len)
    }

    #[test]
    fn layouts() {
        let legacy = QueueLayout::new(8, 4096).unwrap();
        assert_eq!((legacy.desc, legacy.avail, legacy.used, legacy.bytes), (0, 128, 4096, 4096 + 6 + 64));
        let modern = QueueLayout::new(8, 4).unwrap();
        assert_eq!(modern.used, 152);
        assert_eq!(QueueLayout::new(6, 4), None);
        assert_eq!(QueueLayout::new(0, 4), None);
    }

    #[test]
    fn reads_writes_flushes_and_serial_through_a_device_model() {
        let layout = QueueLayout::new(4, 4096).unwrap();
        let mut m = Mem(vec![0; 0x20000]);
        let mut dev = Device { layout, seen: 0, used: 0, disk: vec![0; 1 << 16] };
        let mut q = SplitQueue::new(layout);
        // Many requests, so the ring indices wrap past the queue size and past u16 later.
        for round in 0..40u64 {
            let sector = round % 100;
            m.0[DATA as usize..DATA as usize + 512].fill(round as u8);
            assert_eq!(request(&mut q, &mut m, &mut dev, blk::T_OUT, sector, 512), Ok(1));
            m.0[DATA as usize..DATA as usize + 512].fill(0xee);
            assert_eq!(request(&mut q, &mut m, &mut dev, blk::T_IN, sector, 512), Ok(513));
            assert!(m.0[DATA as usize..DATA as usize + 512].iter().all(|b| *b == round as u8));
            assert_eq!(request(&mut q, &mut m, &mut dev, blk::T_FLUSH, 0, 0), Ok(1));
        }
        assert_eq!(request(&mut q, &mut m, &mut dev, blk::T_GET_ID, 0, 20), Ok(21));
        assert_eq!(blk::serial(&m.0[DATA as usize..DATA as usize + 20]), b"hv-pstore");
        assert_eq!(blk::serial(b"12345678901234567890xyz"), b"12345678901234567890");
    }

    #[test]
    fn many_chains_in_flight_complete_in_any_order_and_free_their_descriptors() {
        let layout = QueueLayout::new(8, 4).unwrap();
        let mut m = Mem(vec![0; 4096]);
        let mut q = SplitQueue::new(layout);
        let mut r = crate::rng::Rng::new(42);
        // Chains of 1..4 descriptors; the "device" completes a random one of those in flight.
        let mut flying: Vec<(u16, usize)> = Vec::new();
        let mut used = 0u16;
        for round in 0..20_000u32 {
            let n = 1 + (r.next() % 3) as usize;
            let seg = Segment { addr: 0x800 + round as u64, len: 8, device_writes: round % 2 == 0 };
            let chain = vec![seg; n];
            match q.submit(&mut m, &chain) {
                Some(head) => {
                    assert!(flying.iter().all(|(h, _)| *h != head), "head {head} reused while in flight");
                    // The descriptors it was given chain through their next fields.
                    let mut d = head as usize;
                    for i in 0..n {
                        let flags = m.read16(layout.desc + d * 16 + 12);
                        assert_eq!(flags & DESC_NEXT != 0, i + 1 < n);
                        d = m.read16(layout.desc + d * 16 + 14) as usize;
                    }
                    flying.push((head, n));
                }
                None => assert!(q.free_descriptors() < n),
            }
            assert_eq!(q.in_flight(), flying.len());
            assert_eq!(q.free_descriptors() + flying.iter().map(|(_, n)| n).sum::<usize>(), 8);
            if !flying.is_empty() && r.next() % 2 == 0 {
                let (head, n) = flying.swap_remove((r.next() % flying.len() as u64) as usize);
                let elem = layout.used + 4 + 8 * (used % 8) as usize;
                m.write32(elem, head as u32);
                m.write32(elem + 4, 0);
                used = used.wrapping_add(1);
                m.write16(layout.used + 2, used);
                assert_eq!(q.poll(&m), Some(Ok(Used { head, len: 0 })), "chain of {n}");
                assert_eq!(q.poll(&m), None);
            }
        }
        // Completing a chain twice is an error, not a double free.
        q.reset();
        m.write16(layout.used + 2, 0);
        used = 0;
        let head = q.submit(&mut m, &[Segment { addr: 0, len: 1, device_writes: true }]).unwrap();
        let _other = q.submit(&mut m, &[Segment { addr: 0, len: 1, device_writes: true }]).unwrap();
        for _ in 0..2 {
            m.write32(layout.used + 4 + 8 * (used % 8) as usize, head as u32);
            used += 1;
            m.write16(layout.used + 2, used);
        }
        assert_eq!(q.poll(&m), Some(Ok(Used { head, len: 0 })));
        assert_eq!(q.poll(&m), Some(Err(UsedError::UnknownId(head as u32))));
        assert_eq!(q.free_descriptors(), 7);
    }

    #[test]
    fn indirect_tables_carry_long_chains_in_one_ring_descriptor_each() {
        let layout = QueueLayout::new(4, 4).unwrap();
        let mut m = Mem(vec![0; 0x20000]);
        let mut dev = Device { layout, seen: 0, used: 0, disk: vec![0; 1 << 16] };
        let mut q = SplitQueue::new(layout);
        let tables = IndirectTables { offset: 0x1000, addr: 0x1000, entries: 8 };
        q.set_indirect(Some(tables));
        // Four writes of 6 segments at once in a 4-entry ring: each takes one descriptor.
        let mut heads = Vec::new();
        for r in 0..4u64 {
            let hdr = 0x3000 + r as usize * 0x100;
            m.0[hdr..hdr + 16].copy_from_slice(&blk::header(blk::T_OUT, r * 4));
            let mut chain = vec![Segment { addr: hdr as u64, len: 16, device_writes: false }];
            for i in 0..4u64 {
                let at = 0x8000 + (r * 4 + i) as usize * 0x200;
                m.0[at..at + 512].fill((r * 4 + i) as u8);
                chain.push(Segment { addr: at as u64, len: 512, device_writes: false });
            }
            chain.push(Segment { addr: hdr as u64 + 0x80, len: 1, device_writes: true });
            assert!(q.has_room(chain.len()));
            heads.push(q.submit(&mut m, &chain).expect("one descriptor each"));
            assert_eq!(q.free_descriptors(), 3 - r as usize);
        }
        assert!(!q.has_room(2) && !q.has_room(1));
        // The head descriptor points at its own table, which links by table index.
        for &h in &heads {
            let at = layout.desc + h as usize * DESC_SIZE;
            assert_eq!(m.read16(at + 12), DESC_INDIRECT);
            assert_eq!(m.read32(at + 8), 6 * DESC_SIZE as u32);
            let table = h as usize * 8 * DESC_SIZE;
            assert_eq!(u64::from_le_bytes(m.0[at..at + 8].try_into().unwrap()), tables.addr + table as u64);
            let table = tables.offset + table;
            assert_eq!(m.read16(table + 14), 1);
        }
        dev.run(&mut m);
        for _ in 0..4 {
            assert_eq!(q.poll(&m).unwrap().unwrap().len, 1);
        }
        assert_eq!((q.in_flight(), q.free_descriptors()), (0, 4));
        for b in 0..16usize {
            assert!(dev.disk[b * 512..(b + 1) * 512].iter().all(|x| *x == b as u8), "sector {b}");
        }
        // Longer than a table, or a single segment: the ring's own descriptors.
        let long = vec![Segment { addr: 0x8000, len: 1, device_writes: true }; 9];
        assert!(!q.has_room(9) && q.has_room(4));
        assert_eq!(q.submit(&mut m, &long), None);
        let one = q.submit(&mut m, &long[..1]).unwrap();
        assert_eq!(m.read16(layout.desc + one as usize * DESC_SIZE + 12), DESC_WRITE);
        assert_eq!(q.free_descriptors(), 3);
    }

    #[test]
    fn a_device_answering_garbage_gets_errors_not_panics() {
        let layout = QueueLayout::new(8, 4).unwrap();
        let mut m = Mem(vec![0; 4096]);
        let mut q = SplitQueue::new(layout);
        let seg = [Segment { addr: 0x800, len: 16, device_writes: false }, Segment { addr: 0x900, len: 1, device_writes: true }];
        assert_eq!(q.poll(&m), None, "nothing in flight");
        let mut r = crate::rng::Rng::new(0x1234_5678);
        let (mut errors, mut oks) = (0, 0);
        for _ in 0..crate::fuzz_tests::iters(10_000) {
            let Some(head) = q.submit(&mut m, &seg) else {
                // Full: what a driver does after an error, a reset (of the device and the queue).
                q.reset();
                m.write16(layout.used + 2, 0);
                continue;
            };
            let x = r.next();
            // The device writes a random used element and index.
            let idx = if x % 3 == 0 { q.used_idx.wrapping_add(1) } else { x as u16 };
            let elem = layout.used + 4 + 8 * (q.used_idx % 8) as usize;
            m.write32(elem, if x % 5 == 0 { head as u32 } else { (x >> 16) as u32 });
            m.write32(elem + 4, (x >> 40) as u32 % 3);
            m.write16(layout.used + 2, idx);
            match q.poll(&m) {
                Some(Ok(u)) => {
                    assert!(u.len <= 1 && u.head == head);
                    oks += 1
                }
                Some(Err(_)) => {
                    errors += 1;
                    q.reset();
                    m.write16(layout.used + 2, 0);
                }
                None => {}
            }
            assert!(q.free_descriptors() <= 8);
        }
        assert!(oks > 100 && errors > 1000, "{oks} ok, {errors} errors");
    }
}
