//! A multi-vCPU guest: every vCPU runs at once on its own physical CPU, sees its own MPIDR,
//! and they share memory coherently (atomic increments from all of them add up).

#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use guest_rt::{check, check_eq, println, psci, BootInfo};

const ROUNDS: u64 = 20_000;
static COUNTER: AtomicU64 = AtomicU64::new(0);
static ARRIVED: AtomicUsize = AtomicUsize::new(0);
static DONE: AtomicUsize = AtomicUsize::new(0);
static MPIDRS: [AtomicU64; guest_rt::MAX_VCPUS] = [const { AtomicU64::new(u64::MAX) }; guest_rt::MAX_VCPUS];

fn work(index: usize, n: usize) {
    MPIDRS[index].store(guest_rt::mpidr() & 0xff_00ff_ffff, Ordering::Release);
    // Start together, so the increments really race.
    ARRIVED.fetch_add(1, Ordering::AcqRel);
    while ARRIVED.load(Ordering::Acquire) < n {
        core::hint::spin_loop();
    }
    for _ in 0..ROUNDS {
        COUNTER.fetch_add(1, Ordering::Relaxed);
    }
    DONE.fetch_add(1, Ordering::AcqRel);
}

fn main(info: &BootInfo) -> ! {
    let n = info.vcpus;
    check!(n >= 2, "this test needs at least 2 vCPUs (has {})", n);
    for i in 1..n {
        check_eq!(guest_rt::start_vcpu(i, secondary, n as u64), 0, "CPU_ON({})", i);
    }
    work(0, n);
    while DONE.load(Ordering::Acquire) < n {
        core::hint::spin_loop();
    }
    check_eq!(COUNTER.load(Ordering::Acquire), ROUNDS * n as u64, "sum of atomic increments from {} vCPUs", n);
    for i in 0..n {
        check_eq!(MPIDRS[i].load(Ordering::Acquire), hv_core::guest_dt::vcpu_mpidr(i), "MPIDR of vCPU {}", i);
    }
    println!("{} vCPUs added {} each: total {}", n, ROUNDS, COUNTER.load(Ordering::Acquire));
    guest_rt::pass()
}

fn secondary(index: usize, n: u64) -> ! {
    work(index, n as usize);
    psci::cpu_off()
}

guest_rt::guest_main!(main);
