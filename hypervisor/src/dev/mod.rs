//! Devices: those the hypervisor drives itself and those it emulates for guests.

pub mod gicv3;
pub mod pl011;
pub mod pvpanic;
pub mod virtio_blk;
pub mod vuart;
