//! PSCI SYSTEM_RESET: the first boot leaves a mark in RAM outside its images and asks for a
//! reset; the VM boots again from its images (boot count 1 in the device tree) with its RAM
//! as it was, as QEMU's own reset and KVM's keep it (the same guest runs on bare QEMU to
//! compare), and the second boot passes. With `loop=1` every boot resets at once (a
//! crash-reboot loop the hypervisor must stop).

#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU64, Ordering};
use guest_rt::{check_eq, hvc, println, BootInfo};
use hv_core::hypercall::id;

/// Set on the first boot; the guest's start code zeroes .bss on every boot.
static MARK: AtomicU64 = AtomicU64::new(0);
/// What the first boot leaves at three quarters of RAM.
const LEFT: u64 = 0x5eed_0000_0000_0001;

fn main(info: &BootInfo) -> ! {
    println!("boot {}", info.boot_count);
    if info.bootargs.contains("loop=1") {
        hvc::hvc(id::PSCI_SYSTEM_RESET as u64, 0, 0, 0);
    }
    check_eq!(MARK.load(Ordering::Acquire), 0, ".bss zeroed by the start code");
    // SAFETY: a word of this guest's own RAM that no image or stack uses (bare QEMU puts
    // the device tree at half of RAM, the hypervisor in its last 2 MiB).
    let spot = unsafe { &*((info.ram_base + info.ram_size / 4 * 3) as *const AtomicU64) };
    let found = spot.load(Ordering::Acquire);
    if found != LEFT {
        spot.store(LEFT, Ordering::Release);
        MARK.store(1, Ordering::Release);
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
