//! The VM's 32 virtio-mmio transport slots (hv_core::guest_dt::layout::VIRTIO_BASE), as on
//! QEMU's virt machine. A slot without a device (all but the VM's disks, vdev/virtio_blk.rs)
//! answers as QEMU's empty transports do (hv_core::virtio_mmio), so drivers probing the
//! slots find no device and no abort.

use crate::mm::guest::GuestMemory;
use hv_core::guest_dt::layout::{VIRTIO_SLOTS, VIRTIO_SLOT_SIZE};
use hv_core::mmio::MmioDevice;
use hv_core::virtio_mmio::{empty_slot_read, Transport, INT_USED_BUFFER};
use hv_core::virtqueue::{Chain, DeviceQueue, GuestRam, OutOfRam};

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
    #[inline]
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), OutOfRam> {
        self.0.read(gpa, buf).map_err(|_| OutOfRam)
    }

    #[inline]
    fn write(&self, gpa: u64, data: &[u8]) -> Result<(), OutOfRam> {
        self.0.write(gpa, data).map_err(|_| OutOfRam)
    }

    #[inline]
    fn read_words(&self, gpa: u64, words: &mut [u64]) -> Result<(), OutOfRam> {
        self.0.read_words(gpa, words).map_err(|_| OutOfRam)
    }
}

/// Queue `q` of a device, set up at its first use once the device is live, or None.
pub fn live_queue<'a>(transport: &Transport, queues: &'a mut [Option<DeviceQueue>], q: usize) -> Option<&'a mut DeviceQueue> {
    let slot = queues.get_mut(q)?;
    if slot.is_none() && transport.live() {
        let features = transport.driver_features();
        *slot = transport.queue(q).filter(|c| c.ready).map(|c| DeviceQueue::new(c, features));
    }
    slot.as_mut()
}

/// A queue broke the rules: the driver is asked for a reset (DEVICE_NEEDS_RESET) and the
/// device's queues are forgotten.
pub fn broken(transport: &mut Transport, queues: &mut [Option<DeviceQueue>]) {
    transport.needs_reset();
    queues.iter_mut().for_each(|q| *q = None);
}

/// The next chain the driver made available on queue `q` of a device served on the vCPU
/// that notifies, or None; a broken queue is `broken`.
pub fn pop(transport: &mut Transport, queues: &mut [Option<DeviceQueue>], ram: &Ram, q: usize) -> Option<Chain> {
    match live_queue(transport, queues, q)?.pop(ram) {
        Ok(chain) => chain,
        Err(_) => {
            broken(transport, queues);
            None
        }
    }
}

/// Gives chain `head` back on queue `q` with `len` bytes written, interrupting if the
/// driver wants it.
pub fn answer(transport: &mut Transport, queues: &mut [Option<DeviceQueue>], ram: &Ram, q: usize, head: u16, len: u32) {
    let Some(queue) = queues.get_mut(q).and_then(Option::as_mut) else { return };
    match queue.push(ram, head, len) {
        Ok(true) => transport.raise(INT_USED_BUFFER),
        Ok(false) => {}
        Err(_) => transport.needs_reset(),
    }
}
