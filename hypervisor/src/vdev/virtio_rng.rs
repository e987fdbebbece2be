//! The VM's entropy device: virtio-rng (hv_core::virtio_rng_device) in virtio-mmio slot 1,
//! its bytes from the CPU's random number generator (FEAT_RNG's RNDR), served on the vCPU
//! that notified. Offered only where the CPU has RNDR (`rng=on`, the default).

use super::virtio_mmio::{answer, pop, Ram};
use crate::mm::guest::GuestMemory;
use core::sync::atomic::{AtomicU64, Ordering};
use hv_core::virtio_mmio::{Effect, Transport, VirtioDevice};
use hv_core::virtio_rng_device::{serve, RngDevice};
use hv_core::virtqueue::DeviceQueue;
use spin::Mutex;

/// Its virtio-mmio slot (after the pmsg port's).
pub const SLOT: u64 = 1;

struct Side {
    transport: Transport,
    device: RngDevice,
    queues: [Option<DeviceQueue>; 1],
}

pub struct EntropyDevice {
    side: Mutex<Side>,
    /// Bytes given to the guest.
    bytes: AtomicU64,
}

impl EntropyDevice {
    pub fn new(legacy: bool) -> EntropyDevice {
        let transport = Transport::new(legacy);
        EntropyDevice { side: Mutex::new(Side { transport, device: RngDevice, queues: [None] }), bytes: AtomicU64::new(0) }
    }

    /// Calls `f` with its transport and device under its lock: its registers as the
    /// guest's reads see them (the VM's image of them, not counted as accesses).
    pub fn with_registers<R>(&self, f: &mut dyn FnMut(&Transport, &dyn VirtioDevice) -> R) -> R {
        let s = self.side.lock();
        f(&s.transport, &s.device)
    }

    pub fn read(&self, offset: u64, size: u8) -> u64 {
        let s = self.side.lock();
        s.transport.read(&s.device, offset, size)
    }

    /// A register write (a notification fills the driver's buffers). Returns the level of
    /// the slot's interrupt line afterwards.
    pub fn write(&self, mem: &GuestMemory, offset: u64, size: u8, value: u64) -> bool {
        let mut s = self.side.lock();
        let Side { transport, device, queues } = &mut *s;
        match transport.write(device, offset, size, value) {
            Effect::Reset => *queues = [None],
            Effect::Notify(0) => {
                let ram = Ram(mem);
                while let Some(chain) = pop(transport, queues, &ram, 0) {
                    match serve(&chain, &ram, &mut crate::arch::cpu::random_bytes) {
                        Ok(n) => {
                            self.bytes.fetch_add(n as u64, Ordering::Relaxed);
                            answer(transport, queues, &ram, 0, chain.head, n);
                        }
                        Err(_) => {
                            transport.needs_reset();
                            break;
                        }
                    }
                }
            }
            _ => {}
        }
        s.transport.interrupt_line()
    }

    /// Bytes given to the guest (logged when the VM stops).
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}
