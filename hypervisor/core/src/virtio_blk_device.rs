//! The virtio-blk device a guest sees (virtio 1.2 section 5.2): its features and config
//! space, and its requests, checked against the disk (`parse`) and then carried out either
//! here against a backend through a bounce buffer (`serve`) or by the caller with the
//! guest's own pages (the hypervisor's zero-copy path), and answered (`finish`).
//!
//! Everything in a request is guest-controlled: a request the device cannot carry out (a
//! short header, a data length that is not whole sectors, sectors past the end, a write to
//! a read-only disk, a buffer outside the VM's RAM, a failing backend, a discard range
//! past the end or too long) is answered with VIRTIO_BLK_S_IOERR in its status byte, an
//! unknown type or flag with S_UNSUPP; a chain without a device-writable status byte gets
//! nothing written (used length 0). Nothing here panics or allocates per byte.

use crate::virtio::blk::{ID_BYTES, S_OK, T_DISCARD, T_FLUSH, T_GET_ID, T_IN, T_OUT, T_WRITE_ZEROES};
use crate::virtio_mmio::{VirtioDevice, F_RING_EVENT_IDX, F_RING_INDIRECT_DESC};
use crate::virtqueue::{Buffer, Buffers, Chain, GuestRam};

pub const S_IOERR: u8 = 1;
pub const S_UNSUPP: u8 = 2;
pub const SECTOR: u64 = 512;
/// virtio-blk's device ID.
pub const DEVICE_ID: u32 = 2;
/// Feature bits offered.
pub const F_SIZE_MAX: u64 = 1 << 1;
pub const F_SEG_MAX: u64 = 1 << 2;
pub const F_RO: u64 = 1 << 5;
pub const F_BLK_SIZE: u64 = 1 << 6;
pub const F_FLUSH: u64 = 1 << 9;
pub const F_DISCARD: u64 = 1 << 13;
pub const F_WRITE_ZEROES: u64 = 1 << 14;
/// Write-zeroes flag: the device may deallocate the range.
pub const WRITE_ZEROES_UNMAP: u32 = 1;
/// Entries of the one request queue (QEMU's virtio-blk default).
pub const QUEUE_SIZE: u16 = 256;
/// Data buffers per request at most (seg_max): the queue less the header and the status,
/// as QEMU says.
pub const SEG_MAX: u32 = QUEUE_SIZE as u32 - 2;
/// Bytes per data buffer at most (size_max): the guest merges contiguous pages into
/// buffers this long (QEMU sets no limit). A request whose buffers come to more host
/// pieces than one host request holds is served through the bounce buffer instead.
pub const SIZE_MAX: u32 = 64 * 1024;
/// Data bytes per request at most: what SEG_MAX buffers of SIZE_MAX hold (about 16 MiB; a
/// guest that respects seg_max and size_max never sends more). Longer requests are refused
/// (S_IOERR), so that one request keeps its vCPU in the hypervisor for a bounded time
/// however the guest builds it.
pub const MAX_REQUEST: u64 = SEG_MAX as u64 * SIZE_MAX as u64;
/// Bytes moved per backend call (the size of the device's bounce buffer): a 64 MiB
/// sequential write took 1.4 s through a 4 KiB buffer (a host request per page), about
/// 0.45 s through 64 KiB; 256 KiB read 64 MiB 1.4x faster again.
pub const CHUNK: usize = 256 * 1024;
const HEADER: u64 = 16;

/// The VM and disk number a host disk's serial names: `vm<N>-disk<M>` (QEMU's
/// `-device virtio-blk-device,serial=vm0-disk0`).
pub fn vm_disk(serial: &[u8]) -> Option<(usize, usize)> {
    let s = core::str::from_utf8(serial).ok()?;
    let (vm, disk) = s.strip_prefix("vm")?.split_once("-disk")?;
    let number = |t: &str| (!t.is_empty() && t.len() <= 3 && t.bytes().all(|b| b.is_ascii_digit())).then(|| t.parse().ok()).flatten();
    Some((number(vm)?, number(disk)?))
}

/// What failed in the backend (the guest sees S_IOERR).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoError;

/// Discard or write-zeroes as a disk offers it: sectors one range may cover at most, and
/// (discard) the alignment it wants, in sectors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RangeLimits {
    pub max_sectors: u32,
    pub alignment: u32,
    /// Write-zeroes may deallocate.
    pub may_unmap: bool,
}

/// The disk behind the device. Reads and writes are whole sectors, at most CHUNK bytes.
pub trait Backend {
    /// Capacity in 512-byte sectors.
    fn sectors(&self) -> u64;
    fn read_only(&self) -> bool;
    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), IoError>;
    fn write(&mut self, sector: u64, data: &[u8]) -> Result<(), IoError>;
    fn flush(&mut self) -> Result<(), IoError>;
    /// The serial GET_ID answers (at most 20 bytes are used).
    fn serial(&self) -> &[u8];
    /// Discard and write-zeroes, where the disk has them.
    fn discard_limits(&self) -> Option<RangeLimits> {
        None
    }
    fn write_zeroes_limits(&self) -> Option<RangeLimits> {
        None
    }
    fn discard(&mut self, _sector: u64, _sectors: u32) -> Result<(), IoError> {
        Err(IoError)
    }
    fn write_zeroes(&mut self, _sector: u64, _sectors: u32, _unmap: bool) -> Result<(), IoError> {
        Err(IoError)
    }
}

/// What a request asks of the disk, checked against it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `len` bytes (whole sectors) from `sector` into the data buffers.
    Read { sector: u64, len: u64 },
    Write { sector: u64, len: u64 },
    Flush,
    Discard { sector: u64, sectors: u32 },
    WriteZeroes { sector: u64, sectors: u32, unmap: bool },
}

/// A request to carry out: what, the guest buffers holding its data (exactly the data,
/// in order), and where its answer goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub op: Op,
    pub data: Buffers,
    /// The guest-physical address of the status byte.
    status_at: u64,
    /// The used length when it succeeds.
    ok_len: u32,
}

/// What `parse` made of a chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// Answered already (a refused request, GET_ID, an unknown type): the used length.
    Answered(u32),
    Io(Request),
}

pub struct BlockDevice<B: Backend> {
    pub backend: B,
    /// Data on its way between the guest's buffers and the backend.
    bounce: alloc::vec::Vec<u8>,
}

impl<B: Backend> BlockDevice<B> {
    pub fn new(backend: B) -> BlockDevice<B> {
        BlockDevice { backend, bounce: alloc::vec![0; CHUNK] }
    }
}

impl<B: Backend> VirtioDevice for BlockDevice<B> {
    fn device_id(&self) -> u32 {
        DEVICE_ID
    }

    fn features(&self) -> u64 {
        // The ring features are the queue's (hv_core::virtqueue handles both).
        let ro = if self.backend.read_only() { F_RO } else { 0 };
        let discard = if self.backend.discard_limits().is_some() && ro == 0 { F_DISCARD } else { 0 };
        let zeroes = if self.backend.write_zeroes_limits().is_some() && ro == 0 { F_WRITE_ZEROES } else { 0 };
        F_RING_INDIRECT_DESC | F_RING_EVENT_IDX | F_SIZE_MAX | F_SEG_MAX | F_BLK_SIZE | F_FLUSH | ro | discard | zeroes
    }

    fn queue_max(&self, q: usize) -> u16 {
        if q == 0 {
            QUEUE_SIZE
        } else {
            0
        }
    }

    /// capacity (le64) at 0, size_max at 8, seg_max at 12, geometry at 16 (not offered:
    /// 0), blk_size at 20, topology 24..32 and writeback, num_queues 32..36 (not offered),
    /// then discard's limits at 36 (max sectors, max ranges: 1, alignment) and
    /// write-zeroes' at 48 (max sectors, max ranges: 1, may-unmap at 56).
    fn read_config(&self, offset: u64, size: u8) -> u64 {
        let mut space = [0u8; 60];
        space[0..8].copy_from_slice(&self.backend.sectors().to_le_bytes());
        space[8..12].copy_from_slice(&SIZE_MAX.to_le_bytes());
        space[12..16].copy_from_slice(&SEG_MAX.to_le_bytes());
        space[20..24].copy_from_slice(&(SECTOR as u32).to_le_bytes());
        if let Some(l) = self.backend.discard_limits() {
            space[36..40].copy_from_slice(&l.max_sectors.to_le_bytes());
            space[40..44].copy_from_slice(&1u32.to_le_bytes());
            space[44..48].copy_from_slice(&l.alignment.to_le_bytes());
        }
        if let Some(l) = self.backend.write_zeroes_limits() {
            space[48..52].copy_from_slice(&l.max_sectors.to_le_bytes());
            space[52..56].copy_from_slice(&1u32.to_le_bytes());
            space[56] = l.may_unmap as u8;
        }
        let start = offset as usize;
        (0..size as usize).filter_map(|i| space.get(start.checked_add(i)?)).enumerate().fold(0, |v, (i, &b)| v | (b as u64) << (8 * i))
    }

    /// Nothing in its config space is writable (writeback control is not offered).
    fn write_config(&mut self, _offset: u64, _size: u8, _value: u64) {}

    /// Requests are served to completion when notified: nothing is in flight.
    fn reset(&mut self) {}
}

/// A run of bytes spread over a chain's buffers: `len` bytes starting `skip` bytes into
/// `buffers`.
struct Region<'a> {
    buffers: &'a [Buffer],
    skip: u64,
    len: u64,
}

/// Answers a request: writes its status byte; the used length (0 when the status byte
/// cannot be written).
pub fn finish(req: &Request, status: u8, mem: &impl GuestRam) -> u32 {
    if mem.write(req.status_at, &[status]).is_err() {
        return 0;
    }
    if status == S_OK {
        req.ok_len
    } else {
        1
    }
}

impl Region<'_> {
    /// Calls `f(gpa, n)` for each piece (no errors to pass on).
    fn pieces(&self, mut f: impl FnMut(u64, usize)) {
        let _ = self.for_each(|gpa, _, n| {
            f(gpa, n);
            Ok(())
        });
    }

    /// The region as buffers of its own.
    fn to_buffers(&self) -> Buffers {
        let mut v = Buffers::new();
        if let Some(whole) = self.whole_buffers() {
            v.extend_from_slice(whole);
            return v;
        }
        let device_writes = self.buffers.first().is_some_and(|b| b.device_writes);
        v.reserve(self.buffers.len());
        self.pieces(|addr, n| v.push(Buffer { addr, len: n as u32, device_writes }));
        v
    }

    /// The buffers the region is made of when it starts and ends at their edges (drivers
    /// give the header and the status byte buffers of their own: a 1 MiB request's 250
    /// data buffers are copied at once). Empty buffers inside may be among them, which
    /// changes nothing for their users.
    fn whole_buffers(&self) -> Option<&[Buffer]> {
        let (mut rest, mut skip) = (self.buffers, self.skip);
        while skip > 0 {
            let (b, tail) = rest.split_first()?;
            skip = skip.checked_sub(b.len as u64)?;
            rest = tail;
        }
        let (mut len, mut k) = (0u64, 0);
        while len < self.len {
            len += rest.get(k)?.len as u64;
            k += 1;
        }
        (len == self.len).then_some(&rest[..k])
    }

    /// Calls `f(gpa, offset, n)` for each piece, `offset` counting from the region's start.
    fn for_each(&self, mut f: impl FnMut(u64, u64, usize) -> Result<(), IoError>) -> Result<(), IoError> {
        let (mut skip, mut done) = (self.skip, 0u64);
        for b in self.buffers {
            if done == self.len {
                break;
            }
            let blen = b.len as u64;
            if skip >= blen {
                skip -= blen;
                continue;
            }
            let n = (blen - skip).min(self.len - done);
            f(b.addr + skip, done, n as usize)?;
            done += n;
            skip = 0;
        }
        Ok(())
    }

    /// Copies `data` into the region at `offset` (guest memory writes).
    fn write(&self, mem: &impl GuestRam, offset: u64, data: &[u8]) -> Result<(), IoError> {
        let end = offset + data.len() as u64;
        self.for_each(|gpa, at, n| {
            let (s, e) = (at.max(offset), (at + n as u64).min(end));
            if s < e {
                let part = &data[(s - offset) as usize..(e - offset) as usize];
                mem.write(gpa + (s - at), part).map_err(|_| IoError)?;
            }
            Ok(())
        })
    }

    /// Fills `buf` from the region at `offset` (guest memory reads).
    fn read(&self, mem: &impl GuestRam, offset: u64, buf: &mut [u8]) -> Result<(), IoError> {
        let end = offset + buf.len() as u64;
        self.for_each(|gpa, at, n| {
            let (s, e) = (at.max(offset), (at + n as u64).min(end));
            if s < e {
                mem.read(gpa + (s - at), &mut buf[(s - offset) as usize..(e - offset) as usize]).map_err(|_| IoError)?;
            }
            Ok(())
        })
    }
}

impl<B: Backend> BlockDevice<B> {
    /// Serves one request here, through the bounce buffer; returns the bytes written into
    /// its buffers (the used length).
    pub fn serve(&mut self, chain: &Chain, mem: &impl GuestRam) -> u32 {
        match self.parse(chain, mem) {
            Parsed::Answered(len) => len,
            Parsed::Io(req) => {
                let status = self.execute(&req, mem);
                finish(&req, status, mem)
            }
        }
    }

    /// Checks a request against the disk: a request to carry out, or the answer already
    /// given to one that cannot be (or needs no disk access).
    pub fn parse(&mut self, chain: &Chain, mem: &impl GuestRam) -> Parsed {
        let split = chain.buffers.iter().position(|b| b.device_writes).unwrap_or(chain.buffers.len());
        let (readable, writable) = chain.buffers.split_at(split);
        let readable_len: u64 = readable.iter().map(|b| b.len as u64).sum();
        let writable_len: u64 = writable.iter().map(|b| b.len as u64).sum();
        // The status byte: the last byte the device may write.
        let Some(status_len) = writable_len.checked_sub(1) else { return Parsed::Answered(0) };
        let mut status_at = 0;
        Region { buffers: writable, skip: status_len, len: 1 }.pieces(|gpa, _| status_at = gpa);
        let out = Region { buffers: writable, skip: 0, len: status_len };
        let data_in = Region { buffers: readable, skip: HEADER.min(readable_len), len: readable_len.saturating_sub(HEADER) };
        let answer = |status: u8, written: u64| {
            let ok_len = written as u32 + 1;
            Parsed::Answered(finish(&Request { op: Op::Flush, data: Buffers::new(), status_at, ok_len }, status, mem))
        };
        let mut header = [0u8; HEADER as usize];
        let whole = Region { buffers: readable, skip: 0, len: readable_len };
        if readable_len < HEADER || whole.read(mem, 0, &mut header).is_err() {
            return answer(S_IOERR, 0);
        }
        let kind = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let mut sector_bytes = [0u8; 8];
        sector_bytes.copy_from_slice(&header[8..16]);
        let sector = u64::from_le_bytes(sector_bytes);
        let inside = |sector: u64, sectors: u64| sector.checked_add(sectors).is_some_and(|end| end <= self.backend.sectors());
        let transfer_ok = |len: u64| len % SECTOR == 0 && len <= MAX_REQUEST && inside(sector, len / SECTOR);
        let io = |op: Op, data: &Region, ok_len: u64| Parsed::Io(Request { op, data: data.to_buffers(), status_at, ok_len: ok_len as u32 + 1 });
        match kind {
            T_IN if transfer_ok(out.len) => io(Op::Read { sector, len: out.len }, &out, out.len),
            T_OUT if self.backend.read_only() => answer(S_IOERR, 0),
            T_OUT if transfer_ok(data_in.len) => io(Op::Write { sector, len: data_in.len }, &data_in, 0),
            T_IN | T_OUT => answer(S_IOERR, 0),
            T_FLUSH => io(Op::Flush, &Region { buffers: &[], skip: 0, len: 0 }, 0),
            T_GET_ID => {
                let mut id = [0u8; ID_BYTES];
                let serial = self.backend.serial();
                let n = serial.len().min(ID_BYTES);
                id[..n].copy_from_slice(&serial[..n]);
                let len = out.len.min(ID_BYTES as u64) as usize;
                match out.write(mem, 0, &id[..len]) {
                    Ok(()) => answer(S_OK, len as u64),
                    Err(IoError) => answer(S_IOERR, 0),
                }
            }
            T_DISCARD | T_WRITE_ZEROES => {
                let zeroes = kind == T_WRITE_ZEROES;
                let limits = if zeroes { self.backend.write_zeroes_limits() } else { self.backend.discard_limits() };
                let Some(limits) = limits.filter(|_| !self.backend.read_only()) else { return answer(S_UNSUPP, 0) };
                // One range (max_discard_seg and max_write_zeroes_seg are 1): sector,
                // sectors, flags. Checked in QEMU's order (its device is what guests know):
                // more than one range, length, place, then flags. An empty range succeeds.
                let mut range = [0u8; 16];
                if data_in.len > 16 {
                    return answer(S_UNSUPP, 0);
                }
                if data_in.len != 16 || data_in.read(mem, 0, &mut range).is_err() {
                    return answer(S_IOERR, 0);
                }
                let start = u64::from_le_bytes(range[0..8].try_into().unwrap_or([0; 8]));
                let sectors = u32::from_le_bytes(range[8..12].try_into().unwrap_or([0; 4]));
                let flags = u32::from_le_bytes(range[12..16].try_into().unwrap_or([0; 4]));
                if sectors > limits.max_sectors || !inside(start, sectors as u64) {
                    return answer(S_IOERR, 0);
                }
                let allowed_flags = if zeroes { WRITE_ZEROES_UNMAP } else { 0 };
                if flags & !allowed_flags != 0 {
                    return answer(S_UNSUPP, 0);
                }
                if sectors == 0 {
                    return answer(S_OK, 0);
                }
                let op = if zeroes {
                    Op::WriteZeroes { sector: start, sectors, unmap: flags & WRITE_ZEROES_UNMAP != 0 && limits.may_unmap }
                } else {
                    Op::Discard { sector: start, sectors }
                };
                Parsed::Io(Request { op, data: Buffers::new(), status_at, ok_len: 1 })
            }
            _ => answer(S_UNSUPP, 0),
        }
    }

    /// Carries out a parsed request on the backend, through the bounce buffer: its status.
    pub fn execute(&mut self, req: &Request, mem: &impl GuestRam) -> u8 {
        let data = Region { buffers: &req.data, skip: 0, len: req.data.iter().map(|b| b.len as u64).sum() };
        let result = match req.op {
            Op::Read { sector, len } => self.transfer(sector, len, |dev, s, chunk, off| {
                dev.backend.read(s, chunk)?;
                data.write(mem, off, chunk)
            }),
            Op::Write { sector, len } => self.transfer(sector, len, |dev, s, chunk, off| {
                data.read(mem, off, chunk)?;
                dev.backend.write(s, chunk)
            }),
            Op::Flush => self.backend.flush(),
            Op::Discard { sector, sectors } => self.backend.discard(sector, sectors),
            Op::WriteZeroes { sector, sectors, unmap } => self.backend.write_zeroes(sector, sectors, unmap),
        };
        if result.is_ok() {
            S_OK
        } else {
            S_IOERR
        }
    }

    /// Moves `len` bytes (whole sectors, inside the disk) from `sector` on, CHUNK bytes at a
    /// time through a bounce buffer: `step(device, sector, chunk, offset)`.
    fn transfer(&mut self, sector: u64, len: u64, mut step: impl FnMut(&mut Self, u64, &mut [u8], u64) -> Result<(), IoError>) -> Result<(), IoError> {
        let sectors = len / SECTOR;
        if len % SECTOR != 0 || len > MAX_REQUEST || sector.checked_add(sectors).is_none_or(|end| end > self.backend.sectors()) {
            return Err(IoError);
        }
        let mut bounce = core::mem::take(&mut self.bounce);
        if bounce.is_empty() {
            return Err(IoError); // never: it is put back below
        }
        let mut done = 0u64;
        let mut result = Ok(());
        while done < len && result.is_ok() {
            let n = (len - done).min(bounce.len() as u64) as usize;
            result = step(self, sector + done / SECTOR, &mut bounce[..n], done);
            done += n as u64;
        }
        self.bounce = bounce;
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtqueue::test_ram::{Ram, BASE};
    use std::vec;
    use std::vec::Vec;

    struct Disk {
        data: Vec<u8>,
        read_only: bool,
        fail: bool,
        flushes: usize,
    }

    impl Backend for Disk {
        fn sectors(&self) -> u64 {
            self.data.len() as u64 / SECTOR
        }
        fn read_only(&self) -> bool {
            self.read_only
        }
        fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), IoError> {
            assert!(buf.len() % 512 == 0 && buf.len() <= CHUNK);
            if self.fail {
                return Err(IoError);
            }
            let s = (sector * SECTOR) as usize;
            buf.copy_from_slice(&self.data[s..s + buf.len()]);
            Ok(())
        }
        fn write(&mut self, sector: u64, data: &[u8]) -> Result<(), IoError> {
            assert!(data.len() % 512 == 0 && data.len() <= CHUNK);
            if self.fail {
                return Err(IoError);
            }
            let s = (sector * SECTOR) as usize;
            self.data[s..s + data.len()].copy_from_slice(data);
            Ok(())
        }
        fn flush(&mut self) -> Result<(), IoError> {
            self.flushes += 1;
            if self.fail {
                Err(IoError)
            } else {
                Ok(())
            }
        }
        fn serial(&self) -> &[u8] {
            b"vm0-disk0"
        }
        fn discard_limits(&self) -> Option<RangeLimits> {
            Some(RangeLimits { max_sectors: 8, alignment: 1, may_unmap: true })
        }
        fn write_zeroes_limits(&self) -> Option<RangeLimits> {
            Some(RangeLimits { max_sectors: 4, alignment: 1, may_unmap: false })
        }
        fn discard(&mut self, sector: u64, sectors: u32) -> Result<(), IoError> {
            let s = (sector * SECTOR) as usize;
            self.data[s..s + sectors as usize * 512].fill(0xdd);
            Ok(())
        }
        fn write_zeroes(&mut self, sector: u64, sectors: u32, unmap: bool) -> Result<(), IoError> {
            assert!(!unmap, "may_unmap is off");
            let s = (sector * SECTOR) as usize;
            self.data[s..s + sectors as usize * 512].fill(0);
            Ok(())
        }
    }

    fn device(sectors: usize) -> BlockDevice<Disk> {
        let data = (0..sectors * 512).map(|i| (i / 512) as u8 ^ (i % 251) as u8).collect();
        BlockDevice::new(Disk { data, read_only: false, fail: false, flushes: 0 })
    }

    fn buf(addr: u64, len: u32, device_writes: bool) -> Buffer {
        Buffer { addr: BASE + addr, len, device_writes }
    }

    fn header(ram: &Ram, at: u64, kind: u32, sector: u64) -> Buffer {
        ram.put(BASE + at, &crate::virtio::blk::header(kind, sector));
        buf(at, 16, false)
    }

    fn chain(buffers: Vec<Buffer>) -> Chain {
        Chain { head: 0, buffers: buffers.into() }
    }

    #[test]
    fn a_region_of_whole_buffers_copies_as_the_pieces_of_any_region() {
        // Every region of buffer lists with empty, short and page-long buffers: the copy
        // the fast path makes names the same bytes, in order, as the pieces.
        let lens = [0u32, 1, 16, 512, 4096];
        let mut whole = 0;
        for a in lens {
            for b in lens {
                for c in lens {
                    let buffers: Vec<Buffer> = [a, b, c].iter().enumerate().map(|(i, &len)| Buffer { addr: 0x10_0000 * (i as u64 + 1), len, device_writes: true }).collect();
                    let total: u64 = buffers.iter().map(|b| b.len as u64).sum();
                    for skip in 0..=total {
                        for len in [0, 1, 16, 511, total.saturating_sub(skip), total.saturating_sub(skip + 1)] {
                            if skip + len > total {
                                continue;
                            }
                            let r = Region { buffers: &buffers, skip, len };
                            let mut pieces = Vec::new();
                            r.pieces(|gpa, n| pieces.push((gpa, n)));
                            let got: Vec<(u64, usize)> = r.to_buffers().iter().filter(|b| b.len != 0).map(|b| (b.addr, b.len as usize)).collect();
                            assert_eq!(got, pieces, "{:?} skip {skip} len {len}", [a, b, c]);
                            assert!(r.to_buffers().iter().all(|b| b.device_writes));
                            whole += r.whole_buffers().is_some() as u32;
                        }
                    }
                }
            }
        }
        assert!(whole > 1000, "the fast path was taken ({whole} times)");
    }

    #[test]
    fn disk_serials_name_a_vm_and_a_number() {
        assert_eq!(vm_disk(b"vm0-disk0"), Some((0, 0)));
        assert_eq!(vm_disk(b"vm12-disk3"), Some((12, 3)));
        for bad in [&b"hv-pstore"[..], b"vm-disk0", b"vm0-disk", b"vm0disk0", b"vmx-disk0", b"vm0-disk+1", b"vm1234-disk0", b"\xff"] {
            assert_eq!(vm_disk(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn config_space_and_features() {
        let mut d = device(64);
        assert_eq!(d.read_config(0, 8), 64);
        assert_eq!(d.read_config(8, 4), SIZE_MAX as u64);
        assert_eq!(d.read_config(12, 4), SEG_MAX as u64);
        assert_eq!(d.read_config(20, 4), 512);
        assert_eq!(d.read_config(22, 4), 0, "reads past the space are 0");
        assert_eq!(d.read_config(u64::MAX, 8), 0);
        assert_eq!(d.features() & F_RO, 0);
        d.backend.read_only = true;
        let all = F_RO | F_FLUSH | F_SEG_MAX | F_SIZE_MAX | F_BLK_SIZE | F_RING_INDIRECT_DESC | F_RING_EVENT_IDX;
        assert_eq!(d.features() & all, all);
        assert_eq!((d.device_id(), d.queue_max(0), d.queue_max(1)), (2, QUEUE_SIZE, 0));
    }

    #[test]
    fn reads_and_writes_across_split_buffers() {
        let ram = Ram::sized(1 << 20);
        let mut d = device(64);
        // Write 3 sectors at sector 5 from three buffers of odd sizes (1000 + 36 + 500).
        let data: Vec<u8> = (0..1536).map(|i| (i * 7 % 256) as u8).collect();
        ram.put(BASE + 0x1000, &data[..1000]);
        ram.put(BASE + 0x3000, &data[1000..1036]);
        ram.put(BASE + 0x5000, &data[1036..]);
        let h = header(&ram, 0, T_OUT, 5);
        let c = chain(vec![h, buf(0x1000, 1000, false), buf(0x3000, 36, false), buf(0x5000, 500, false), buf(0x9000, 1, true)]);
        assert_eq!(d.serve(&c, &ram), 1);
        assert_eq!(ram.get(BASE + 0x9000, 1), [S_OK]);
        assert_eq!(&d.backend.data[5 * 512..8 * 512], &data[..]);
        // Read them back into two writable buffers, the status byte in the second.
        let h = header(&ram, 0x100, T_IN, 5);
        let c = chain(vec![h, buf(0x20000, 700, true), buf(0x30000, 837, true)]);
        assert_eq!(d.serve(&c, &ram), 1537);
        let mut back = ram.get(BASE + 0x20000, 700);
        back.extend(ram.get(BASE + 0x30000, 836));
        assert_eq!(back, data);
        assert_eq!(ram.get(BASE + 0x30000 + 836, 1), [S_OK]);
        // More than one bounce chunk: 20 sectors.
        let h = header(&ram, 0x200, T_IN, 40);
        let c = chain(vec![h, buf(0x40000, 20 * 512 + 1, true)]);
        assert_eq!(d.serve(&c, &ram), 20 * 512 + 1);
        assert_eq!(ram.get(BASE + 0x40000, 20 * 512), &d.backend.data[40 * 512..60 * 512]);
    }

    #[test]
    fn discard_and_write_zeroes_take_one_checked_range() {
        let ram = Ram::sized(1 << 20);
        let mut d = device(16);
        assert_eq!(d.features() & (F_DISCARD | F_WRITE_ZEROES), F_DISCARD | F_WRITE_ZEROES);
        assert_eq!((d.read_config(36, 4), d.read_config(40, 4), d.read_config(48, 4), d.read_config(56, 1)), (8, 1, 4, 0));
        let range = |ram: &Ram, sector: u64, sectors: u32, flags: u32| {
            let mut r = Vec::new();
            r.extend(sector.to_le_bytes());
            r.extend(sectors.to_le_bytes());
            r.extend(flags.to_le_bytes());
            ram.put(BASE + 0x100, &r);
            buf(0x100, 16, false)
        };
        let run = |d: &mut BlockDevice<Disk>, ram: &Ram, kind: u32, r: Buffer| {
            let c = chain(vec![header(ram, 0, kind, 0), r, buf(0x900, 1, true)]);
            (d.serve(&c, ram), ram.get(BASE + 0x900, 1)[0])
        };
        let r = range(&ram, 2, 3, 0);
        assert_eq!(run(&mut d, &ram, T_DISCARD, r), (1, S_OK));
        assert!(d.backend.data[2 * 512..5 * 512].iter().all(|b| *b == 0xdd));
        assert_ne!(d.backend.data[5 * 512], 0xdd);
        let r = range(&ram, 10, 4, WRITE_ZEROES_UNMAP);
        assert_eq!(run(&mut d, &ram, T_WRITE_ZEROES, r), (1, S_OK), "unmap asked, not allowed: zeroes written");
        assert!(d.backend.data[10 * 512..14 * 512].iter().all(|b| *b == 0));
        // Too long, past the end, unknown flags (after the place), empty; two ranges.
        for (kind, sector, sectors, flags, status) in [
            (T_DISCARD, 0, 9, 0, S_IOERR),
            (T_WRITE_ZEROES, 0, 5, 0, S_IOERR),
            (T_DISCARD, 14, 4, 0, S_IOERR),
            (T_DISCARD, u64::MAX, 1, 0, S_IOERR),
            (T_DISCARD, 0, 1, WRITE_ZEROES_UNMAP, S_UNSUPP),
            (T_WRITE_ZEROES, 0, 1, 2, S_UNSUPP),
            (T_WRITE_ZEROES, 20, 1, 2, S_IOERR),
            (T_DISCARD, 0, 0, 0, S_OK),
        ] {
            let before = d.backend.data.clone();
            let r = range(&ram, sector, sectors, flags);
            assert_eq!(run(&mut d, &ram, kind, r), (1, status), "{kind} {sector} {sectors} {flags}");
            assert_eq!(d.backend.data, before);
        }
        let r = buf(0x100, 32, false);
        assert_eq!(run(&mut d, &ram, T_DISCARD, r), (1, S_UNSUPP), "two ranges");
        let r = buf(0x100, 8, false);
        assert_eq!(run(&mut d, &ram, T_DISCARD, r), (1, S_IOERR), "half a range");
        // A read-only disk offers neither.
        d.backend.read_only = true;
        assert_eq!(d.features() & (F_DISCARD | F_WRITE_ZEROES), 0);
        let r = range(&ram, 0, 1, 0);
        assert_eq!(run(&mut d, &ram, T_DISCARD, r), (1, S_UNSUPP));
    }

    #[test]
    fn parsed_requests_name_exactly_their_data() {
        let ram = Ram::sized(1 << 20);
        let mut d = device(64);
        // A read of 2 sectors into 3 buffers, the status byte sharing the last one.
        let c = chain(vec![header(&ram, 0, T_IN, 3), buf(0x1000, 600, true), buf(0x2000, 400, true), buf(0x3000, 25, true)]);
        let Parsed::Io(req) = d.parse(&c, &ram) else { panic!("not I/O") };
        assert_eq!(req.op, Op::Read { sector: 3, len: 1024 });
        assert_eq!(req.data, vec![buf(0x1000, 600, true), buf(0x2000, 400, true), buf(0x3000, 24, true)]);
        assert_eq!(finish(&req, S_OK, &ram), 1025);
        assert_eq!(ram.get(BASE + 0x3000 + 24, 1), [S_OK]);
        assert_eq!(finish(&req, S_IOERR, &ram), 1);
        // A write whose header shares its first buffer with data.
        ram.put(BASE, &crate::virtio::blk::header(T_OUT, 1));
        let c = chain(vec![buf(0, 16 + 512, false), buf(0x5000, 512, false), buf(0x900, 1, true)]);
        let Parsed::Io(req) = d.parse(&c, &ram) else { panic!("not I/O") };
        assert_eq!(req.op, Op::Write { sector: 1, len: 1024 });
        assert_eq!(req.data, vec![buf(16, 512, false), buf(0x5000, 512, false)]);
    }

    #[test]
    fn flush_get_id_and_unknown_types() {
        let ram = Ram::sized(1 << 20);
        let mut d = device(8);
        let c = chain(vec![header(&ram, 0, T_FLUSH, 0), buf(0x100, 1, true)]);
        assert_eq!(d.serve(&c, &ram), 1);
        assert_eq!((ram.get(BASE + 0x100, 1)[0], d.backend.flushes), (S_OK, 1));
        let c = chain(vec![header(&ram, 0, T_GET_ID, 0), buf(0x200, 21, true)]);
        assert_eq!(d.serve(&c, &ram), 21);
        assert_eq!(&ram.get(BASE + 0x200, 20)[..10], b"vm0-disk0\0");
        assert_eq!(ram.get(BASE + 0x214, 1), [S_OK]);
        let c = chain(vec![header(&ram, 0, 77, 0), buf(0x300, 1, true)]);
        assert_eq!(d.serve(&c, &ram), 1);
        assert_eq!(ram.get(BASE + 0x300, 1), [S_UNSUPP]);
    }

    #[test]
    fn bad_requests_get_an_error_status_never_more() {
        let ram = Ram::sized(1 << 20);
        let mut d = device(8);
        let status = |ram: &Ram| ram.get(BASE + 0x900, 1)[0];
        let st = || buf(0x900, 1, true);
        // Past the end of the disk, and overflowing the sector number.
        for sector in [7, 8, u64::MAX] {
            let c = chain(vec![header(&ram, 0, T_IN, sector), buf(0x1000, 1024, true), st()]);
            assert_eq!(d.serve(&c, &ram), 1, "sector {sector}");
            assert_eq!(status(&ram), S_IOERR);
        }
        // Longer than a request may be (on a disk large enough).
        let mut big = device(((MAX_REQUEST + 4096) / SECTOR) as usize);
        let c = chain(vec![header(&ram, 0, T_IN, 0), Buffer { addr: BASE + 0x1000, len: (MAX_REQUEST + 512) as u32, device_writes: true }, st()]);
        assert_eq!(big.serve(&c, &ram), 1);
        assert_eq!(status(&ram), S_IOERR);
        // Not whole sectors.
        let c = chain(vec![header(&ram, 0, T_IN, 0), buf(0x1000, 100, true), st()]);
        assert_eq!((d.serve(&c, &ram), status(&ram)), (1, S_IOERR));
        // A short header.
        let c = chain(vec![buf(0, 8, false), st()]);
        assert_eq!((d.serve(&c, &ram), status(&ram)), (1, S_IOERR));
        // A data buffer outside RAM.
        let c = chain(vec![header(&ram, 0, T_OUT, 0), Buffer { addr: 0x1000, len: 512, device_writes: false }, st()]);
        assert_eq!((d.serve(&c, &ram), status(&ram)), (1, S_IOERR));
        // No status byte at all, or one outside RAM: nothing can be said.
        let c = chain(vec![header(&ram, 0, T_FLUSH, 0)]);
        assert_eq!(d.serve(&c, &ram), 0);
        let c = chain(vec![header(&ram, 0, T_FLUSH, 0), Buffer { addr: 0x10, len: 1, device_writes: true }]);
        assert_eq!(d.serve(&c, &ram), 0);
        // A read-only disk refuses writes, and a failing backend fails requests.
        d.backend.read_only = true;
        let before = d.backend.data.clone();
        let c = chain(vec![header(&ram, 0, T_OUT, 0), buf(0x1000, 512, false), st()]);
        assert_eq!((d.serve(&c, &ram), status(&ram)), (1, S_IOERR));
        assert_eq!(d.backend.data, before);
        d.backend.fail = true;
        let c = chain(vec![header(&ram, 0, T_IN, 0), buf(0x1000, 512, true), st()]);
        assert_eq!((d.serve(&c, &ram), status(&ram)), (1, S_IOERR));
        let c = chain(vec![header(&ram, 0, T_FLUSH, 0), st()]);
        assert_eq!((d.serve(&c, &ram), status(&ram)), (1, S_IOERR));
    }

    /// Random chains (headers, buffer counts, lengths, addresses in and out of RAM) never
    /// panic, never report more than the writable bytes, and never touch the disk past its
    /// end.
    #[test]
    fn garbage_requests_are_answered_safely() {
        let mut rng = crate::rng::Rng::new(0xb10c);
        let ram = Ram::sized(1 << 20);
        let mut d = device(16);
        for _ in 0..crate::fuzz_tests::iters(20_000) {
            let kind = [T_IN, T_OUT, T_FLUSH, T_GET_ID, T_DISCARD, T_WRITE_ZEROES, 3, rng.next() as u32][rng.below(8) as usize];
            let sector = if rng.below(4) == 0 { rng.next() } else { rng.below(20) };
            ram.put(BASE, &crate::virtio::blk::header(kind, sector));
            let n = rng.below(6) as usize;
            let mut buffers = vec![Buffer { addr: BASE + rng.below(32), len: rng.below(40) as u32, device_writes: false }];
            let mut writes = false;
            for _ in 0..n {
                writes |= rng.below(2) == 0;
                let addr = if rng.below(8) == 0 { rng.next() >> rng.below(64) } else { BASE + 0x1000 + rng.below(0xf0000) };
                buffers.push(Buffer { addr, len: rng.below(5000) as u32, device_writes: writes });
            }
            let writable: u64 = buffers.iter().filter(|b| b.device_writes).map(|b| b.len as u64).sum();
            let used = d.serve(&chain(buffers), &ram) as u64;
            assert!(used <= writable, "used {used} of {writable}");
            assert_eq!(d.backend.data.len(), 16 * 512);
        }
    }

    /// A driver that keeps changing its rings, descriptors, indirect tables and headers
    /// while the device reads them (another vCPU writing them): each read first flips a
    /// random byte. The device takes what it read once (the indirect table in one piece,
    /// the header into its own copy), never panics, never answers more than the writable
    /// bytes, never touches the disk past its end.
    #[test]
    fn garbage_from_a_driver_changing_requests_while_they_are_read() {
        use crate::virtio_mmio::QueueConfig;
        use crate::virtqueue::DeviceQueue;
        use core::cell::RefCell;

        struct Racing {
            ram: Ram,
            rng: RefCell<crate::rng::Rng>,
        }
        impl GuestRam for Racing {
            fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), crate::virtqueue::OutOfRam> {
                let x = self.rng.borrow_mut().next();
                if x % 2 == 0 {
                    let at = BASE + 0x1000 + (x >> 8) % 0x5000;
                    self.ram.put(at, &[(x >> 40) as u8]);
                }
                self.ram.read(gpa, buf)
            }
            fn write(&self, gpa: u64, data: &[u8]) -> Result<(), crate::virtqueue::OutOfRam> {
                self.ram.write(gpa, data)
            }
        }
        let (desc, avail, used, tables, headers) = (BASE + 0x1000, BASE + 0x2000, BASE + 0x3000, BASE + 0x4000, BASE + 0x5000);
        let mem = Racing { ram: Ram::sized(1 << 20), rng: RefCell::new(crate::rng::Rng::new(0x7ace)) };
        let mut d = device(64);
        let mut rng = crate::rng::Rng::new(99);
        let (mut served, mut refused) = (0u32, 0u32);
        for round in 0..crate::fuzz_tests::iters(3000) {
            let cfg = QueueConfig { size: 8, ready: true, desc, driver: avail, device: used };
            let mut q = DeviceQueue::new(&cfg, crate::virtio_mmio::F_RING_INDIRECT_DESC);
            // Eight well-formed requests, half of them through indirect tables.
            for i in 0..8u16 {
                let kind = [T_IN, T_OUT, T_FLUSH, T_GET_ID, T_DISCARD][rng.below(5) as usize];
                let h = headers + 64 * i as u64;
                mem.ram.put(h, &crate::virtio::blk::header(kind, rng.below(70)));
                let data = BASE + 0x10000 + 0x2000 * i as u64;
                let writes = if kind == T_IN || kind == T_GET_ID { 2 } else { 0 };
                let t = tables + 48 * i as u64;
                mem.ram.desc(t, 0, h, 16, 1, 1);
                mem.ram.desc(t, 1, data, 1024, 1 | writes, 2);
                mem.ram.desc(t, 2, h + 32, 1, 2, 0);
                if i % 2 == 0 {
                    mem.ram.desc(desc, i, t, 48, 4, 0);
                } else {
                    mem.ram.put(desc + 16 * i as u64, &mem.ram.get(t, 16));
                    mem.ram.desc(desc, i, h, 16, 1, (i + 1) % 8);
                }
                mem.ram.put16(avail + 4 + 2 * i as u64, i);
            }
            mem.ram.put16(avail + 2, 8);
            for _ in 0..8 {
                match q.pop(&mem) {
                    Ok(Some(c)) => {
                        let writable: u64 = c.buffers.iter().filter(|b| b.device_writes).map(|b| b.len as u64).sum();
                        let n = d.serve(&c, &mem) as u64;
                        assert!(n <= writable, "round {round}: used {n} of {writable}");
                        let _ = q.push(&mem, c.head, n as u32);
                        served += 1;
                    }
                    Ok(None) => break,
                    Err(_) => {
                        refused += 1;
                        break;
                    }
                }
            }
            assert_eq!(d.backend.data.len(), 64 * 512);
        }
        assert!(served > 1000 && refused > 100, "{served} served, {refused} refused");
    }
}
