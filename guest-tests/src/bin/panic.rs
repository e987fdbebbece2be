//! A guest that panics on purpose and says so through its pvpanic device (the way Linux's
//! pvpanic driver does), after a few console lines that its crash record must keep.
//!
//! Bootargs: `lines=N` console lines before the panic (default 5); `ramoops=1`: as Linux
//! with ramoops does, the guest has a persistent_ram buffer at the start of its ramoops
//! region (below its device tree) before it reports the panic, writes its dump record
//! there after reporting it (Linux's kmsg_dump comes after its panic notifiers), then
//! halts.

#![no_std]
#![no_main]

use guest_rt::{println, BootInfo};
use hv_core::guest_dt::{layout, pvpanic};

fn main(info: &BootInfo) -> ! {
    // SAFETY: the pvpanic register is a device register in this guest's IPA space (from
    // its device tree); reading it has no side effects.
    let supported = unsafe { core::ptr::read_volatile(layout::PVPANIC_BASE as *const u8) };
    println!("pvpanic supports events {:#x}", supported);
    for i in 0..info.arg("lines").unwrap_or(5) {
        println!("panic guest console line {}", i);
    }
    let ramoops = info.arg("ramoops") == Some(1);
    let region = info.dtb - (1 << 20);
    if ramoops {
        guest_rt::ramoops::put_record(region, b"");
    }
    println!("guest panic: reporting it through pvpanic");
    // SAFETY: writing PANICKED to the pvpanic register reports the panic; the hypervisor
    // stops this VM.
    unsafe { core::ptr::write_volatile(layout::PVPANIC_BASE as *mut u8, pvpanic::PANICKED) };
    if ramoops {
        guest_rt::ramoops::put_record(region, b"====0.0-D\nguest dump after pvpanic: the record must survive");
        println!("guest panic: dump written into the ramoops region");
        guest_rt::psci::system_off();
    }
    println!("still running after reporting a panic");
    guest_rt::fail(1)
}

guest_rt::guest_main!(main);
