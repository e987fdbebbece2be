//! A VM stops even while one of its vCPUs never exits: vCPU 1 spins without a single trap,
//! vCPU 0 powers the VM off, and the hypervisor must get vCPU 1 off its CPU (a kick) for the
//! machine to end. With `wfi=1`, vCPU 1 instead waits for interrupts with all of them
//! masked, forever: its WFI traps, its CPU sleeps until something needs it, and the stop
//! must still get through.

#![no_std]
#![no_main]

use core::sync::atomic::{AtomicBool, Ordering};
use guest_rt::{check, check_eq, println, BootInfo};

static SPINNING: AtomicBool = AtomicBool::new(false);

fn main(info: &BootInfo) -> ! {
    check!(info.vcpus >= 2, "needs 2 vCPUs");
    let wfi = info.arg("wfi") == Some(1);
    check_eq!(guest_rt::start_vcpu(1, if wfi { waiter } else { spinner }, 0), 0, "CPU_ON(1)");
    while !SPINNING.load(Ordering::Acquire) {
        core::hint::spin_loop();
    }
    if wfi {
        // Let it trap a good many times first.
        let (t0, freq) = guest_rt::counter();
        while guest_rt::counter().0 - t0 < freq / 10 {
            core::hint::spin_loop();
        }
    }
    println!("vCPU 1 is {}; powering off", if wfi { "waiting with interrupts masked" } else { "spinning" });
    guest_rt::pass()
}

fn spinner(_index: usize, _arg: u64) -> ! {
    SPINNING.store(true, Ordering::Release);
    loop {
        core::hint::spin_loop();
    }
}

fn waiter(_index: usize, _arg: u64) -> ! {
    SPINNING.store(true, Ordering::Release);
    loop {
        // SAFETY: masks this vCPU's interrupts and waits; nothing else runs on it.
        unsafe { core::arch::asm!("msr daifset, #0xf", "wfi", options(nostack)) };
    }
}

guest_rt::guest_main!(main);
