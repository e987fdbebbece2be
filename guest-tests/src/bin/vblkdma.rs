//! A disk's DMA against the guest taking its pages away (issue 16's notifier contract).
//!
//! Role 0 (`role=0`, the VM with the disk): reads 64 KiB from its disk into a buffer and,
//! while the read is in flight (the hypervisor returns to the guest as soon as the request
//! is handed to the host device), unmaps or reclaims the buffer's pages or write-protects
//! them. Every request must still complete with OK; in the rounds that leave the pages
//! alone, the data must be the disk's (each sector stamped with its number plus one). The
//! freed frames go back to the hypervisor, and the VM (on 4 KiB pages) at once touches 64
//! fresh pages, which likely get those frames, and checks after the read that they hold
//! what it wrote.
//!
//! Role 1 (`role=1`, another VM, populating 4 KiB pages on first touch so that it takes
//! freed frames): fills a few MiB with a pattern, checks every word, gives the pages back,
//! again and again. A frame written by the device after it left role 0's VM would show up
//! here as a changed word.
//!
//! Bootargs: `rounds=N` (role 0, default 3000), `cycles=N` (role 1, default 400).

#![no_std]
#![no_main]

use core::ptr::{read_volatile, write_volatile};
use guest_rt::hvc::mem;
use guest_rt::virtio_driver::{Dev, Queue};
use guest_rt::{check, check_eq, println, BootInfo};
use hv_core::hypercall::mem_perm;
use hv_core::virtio::blk::T_IN;
use hv_core::virtio_mmio::reg;

const PAGE: u64 = 4096;
const BUF_BYTES: u64 = 64 * 1024;
/// Pages touched for the first time while a read whose buffer was taken is in flight.
const DECOY_PAGES: u64 = 64;
const DECOY: u64 = 0xdec0_0000_0000_0000;

static mut QUEUE: Queue = Queue::new();

#[repr(C, align(64))]
struct Request {
    header: [u8; 16],
    status: [u8; 16],
}

static mut REQUEST: Request = Request { header: [0; 16], status: [0; 16] };

fn read(addr: u64) -> u64 {
    // SAFETY: `addr` is in this guest's RAM (identity-mapped), in a test region nothing
    // else of the program uses.
    unsafe { read_volatile(addr as *const u64) }
}

fn write(addr: u64, v: u64) {
    // SAFETY: as for `read`.
    unsafe { write_volatile(addr as *mut u64, v) }
}

fn reader(info: &BootInfo) -> ! {
    let rounds = info.arg("rounds").unwrap_or(3000);
    let mut dev = Dev::new(31, &raw mut QUEUE);
    check_eq!(dev.r(reg::DEVICE_ID), 2, "a block device in slot 31");
    if let Err(why) = dev.bring_up() {
        check!(false, "bring-up: {}", why);
    }
    let sectors = dev.r(reg::CONFIG) as u64 | (dev.r(reg::CONFIG + 4) as u64) << 32;
    let per_read = BUF_BYTES / 512;
    check!(sectors > per_read, "a disk larger than a read");
    // The buffer: in the middle of RAM, away from the image and the device tree.
    let buf = info.ram_base + 32 * (1 << 20);
    let decoy = info.ram_base + 40 * (1 << 20);
    let r = &raw mut REQUEST;
    // SAFETY: only addresses are taken.
    let (header, status) = unsafe { (&raw const (*r).header as u64, &raw const (*r).status as u64) };
    let (mut unmaps, mut reclaims, mut protects, mut checked) = (0u64, 0u64, 0u64, 0u64);
    for round in 0..rounds {
        let sector = (round * 37 * per_read / 4) % (sectors - per_read);
        // SAFETY: the request's header and status, not in the device's hands now.
        unsafe {
            write_volatile(&raw mut (*r).header, hv_core::virtio::blk::header(T_IN, sector));
            write_volatile(&raw mut (*r).status[0], 0xff);
        }
        dev.desc(0, header, 16, 1, 1);
        dev.desc(1, buf, BUF_BYTES as u32, 1 | 2, 2);
        dev.desc(2, status, 1, 2, 0);
        dev.publish(0);
        // The read is in flight: take its pages away.
        let pages = (BUF_BYTES / PAGE) as i64;
        let taken = match round % 4 {
            0 => {
                check!(mem::unmap(buf, BUF_BYTES) >= 0, "unmap of the buffer");
                unmaps += 1;
                true
            }
            1 => {
                // The first pass finds the pages young (the guest read them last round)
                // and ages them; the second finds them cold and reclaims them.
                let _ = mem::reclaim(buf, BUF_BYTES, 1);
                let n = mem::reclaim(buf, BUF_BYTES, 1);
                reclaims += (n == pages) as u64;
                n == pages
            }
            2 => {
                check!(mem::protect(buf, BUF_BYTES, mem_perm::READ) >= 0, "write-protect of the buffer");
                protects += 1;
                false
            }
            _ => false,
        };
        // Fresh pages take frames now, likely the ones just freed: a device still writing
        // to those would overwrite this pattern.
        if taken {
            for p in 0..DECOY_PAGES {
                write(decoy + p * PAGE, DECOY | p);
            }
        }
        let used = dev.wait_used();
        // SAFETY: the status byte the device wrote.
        let st = unsafe { read_volatile(&raw const (*r).status[0]) };
        check!(used.is_some(), "round {}: the read was answered", round);
        check_eq!(st, 0, "round {}: the read's status", round);
        if round % 4 == 2 {
            check!(mem::protect(buf, BUF_BYTES, mem_perm::READ | mem_perm::WRITE | mem_perm::EXEC) >= 0, "write access back");
        }
        if !taken {
            // The pages stayed (or stayed readable): the disk's sectors are there.
            for i in 0..per_read {
                check_eq!(read(buf + i * 512), sector + i + 1, "round {}: sector {} in the buffer", round, sector + i);
            }
            checked += 1;
        } else {
            // The pages went while the read was in flight: they come back zeroed (the data
            // landed in the old frames, before they were freed).
            for p in 0..BUF_BYTES / PAGE {
                check_eq!(read(buf + p * PAGE), 0, "round {}: page {} after it was taken away", round, p);
            }
        }
        if taken {
            for p in 0..DECOY_PAGES {
                let v = read(decoy + p * PAGE);
                check_eq!(v, DECOY | p, "round {}: fresh page {} written underneath (by the disk?)", round, p);
            }
            check!(mem::unmap(decoy, DECOY_PAGES * PAGE) >= 0, "giving the fresh pages back");
        }
        dev.ack_interrupts();
        // Touch every page again (the next round's reclaim must age them first).
        for p in 0..BUF_BYTES / PAGE {
            write(buf + p * PAGE + 8, round);
        }
    }
    println!("dma: {} reads, {} with their buffer unmapped, {} reclaimed, {} write-protected in flight; {} read back whole", rounds, unmaps, reclaims, protects, checked);
    check!(reclaims > 0, "reclaim took the buffer at least once");
    guest_rt::pass()
}

fn watcher(info: &BootInfo) -> ! {
    let cycles = info.arg("cycles").unwrap_or(400);
    let region = info.ram_base + 16 * (1 << 20);
    let bytes: u64 = 4 << 20;
    let mut changed = 0u64;
    for cycle in 0..cycles {
        let tag = 0x5a5a_0000_0000_0000 | cycle << 32;
        for a in (region..region + bytes).step_by(64) {
            write(a, tag | a);
        }
        for a in (region..region + bytes).step_by(64) {
            if read(a) != tag | a {
                if changed < 5 {
                    println!("watcher: word at {:#x} changed to {:#x} (cycle {})", a, read(a), cycle);
                }
                changed += 1;
            }
        }
        check!(mem::unmap(region, bytes) >= 0, "giving the region back");
    }
    println!("watcher: {} cycles of {} KiB, {} words changed underneath", cycles, bytes >> 10, changed);
    check_eq!(changed, 0, "words changed underneath the watcher");
    guest_rt::pass()
}

fn main(info: &BootInfo) -> ! {
    if info.arg("role") == Some(1) {
        watcher(info)
    } else {
        reader(info)
    }
}

guest_rt::guest_main!(main);
