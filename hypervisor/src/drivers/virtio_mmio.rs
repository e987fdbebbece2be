//! The host side of a virtio-mmio transport (legacy version 1, QEMU's default, and version
//! 2), for the hypervisor's own drivers (virtio_blk.rs, virtio_net.rs): the register file,
//! the initialization sequence (reset, feature negotiation, queues, DRIVER_OK),
//! notifications, interrupts, config space; and the DMA memory queues live in.
//!
//! Buffers are passed to the device by address: the hypervisor's memory is identity-mapped,
//! so a buffer's address is its physical address.

use hv_core::pgtable::PAGE_SIZE;
use hv_core::virtio::{QueueLayout, QueueMemory};
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
        (0x0a8 => @END),
    }
}

const MAGIC: u32 = 0x7472_6976;
const CONFIG: u64 = 0x100;
const ACKNOWLEDGE: u32 = 1;
const DRIVER: u32 = 2;
const DRIVER_OK: u32 = 4;
const FEATURES_OK: u32 = 8;
/// VIRTIO_F_VERSION_1, in the high feature word.
const VERSION_1_HIGH: u32 = 1 << (32 - 32);

/// Why a transport is not a usable device for a driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeError {
    NotVirtio,
    /// Another kind of device, or no device behind the transport (ID 0).
    OtherDevice(u32),
    Unsupported(&'static str),
    NoMemory,
}

/// A transport and its registers.
pub struct Transport {
    regs: &'static Regs,
    pub base: u64,
    pub version: u32,
}

// SAFETY: the registers are device memory reached through the driver that owns the
// transport, which serializes its use.
unsafe impl Send for Transport {}

impl Transport {
    /// The transport at `base` (mapped as device memory) if a device of type `device_id`
    /// is behind it.
    pub fn open(base: u64, device_id: u32) -> Result<Transport, ProbeError> {
        // SAFETY: `base` is a virtio-mmio transport from the host device tree, mapped as
        // device memory in the EL2 tables; the driver probing it is its only user.
        let regs: &'static Regs = unsafe { &*(base as *const Regs) };
        if regs.magic.get() != MAGIC {
            return Err(ProbeError::NotVirtio);
        }
        let version = regs.version.get();
        if version != 1 && version != 2 {
            return Err(ProbeError::Unsupported("virtio-mmio version"));
        }
        match regs.device_id.get() {
            id if id == device_id => Ok(Transport { regs, base, version }),
            id => Err(ProbeError::OtherDevice(id)),
        }
    }

    /// Where the used ring starts in a queue area: a page for the legacy interface.
    pub fn queue_align(&self) -> usize {
        if self.version == 1 {
            PAGE_SIZE as usize
        } else {
            4
        }
    }

    /// The largest size of queue `q` the device takes.
    pub fn queue_max(&self, q: u32) -> u32 {
        self.regs.queue_sel.set(q);
        self.regs.queue_num_max.get()
    }

    /// Resets the device: it stops using its queues and buffers.
    pub fn reset(&self) {
        self.regs.status.set(0);
    }

    /// Reset, ACKNOWLEDGE and DRIVER, then the features: takes those of `wanted` the device
    /// offers (and VERSION_1, required on the modern interface). Returns the features taken.
    pub fn negotiate(&self, wanted: u64) -> Result<u64, ProbeError> {
        let r = self.regs;
        r.status.set(0);
        r.status.set(ACKNOWLEDGE);
        r.status.set(ACKNOWLEDGE | DRIVER);
        r.device_features_sel.set(0);
        let low = r.device_features.get();
        r.device_features_sel.set(1);
        let high = r.device_features.get();
        let taken = (low as u64 | (high as u64) << 32) & wanted & 0xffff_ffff;
        r.driver_features_sel.set(0);
        r.driver_features.set(taken as u32);
        if self.version == 2 {
            if high & VERSION_1_HIGH == 0 {
                return Err(ProbeError::Unsupported("VIRTIO_F_VERSION_1 not offered"));
            }
            r.driver_features_sel.set(1);
            r.driver_features.set(VERSION_1_HIGH);
            r.status.set(ACKNOWLEDGE | DRIVER | FEATURES_OK);
            if r.status.get() & FEATURES_OK == 0 {
                return Err(ProbeError::Unsupported("features refused"));
            }
        }
        Ok(taken)
    }

    /// Places queue `q` (layout `layout`) at `area`, an identity-mapped, zeroed DMA area.
    pub fn set_queue(&self, q: u32, layout: &QueueLayout, area: u64) -> Result<(), ProbeError> {
        let r = self.regs;
        r.queue_sel.set(q);
        if r.queue_num_max.get() < layout.size as u32 {
            return Err(ProbeError::Unsupported("queue too small"));
        }
        r.queue_num.set(layout.size as u32);
        if self.version == 1 {
            r.guest_page_size.set(PAGE_SIZE as u32);
            r.queue_align.set(PAGE_SIZE as u32);
            r.queue_pfn.set((area / PAGE_SIZE) as u32);
        } else {
            let (desc, avail, used) = (area + layout.desc as u64, area + layout.avail as u64, area + layout.used as u64);
            r.queue_desc_low.set(desc as u32);
            r.queue_desc_high.set((desc >> 32) as u32);
            r.queue_driver_low.set(avail as u32);
            r.queue_driver_high.set((avail >> 32) as u32);
            r.queue_device_low.set(used as u32);
            r.queue_device_high.set((used >> 32) as u32);
            r.queue_ready.set(1);
        }
        Ok(())
    }

    /// The device is live (DRIVER_OK).
    pub fn driver_ok(&self) {
        let features_ok = if self.version == 2 { FEATURES_OK } else { 0 };
        self.regs.status.set(ACKNOWLEDGE | DRIVER | features_ok | DRIVER_OK);
    }

    pub fn notify(&self, q: u32) {
        self.regs.queue_notify.set(q);
    }

    /// Acknowledges the device's interrupt (before looking at its used rings: what it
    /// completes later raises it again).
    pub fn ack_interrupt(&self) {
        self.regs.interrupt_ack.set(self.regs.interrupt_status.get());
    }

    fn config_ptr<T>(&self, offset: u64) -> *const T {
        (self.base + CONFIG + offset) as *const T
    }

    /// A 32-bit config-space field at `offset`.
    pub fn config32(&self, offset: u64) -> u32 {
        // SAFETY: inside the transport's register window (config space follows the
        // registers), device memory, naturally aligned.
        unsafe { self.config_ptr::<u32>(offset).read_volatile() }
    }

    /// A byte of config space (QEMU answers wider reads crossing the end of its config
    /// space with ones).
    pub fn config8(&self, offset: u64) -> u8 {
        // SAFETY: as for config32.
        unsafe { self.config_ptr::<u8>(offset).read_volatile() }
    }
}

/// A queue's memory: an identity-mapped DMA area the device reads and writes.
pub struct Dma {
    pub base: u64,
}

impl Dma {
    fn ptr<T>(&self, off: usize) -> *mut T {
        (self.base as usize + off) as *mut T
    }
}

impl QueueMemory for Dma {
    fn read16(&self, off: usize) -> u16 {
        // SAFETY: `off` is inside the queue area its driver allocated (QueueLayout keeps
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
