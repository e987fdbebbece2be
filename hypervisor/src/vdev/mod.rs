//! What guests see of their machine, emulated by the hypervisor: the virtual GICv3, the
//! PL011, the pvpanic device and the virtio-mmio slots (disks, the pmsg port, the entropy
//! device, the memory balloon, the network card). Each is reached through hv_core::mmio::MmioDevice; what a
//! device changes for vCPUs (interrupts to take) is returned to the VM layer, which acts.

pub mod pvpanic;
pub mod vgic;
pub mod virtio_balloon;
pub mod virtio_blk;
pub mod virtio_console;
pub mod virtio_rng;
pub mod virtio_mmio;
pub mod virtio_net;
pub mod vuart;
