//! Asks the hypervisor to fault on purpose (HV_DEBUG_FAULT, bootargs fault=N: 0 panic,
//! 1 data abort at EL2, 2 stack overflow, 3 a wrong key under a signed return address), to test that such a crash is reported and ends
//! the machine with the panic status. Without `debug_faults=on` on the hypervisor's command
//! line the call must be refused, and the guest passes. `ramoops=1`: a record is put in the
//! guest's ramoops region first (the panic path must save it); with `hang=1` the guest
//! then spins for ever instead (an idle CPU must save it while it runs).

#![no_std]
#![no_main]

use guest_rt::{check_eq, hvc, println, BootInfo};
use hv_core::hypercall::{id, ret};

fn main(info: &BootInfo) -> ! {
    let fault = info.arg("fault").unwrap_or(0);
    if info.arg("ramoops") == Some(1) {
        guest_rt::ramoops::put_record(info.dtb - (1 << 20), b"====0.0-D\nguest record before the hypervisor panicked");
        if info.arg("hang") == Some(1) {
            println!("record written; spinning");
            loop {
                core::hint::spin_loop();
            }
        }
    }
    println!("asking the hypervisor for debug fault {}", fault);
    let r = hvc::call(id::HV_DEBUG_FAULT, fault, 0, 0);
    check_eq!(r, ret::NOT_SUPPORTED, "HV_DEBUG_FAULT returned: it must be refused when not enabled");
    println!("debug faults are refused");
    guest_rt::pass()
}

guest_rt::guest_main!(main);
