//! A virtio-blk driver over virtio-mmio (legacy version 1, QEMU's default, and version 2):
//! probe, feature negotiation, one split virtqueue, read, write, flush, GET_ID, discard and
//! write-zeroes. Two ways to use it:
//! - synchronous requests (`read`, `write`, `flush`, `serial`), completion polled with a
//!   time bound, no allocation after probing: the pstore disk's, usable from the panic path;
//! - many requests in flight (`submit`, then `reap` when the device interrupts): guest
//!   disks, whose requests carry the guest's own pages (vdev::virtio_blk).
//!
//! Buffers are passed to the device by address: the hypervisor's memory is identity-mapped,
//! so a buffer's address is its physical address.

use crate::mm::frames;
use hv_core::pgtable::PAGE_SIZE;
use hv_core::virtio::{blk, QueueLayout, QueueMemory, Segment, SplitQueue};
use hv_core::virtio_blk_device::RangeLimits;
use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::register_structs;
use tock_registers::registers::{ReadOnly, ReadWrite, WriteOnly};

register_structs! {
    Regs {
        (0x000 => magic: ReadOnly<u32>),
        (0x004 => version: ReadOnly<u32>),
        (0x008 => device_id: ReadOnly<u32>),
        (0x00c => _vendor),
        (0x010 => device_features: ReadOnly<u32>),
        (0x014 => device_features_sel: WriteOnly<u32>),
        (0x018 => _r0),
        (0x020 => driver_features: WriteOnly<u32>),
        (0x024 => driver_features_sel: WriteOnly<u32>),
        (0x028 => guest_page_size: WriteOnly<u32>),
        (0x02c => _r1),
        (0x030 => queue_sel: WriteOnly<u32>),
        (0x034 => queue_num_max: ReadOnly<u32>),
        (0x038 => queue_num: WriteOnly<u32>),
        (0x03c => queue_align: WriteOnly<u32>),
        (0x040 => queue_pfn: ReadWrite<u32>),
        (0x044 => queue_ready: ReadWrite<u32>),
        (0x048 => _r2),
        (0x050 => queue_notify: WriteOnly<u32>),
        (0x054 => _r3),
        (0x060 => interrupt_status: ReadOnly<u32>),
        (0x064 => interrupt_ack: WriteOnly<u32>),
        (0x068 => _r4),
        (0x070 => status: ReadWrite<u32>),
        (0x074 => _r5),
        (0x080 => queue_desc_low: WriteOnly<u32>),
        (0x084 => queue_desc_high: WriteOnly<u32>),
        (0x088 => _r6),
        (0x090 => queue_driver_low: WriteOnly<u32>),
        (0x094 => queue_driver_high: WriteOnly<u32>),
        (0x098 => _r7),
        (0x0a0 => queue_device_low: WriteOnly<u32>),
        (0x0a4 => queue_device_high: WriteOnly<u32>),
        (0x0a8 => _r8),
        (0x100 => capacity_low: ReadOnly<u32>),
        (0x104 => capacity_high: ReadOnly<u32>),
        (0x108 => _size_max),
        (0x10c => seg_max: ReadOnly<u32>),
        (0x110 => _r9),
        (0x124 => max_discard_sectors: ReadOnly<u32>),
        (0x128 => _max_discard_seg),
        (0x12c => discard_sector_alignment: ReadOnly<u32>),
        (0x130 => max_write_zeroes_sectors: ReadOnly<u32>),
        (0x134 => _max_write_zeroes_seg),
        // A byte: QEMU answers wider reads crossing the end of its config space with ones.
        (0x138 => write_zeroes_may_unmap: ReadOnly<u8>),
        (0x139 => @END),
    }
}

const MAGIC: u32 = 0x7472_6976;
const DEVICE_BLOCK: u32 = 2;
const ACKNOWLEDGE: u32 = 1;
const DRIVER: u32 = 2;
const DRIVER_OK: u32 = 4;
const FEATURES_OK: u32 = 8;
/// The largest queue asked for (QEMU's virtio-blk offers 256 by default).
pub const MAX_QUEUE_SIZE: u16 = 256;
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

/// Why a transport is not a usable block device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeError {
    NotVirtio,
    /// Another kind of device, or no device behind the transport (ID 0).
    NotBlock(u32),
    Unsupported(&'static str),
    NoMemory,
}

/// Each request in flight has a slot in the request area, indexed by its head descriptor:
/// the header, the status byte and one discard/write-zeroes range, at these offsets.
const SLOT: usize = 64;
const HEADER_AT: usize = 0;
const STATUS_AT: usize = 16;
const RANGE_AT: usize = 32;

/// The queue's memory: an identity-mapped DMA area the device reads and writes.
struct Dma {
    base: u64,
}

impl Dma {
    fn ptr<T>(&self, off: usize) -> *mut T {
        (self.base as usize + off) as *mut T
    }
}

impl QueueMemory for Dma {
    fn read16(&self, off: usize) -> u16 {
        // SAFETY: `off` is inside the queue area this driver allocated (QueueLayout keeps
        // every ring offset below `bytes`), naturally aligned; volatile: the device writes it.
        unsafe { self.ptr::<u16>(off).read_volatile() }
    }
    fn read32(&self, off: usize) -> u32 {
        // SAFETY: as for read16.
        unsafe { self.ptr::<u32>(off).read_volatile() }
    }
    fn write16(&mut self, off: usize, v: u16) {
        // SAFETY: as for read16.
        unsafe { self.ptr::<u16>(off).write_volatile(v) }
    }
    fn write32(&mut self, off: usize, v: u32) {
        // SAFETY: as for read16.
        unsafe { self.ptr::<u32>(off).write_volatile(v) }
    }
    fn write64(&mut self, off: usize, v: u64) {
        // SAFETY: as for read16.
        unsafe { self.ptr::<u64>(off).write_volatile(v) }
    }
    fn publish_barrier(&mut self) {
        aarch64_cpu::asm::barrier::dsb(aarch64_cpu::asm::barrier::SY);
    }
}

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
    regs: &'static Regs,
    pub base: u64,
    pub version: u32,
    queue: SplitQueue,
    dma: Dma,
    /// The request slots (SLOT bytes per descriptor), then the GET_ID buffer.
    request_area: u64,
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

// SAFETY: the registers and DMA memory are reached only through `&mut self` methods (and
// the panic path, once every other CPU is stopped).
unsafe impl Send for VirtioBlk {}

impl VirtioBlk {
    /// Brings up the block device behind the virtio-mmio transport at `base` (mapped as
    /// device memory), with a queue of up to `queue_size` entries (a power of two).
    pub fn probe(base: u64, queue_size: u16) -> Result<VirtioBlk, ProbeError> {
        // SAFETY: `base` is a virtio-mmio transport from the host device tree, mapped as
        // device memory in the EL2 tables; this driver is its only user.
        let regs: &'static Regs = unsafe { &*(base as *const Regs) };
        if regs.magic.get() != MAGIC {
            return Err(ProbeError::NotVirtio);
        }
        let version = regs.version.get();
        if version != 1 && version != 2 {
            return Err(ProbeError::Unsupported("virtio-mmio version"));
        }
        let id = regs.device_id.get();
        if id != DEVICE_BLOCK {
            return Err(ProbeError::NotBlock(id));
        }
        regs.status.set(0);
        regs.queue_sel.set(0);
        let max = regs.queue_num_max.get().min(MAX_QUEUE_SIZE as u32);
        if max < 4 {
            return Err(ProbeError::Unsupported("queue too small"));
        }
        // The largest power of two both allow.
        let size = 1u16 << (15 - (max as u16).min(queue_size).leading_zeros());
        let align = if version == 1 { PAGE_SIZE as usize } else { 4 };
        let layout = QueueLayout::new(size, align).ok_or(ProbeError::Unsupported("queue layout"))?;
        let queue_pages = layout.bytes.div_ceil(PAGE_SIZE as usize);
        let area_pages = (size as usize * SLOT + blk::ID_BYTES).div_ceil(PAGE_SIZE as usize);
        let dma = frames::alloc_zeroed(queue_pages + area_pages).ok_or(ProbeError::NoMemory)?;
        let mut dev = VirtioBlk {
            regs,
            base,
            version,
            queue: SplitQueue::new(layout),
            dma: Dma { base: dma },
            request_area: dma + queue_pages as u64 * PAGE_SIZE,
            area_pages: queue_pages + area_pages,
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
            dev.regs.status.set(0);
            frames::free(dma, dev.area_pages);
            return Err(e);
        }
        Ok(dev)
    }

    /// Reset and the whole initialization sequence (also what recovers a stuck device:
    /// every request in flight is dropped).
    fn init(&mut self) -> Result<(), ProbeError> {
        let r = self.regs;
        r.status.set(0);
        if self.queue.in_flight() != 0 || !self.stash.is_empty() {
            self.reset_unreported = true;
        }
        self.stash.clear();
        let layout = self.queue.layout();
        // SAFETY: the queue area is ours (allocated in probe) and the device was just
        // reset, so it no longer reads or writes it.
        unsafe { crate::arch::zero(self.dma.base, (layout.bytes as u64).next_multiple_of(PAGE_SIZE)) };
        self.queue.reset();
        r.status.set(ACKNOWLEDGE);
        r.status.set(ACKNOWLEDGE | DRIVER);
        r.device_features_sel.set(0);
        let low = r.device_features.get();
        r.device_features_sel.set(1);
        let high = r.device_features.get();
        let offered = |bit: u32| if bit < 32 { low >> bit & 1 != 0 } else { high >> (bit - 32) & 1 != 0 };
        self.has_flush = offered(blk::F_FLUSH);
        self.read_only = offered(blk::F_RO);
        let wanted = [blk::F_FLUSH, blk::F_RO, blk::F_SEG_MAX, blk::F_DISCARD, blk::F_WRITE_ZEROES];
        let wanted_low = wanted.iter().filter(|b| offered(**b)).fold(0u32, |w, b| w | 1 << b);
        r.driver_features_sel.set(0);
        r.driver_features.set(wanted_low);
        if self.version == 2 {
            if !offered(blk::F_VERSION_1) {
                return Err(ProbeError::Unsupported("VIRTIO_F_VERSION_1 not offered"));
            }
            r.driver_features_sel.set(1);
            r.driver_features.set(1 << (blk::F_VERSION_1 - 32));
            r.status.set(ACKNOWLEDGE | DRIVER | FEATURES_OK);
            if r.status.get() & FEATURES_OK == 0 {
                return Err(ProbeError::Unsupported("features refused"));
            }
        }
        r.queue_sel.set(0);
        if r.queue_num_max.get() < layout.size as u32 {
            return Err(ProbeError::Unsupported("queue too small"));
        }
        r.queue_num.set(layout.size as u32);
        let q = self.dma.base;
        if self.version == 1 {
            r.guest_page_size.set(PAGE_SIZE as u32);
            r.queue_align.set(PAGE_SIZE as u32);
            r.queue_pfn.set((q / PAGE_SIZE) as u32);
        } else {
            let (desc, avail, used) = (q + layout.desc as u64, q + layout.avail as u64, q + layout.used as u64);
            r.queue_desc_low.set(desc as u32);
            r.queue_desc_high.set((desc >> 32) as u32);
            r.queue_driver_low.set(avail as u32);
            r.queue_driver_high.set((avail >> 32) as u32);
            r.queue_device_low.set(used as u32);
            r.queue_device_high.set((used >> 32) as u32);
            r.queue_ready.set(1);
        }
        let features_ok = if self.version == 2 { FEATURES_OK } else { 0 };
        r.status.set(ACKNOWLEDGE | DRIVER | features_ok | DRIVER_OK);
        self.capacity = r.capacity_low.get() as u64 | (r.capacity_high.get() as u64) << 32;
        // Data buffers per request: what the device says, within what the queue holds
        // beside the header and the status.
        let queue_room = layout.size as u32 - 2;
        self.seg_max = if offered(blk::F_SEG_MAX) { r.seg_max.get().clamp(1, queue_room) } else { 1 };
        self.discard = offered(blk::F_DISCARD).then(|| RangeLimits {
            max_sectors: r.max_discard_sectors.get(),
            alignment: r.discard_sector_alignment.get().max(1),
            may_unmap: true,
        });
        self.write_zeroes = offered(blk::F_WRITE_ZEROES).then(|| RangeLimits {
            max_sectors: r.max_write_zeroes_sectors.get(),
            alignment: 1,
            may_unmap: r.write_zeroes_may_unmap.get() != 0,
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
        if data.len() > self.seg_max as usize || n > self.queue.free_descriptors() {
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
        let chain = core::iter::once(header).chain(range_seg).chain(data.iter().copied()).chain(core::iter::once(status));
        let head = self.queue.submit_n(&mut self.dma, n, chain)?;
        debug_assert_eq!(head, slot);
        self.regs.queue_notify.set(0);
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
        self.regs.interrupt_ack.set(self.regs.interrupt_status.get());
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
        self.regs.status.set(0);
        frames::free(self.dma.base, self.area_pages);
    }
}
