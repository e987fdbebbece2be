//! The VM's 32 virtio-mmio transport slots (hv_core::guest_dt::layout::VIRTIO_BASE), as on
//! QEMU's virt machine. A slot without a device (all but the VM's disks, vdev/virtio_blk.rs)
//! answers as QEMU's empty transports do (hv_core::virtio_mmio), so drivers probing the
//! slots find no device and no abort.

use hv_core::guest_dt::layout::{VIRTIO_SLOTS, VIRTIO_SLOT_SIZE};
use hv_core::mmio::MmioDevice;
use hv_core::virtio_mmio::empty_slot_read;

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
