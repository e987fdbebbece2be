//! Split-virtqueue bookkeeping and virtio-blk requests for a polling driver with one
//! request in flight: where the rings live, how a request's descriptor chain is written,
//! and what the device's used ring may be trusted for. The memory is reached through
//! [`QueueMemory`] (volatile accesses to a DMA area in the hypervisor, a vector in tests).
//!
//! The device is not trusted: a used element naming a descriptor that was not submitted,
//! a used index that jumps, or a length beyond what was offered is an error, never a panic
//! or an out-of-bounds access.

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
const DESC_SIZE: usize = 16;

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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub addr: u64,
    pub len: u32,
    pub device_writes: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UsedError {
    /// The used index moved by more than the requests in flight.
    IndexJump { expected: u16, found: u16 },
    /// The element names a chain that was not submitted.
    UnknownId(u32),
    /// More bytes reported written than the device-writable buffers hold.
    BadLength(u32),
}

/// A split virtqueue with at most one chain in flight, always starting at descriptor 0.
pub struct SplitQueue {
    layout: QueueLayout,
    avail_idx: u16,
    used_idx: u16,
    /// Bytes the device may write in the chain in flight, if one is.
    in_flight: Option<u32>,
}

impl SplitQueue {
    pub fn new(layout: QueueLayout) -> SplitQueue {
        SplitQueue { layout, avail_idx: 0, used_idx: 0, in_flight: None }
    }

    pub fn layout(&self) -> QueueLayout {
        self.layout
    }

    pub fn in_flight(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Writes the chain into descriptors 0.. and makes it available. False if a chain is
    /// already in flight or it does not fit.
    pub fn submit(&mut self, mem: &mut impl QueueMemory, chain: &[Segment]) -> bool {
        if self.in_flight.is_some() || chain.is_empty() || chain.len() > self.layout.size as usize {
            return false;
        }
        let mut writable = 0u32;
        for (i, s) in chain.iter().enumerate() {
            let d = self.layout.desc + i * DESC_SIZE;
            let last = i + 1 == chain.len();
            let flags = if last { 0 } else { DESC_NEXT } | if s.device_writes { DESC_WRITE } else { 0 };
            mem.write64(d, s.addr);
            mem.write32(d + 8, s.len);
            mem.write16(d + 12, flags);
            mem.write16(d + 14, if last { 0 } else { i as u16 + 1 });
            if s.device_writes {
                writable = writable.saturating_add(s.len);
            }
        }
        let slot = self.layout.avail + 4 + 2 * (self.avail_idx % self.layout.size) as usize;
        mem.write16(slot, 0);
        mem.publish_barrier();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        mem.write16(self.layout.avail + 2, self.avail_idx);
        mem.publish_barrier();
        self.in_flight = Some(writable);
        true
    }

    /// The device's answer to the chain in flight, if it has come: bytes it wrote.
    pub fn poll(&mut self, mem: &impl QueueMemory) -> Option<Result<u32, UsedError>> {
        let writable = self.in_flight?;
        let idx = mem.read16(self.layout.used + 2);
        if idx == self.used_idx {
            return None;
        }
        // Whatever happens now, this request is over: a confused device does not wedge
        // the queue's bookkeeping (the caller resets the device on an error).
        self.in_flight = None;
        let expected = self.used_idx.wrapping_add(1);
        if idx != expected {
            self.used_idx = idx;
            return Some(Err(UsedError::IndexJump { expected, found: idx }));
        }
        let elem = self.layout.used + 4 + 8 * (self.used_idx % self.layout.size) as usize;
        self.used_idx = idx;
        let (id, len) = (mem.read32(elem), mem.read32(elem + 4));
        if id != 0 {
            return Some(Err(UsedError::UnknownId(id)));
        }
        if len > writable {
            return Some(Err(UsedError::BadLength(len)));
        }
        Some(Ok(len))
    }
}

/// virtio-blk request types.
pub mod blk {
    pub const T_IN: u32 = 0;
    pub const T_OUT: u32 = 1;
    pub const T_FLUSH: u32 = 4;
    pub const T_GET_ID: u32 = 8;
    pub const S_OK: u8 = 0;
    pub const ID_BYTES: usize = 20;
    /// Feature bits.
    pub const F_RO: u32 = 5;
    pub const F_FLUSH: u32 = 9;
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
                let mut d = head as usize;
                loop {
                    let at = l.desc + d * DESC_SIZE;
                    let addr = u64::from_le_bytes(m.0[at..at + 8].try_into().unwrap()) as usize;
                    let len = m.read32(at + 8) as usize;
                    let flags = m.read16(at + 12);
                    chain.push((addr, len, flags & DESC_WRITE != 0));
                    if flags & DESC_NEXT == 0 {
                        break;
                    }
                    d = m.read16(at + 14) as usize;
                }
                let kind = m.read32(chain[0].0);
                let sector = u64::from_le_bytes(m.0[chain[0].0 + 8..chain[0].0 + 16].try_into().unwrap()) as usize;
                let mut written = 1;
                if let [_, (addr, len, dw), _] = chain[..] {
                    let off = sector * 512;
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
        assert!(q.submit(m, chain));
        assert!(!q.submit(m, chain), "one request at a time");
        assert_eq!(q.poll(m), None, "not answered yet");
        dev.run(m);
        q.poll(m).unwrap()
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
    fn a_device_answering_garbage_gets_errors_not_panics() {
        let layout = QueueLayout::new(8, 4).unwrap();
        let mut m = Mem(vec![0; 4096]);
        let mut q = SplitQueue::new(layout);
        let seg = [Segment { addr: 0x800, len: 16, device_writes: false }, Segment { addr: 0x900, len: 1, device_writes: true }];
        assert_eq!(q.poll(&m), None, "nothing in flight");
        let mut r = crate::rng::Rng::new(0x1234_5678);
        let (mut errors, mut oks) = (0, 0);
        for _ in 0..crate::fuzz_tests::iters(10_000) {
            assert!(q.submit(&mut m, &seg));
            let x = r.next();
            // The device writes a random used element and index.
            let idx = if x % 3 == 0 { q.used_idx.wrapping_add(1) } else { x as u16 };
            let elem = layout.used + 4 + 8 * (q.used_idx % 8) as usize;
            m.write32(elem, if x % 5 == 0 { 0 } else { (x >> 16) as u32 });
            m.write32(elem + 4, (x >> 40) as u32 % 3);
            m.write16(layout.used + 2, idx);
            match q.poll(&m) {
                Some(Ok(len)) => {
                    assert!(len <= 1);
                    oks += 1
                }
                Some(Err(_)) => errors += 1,
                None => {
                    // Index unchanged: still in flight; the driver's timeout resets the device.
                    q = SplitQueue::new(layout);
                    m.write16(layout.used + 2, 0);
                    m.write16(layout.avail + 2, 0);
                }
            }
        }
        assert!(oks > 100 && errors > 1000, "{oks} ok, {errors} errors");
    }
}
