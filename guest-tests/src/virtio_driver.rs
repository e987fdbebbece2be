//! A minimal virtio-mmio driver for test guests (modern and legacy interfaces), one queue
//! at a time: bring-up, descriptors, publishing a chain, waiting for used elements. The
//! tests build their own chains (good and deliberately broken) with it: virtio-blk's
//! (queue 0, its features by default) and the balloon's (`using`).

use core::ptr::{read_volatile, write_volatile};
use hv_core::virtio_mmio::reg;
use hv_core::virtio_mmio::status::{ACKNOWLEDGE, DEVICE_NEEDS_RESET as NEEDS_RESET, DRIVER, DRIVER_OK, FEATURES_OK};

/// The guest's virtio-mmio slots (QEMU's virt layout, which the hypervisor keeps).
pub const SLOTS: u64 = 0x0a00_0000;
pub const SLOT: u64 = 0x200;
pub const QSIZE: u16 = 8;

/// A queue of QSIZE entries in the legacy layout (which a modern device takes too):
/// descriptors, the available ring, the used ring at the next 4 KiB boundary.
#[repr(C, align(4096))]
pub struct Queue {
    desc: [[u8; 16]; QSIZE as usize],
    avail: [u16; 3 + QSIZE as usize],
    _pad: [u8; 4096 - 16 * QSIZE as usize - 2 * (3 + QSIZE as usize)],
    used: [u8; 4096],
}

impl Queue {
    pub const fn new() -> Queue {
        Queue { desc: [[0; 16]; QSIZE as usize], avail: [0; 3 + QSIZE as usize], _pad: [0; 4096 - 16 * QSIZE as usize - 2 * (3 + QSIZE as usize)], used: [0; 4096] }
    }
}

impl Default for Queue {
    fn default() -> Queue {
        Queue::new()
    }
}

/// Feature bits (the low 32) the driver takes when offered, by default (virtio-blk's):
/// FLUSH, DISCARD, WRITE_ZEROES, indirect descriptors.
const WANTED: u32 = 1 << 9 | 1 << 13 | 1 << 14 | 1 << 28;
pub const F_DISCARD: u32 = 1 << 13;
pub const F_WRITE_ZEROES: u32 = 1 << 14;
/// How long `wait_used` waits for the device.
const WAIT_SECONDS: u64 = 1;

pub struct Dev {
    pub base: u64,
    /// The low feature bits negotiated.
    pub features: u32,
    q: *mut Queue,
    /// The queue's number, and the feature bits taken when offered.
    qi: u16,
    wanted: u32,
    next_avail: u16,
    used_seen: u16,
}

impl Dev {
    /// The device in `slot` with its queue at `q` (a static of the guest, which only this
    /// driver uses).
    pub fn new(slot: u64, q: *mut Queue) -> Dev {
        Dev { base: SLOTS + slot * SLOT, features: 0, q, qi: 0, wanted: WANTED, next_avail: 0, used_seen: 0 }
    }

    /// The same, driving queue `qi` with the feature bits `wanted` (when offered).
    pub fn using(self, qi: u16, wanted: u32) -> Dev {
        Dev { qi, wanted, ..self }
    }

    // Single loads and stores without writeback, so that a trapped access has its syndrome
    // (as Linux's accessors do).
    pub fn r(&self, off: u64) -> u32 {
        let v: u32;
        // SAFETY: a register of the transport in the guest's device mapping.
        unsafe { core::arch::asm!("ldr {:w}, [{}]", out(reg) v, in(reg) self.base + off, options(nostack)) };
        v
    }

    pub fn r8(&self, off: u64) -> u8 {
        let v: u32;
        // SAFETY: as above.
        unsafe { core::arch::asm!("ldrb {:w}, [{}]", out(reg) v, in(reg) self.base + off, options(nostack)) };
        v as u8
    }

    pub fn w(&self, off: u64, v: u32) {
        // SAFETY: as above.
        unsafe { core::arch::asm!("str {:w}, [{}]", in(reg) v, in(reg) self.base + off, options(nostack)) };
    }

    fn w64(&self, off: u64, v: u64) {
        self.w(off, v as u32);
        self.w(off + 4, (v >> 32) as u32);
    }

    /// Reset, feature negotiation (VERSION_1 on the modern interface, and those of WANTED
    /// offered), queue 0 with QSIZE entries, live. The legacy interface (version 1)
    /// has no FEATURES_OK and places the queue by page frame number.
    pub fn bring_up(&mut self) -> Result<(), &'static str> {
        if self.r(reg::VERSION) == 1 {
            return self.bring_up_legacy();
        }
        self.w(reg::STATUS, 0);
        self.w(reg::STATUS, ACKNOWLEDGE | DRIVER);
        self.w(reg::DEVICE_FEATURES_SEL, 1);
        let high = self.r(reg::DEVICE_FEATURES);
        if high & 1 == 0 {
            return Err("no VERSION_1");
        }
        self.w(reg::DEVICE_FEATURES_SEL, 0);
        self.features = self.r(reg::DEVICE_FEATURES) & self.wanted;
        self.w(reg::DRIVER_FEATURES_SEL, 0);
        self.w(reg::DRIVER_FEATURES, self.features);
        self.w(reg::DRIVER_FEATURES_SEL, 1);
        self.w(reg::DRIVER_FEATURES, 1);
        self.w(reg::STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK);
        if self.r(reg::STATUS) & FEATURES_OK == 0 {
            return Err("FEATURES_OK refused");
        }
        self.w(reg::QUEUE_SEL, self.qi as u32);
        if self.r(reg::QUEUE_NUM_MAX) < QSIZE as u32 {
            return Err("queue too small");
        }
        // SAFETY: the driver's own memory; the device does not use it before QueueReady.
        unsafe { core::ptr::write_bytes(self.q, 0, 1) };
        let a = self.q as u64;
        self.w(reg::QUEUE_NUM, QSIZE as u32);
        self.w64(reg::QUEUE_DESC_LOW, a);
        self.w64(reg::QUEUE_DRIVER_LOW, a + core::mem::offset_of!(Queue, avail) as u64);
        self.w64(reg::QUEUE_DEVICE_LOW, a + core::mem::offset_of!(Queue, used) as u64);
        self.w(reg::QUEUE_READY, 1);
        self.w(reg::STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK);
        (self.next_avail, self.used_seen) = (0, 0);
        Ok(())
    }

    fn bring_up_legacy(&mut self) -> Result<(), &'static str> {
        self.w(reg::STATUS, 0);
        self.w(reg::STATUS, ACKNOWLEDGE | DRIVER);
        self.w(reg::DEVICE_FEATURES_SEL, 0);
        self.features = self.r(reg::DEVICE_FEATURES) & self.wanted;
        self.w(reg::DRIVER_FEATURES_SEL, 0);
        self.w(reg::DRIVER_FEATURES, self.features);
        self.w(reg::GUEST_PAGE_SIZE, 4096);
        self.w(reg::QUEUE_SEL, self.qi as u32);
        if self.r(reg::QUEUE_NUM_MAX) < QSIZE as u32 {
            return Err("queue too small");
        }
        // SAFETY: the driver's own memory; the device does not use it before QueuePFN.
        unsafe { core::ptr::write_bytes(self.q, 0, 1) };
        self.w(reg::QUEUE_NUM, QSIZE as u32);
        self.w(reg::QUEUE_ALIGN, 4096);
        self.w(reg::QUEUE_PFN, (self.q as u64 / 4096) as u32);
        self.w(reg::STATUS, ACKNOWLEDGE | DRIVER | DRIVER_OK);
        (self.next_avail, self.used_seen) = (0, 0);
        Ok(())
    }

    pub fn desc(&self, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let mut d = [0u8; 16];
        d[0..8].copy_from_slice(&addr.to_le_bytes());
        d[8..12].copy_from_slice(&len.to_le_bytes());
        d[12..14].copy_from_slice(&flags.to_le_bytes());
        d[14..16].copy_from_slice(&next.to_le_bytes());
        // SAFETY: the driver's descriptor table, not in the device's hands until published.
        unsafe { write_volatile(&raw mut (*self.q).desc[i as usize], d) };
    }

    /// Makes the chain at descriptor `head` available and notifies, without waiting.
    pub fn publish(&mut self, head: u16) {
        // SAFETY: the available ring belongs to the driver.
        unsafe {
            let avail = &raw mut (*self.q).avail;
            write_volatile(&raw mut (*avail)[2 + (self.next_avail % QSIZE) as usize], head);
            core::arch::asm!("dmb ishst");
            self.next_avail = self.next_avail.wrapping_add(1);
            write_volatile(&raw mut (*avail)[1], self.next_avail);
            core::arch::asm!("dsb ish");
        }
        self.w(reg::QUEUE_NOTIFY, self.qi as u32);
    }

    /// The next used element (head, length), waiting for it (bounded); None if the device
    /// did not answer or gave up on the queue.
    pub fn wait_used(&mut self) -> Option<(u16, u32)> {
        let used = self.q as u64 + core::mem::offset_of!(Queue, used) as u64;
        // Bounded in time, not in rounds: a round may or may not exit (the device's
        // registers are memory to a guest of the hypervisor, not so on bare QEMU).
        let (start, freq) = crate::counter();
        while crate::counter().0 - start < WAIT_SECONDS * freq {
            // SAFETY: the used ring, read only.
            let idx = unsafe { read_volatile((used + 2) as *const u16) };
            if idx != self.used_seen {
                let slot = (self.used_seen % QSIZE) as u64;
                self.used_seen = self.used_seen.wrapping_add(1);
                // SAFETY: as above.
                return Some(unsafe { (read_volatile((used + 4 + 8 * slot) as *const u32) as u16, read_volatile((used + 4 + 8 * slot + 4) as *const u32)) });
            }
            if self.r(reg::STATUS) & NEEDS_RESET != 0 {
                return None;
            }
            core::hint::spin_loop();
        }
        None
    }

    /// Publishes descriptor `head`, notifies, and waits (bounded) for the used element.
    /// Returns the used length, or None if the device did not answer.
    pub fn submit(&mut self, head: u16) -> Option<u32> {
        self.publish(head);
        self.wait_used().map(|(_, len)| len)
    }

    pub fn ack_interrupts(&self) -> u32 {
        let s = self.r(reg::INTERRUPT_STATUS);
        self.w(reg::INTERRUPT_ACK, s);
        s
    }
}
