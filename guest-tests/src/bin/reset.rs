//! PSCI SYSTEM_RESET: the first boot asks for a reset; the hypervisor rebuilds the VM
//! from its images (fresh RAM, boot count 1 in the device tree), and the second boot passes.
//! With `loop=1` every boot resets at once (a crash-reboot loop the hypervisor must stop).

#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU64, Ordering};
use guest_rt::{check_eq, hvc, println, BootInfo};
use hv_core::hypercall::id;

/// Set on the first boot; a reboot must start from zeroed RAM.
static MARK: AtomicU64 = AtomicU64::new(0);

fn main(info: &BootInfo) -> ! {
    println!("boot {}", info.boot_count);
    if info.bootargs.contains("loop=1") {
        hvc::hvc(id::PSCI_SYSTEM_RESET as u64, 0, 0, 0);
    }
    check_eq!(MARK.load(Ordering::Acquire), 0, "RAM from before the reset is gone");
    if info.boot_count == 0 {
        MARK.store(0x5eed, Ordering::Release);
        hvc::hvc(id::PSCI_SYSTEM_RESET as u64, 0, 0, 0);
        println!("SYSTEM_RESET returned");
        guest_rt::fail(5);
    }
    check_eq!(info.boot_count, 1, "boot count after one reset");
    guest_rt::pass()
}

guest_rt::guest_main!(main);
