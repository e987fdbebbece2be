//! The virtio-mmio window's registers as the guest reads them, kept in read-only pages of
//! its stage-2 (mm::guest::GuestMemory::image): a read of InterruptStatus (at every
//! interrupt a device raises) or of any other register is a load from memory, not an exit.
//! No read of a virtio-mmio transport has a side effect (virtio 1.2 4.2.2), so an image
//! answers as the device would, as long as it is rewritten whenever what a read returns
//! changes: after each trapped write (a write to the pages faults on their permissions and
//! is emulated as before) and at each change of a device's interrupt status, device status
//! or configuration (every change of its interrupt line comes through
//! `virtio_state_changed`). One difference from trapped reads: a read of a transport
//! register narrower or wider than 32 bits returns its bytes (QEMU returns 0; drivers read
//! them whole, as the specification says).

use super::{mmio, Vm};
use alloc::vec::Vec;
use hv_core::guest_dt::layout::{VIRTIO_SLOTS, VIRTIO_SLOT_SIZE};
use hv_core::pgtable::PAGE_SIZE;
use hv_core::virtio_mmio::{empty_slot_read, reg, INT_CONFIG_CHANGE};
use spin::Mutex;

/// Bytes of the window: every slot.
pub const WINDOW: u64 = VIRTIO_SLOTS * VIRTIO_SLOT_SIZE;
/// Its pages.
pub const PAGES: usize = WINDOW.div_ceil(PAGE_SIZE) as usize;

pub struct VirtioImage {
    /// Host frames of the window's pages in order; empty: no image (reads trap).
    frames: Vec<u64>,
    /// One rewrite at a time: each reads the devices' state under it, so what the last
    /// rewrite after a change stored stays.
    lock: Mutex<()>,
}

impl VirtioImage {
    pub fn new(frames: Option<Vec<u64>>) -> VirtioImage {
        VirtioImage { frames: frames.filter(|f| f.len() == PAGES).unwrap_or_default(), lock: Mutex::new(()) }
    }

    pub fn is_mapped(&self) -> bool {
        !self.frames.is_empty()
    }

    /// The host address of the word at `offset` into the window (4-byte aligned).
    fn word(&self, offset: u64) -> u64 {
        self.frames[(offset / PAGE_SIZE) as usize] + offset % PAGE_SIZE
    }

    fn get(&self, offset: u64) -> u32 {
        // SAFETY: a word of one of the image's frames (allocated for it, identity-mapped,
        // freed only at the VM's teardown); the guest only reads it.
        unsafe { core::ptr::read_volatile(self.word(offset) as *const u32) }
    }

    fn put(&self, offset: u64, value: u32) {
        // SAFETY: as in `get`; no Rust reference points into the frames.
        unsafe { crate::arch::store_for_guest(self.word(offset), value) }
    }
}

impl Vm {
    /// Writes every slot's registers into the image (a VM's build).
    pub(super) fn write_virtio_image(&self) {
        if self.virtio_image.is_mapped() {
            let _one = self.virtio_image.lock.lock();
            (0..VIRTIO_SLOTS).for_each(|slot| self.rewrite_slot(slot));
        }
    }

    /// Rewrites slot `slot`'s registers and config space (image lock held).
    fn rewrite_slot(&self, slot: u64) {
        let base = slot * VIRTIO_SLOT_SIZE;
        let image = &self.virtio_image;
        mmio::with_virtio_slot(self, slot, &mut |regs| {
            for offset in (0..VIRTIO_SLOT_SIZE).step_by(4) {
                let value = match regs {
                    Some((transport, device)) => transport.read(device, offset, 4),
                    None => empty_slot_read(offset, 4),
                };
                image.put(base + offset, value as u32);
            }
        });
    }

    /// A device's interrupt status, device status or configuration may have changed (its
    /// interrupt line is about to be set): before the guest can take the interrupt, the
    /// image says what the device says.
    pub fn virtio_state_changed(&self, slot: u64) {
        let image = &self.virtio_image;
        if !image.is_mapped() || slot >= VIRTIO_SLOTS {
            return;
        }
        let _one = image.lock.lock();
        let Some([isr, status, generation]) = mmio::with_virtio_slot(self, slot, &mut |regs| regs.map(|(t, _)| t.device_driven())) else {
            return;
        };
        let base = slot * VIRTIO_SLOT_SIZE;
        // A new config interrupt (the legacy interface counts no generations), a new
        // generation or status: the config space or the status moved.
        let was = image.get(base + reg::INTERRUPT_STATUS);
        if isr & !was & INT_CONFIG_CHANGE != 0
            || status != image.get(base + reg::STATUS)
            || generation != image.get(base + reg::CONFIG_GENERATION)
        {
            self.rewrite_slot(slot);
        } else {
            image.put(base + reg::INTERRUPT_STATUS, isr);
        }
    }

    /// The guest wrote `offset` into the window (emulated): what reads return may have
    /// changed. A notification or an interrupt acknowledgement changes at most the
    /// interrupt status (`virtio_state_changed` saw to it); anything else (status,
    /// selectors, queue set-up, config space) is rewritten whole, which is rare.
    pub(super) fn virtio_written(&self, offset: u64) {
        if !self.virtio_image.is_mapped() || offset >= WINDOW {
            return;
        }
        if !matches!(offset % VIRTIO_SLOT_SIZE, reg::QUEUE_NOTIFY | reg::INTERRUPT_ACK) {
            let _one = self.virtio_image.lock.lock();
            self.rewrite_slot(offset / VIRTIO_SLOT_SIZE);
        }
    }
}
