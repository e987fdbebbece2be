//! A virtio-blk driver over a virtio-mmio transport (virtio_mmio.rs): probe, feature
//! negotiation, one split virtqueue, read, write, flush, GET_ID, discard and write-zeroes.
//! Two ways to use it:
//! - synchronous requests (`read`, `write`, `flush`, `serial`), completion polled with a
//!   time bound, no allocation after probing: the pstore disk's, usable from the panic path;
//! - many requests in flight (`submit`, then `reap` when the device interrupts): guest
//!   disks, whose requests carry the guest's own pages (vdev::virtio_blk).

use super::virtio_mmio::{Dma, ProbeError, Transport};
use crate::mm::frames;
use hv_core::pgtable::PAGE_SIZE;
use hv_core::virtio::{blk, IndirectTables, QueueLayout, Segment, SplitQueue, DESC_SIZE, F_INDIRECT_DESC};
use hv_core::virtio_blk_device::RangeLimits;

const DEVICE_BLOCK: u32 = 2;
/// Config space fields (virtio 1.2 section 5.2.4).
mod config {
    pub const CAPACITY: u64 = 0x00;
    pub const SEG_MAX: u64 = 0x0c;
    pub const MAX_DISCARD_SECTORS: u64 = 0x24;
    pub const DISCARD_SECTOR_ALIGNMENT: u64 = 0x2c;
    pub const MAX_WRITE_ZEROES_SECTORS: u64 = 0x30;
    /// A byte: QEMU answers wider reads crossing the end of its config space with ones.
    pub const WRITE_ZEROES_MAY_UNMAP: u64 = 0x38;
}
/// The largest queue asked for (QEMU's virtio-blk offers 256 by default).
pub const MAX_QUEUE_SIZE: u16 = 256;
/// Descriptors of each request's indirect table (a page): a request of up to
/// TABLE_ENTRIES - 2 data buffers takes one ring descriptor, so the ring holds as many
/// requests as it has entries, however long they are.
const TABLE_ENTRIES: u16 = (PAGE_SIZE as usize / DESC_SIZE) as u16;
/// Largest data buffer of one synchronous request (QEMU takes more; this bounds each
/// request's time).
const MAX_REQUEST: usize = 256 << 10;
/// How long a request may take before the device is declared stuck.
const REQUEST_TIMEOUT_MS: u64 = 2000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlkError {
    /// The device did not answer in time.
    Timeout,
    /// It answered with a status other than OK.
    Status(u8),
    /// Its used ring made no sense.
    Garbage,
    /// Beyond the disk's end, or a buffer not a whole number of sectors.
    OutOfRange,
    ReadOnly,
}

/// Each request in flight has a slot in the request area, indexed by its head descriptor:
/// the header, the status byte and one discard/write-zeroes range, at these offsets.
const SLOT: usize = 64;
const HEADER_AT: usize = 0;
const STATUS_AT: usize = 16;
const RANGE_AT: usize = 32;

/// One request's outcome: its token (from `submit`) and the device's status byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completion {
    pub token: u16,
    pub status: u8,
}

/// What `reap` found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reaped {
    Done(Completion),
    /// The device was reset (it answered garbage, or a request timed out): every request
    /// that was in flight is lost and will never complete.
    Reset,
}

pub struct VirtioBlk {
    transport: Transport,
    pub base: u64,
    pub version: u32,
    queue: SplitQueue,
    dma: Dma,
    /// The request slots (SLOT bytes per descriptor), then the GET_ID buffer.
    request_area: u64,
    /// Where the indirect tables start (a page per ring descriptor), from the queue's start.
    tables_at: usize,
    area_pages: usize,
    /// Disk size in 512-byte sectors.
    pub capacity: u64,
    pub has_flush: bool,
    pub read_only: bool,
    /// Data buffers one request may have.
    pub seg_max: u32,
    pub discard: Option<RangeLimits>,
    pub write_zeroes: Option<RangeLimits>,
    /// Requests completed (for benchmarks and the log).
    pub requests: u64,
    /// Completions a synchronous request saw while waiting for its own, for `reap`.
    stash: alloc::collections::VecDeque<Completion>,
    /// A reset happened that `reap` has not reported yet.
    reset_unreported: bool,
}

// SAFETY: the DMA memory is reached only through `&mut self` methods (and the panic path,
// once every other CPU is stopped).
unsafe impl Send for VirtioBlk {}

impl VirtioBlk {
    /// Brings up the block device behind the virtio-mmio transport at `base` (mapped as
    /// device memory), with a queue of up to `queue_size` entries (a power of two).
    pub fn probe(base: u64, queue_size: u16) -> Result<VirtioBlk, ProbeError> {
        let transport = Transport::open(base, DEVICE_BLOCK)?;
        transport.reset();
        let max = transport.queue_max(0).min(MAX_QUEUE_SIZE as u32);
        if max < 4 {
            return Err(ProbeError::Unsupported("queue too small"));
        }
        // The largest power of two both allow.
        let size = 1u16 << (15 - (max as u16).min(queue_size).leading_zeros());
        let version = transport.version;
        let layout = QueueLayout::new(size, transport.queue_align()).ok_or(ProbeError::Unsupported("queue layout"))?;
        let queue_pages = layout.bytes.div_ceil(PAGE_SIZE as usize);
        let area_pages = (size as usize * SLOT + blk::ID_BYTES).div_ceil(PAGE_SIZE as usize);
        let table_pages = size as usize;
        let dma = frames::alloc_zeroed(queue_pages + area_pages + table_pages).ok_or(ProbeError::NoMemory)?;
        let mut dev = VirtioBlk {
            transport,
            base,
            version,
            queue: SplitQueue::new(layout),
            dma: Dma { base: dma },
            request_area: dma + queue_pages as u64 * PAGE_SIZE,
            tables_at: (queue_pages + area_pages) * PAGE_SIZE as usize,
            area_pages: queue_pages + area_pages + table_pages,
            capacity: 0,
            has_flush: false,
            read_only: false,
            seg_max: 1,
            discard: None,
            write_zeroes: None,
            requests: 0,
            stash: alloc::collections::VecDeque::with_capacity(size as usize),
            reset_unreported: false,
        };
        if let Err(e) = dev.init() {
            dev.transport.reset();
            frames::free(dma, dev.area_pages);
            return Err(e);
        }
        Ok(dev)
    }

    /// Reset and the whole initialization sequence (also what recovers a stuck device:
    /// every request in flight is dropped).
    fn init(&mut self) -> Result<(), ProbeError> {
        let t = &self.transport;
        t.reset();
        if self.queue.in_flight() != 0 || !self.stash.is_empty() {
            self.reset_unreported = true;
        }
        self.stash.clear();
        let layout = self.queue.layout();
        // SAFETY: the queue area is ours (allocated in probe) and the device was just
        // reset, so it no longer reads or writes it.
        unsafe { crate::arch::zero(self.dma.base, (layout.bytes as u64).next_multiple_of(PAGE_SIZE)) };
        self.queue.reset();
        let wanted = [blk::F_FLUSH, blk::F_RO, blk::F_SEG_MAX, blk::F_DISCARD, blk::F_WRITE_ZEROES, F_INDIRECT_DESC];
        let taken = t.negotiate(wanted.iter().fold(0u64, |w, b| w | 1 << b))?;
        let offered = |bit: u32| taken >> bit & 1 != 0;
        self.has_flush = offered(blk::F_FLUSH);
        self.read_only = offered(blk::F_RO);
        let tables = IndirectTables { offset: self.tables_at, addr: self.dma.base + self.tables_at as u64, entries: TABLE_ENTRIES };
        self.queue.set_indirect(offered(F_INDIRECT_DESC).then_some(tables));
        t.set_queue(0, &layout, self.dma.base)?;
        t.driver_ok();
        self.capacity = t.config32(config::CAPACITY) as u64 | (t.config32(config::CAPACITY + 4) as u64) << 32;
        // Data buffers per request: what the device says, within what the queue (or an
        // indirect table) holds beside the header and the status.
        let queue_room = if offered(F_INDIRECT_DESC) { TABLE_ENTRIES } else { layout.size } as u32 - 2;
        self.seg_max = if offered(blk::F_SEG_MAX) { t.config32(config::SEG_MAX).clamp(1, queue_room) } else { 1 };
        self.discard = offered(blk::F_DISCARD).then(|| RangeLimits {
            max_sectors: t.config32(config::MAX_DISCARD_SECTORS),
            alignment: t.config32(config::DISCARD_SECTOR_ALIGNMENT).max(1),
            may_unmap: true,
        });
        self.write_zeroes = offered(blk::F_WRITE_ZEROES).then(|| RangeLimits {
            max_sectors: t.config32(config::MAX_WRITE_ZEROES_SECTORS),
            alignment: 1,
            may_unmap: t.config8(config::WRITE_ZEROES_MAY_UNMAP) != 0,
        });
        Ok(())
    }

    fn slot_ptr(&self, slot: u16, off: usize) -> *mut u8 {
        (self.request_area as usize + slot as usize * SLOT + off) as *mut u8
    }

    fn slot_addr(&self, slot: u16, off: usize) -> u64 {
        self.request_area + (slot as usize * SLOT + off) as u64
    }

    fn id_addr(&self) -> u64 {
        self.request_area + (self.queue.layout().size as usize * SLOT) as u64
    }

    /// Requests submitted and not reaped.
    pub fn in_flight(&self) -> usize {
        self.queue.in_flight() + self.stash.len()
    }

    /// Makes a request of type `kind` at `sector` with data buffers `data` available
    /// (at most `seg_max`, for discard and write-zeroes none: `range` is its one range of
    /// (sector, sectors, flags)). Returns its token; None when the queue lacks room now.
    /// The caller checked the request against the disk (sectors, read-only).
    pub fn submit(&mut self, kind: u32, sector: u64, data: &[Segment], range: Option<(u64, u32, u32)>) -> Option<u16> {
        let n = data.len() + 2 + range.is_some() as usize;
        if data.len() > self.seg_max as usize || !self.queue.has_room(n) {
            return None;
        }
        // The head is the first free descriptor `submit` takes: its slot holds this
        // request's header and status. Find it first by asking the queue.
        let slot = self.queue.next_head()?;
        let header = blk::header(kind, sector);
        // SAFETY: the slot belongs to the head descriptor, which is free: the device does not
        // look at it until the chain is made available below.
        unsafe {
            core::ptr::copy_nonoverlapping(header.as_ptr(), self.slot_ptr(slot, HEADER_AT), header.len());
            self.slot_ptr(slot, STATUS_AT).write_volatile(0xff);
        }
        let header = Segment { addr: self.slot_addr(slot, HEADER_AT), len: 16, device_writes: false };
        let status = Segment { addr: self.slot_addr(slot, STATUS_AT), len: 1, device_writes: true };
        let mut range_seg = None;
        if let Some((start, sectors, flags)) = range {
            let mut r = [0u8; 16];
            r[0..8].copy_from_slice(&start.to_le_bytes());
            r[8..12].copy_from_slice(&sectors.to_le_bytes());
            r[12..16].copy_from_slice(&flags.to_le_bytes());
            // SAFETY: as above, the slot's range field.
            unsafe { core::ptr::copy_nonoverlapping(r.as_ptr(), self.slot_ptr(slot, RANGE_AT), 16) };
            range_seg = Some(Segment { addr: self.slot_addr(slot, RANGE_AT), len: 16, device_writes: false });
        }
        let (header, range_seg, status) = ([header], range_seg.as_slice(), [status]);
        let head = self.queue.submit_parts(&mut self.dma, &[&header, range_seg, data, &status])?;
        debug_assert_eq!(head, slot);
        self.transport.notify(0);
        Some(head)
    }

    /// The next completed request, if any (those a synchronous request set aside first).
    /// A device that answers garbage is reset: `Reaped::Reset`.
    pub fn reap(&mut self) -> Option<Reaped> {
        if core::mem::take(&mut self.reset_unreported) {
            return Some(Reaped::Reset);
        }
        if let Some(c) = self.stash.pop_front() {
            return Some(Reaped::Done(c));
        }
        match self.queue.poll(&self.dma)? {
            Ok(used) => Some(Reaped::Done(self.completed(used.head))),
            Err(e) => {
                log::warn!("virtio-blk at {:#x}: used ring makes no sense ({e:?}): device reset", self.base);
                self.reset();
                self.reset_unreported = false;
                Some(Reaped::Reset)
            }
        }
    }

    /// The status of the request in slot `head`, just completed.
    fn completed(&mut self, head: u16) -> Completion {
        self.requests += 1;
        // SAFETY: the request completed: its status byte, in our request area, is ours again.
        let status = unsafe { self.slot_ptr(head, STATUS_AT).read_volatile() };
        Completion { token: head, status }
    }

    /// Resets the device and its queue: every request in flight is dropped (the device
    /// touches none of their buffers after this returns).
    pub fn reset(&mut self) {
        if self.init().is_err() {
            log::warn!("virtio-blk at {:#x}: does not come back after a reset", self.base);
        }
    }

    /// Acknowledges the device's interrupt (before reaping: what completes later raises it
    /// again).
    pub fn ack_interrupt(&mut self) {
        self.transport.ack_interrupt();
    }

    /// Submits one request and polls it to completion, within the time bound. A stuck or
    /// confused device is reset (the request fails). Completions of other requests that
    /// come meanwhile are kept for `reap`.
    fn request(&mut self, kind: u32, sector: u64, data: Option<(u64, u32, bool)>) -> Result<u32, BlkError> {
        let seg = data.map(|(addr, len, device_writes)| Segment { addr, len, device_writes });
        let token = self.submit(kind, sector, seg.as_slice(), None).ok_or(BlkError::Garbage)?;
        let (freq, start) = crate::arch::cpu::counter();
        let limit = freq / 1000 * REQUEST_TIMEOUT_MS;
        let result = loop {
            match self.queue.poll(&self.dma) {
                Some(Ok(used)) if used.head == token => break Ok(used.len),
                Some(Ok(used)) => {
                    let c = self.completed(used.head);
                    self.stash.push_back(c);
                }
                Some(Err(_)) => break Err(BlkError::Garbage),
                None if crate::arch::cpu::counter().1 - start > limit => break Err(BlkError::Timeout),
                // A panic on another CPU takes the disk over: get out of its way.
                None => crate::percpu::park_if_stopping(),
            }
            core::hint::spin_loop();
        };
        self.ack_interrupt();
        if result.is_err() {
            let _ = self.init();
        }
        let written = result?;
        let status = self.completed(token).status;
        if status != blk::S_OK {
            return Err(BlkError::Status(status));
        }
        Ok(written)
    }

    fn check(&self, sector: u64, len: usize) -> Result<(), BlkError> {
        let sectors = (len / 512) as u64;
        if len % 512 != 0 || sector.checked_add(sectors).is_none_or(|end| end > self.capacity) {
            return Err(BlkError::OutOfRange);
        }
        Ok(())
    }

    /// Reads whole sectors from `sector` into `buf`.
    pub fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), BlkError> {
        self.check(sector, buf.len())?;
        for (i, chunk) in buf.chunks_mut(MAX_REQUEST).enumerate() {
            let at = sector + (i * MAX_REQUEST / 512) as u64;
            self.request(blk::T_IN, at, Some((chunk.as_mut_ptr() as u64, chunk.len() as u32, true)))?;
        }
        Ok(())
    }

    /// Writes whole sectors from `buf` at `sector` (not durable until [`VirtioBlk::flush`]).
    pub fn write(&mut self, sector: u64, buf: &[u8]) -> Result<(), BlkError> {
        self.check(sector, buf.len())?;
        if self.read_only {
            return Err(BlkError::ReadOnly);
        }
        for (i, chunk) in buf.chunks(MAX_REQUEST).enumerate() {
            let at = sector + (i * MAX_REQUEST / 512) as u64;
            self.request(blk::T_OUT, at, Some((chunk.as_ptr() as u64, chunk.len() as u32, false)))?;
        }
        Ok(())
    }

    /// Makes what was written durable (a no-op for a device without a volatile cache,
    /// which is what not offering VIRTIO_BLK_F_FLUSH means).
    pub fn flush(&mut self) -> Result<(), BlkError> {
        if !self.has_flush {
            return Ok(());
        }
        self.request(blk::T_FLUSH, 0, None).map(|_| ())
    }

    /// The device's serial (QEMU's `-device virtio-blk-device,serial=...`), up to 20 bytes.
    pub fn serial(&mut self, out: &mut [u8; blk::ID_BYTES]) -> Result<usize, BlkError> {
        let addr = self.id_addr();
        self.request(blk::T_GET_ID, 0, Some((addr, blk::ID_BYTES as u32, true)))?;
        // SAFETY: the device wrote ID_BYTES bytes at the ID buffer in our request area.
        let id = unsafe { core::slice::from_raw_parts(addr as *const u8, blk::ID_BYTES) };
        let s = blk::serial(id);
        out[..s.len()].copy_from_slice(s);
        Ok(s.len())
    }

    /// The panic path: the device may be mid-request on a CPU that was stopped; start over.
    pub fn reset_for_panic(&mut self) -> bool {
        self.init().is_ok()
    }

    /// Leaves the device reset (a transport that is not ours).
    pub fn release(self) {
        self.transport.reset();
        frames::free(self.dma.base, self.area_pages);
    }
}
