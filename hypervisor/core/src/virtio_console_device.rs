//! virtio-console (virtio 1.2 section 5.3) with one named port and no console: the guest
//! side of a VM's persistent message channel (pmsg). With VIRTIO_CONSOLE_F_MULTIPORT the
//! driver and the device introduce the port through control messages; Linux then names it
//! /dev/vportNp0 with /sys/class/virtio-ports/vportNp0/name = the port's name, and what user
//! space writes there arrives on the port's transmit queue.
//!
//! This is the device's protocol state, portable and host-tested; the hypervisor's vdev layer
//! carries the queues. Everything the driver sends is untrusted: short, unknown or
//! out-of-order control messages are ignored (counted), never a panic.

use crate::virtio_mmio::{VirtioDevice, F_RING_EVENT_IDX, F_RING_INDIRECT_DESC};
use alloc::collections::VecDeque;
use alloc::vec::Vec;

pub const DEVICE_ID: u32 = 3;
pub const F_MULTIPORT: u64 = 1 << 1;
/// Queues: port 0's receive and transmit queues, then (multiport) the control queues.
pub const PORT_RX: usize = 0;
pub const PORT_TX: usize = 1;
pub const CONTROL_RX: usize = 2;
pub const CONTROL_TX: usize = 3;
pub const QUEUE_SIZE: u16 = 64;
/// Bytes of a control message header: le32 port id, le16 event, le16 value.
pub const CONTROL_HEADER: usize = 8;

/// Control message events.
pub mod event {
    pub const DEVICE_READY: u16 = 0;
    pub const DEVICE_ADD: u16 = 1;
    pub const PORT_READY: u16 = 3;
    pub const CONSOLE_PORT: u16 = 4;
    pub const PORT_OPEN: u16 = 6;
    pub const PORT_NAME: u16 = 7;
}

/// The port's number (the only one).
const PORT: u32 = 0;

/// A control message as bytes: header, then `extra` (a port's name).
pub fn control_message(id: u32, event: u16, value: u16, extra: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(CONTROL_HEADER + extra.len());
    m.extend_from_slice(&id.to_le_bytes());
    m.extend_from_slice(&event.to_le_bytes());
    m.extend_from_slice(&value.to_le_bytes());
    m.extend_from_slice(extra);
    m
}

/// One port named `name`, never a console, always connected on the host side.
pub struct ConsoleDevice {
    name: &'static str,
    /// Control messages for the driver, waiting for its control receive buffers.
    outbox: VecDeque<Vec<u8>>,
    /// The driver has the port open (its PORT_OPEN).
    pub guest_open: bool,
    /// Control messages ignored: too short, unknown, for another port, out of order.
    pub ignored: u64,
}

impl ConsoleDevice {
    pub fn new(name: &'static str) -> ConsoleDevice {
        ConsoleDevice { name, outbox: VecDeque::new(), guest_open: false, ignored: 0 }
    }

    /// A control message from the driver (its control transmit queue).
    pub fn control(&mut self, msg: &[u8]) {
        let Some(header) = msg.get(..CONTROL_HEADER) else {
            self.ignored += 1;
            return;
        };
        let id = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let ev = u16::from_le_bytes([header[4], header[5]]);
        let value = u16::from_le_bytes([header[6], header[7]]);
        match (ev, value) {
            // The driver is ready for ports (id is unused): ours is added (again, after a
            // reset, as QEMU does).
            (event::DEVICE_READY, 1) => self.outbox.push_back(control_message(PORT, event::DEVICE_ADD, 0, &[])),
            // The driver set the port up: its name, and the host side is connected (else
            // Linux blocks writers until it is).
            (event::PORT_READY, 1) if id == PORT => {
                self.outbox.push_back(control_message(PORT, event::PORT_NAME, 0, self.name.as_bytes()));
                self.outbox.push_back(control_message(PORT, event::PORT_OPEN, 1, &[]));
            }
            (event::PORT_OPEN, v) if id == PORT => self.guest_open = v != 0,
            // A driver that failed to set up (value 0) or anything else: nothing to do.
            _ => self.ignored += 1,
        }
    }

    /// The next control message for the driver, if one waits.
    pub fn next_message(&mut self) -> Option<Vec<u8>> {
        self.outbox.pop_front()
    }

    /// A message could not be delivered now (no receive buffer): it goes first next time.
    pub fn put_back(&mut self, msg: Vec<u8>) {
        self.outbox.push_front(msg);
    }
}

impl VirtioDevice for ConsoleDevice {
    fn device_id(&self) -> u32 {
        DEVICE_ID
    }

    fn features(&self) -> u64 {
        F_MULTIPORT | F_RING_INDIRECT_DESC | F_RING_EVENT_IDX
    }

    fn queue_max(&self, q: usize) -> u16 {
        if q <= CONTROL_TX {
            QUEUE_SIZE
        } else {
            0
        }
    }

    /// cols (le16) and rows (le16): 0, not offered; max_nr_ports (le32) at 4: 1;
    /// emerg_wr (le32) at 8: not offered.
    fn read_config(&self, offset: u64, size: u8) -> u64 {
        let mut space = [0u8; 12];
        space[4..8].copy_from_slice(&1u32.to_le_bytes());
        let mut v = [0u8; 8];
        let start = (offset as usize).min(space.len());
        let end = (start + size.min(8) as usize).min(space.len());
        v[..end - start].copy_from_slice(&space[start..end]);
        u64::from_le_bytes(v)
    }

    fn write_config(&mut self, _offset: u64, _size: u8, _value: u64) {}

    fn reset(&mut self) {
        self.outbox.clear();
        self.guest_open = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(dev: &mut ConsoleDevice) {
        dev.control(&control_message(u32::MAX, event::DEVICE_READY, 1, &[]));
    }

    #[test]
    fn introduces_its_named_open_port() {
        let mut dev = ConsoleDevice::new("pmsg");
        ready(&mut dev);
        assert_eq!(dev.next_message(), Some(control_message(0, event::DEVICE_ADD, 0, &[])));
        assert_eq!(dev.next_message(), None);
        dev.control(&control_message(0, event::PORT_READY, 1, &[]));
        assert_eq!(dev.next_message(), Some(control_message(0, event::PORT_NAME, 0, b"pmsg")));
        assert_eq!(dev.next_message(), Some(control_message(0, event::PORT_OPEN, 1, &[])));
        dev.control(&control_message(0, event::PORT_OPEN, 1, &[]));
        assert!(dev.guest_open);
        assert_eq!(dev.ignored, 0);
    }

    #[test]
    fn config_says_one_port() {
        let dev = ConsoleDevice::new("pmsg");
        assert_eq!(dev.read_config(4, 4), 1);
        assert_eq!(dev.read_config(0, 4), 0);
        assert_eq!(dev.read_config(10, 4), 0);
        assert_eq!(dev.read_config(400, 8), 0);
        assert_eq!(dev.queue_max(CONTROL_TX), QUEUE_SIZE);
        assert_eq!(dev.queue_max(4), 0);
    }

    #[test]
    fn garbage_is_ignored_and_reset_forgets() {
        let mut dev = ConsoleDevice::new("pmsg");
        for msg in [&[][..], &[1, 2, 3], &control_message(7, event::PORT_READY, 1, &[]), &control_message(0, 99, 1, &[]),
                    &control_message(0, event::PORT_READY, 0, &[])] {
            dev.control(msg);
        }
        assert_eq!(dev.ignored, 5);
        assert_eq!(dev.next_message(), None);
        ready(&mut dev);
        let m = dev.next_message().unwrap();
        dev.put_back(m.clone());
        assert_eq!(dev.next_message(), Some(m));
        ready(&mut dev);
        dev.reset();
        assert_eq!(dev.next_message(), None);
        // Random bytes of every length: no panic.
        let mut rng = crate::rng::Rng::new(17);
        for len in 0..64 {
            let msg: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            dev.control(&msg);
        }
    }
}
