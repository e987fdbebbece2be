//! A VM stops even while one of its vCPUs never exits: vCPU 1 spins without a single trap,
//! vCPU 0 powers the VM off, and the hypervisor must get vCPU 1 off its CPU (a kick) for the
//! machine to end.

#![no_std]
#![no_main]

use core::sync::atomic::{AtomicBool, Ordering};
use guest_rt::{check, check_eq, println, BootInfo};

static SPINNING: AtomicBool = AtomicBool::new(false);

fn main(info: &BootInfo) -> ! {
    check!(info.vcpus >= 2, "needs 2 vCPUs");
    check_eq!(guest_rt::start_vcpu(1, spinner, 0), 0, "CPU_ON(1)");
    while !SPINNING.load(Ordering::Acquire) {
        core::hint::spin_loop();
    }
    println!("vCPU 1 is spinning; powering off");
    guest_rt::pass()
}

fn spinner(_index: usize, _arg: u64) -> ! {
    SPINNING.store(true, Ordering::Release);
    loop {
        core::hint::spin_loop();
    }
}

guest_rt::guest_main!(main);
