//! A vCPU that never gives its CPU away: it computes (no exits, no WFI) for `ms=N`
//! milliseconds of counter time, then passes. Another VM sharing its CPU still runs in
//! the meantime only if the hypervisor time-slices.

#![no_std]
#![no_main]

use guest_rt::{println, BootInfo};

fn main(info: &BootInfo) -> ! {
    let ms = info.arg("ms").unwrap_or(1000);
    let (start, freq) = guest_rt::counter();
    let end = start + freq / 1000 * ms;
    let mut x = 1u64;
    while guest_rt::counter().0 < end {
        x = core::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
    println!("busy for {} ms without an exit", ms);
    guest_rt::pass()
}

guest_rt::guest_main!(main);
