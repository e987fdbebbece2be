//! A guest whose exception vectors are broken: VBAR_EL1 points outside its RAM (where its
//! own stage-1 map says normal memory, so the fetch faults at stage 2), then it
//! executes an UNDEFINED instruction. Every exception delivery faults again at the vector;
//! the hypervisor must see the loop, stop this VM alone, and let the others go on.

#![no_std]
#![no_main]

use core::arch::asm;
use guest_rt::{println, BootInfo};

fn main(_info: &BootInfo) -> ! {
    println!("breaking my exception vectors");
    // SAFETY: deliberately fatal for this guest: no vector table, then an UNDEFINED
    // instruction (taken at EL1, to the broken vector).
    unsafe {
        asm!("msr vbar_el1, {v}", "isb", "udf #0", v = in(reg) 0x8000_0000u64, options(nostack));
    }
    println!("survived a broken vector table?");
    guest_rt::fail(6)
}

guest_rt::guest_main!(main);
