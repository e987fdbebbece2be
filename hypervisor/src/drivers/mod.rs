//! Devices the hypervisor drives itself: the host's GICv3 (kicks, its own interrupts), the
//! PL011 of its console, and virtio-blk over virtio-mmio (the pstore disk, the disks VMs
//! present to their guests).

pub mod disks;
pub mod gicv3;
pub mod pl011;
pub mod virtio_blk;
