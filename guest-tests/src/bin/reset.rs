//! PSCI SYSTEM_RESET: the first boot leaves a mark in RAM outside its images, changes bytes
//! of its own image, and asks for a reset; the VM boots again from its images (boot count 1
//! in the device tree, every image byte as loaded) with the rest of its RAM as it was, as
//! QEMU's own reset and KVM's keep it (the same guest runs on bare QEMU to compare), and the
//! second boot passes. With `loop=1` every boot resets at once (a
//! crash-reboot loop the hypervisor must stop).

#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use guest_rt::{check_eq, hvc, println, BootInfo};
use hv_core::hypercall::id;

/// Set on the first boot; the guest's start code zeroes .bss on every boot.
static MARK: AtomicU64 = AtomicU64::new(0);
/// Bytes of the image (.data): the first boot changes some (single bytes inside words, a
/// whole word), the reset must bring back every one.
static IMAGE_BYTES: [AtomicU8; 40] = [const { AtomicU8::new(0xa5) }; 40];
/// What the first boot leaves at three quarters of RAM.
const LEFT: u64 = 0x5eed_0000_0000_0001;

fn main(info: &BootInfo) -> ! {
    println!("boot {}", info.boot_count);
    if info.bootargs.contains("loop=1") {
        hvc::hvc(id::PSCI_SYSTEM_RESET as u64, 0, 0, 0);
    }
    check_eq!(MARK.load(Ordering::Acquire), 0, ".bss zeroed by the start code");
    let changed = IMAGE_BYTES.iter().filter(|b| b.load(Ordering::Acquire) != 0xa5).count();
    check_eq!(changed, 0, "image bytes not as loaded");
    // SAFETY: a word of this guest's own RAM that no image or stack uses (bare QEMU puts
    // the device tree at half of RAM, the hypervisor in its last 2 MiB).
    let spot = unsafe { &*((info.ram_base + info.ram_size / 4 * 3) as *const AtomicU64) };
    let found = spot.load(Ordering::Acquire);
    if found != LEFT {
        spot.store(LEFT, Ordering::Release);
        MARK.store(1, Ordering::Release);
        for i in [3, 17, 24, 25, 26, 27, 28, 29, 30, 31, 39] {
            IMAGE_BYTES[i].store(i as u8, Ordering::Release);
        }
        hvc::hvc(id::PSCI_SYSTEM_RESET as u64, 0, 0, 0);
        println!("SYSTEM_RESET returned");
        guest_rt::fail(5);
    }
    println!("observe RAM outside the images after SYSTEM_RESET: {:#x}", found);
    spot.store(0, Ordering::Release);
    if info.hypervisor {
        check_eq!(info.boot_count, 1, "boot count after one reset");
    }
    guest_rt::pass()
}

guest_rt::guest_main!(main);
