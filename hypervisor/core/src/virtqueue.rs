//! The device side of a split virtqueue (virtio 1.2 section 2.7), as an emulated device
//! walks what a guest's driver put in its rings. Everything here is guest-controlled and
//! untrusted: the rings and descriptor tables must lie in the guest's RAM, the driver's
//! index may not jump past the queue size, a chain may not loop or point past its table,
//! an indirect table must have a sane length and may not nest, and a device-readable buffer
//! may not follow a device-writable one. Any of these is a `QueueError` (the device then
//! asks for a reset); nothing here panics or runs unbounded on guest data.
//!
//! Guest memory is reached through `GuestRam`, which checks every access against the VM's
//! RAM; the buffers a chain names are checked when the device reads or writes them.

use crate::virtio_mmio::{QueueConfig, F_RING_EVENT_IDX, F_RING_INDIRECT_DESC};
use crate::small_vec::SmallVec;
use alloc::vec::Vec;

/// An access outside the VM's RAM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutOfRam;

/// A VM's RAM as the device model reaches it.
pub trait GuestRam {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), OutOfRam>;
    fn write(&self, gpa: u64, data: &[u8]) -> Result<(), OutOfRam>;

    /// Reads `words.len()` little-endian 64-bit words at `gpa`: into a buffer whose
    /// alignment the compiler knows, so decoding them takes word loads (the EL2 target
    /// forbids unaligned ones, and byte loads made a descriptor cost ~35 instructions).
    /// This default goes through a small byte buffer; a VM's RAM copies straight in.
    fn read_words(&self, gpa: u64, words: &mut [u64]) -> Result<(), OutOfRam> {
        let mut bytes = [0u8; 128];
        let mut at = gpa;
        for chunk in words.chunks_mut(bytes.len() / 8) {
            let b = &mut bytes[..chunk.len() * 8];
            self.read(at, b)?;
            for (w, b) in chunk.iter_mut().zip(b.chunks_exact(8)) {
                *w = u64::from_le_bytes(b.try_into().unwrap_or_default());
            }
            at = at.checked_add(b.len() as u64).ok_or(OutOfRam)?;
        }
        Ok(())
    }
}

/// Descriptor flags.
const NEXT: u16 = 1;
const WRITE: u16 = 2;
const INDIRECT: u16 = 4;
/// Avail ring flag: the driver does not want interrupts (without EVENT_IDX).
const NO_INTERRUPT: u16 = 1;
/// Longest indirect table accepted (as Linux and QEMU bound them).
const MAX_INDIRECT: u32 = 1024;

/// A chain's buffers: a block request's three, and most others, without a heap allocation.
pub type Buffers = SmallVec<Buffer, 4>;

/// One buffer of a chain.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Buffer {
    pub addr: u64,
    pub len: u32,
    /// The device writes it (else it reads it).
    pub device_writes: bool,
}

/// A request: the head descriptor's index (returned in the used ring) and its buffers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    pub head: u16,
    pub buffers: Buffers,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueError {
    /// A ring or descriptor table outside the VM's RAM.
    OutOfRam,
    /// The driver's available index moved by more than the queue size.
    IndexJump,
    /// A descriptor index past its table.
    BadIndex,
    /// A chain longer than its table: a loop.
    Loop,
    /// An indirect table not offered, of a bad length, nested, or chained on.
    BadIndirect,
    /// A device-readable buffer after a device-writable one.
    BadOrder,
    /// A buffer whose end overflows the address space.
    BadBuffer,
}

impl From<OutOfRam> for QueueError {
    fn from(_: OutOfRam) -> Self {
        QueueError::OutOfRam
    }
}

/// A live queue: where its rings are and how far the device got.
#[derive(Clone, Debug)]
pub struct DeviceQueue {
    size: u16,
    desc: u64,
    avail: u64,
    used: u64,
    /// The next available-ring slot to take, and the next used-ring slot to fill.
    next_avail: u16,
    next_used: u16,
    indirect: bool,
    event_idx: bool,
    /// The last indirect table read (two words per descriptor), kept for its memory (no
    /// allocation per request).
    table: Vec<u64>,
}

/// `base + offset` for guest-given bases, an error instead of an overflow.
fn at(base: u64, offset: u64) -> Result<u64, QueueError> {
    base.checked_add(offset).ok_or(QueueError::OutOfRam)
}

#[inline]
fn read_u16(mem: &impl GuestRam, gpa: u64) -> Result<u16, QueueError> {
    let mut b = [0; 2];
    mem.read(gpa, &mut b)?;
    Ok(u16::from_le_bytes(b))
}

impl DeviceQueue {
    /// The queue the driver configured, with the ring features it accepted.
    pub fn new(cfg: &QueueConfig, features: u64) -> DeviceQueue {
        DeviceQueue {
            size: cfg.size.max(1),
            desc: cfg.desc,
            avail: cfg.driver,
            used: cfg.device,
            next_avail: 0,
            next_used: 0,
            indirect: features & F_RING_INDIRECT_DESC != 0,
            event_idx: features & F_RING_EVENT_IDX != 0,
            table: Vec::new(),
        }
    }

    /// The next request the driver made available, if any.
    pub fn pop(&mut self, mem: &impl GuestRam) -> Result<Option<Chain>, QueueError> {
        let avail_idx = read_u16(mem, at(self.avail, 2)?)?;
        let pending = avail_idx.wrapping_sub(self.next_avail);
        if pending == 0 {
            return Ok(None);
        }
        if pending > self.size {
            return Err(QueueError::IndexJump);
        }
        let slot = (self.next_avail % self.size) as u64;
        let head = read_u16(mem, at(self.avail, 4 + 2 * slot)?)?;
        self.next_avail = self.next_avail.wrapping_add(1);
        if self.event_idx {
            // avail_event: the device wants a notification once the driver passes this.
            mem.write(at(self.used, 4 + 8 * self.size as u64)?, &self.next_avail.to_le_bytes())?;
        }
        Ok(Some(Chain { head, buffers: self.walk(mem, head)? }))
    }

    /// Gives back the last `n` chains `pop` returned, unused: the next pops return them
    /// again (a device that found it cannot use them yet, as QEMU's virtqueue_unpop).
    pub fn unpop(&mut self, n: u16) {
        self.next_avail = self.next_avail.wrapping_sub(n);
    }

    /// The buffers of the chain starting at descriptor `head`.
    fn walk(&mut self, mem: &impl GuestRam, head: u16) -> Result<Buffers, QueueError> {
        let mut buffers = Buffers::new();
        let (table, mut entries) = (self.desc, self.size as u32);
        let (mut index, mut visited, mut in_indirect, mut writes) = (head as u32, 0u32, false, false);
        // An indirect table is read whole, once: one guest-memory access instead of one
        // per descriptor, and a driver changing it meanwhile cannot make the walk see two
        // versions of it.
        let indirect = &mut self.table;
        loop {
            if index >= entries {
                return Err(QueueError::BadIndex);
            }
            visited += 1;
            if visited > entries {
                return Err(QueueError::Loop);
            }
            let mut d = [0u64; 2];
            if in_indirect {
                let i = 2 * index as usize;
                d.copy_from_slice(indirect.get(i..i + 2).ok_or(QueueError::BadIndex)?);
            } else {
                mem.read_words(at(table, 16 * index as u64)?, &mut d)?;
            }
            // addr, then len (32 bits), flags and next (16 each) in one word.
            let (addr, len, flags, next) = (d[0], d[1] as u32, (d[1] >> 32) as u16, (d[1] >> 48) as u16);
            if flags & INDIRECT != 0 {
                if !self.indirect || in_indirect || flags & NEXT != 0 || len == 0 || len % 16 != 0 || len / 16 > MAX_INDIRECT {
                    return Err(QueueError::BadIndirect);
                }
                indirect.resize(len as usize / 8, 0);
                mem.read_words(addr, indirect)?;
                (entries, index, visited, in_indirect) = (len / 16, 0, 0, true);
                buffers.reserve(entries as usize);
                continue;
            }
            if addr.checked_add(len as u64).is_none() {
                return Err(QueueError::BadBuffer);
            }
            let device_writes = flags & WRITE != 0;
            if writes && !device_writes {
                return Err(QueueError::BadOrder);
            }
            writes |= device_writes;
            buffers.push(Buffer { addr, len, device_writes });
            if flags & NEXT == 0 {
                return Ok(buffers);
            }
            index = next as u32;
        }
    }

    /// Returns the request with head `head` to the driver, `written` bytes written into its
    /// buffers. Whether the driver wants an interrupt for it.
    pub fn push(&mut self, mem: &impl GuestRam, head: u16, written: u32) -> Result<bool, QueueError> {
        let slot = (self.next_used % self.size) as u64;
        let mut entry = [0u8; 8];
        entry[..4].copy_from_slice(&(head as u32).to_le_bytes());
        entry[4..].copy_from_slice(&written.to_le_bytes());
        mem.write(at(self.used, 4 + 8 * slot)?, &entry)?;
        let old = self.next_used;
        self.next_used = self.next_used.wrapping_add(1);
        // The entry before the index that publishes it (the caller's GuestRam orders writes).
        mem.write(at(self.used, 2)?, &self.next_used.to_le_bytes())?;
        if self.event_idx {
            // used_event, after the available ring: interrupt once the index passes it.
            let event = read_u16(mem, at(self.avail, 4 + 2 * self.size as u64)?)?;
            Ok(self.next_used.wrapping_sub(event).wrapping_sub(1) < self.next_used.wrapping_sub(old))
        } else {
            Ok(read_u16(mem, self.avail)? & NO_INTERRUPT == 0)
        }
    }
}

/// Guest RAM on the host for the tests of the virtqueue and of devices.
#[cfg(test)]
pub(crate) mod test_ram {
    use super::{GuestRam, OutOfRam};
    use core::cell::RefCell;
    use std::vec;
    use std::vec::Vec;

    pub const BASE: u64 = 0x4000_0000;

    /// RAM at BASE: 64 KiB, or `sized`.
    pub struct Ram(pub RefCell<Vec<u8>>);

    impl Ram {
        pub fn new() -> Ram {
            Ram::sized(0x1_0000)
        }
        pub fn sized(bytes: usize) -> Ram {
            Ram(RefCell::new(vec![0; bytes]))
        }
        fn range(&self, gpa: u64, len: usize) -> Result<core::ops::Range<usize>, OutOfRam> {
            let start = gpa.checked_sub(BASE).ok_or(OutOfRam)? as usize;
            let end = start.checked_add(len).ok_or(OutOfRam)?;
            if end > self.0.borrow().len() {
                return Err(OutOfRam);
            }
            Ok(start..end)
        }
        pub fn put(&self, gpa: u64, data: &[u8]) {
            self.write(gpa, data).unwrap();
        }
        pub fn get(&self, gpa: u64, len: usize) -> Vec<u8> {
            let mut v = vec![0; len];
            self.read(gpa, &mut v).unwrap();
            v
        }
        pub fn put16(&self, gpa: u64, v: u16) {
            self.put(gpa, &v.to_le_bytes());
        }
        pub fn desc(&self, table: u64, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
            let mut d = [0u8; 16];
            d[..8].copy_from_slice(&addr.to_le_bytes());
            d[8..12].copy_from_slice(&len.to_le_bytes());
            d[12..14].copy_from_slice(&flags.to_le_bytes());
            d[14..].copy_from_slice(&next.to_le_bytes());
            self.put(table + 16 * i as u64, &d);
        }
    }

    impl GuestRam for Ram {
        fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), OutOfRam> {
            let r = self.range(gpa, buf.len())?;
            buf.copy_from_slice(&self.0.borrow()[r]);
            Ok(())
        }
        fn write(&self, gpa: u64, data: &[u8]) -> Result<(), OutOfRam> {
            let r = self.range(gpa, data.len())?;
            self.0.borrow_mut()[r].copy_from_slice(data);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_ram::{Ram, BASE};
    use super::*;

    const DESC: u64 = BASE + 0x1000;
    const AVAIL: u64 = BASE + 0x2000;
    const USED: u64 = BASE + 0x3000;
    const SIZE: u16 = 8;

    fn queue(features: u64) -> DeviceQueue {
        DeviceQueue::new(&QueueConfig { size: SIZE, ready: true, desc: DESC, driver: AVAIL, device: USED }, features)
    }

    /// Makes `heads` available, in order.
    fn offer(ram: &Ram, heads: &[u16]) {
        for (i, &h) in heads.iter().enumerate() {
            ram.put16(AVAIL + 4 + 2 * (i as u64 % SIZE as u64), h);
        }
        ram.put16(AVAIL + 2, heads.len() as u16);
    }

    #[test]
    fn a_block_request_round_trip() {
        let ram = Ram::new();
        // header (read), data (write), status (write)
        ram.desc(DESC, 0, BASE + 0x8000, 16, NEXT, 1);
        ram.desc(DESC, 1, BASE + 0x9000, 512, NEXT | WRITE, 2);
        ram.desc(DESC, 2, BASE + 0xa000, 1, WRITE, 0);
        offer(&ram, &[0]);
        let mut q = queue(0);
        let c = q.pop(&ram).unwrap().unwrap();
        assert_eq!(c.head, 0);
        assert_eq!(c.buffers.iter().map(|b| (b.len, b.device_writes)).collect::<Vec<_>>(), [(16, false), (512, true), (1, true)]);
        assert_eq!(q.pop(&ram), Ok(None));
        assert_eq!(q.push(&ram, 0, 513), Ok(true));
        let mut used = [0u8; 12];
        ram.read(USED, &mut used).unwrap();
        assert_eq!(u16::from_le_bytes([used[2], used[3]]), 1, "used idx");
        assert_eq!(u32::from_le_bytes(used[4..8].try_into().unwrap()), 0, "id");
        assert_eq!(u32::from_le_bytes(used[8..12].try_into().unwrap()), 513, "len");
        // NO_INTERRUPT honoured without EVENT_IDX.
        ram.put16(AVAIL, NO_INTERRUPT);
        offer(&ram, &[0, 0]);
        q.pop(&ram).unwrap().unwrap();
        assert_eq!(q.push(&ram, 0, 1), Ok(false));
    }

    #[test]
    fn indirect_tables_when_offered_and_well_formed() {
        let ram = Ram::new();
        let table = BASE + 0x5000;
        ram.desc(table, 0, BASE + 0x8000, 16, NEXT, 1);
        ram.desc(table, 1, BASE + 0x9000, 4096, WRITE, 0);
        ram.desc(DESC, 3, table, 32, INDIRECT, 0);
        offer(&ram, &[3]);
        assert_eq!(queue(0).pop(&ram), Err(QueueError::BadIndirect), "not negotiated");
        let c = queue(F_RING_INDIRECT_DESC).pop(&ram).unwrap().unwrap();
        assert_eq!((c.head, c.buffers.len()), (3, 2));
        for (addr, len, flags) in [(table, 24, INDIRECT), (table, 0, INDIRECT), (table, 32, INDIRECT | NEXT), (table, 16 * 2048, INDIRECT)] {
            ram.desc(DESC, 3, addr, len, flags, 0);
            assert_eq!(queue(F_RING_INDIRECT_DESC).pop(&ram), Err(QueueError::BadIndirect), "len {len} flags {flags}");
        }
        // Nested.
        ram.desc(table, 1, table, 32, INDIRECT, 0);
        ram.desc(DESC, 3, table, 32, INDIRECT, 0);
        assert_eq!(queue(F_RING_INDIRECT_DESC).pop(&ram), Err(QueueError::BadIndirect));
    }

    #[test]
    fn broken_chains_are_refused() {
        let ram = Ram::new();
        // A loop: 0 -> 1 -> 0.
        ram.desc(DESC, 0, BASE, 1, NEXT, 1);
        ram.desc(DESC, 1, BASE, 1, NEXT, 0);
        offer(&ram, &[0]);
        assert_eq!(queue(0).pop(&ram), Err(QueueError::Loop));
        // Past the table.
        ram.desc(DESC, 1, BASE, 1, NEXT, SIZE);
        assert_eq!(queue(0).pop(&ram), Err(QueueError::BadIndex));
        offer(&ram, &[SIZE + 3]);
        assert_eq!(queue(0).pop(&ram), Err(QueueError::BadIndex), "a head past the table");
        // Readable after writable.
        ram.desc(DESC, 0, BASE, 1, NEXT | WRITE, 1);
        ram.desc(DESC, 1, BASE, 1, 0, 0);
        offer(&ram, &[0]);
        assert_eq!(queue(0).pop(&ram), Err(QueueError::BadOrder));
        // A buffer wrapping the address space.
        ram.desc(DESC, 0, u64::MAX - 4, 16, 0, 0);
        assert_eq!(queue(0).pop(&ram), Err(QueueError::BadBuffer));
        // The index jumping past the size.
        ram.put16(AVAIL + 2, SIZE + 1);
        assert_eq!(queue(0).pop(&ram), Err(QueueError::IndexJump));
        // Rings outside RAM.
        let mut q = DeviceQueue::new(&QueueConfig { size: SIZE, ready: true, desc: 0x1000, driver: AVAIL, device: USED }, 0);
        offer(&ram, &[0]);
        assert_eq!(q.pop(&ram), Err(QueueError::OutOfRam));
        let mut q = DeviceQueue::new(&QueueConfig { size: SIZE, ready: true, desc: DESC, driver: u64::MAX - 1, device: USED }, 0);
        assert_eq!(q.pop(&ram), Err(QueueError::OutOfRam));
    }

    #[test]
    fn event_idx_interrupts_only_when_the_driver_asked() {
        let ram = Ram::new();
        ram.desc(DESC, 0, BASE, 1, 0, 0);
        let mut q = queue(F_RING_EVENT_IDX);
        offer(&ram, &[0, 0, 0]);
        // used_event = 1: an interrupt when the used index passes 1, not before.
        ram.put16(AVAIL + 4 + 2 * SIZE as u64, 1);
        for expect in [false, true, false] {
            q.pop(&ram).unwrap().unwrap();
            assert_eq!(q.push(&ram, 0, 0), Ok(expect));
        }
        // avail_event tells the driver how far the device got.
        let mut b = [0u8; 2];
        ram.read(USED + 4 + 8 * SIZE as u64, &mut b).unwrap();
        assert_eq!(u16::from_le_bytes(b), 3);
    }

    #[test]
    fn garbage_rings_never_panic_and_always_end() {
        let mut rng = crate::rng::Rng::new(11);
        for round in 0..crate::fuzz_tests::iters(300) {
            let ram = Ram::new();
            {
                let mut m = ram.0.borrow_mut();
                for b in m[0x1000..0x6000].iter_mut() {
                    *b = rng.next() as u8;
                }
            }
            // Some descriptors point into RAM, some indirect tables at garbage.
            for i in 0..SIZE {
                if rng.next() % 3 == 0 {
                    let addr = BASE + 0x1000 + (rng.next() % 0x4000);
                    ram.desc(DESC, i, addr, (rng.next() % 256) as u32 * 16, (rng.next() % 8) as u16, (rng.next() % 12) as u16);
                }
            }
            // Half the rounds, rings the driver put anywhere at all.
            let mut q = if round % 2 == 0 {
                queue(F_RING_INDIRECT_DESC | F_RING_EVENT_IDX)
            } else {
                let mut any = || if rng.next() % 2 == 0 { rng.next() } else { BASE + rng.next() % 0x1_0000 };
                let cfg = QueueConfig { size: SIZE, ready: true, desc: any(), driver: any(), device: any() };
                DeviceQueue::new(&cfg, F_RING_INDIRECT_DESC | F_RING_EVENT_IDX)
            };
            for _ in 0..64 {
                match q.pop(&ram) {
                    Ok(Some(c)) => {
                        assert!(c.buffers.len() <= SIZE as usize + MAX_INDIRECT as usize, "round {round}");
                        let _ = q.push(&ram, c.head, 0);
                    }
                    Ok(None) | Err(_) => break,
                }
            }
        }
    }
}
