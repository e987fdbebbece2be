//! Devices the hypervisor drives itself: the host's GICv3 (kicks, its own interrupts), the
//! PL011 of its console, and over virtio-mmio virtio-blk (the pstore disk, the disks VMs
//! present to their guests) and virtio-net (the uplink of the VMs' switch).

pub mod disks;
pub mod gicv3;
pub mod pl011;
pub mod virtio_blk;
pub mod virtio_mmio;
pub mod virtio_net;
