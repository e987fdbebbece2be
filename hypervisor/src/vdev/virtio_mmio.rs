//! The VM's 32 virtio-mmio transport slots (hv_core::guest_dt::layout::VIRTIO_BASE), as on
//! QEMU's virt machine. A slot without a device (all but the VM's disks, vdev/virtio_blk.rs)
//! answers as QEMU's empty transports do (hv_core::virtio_mmio), so drivers probing the
//! slots find no device and no abort.

use crate::mm::guest::GuestMemory;
use hv_core::guest_dt::layout::{VIRTIO_SLOTS, VIRTIO_SLOT_SIZE};
use hv_core::mmio::MmioDevice;
use hv_core::virtio_mmio::empty_slot_read;
use hv_core::virtqueue::{GuestRam, OutOfRam};

/// The whole window of slots; offsets are from the first slot's base.
pub struct VirtioSlots;

/// Bytes the slots cover.
pub const WINDOW: u64 = VIRTIO_SLOTS * VIRTIO_SLOT_SIZE;

impl MmioDevice for VirtioSlots {
    fn read(&self, offset: u64, size: u8) -> u64 {
        empty_slot_read(offset % VIRTIO_SLOT_SIZE, size)
    }

    fn write(&self, _offset: u64, _size: u8, _value: u64) {}
}

/// The VM's RAM as the devices' queues reach it (only RAM, only what the guest may access:
/// GuestMemory checks).
pub struct Ram<'a>(pub &'a GuestMemory);

impl GuestRam for Ram<'_> {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), OutOfRam> {
        self.0.read(gpa, buf).map_err(|_| OutOfRam)
    }

    fn write(&self, gpa: u64, data: &[u8]) -> Result<(), OutOfRam> {
        self.0.write(gpa, data).map_err(|_| OutOfRam)
    }
}
