//! The demo guest (the default of `make run`): prints what it sees — exception level,
//! vCPU, memory and CPUs from its device tree, the hypervisor's version — brings up its
//! other vCPUs, which report in, and powers off.

#![no_std]
#![no_main]

use core::sync::atomic::{AtomicUsize, Ordering};
use guest_rt::{check, check_eq, hvc, println, psci, BootInfo};

static REPORTED: AtomicUsize = AtomicUsize::new(0);

fn main(info: &BootInfo) -> ! {
    println!("hello from vCPU {} at EL{}", guest_rt::vcpu_index(), guest_rt::current_el());
    println!("memory: {} MiB at {:#x}", info.ram_size >> 20, info.ram_base);
    println!("vCPUs in device tree: {}", info.vcpus);
    println!("bootargs: \"{}\"", info.bootargs);
    let v = hvc::hv_version();
    println!("hypervisor version {}.{}.{}", v >> 16, (v >> 8) & 0xff, v & 0xff);
    check_eq!(guest_rt::current_el(), 1, "guests run at EL1");
    check!(info.ram_size > 0, "the device tree describes memory");

    for i in 1..info.vcpus {
        let r = guest_rt::start_vcpu(i, secondary, 0);
        check_eq!(r, 0, "CPU_ON of vCPU {}", i);
    }
    // Wait for every other vCPU to say hello and switch itself off.
    while REPORTED.load(Ordering::Acquire) < info.vcpus - 1 {
        core::hint::spin_loop();
    }
    for i in 1..info.vcpus {
        while psci::affinity_info(hv_core::guest_dt::vcpu_mpidr(i), 0) != hv_core::hypercall::affinity::OFF {
            core::hint::spin_loop();
        }
    }
    println!("all {} vCPU(s) reported; powering off", info.vcpus);
    guest_rt::pass()
}

fn secondary(index: usize, _arg: u64) -> ! {
    println!("hello from vCPU {} at EL{}", index, guest_rt::current_el());
    REPORTED.fetch_add(1, Ordering::AcqRel);
    psci::cpu_off()
}

guest_rt::guest_main!(main);
