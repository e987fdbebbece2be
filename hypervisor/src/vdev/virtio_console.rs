//! The VM's pmsg port: a virtio-console (hv_core::virtio_console_device) in virtio-mmio slot
//! 0 whose one port, named "pmsg", appends what the guest writes to the VM's pmsg ring on
//! the pstore disk (pstore::pmsg_write). The write is served on the vCPU that notified, before
//! it returns to the guest: a message is on the disk when the guest's write returns.
//!
//! The port's transmit queue is the data; the control queues introduce the port (multiport);
//! its receive queue is never used (the host side sends nothing). A broken queue asks the
//! driver for a reset (DEVICE_NEEDS_RESET), as the disks do.

use super::virtio_mmio::{self, Ram};
use crate::mm::guest::GuestMemory;
use core::sync::atomic::{AtomicU64, Ordering};
use hv_core::virtio_console_device::{ConsoleDevice, CONTROL_RX, CONTROL_TX, PORT_TX};
use hv_core::virtio_mmio::{Effect, Transport, VirtioDevice};
use hv_core::virtqueue::{Chain, DeviceQueue, GuestRam};
use spin::Mutex;

/// Its virtio-mmio slot (the VM's disks fill the slots from the top).
pub const SLOT: u64 = 0;
/// Bytes of a control message taken from the driver (a header; the driver sends no names).
const CONTROL_MAX: usize = 64;
/// Bytes of one port write taken (Linux sends at most 32 KiB at a time); more is dropped.
const WRITE_MAX: usize = 32 << 10;

struct Side {
    transport: Transport,
    device: ConsoleDevice,
    /// Queues by number, set up when the driver first uses them.
    queues: [Option<DeviceQueue>; 4],
}

pub struct PmsgPort {
    vm: usize,
    side: Mutex<Side>,
    /// Writes and bytes that reached the disk, and writes that did not.
    writes: AtomicU64,
    bytes: AtomicU64,
    failed: AtomicU64,
}

impl PmsgPort {
    pub fn new(vm: usize, legacy: bool) -> PmsgPort {
        let transport = Transport::new(legacy);
        PmsgPort {
            vm,
            side: Mutex::new(Side { transport, device: ConsoleDevice::new("pmsg"), queues: [const { None }; 4] }),
            writes: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }
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

    /// A register write (a notification serves the queue). Returns the level of the slot's
    /// interrupt line afterwards.
    pub fn write(&self, mem: &GuestMemory, offset: u64, size: u8, value: u64) -> bool {
        let mut s = self.side.lock();
        let Side { transport, device, .. } = &mut *s;
        match transport.write(device, offset, size, value) {
            Effect::Reset => s.queues = [const { None }; 4],
            Effect::Notify(q) => self.serve(&mut s, &Ram(mem), q as usize),
            _ => {}
        }
        s.transport.interrupt_line()
    }

    /// (writes on the disk, their bytes, writes that failed): logged when the VM stops.
    pub fn counts(&self) -> [u64; 3] {
        [&self.writes, &self.bytes, &self.failed].map(|c| c.load(Ordering::Relaxed))
    }

    fn serve(&self, s: &mut Side, ram: &Ram, q: usize) {
        match q {
            CONTROL_TX => {
                while let Some(chain) = pop(s, ram, CONTROL_TX) {
                    if let Some(msg) = gather(s, ram, &chain, CONTROL_MAX) {
                        s.device.control(&msg);
                    }
                    answer(s, ram, CONTROL_TX, chain.head, 0);
                }
                deliver(s, ram);
            }
            CONTROL_RX => deliver(s, ram),
            PORT_TX => {
                while let Some(chain) = pop(s, ram, PORT_TX) {
                    if let Some(data) = gather(s, ram, &chain, WRITE_MAX).filter(|d| !d.is_empty()) {
                        if crate::pstore::pmsg_write(self.vm, &data).is_ok() {
                            self.writes.fetch_add(1, Ordering::Relaxed);
                            self.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
                        } else {
                            self.failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    answer(s, ram, PORT_TX, chain.head, 0);
                }
            }
            // The port's receive queue: buffers for input, which never comes.
            _ => {}
        }
    }
}

fn pop(s: &mut Side, ram: &Ram, q: usize) -> Option<Chain> {
    virtio_mmio::pop(&mut s.transport, &mut s.queues, ram, q)
}

fn answer(s: &mut Side, ram: &Ram, q: usize, head: u16, len: u32) {
    virtio_mmio::answer(&mut s.transport, &mut s.queues, ram, q, head, len)
}

/// The chain's device-readable bytes, at most `max`; None (and a reset asked) if they are
/// not all in the VM's RAM.
fn gather(s: &mut Side, ram: &Ram, chain: &Chain, max: usize) -> Option<alloc::vec::Vec<u8>> {
    let mut data = alloc::vec::Vec::new();
    for b in chain.buffers.iter().filter(|b| !b.device_writes) {
        let n = (b.len as usize).min(max - data.len());
        let at = data.len();
        data.resize(at + n, 0);
        if ram.read(b.addr, &mut data[at..]).is_err() {
            s.transport.needs_reset();
            return None;
        }
    }
    Some(data)
}

/// Hands the device's waiting control messages to the driver's control receive buffers.
fn deliver(s: &mut Side, ram: &Ram) {
    while let Some(msg) = s.device.next_message() {
        let Some(chain) = pop(s, ram, CONTROL_RX) else {
            s.device.put_back(msg);
            return;
        };
        let mut written = 0;
        for b in chain.buffers.iter().filter(|b| b.device_writes) {
            let n = (b.len as usize).min(msg.len() - written);
            if ram.write(b.addr, &msg[written..written + n]).is_err() {
                s.transport.needs_reset();
                return;
            }
            written += n;
        }
        answer(s, ram, CONTROL_RX, chain.head, written as u32);
    }
}
