//! A polled virtio-blk driver over virtio-mmio (legacy version 1, QEMU's default, and
//! version 2): probe, feature negotiation, one split virtqueue, read, write, flush and
//! GET_ID. One request in flight, completion polled with a time bound, no interrupt, no
//! allocation after probing: usable from the panic path.
//!
//! Buffers are passed to the device by address: the hypervisor's memory is identity-mapped,
//! so a buffer's address is its physical address, and every buffer here is contiguous.

use crate::mm::frames;
use hv_core::pgtable::PAGE_SIZE;
use hv_core::virtio::{blk, QueueLayout, QueueMemory, Segment, SplitQueue};
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
        (0x108 => @END),
    }
}

const MAGIC: u32 = 0x7472_6976;
const DEVICE_BLOCK: u32 = 2;
const ACKNOWLEDGE: u32 = 1;
const DRIVER: u32 = 2;
const DRIVER_OK: u32 = 4;
const FEATURES_OK: u32 = 8;
const QUEUE_SIZE: u16 = 4;
/// Largest data buffer of one request (QEMU takes more; this bounds each request's time;
/// guest disks move 256 KiB at a time).
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

/// Byte offsets in the request page.
const HEADER_AT: usize = 0;
const STATUS_AT: usize = 16;
const ID_AT: usize = 32;

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

pub struct VirtioBlk {
    regs: &'static Regs,
    pub base: u64,
    pub version: u32,
    queue: SplitQueue,
    dma: Dma,
    /// Header, status and GET_ID buffer.
    request_page: u64,
    /// Disk size in 512-byte sectors.
    pub capacity: u64,
    pub has_flush: bool,
    pub read_only: bool,
    /// Requests completed (for benchmarks and the log).
    pub requests: u64,
}

// SAFETY: the registers and DMA memory are reached only through `&mut self` methods (and
// the panic path, once every other CPU is stopped).
unsafe impl Send for VirtioBlk {}

impl VirtioBlk {
    /// Brings up the block device behind the virtio-mmio transport at `base` (mapped as
    /// device memory).
    pub fn probe(base: u64) -> Result<VirtioBlk, ProbeError> {
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
        let queue_pages = 2;
        let dma = frames::alloc_zeroed(queue_pages + 1).ok_or(ProbeError::NoMemory)?;
        let align = if version == 1 { PAGE_SIZE as usize } else { 4 };
        let layout = QueueLayout::new(QUEUE_SIZE, align).ok_or(ProbeError::Unsupported("queue layout"))?;
        let mut dev = VirtioBlk {
            regs,
            base,
            version,
            queue: SplitQueue::new(layout),
            dma: Dma { base: dma },
            request_page: dma + queue_pages as u64 * PAGE_SIZE,
            capacity: 0,
            has_flush: false,
            read_only: false,
            requests: 0,
        };
        if let Err(e) = dev.init() {
            dev.regs.status.set(0);
            frames::free(dma, queue_pages + 1);
            return Err(e);
        }
        Ok(dev)
    }

    /// Reset and the whole initialization sequence (also what recovers a stuck device).
    fn init(&mut self) -> Result<(), ProbeError> {
        let r = self.regs;
        r.status.set(0);
        let layout = self.queue.layout();
        // SAFETY: the queue area is ours (allocated in probe) and the device was just
        // reset, so it no longer reads or writes it.
        unsafe { crate::arch::zero(self.dma.base, (layout.bytes as u64).next_multiple_of(PAGE_SIZE)) };
        self.queue = SplitQueue::new(layout);
        r.status.set(ACKNOWLEDGE);
        r.status.set(ACKNOWLEDGE | DRIVER);
        r.device_features_sel.set(0);
        let low = r.device_features.get();
        r.device_features_sel.set(1);
        let high = r.device_features.get();
        let offered = |bit: u32| if bit < 32 { low >> bit & 1 != 0 } else { high >> (bit - 32) & 1 != 0 };
        self.has_flush = offered(blk::F_FLUSH);
        self.read_only = offered(blk::F_RO);
        let wanted_low = (self.has_flush as u32) << blk::F_FLUSH | (self.read_only as u32) << blk::F_RO;
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
        let max = r.queue_num_max.get();
        if max < QUEUE_SIZE as u32 {
            return Err(ProbeError::Unsupported("queue too small"));
        }
        r.queue_num.set(QUEUE_SIZE as u32);
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
        Ok(())
    }

    fn request_ptr(&self, off: usize) -> *mut u8 {
        (self.request_page as usize + off) as *mut u8
    }

    /// Submits one request and polls it to completion, within the time bound. A stuck or
    /// confused device is reset (the request fails).
    fn request(&mut self, kind: u32, sector: u64, data: Option<(u64, u32, bool)>) -> Result<u32, BlkError> {
        let header = blk::header(kind, sector);
        // SAFETY: the request page is ours; the device reads the header and writes the
        // status byte only while the request is in flight, which this function spans.
        unsafe {
            core::ptr::copy_nonoverlapping(header.as_ptr(), self.request_ptr(HEADER_AT), header.len());
            self.request_ptr(STATUS_AT).write_volatile(0xff);
        }
        let mut chain = [Segment { addr: self.request_page + HEADER_AT as u64, len: 16, device_writes: false }; 3];
        let mut n = 1;
        if let Some((addr, len, device_writes)) = data {
            chain[n] = Segment { addr, len, device_writes };
            n += 1;
        }
        chain[n] = Segment { addr: self.request_page + STATUS_AT as u64, len: 1, device_writes: true };
        n += 1;
        if !self.queue.submit(&mut self.dma, &chain[..n]) {
            return Err(BlkError::Garbage);
        }
        self.regs.queue_notify.set(0);
        let (freq, start) = crate::arch::cpu::counter();
        let limit = freq / 1000 * REQUEST_TIMEOUT_MS;
        let result = loop {
            if let Some(r) = self.queue.poll(&self.dma) {
                break r.map_err(|_| BlkError::Garbage);
            }
            if crate::arch::cpu::counter().1 - start > limit {
                break Err(BlkError::Timeout);
            }
            // A panic on another CPU takes the disk over: get out of its way.
            crate::percpu::park_if_stopping();
            core::hint::spin_loop();
        };
        self.regs.interrupt_ack.set(self.regs.interrupt_status.get());
        if result.is_err() {
            let _ = self.init();
        }
        let written = result?;
        // SAFETY: the request completed; the status byte is in our request page.
        let status = unsafe { self.request_ptr(STATUS_AT).read_volatile() };
        self.requests += 1;
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
        let addr = self.request_page + ID_AT as u64;
        self.request(blk::T_GET_ID, 0, Some((addr, blk::ID_BYTES as u32, true)))?;
        // SAFETY: the device wrote ID_BYTES bytes at ID_AT in our request page.
        let id = unsafe { core::slice::from_raw_parts(self.request_ptr(ID_AT), blk::ID_BYTES) };
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
        frames::free(self.dma.base, 3);
    }
}
