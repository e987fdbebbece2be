//! The hypervisor's switch between the VMs' network cards and, when QEMU gives the
//! hypervisor a network card, the uplink through it (hv_core::net_switch decides, this
//! delivers). A frame a guest transmits is switched on the vCPU that sent it: written into
//! the receiving card's buffers (or its backlog) and that VM's interrupt raised, or copied to
//! the uplink; a frame the uplink received is switched on the CPU its interrupt came to.
//! Ports are VM ids and UPLINK; each card's address is pinned to its VM's port.

use super::{find, running, Vm};
use crate::vdev::virtio_net::SLOT;
use hv_core::net_switch::{Forward, Switch};
use hv_core::virtio_net_device::Frame;
use spin::Mutex;

static SWITCH: Mutex<Switch> = Mutex::new(Switch::new());
/// The uplink's port (VM ids are below MAX_VMS).
const UPLINK: usize = usize::MAX;
/// Frames taken from the uplink per interrupt at most.
const UPLINK_BATCH: usize = 256;

/// The address of VM `id`'s card: locally administered, QEMU's 52:54:00 prefix.
pub fn mac_of(id: usize) -> [u8; 6] {
    [0x52, 0x54, 0x00, 0xab, (id >> 8) as u8, id as u8]
}

/// A MAC address as aa:bb:cc:dd:ee:ff.
pub struct MacText(pub [u8; 6]);

impl core::fmt::Display for MacText {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let m = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
    }
}

/// VM `id`'s card joins the switch.
pub fn attach(id: usize, mac: [u8; 6]) {
    SWITCH.lock().pin(mac, id);
}

/// VM `id`'s card leaves the switch.
pub fn detach(id: usize) {
    SWITCH.lock().remove_port(id);
}

/// Frames VM `from` transmitted: each to the port its destination is behind, or to every
/// other card and the uplink.
pub fn transmit(from: &Vm, frames: alloc::vec::Vec<Frame>) {
    for frame in frames {
        let source = frame.source();
        if let Forward::Spoofed = switch(from.id, frame) {
            if let Some(card) = &from.net {
                card.spoofed(source);
            }
        }
    }
}

/// The uplink's interrupt: the frames it received go through the switch.
pub fn uplink_received() {
    for data in crate::drivers::virtio_net::take_received(UPLINK_BATCH) {
        if data.len() >= hv_core::virtio_net_device::ETH_HEADER && data.len() <= hv_core::virtio_net_device::FRAME_MAX {
            switch(UPLINK, Frame { data, csum: None });
        }
    }
}

/// One frame from `port` to where the switch says.
fn switch(port: usize, frame: Frame) -> Forward {
    let forward = SWITCH.lock().forward(port, frame.destination(), frame.source());
    match forward {
        Forward::To(UPLINK) => send_up(frame),
        Forward::To(id) => {
            if let Some(vm) = find(id) {
                deliver(&vm, frame);
            }
        }
        Forward::Flood => {
            for vm in running().iter().filter(|v| v.id != port && v.net.is_some()) {
                deliver(vm, frame.clone());
            }
            if port != UPLINK {
                send_up(frame);
            }
        }
        Forward::Drop | Forward::Spoofed => {}
    }
    forward
}

/// To the outside: with its checksum complete (the uplink takes no offloads).
fn send_up(mut frame: Frame) {
    if let Some(u) = crate::drivers::virtio_net::uplink() {
        frame.complete_checksum();
        u.nic.lock().send(&frame.data);
    }
}

fn deliver(vm: &Vm, frame: Frame) {
    if let Some(card) = &vm.net {
        if card.deliver(&vm.mem, frame).is_some() {
            vm.set_virtio_line(SLOT, true);
        }
    }
}
