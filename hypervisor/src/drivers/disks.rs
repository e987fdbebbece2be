//! The host's virtio-blk disks, found once at boot and told apart by their serials
//! (QEMU's `-device virtio-blk-device,serial=...`): the pstore disk is handed to pstore,
//! `vm<N>-disk<M>` disks stay here for VM N to present to its guest, and every other disk
//! is left alone (reset, never written).

use super::virtio_blk::VirtioBlk;
use alloc::string::String;
use alloc::vec::Vec;
use hv_core::ranges::Range;
use hv_core::virtio_blk_device::vm_disk;
use spin::{Mutex, Once};

/// A disk kept for a VM.
pub struct HostDisk {
    pub serial: String,
    pub vm: usize,
    pub number: usize,
    pub sectors: u64,
    pub read_only: bool,
    /// Its driver; requests go one at a time.
    pub blk: Mutex<VirtioBlk>,
}

static VM_DISKS: Once<Vec<HostDisk>> = Once::new();

/// Probes every virtio-mmio transport: returns the disk whose serial is `pstore_serial`
/// (the first one), keeps the VMs' disks, releases the rest. Once, at boot.
pub fn probe(transports: &[Range], pstore_serial: &[u8]) -> Option<VirtioBlk> {
    let mut pstore = None;
    let mut kept = Vec::new();
    for t in transports {
        let Ok(mut disk) = VirtioBlk::probe(t.start) else { continue };
        let mut id = [0u8; 20];
        let n = match disk.serial(&mut id) {
            Ok(n) => n,
            Err(e) => {
                log::warn!("virtio-blk at {:#x}: no serial ({e:?}): left alone", t.start);
                disk.release();
                continue;
            }
        };
        let serial = String::from_utf8_lossy(&id[..n]).into_owned();
        if &id[..n] == pstore_serial && pstore.is_none() {
            pstore = Some(disk);
        } else if let Some((vm, number)) = vm_disk(&id[..n]).filter(|d| !kept.iter().any(|k: &HostDisk| (k.vm, k.number) == *d)) {
            log::info!("virtio-blk at {:#x} (serial \"{serial}\", {} KiB{}): disk {number} of VM {vm}", t.start, disk.capacity / 2, if disk.read_only { ", read-only" } else { "" });
            kept.push(HostDisk { serial, vm, number, sectors: disk.capacity, read_only: disk.read_only, blk: Mutex::new(disk) });
        } else {
            log::info!("virtio-blk at {:#x} (serial \"{serial}\") is not the pstore disk or a VM's disk (vmN-diskM): left alone", t.start);
            disk.release();
        }
    }
    kept.sort_by_key(|d| (d.vm, d.number));
    VM_DISKS.call_once(|| kept);
    pstore
}

/// The disks of VM `vm`, by disk number.
pub fn of_vm(vm: usize) -> impl Iterator<Item = &'static HostDisk> {
    VM_DISKS.get().into_iter().flatten().filter(move |d| d.vm == vm)
}
