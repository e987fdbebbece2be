//! The host's virtio-blk disks, found once at boot and told apart by their serials
//! (QEMU's `-device virtio-blk-device,serial=...`): the pstore disk is handed to pstore,
//! `vm<N>-disk<M>` disks stay here for VM N to present to its guest (their interrupts
//! routed to the boot CPU), and every other disk is left alone (reset, never written).

use super::virtio_blk::VirtioBlk;
use alloc::string::String;
use alloc::vec::Vec;
use hv_core::ranges::Range;
use hv_core::virtio_blk_device::{vm_disk, RangeLimits};
use spin::{Mutex, Once};

/// A disk kept for a VM.
pub struct HostDisk {
    pub serial: String,
    pub vm: usize,
    pub number: usize,
    pub sectors: u64,
    pub read_only: bool,
    pub has_flush: bool,
    /// Data buffers one request may have.
    pub seg_max: u32,
    pub discard: Option<RangeLimits>,
    pub write_zeroes: Option<RangeLimits>,
    /// Its interrupt (INTID), routed to the boot CPU; None: completions are only polled.
    pub intid: Option<u32>,
    pub blk: Mutex<VirtioBlk>,
}

static VM_DISKS: Once<Vec<HostDisk>> = Once::new();

/// Probes every virtio-mmio transport: returns the disk whose serial is `pstore_serial`
/// (the first one), keeps the VMs' disks, releases the rest. Once, at boot.
pub fn probe(transports: &[(Range, Option<u32>)], pstore_serial: &[u8]) -> Option<VirtioBlk> {
    let mut pstore = None;
    let mut kept = Vec::new();
    for (t, intid) in transports {
        let Ok(mut disk) = VirtioBlk::probe(t.start, super::virtio_blk::MAX_QUEUE_SIZE) else { continue };
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
            let intid = intid.filter(|i| crate::drivers::gicv3::route_device_here(*i));
            if intid.is_none() {
                log::warn!("virtio-blk at {:#x}: no interrupt the hypervisor can take: its requests complete when polled", t.start);
            }
            kept.push(HostDisk {
                serial,
                vm,
                number,
                sectors: disk.capacity,
                read_only: disk.read_only,
                has_flush: disk.has_flush,
                seg_max: disk.seg_max,
                discard: disk.discard,
                write_zeroes: disk.write_zeroes,
                intid,
                blk: Mutex::new(disk),
            });
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

/// The disk whose interrupt is `intid`.
pub fn with_interrupt(intid: u32) -> Option<&'static HostDisk> {
    VM_DISKS.get()?.iter().find(|d| d.intid == Some(intid))
}

/// A host disk's interrupt came (`intid`): acknowledges the device, so that what it
/// completes from now on raises it again. Returns the disk.
pub fn acknowledge(intid: u32) -> Option<&'static HostDisk> {
    let disk = with_interrupt(intid)?;
    disk.blk.lock().ack_interrupt();
    Some(disk)
}
