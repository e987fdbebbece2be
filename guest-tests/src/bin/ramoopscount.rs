//! A guest that keeps counting in its ramoops region: it reads the count its region holds
//! (restored from the pstore disk by the hypervisor), says it, and then rewrites the record
//! with the next number every 10 ms, for ever. The test kills QEMU at random moments while
//! idle CPUs save the region, and checks that each run finds the last whole copy.

#![no_std]
#![no_main]

use core::fmt::Write;
use guest_rt::text::Text;
use guest_rt::{println, BootInfo};

const PREFIX: &[u8] = b"====0.0-D\ncount ";

fn main(info: &BootInfo) -> ! {
    let region = info.dtb - (1 << 20);
    let mut count: u64 = guest_rt::ramoops::record(region, 64)
        .and_then(|t| t.strip_prefix(PREFIX))
        .and_then(|n| core::str::from_utf8(n).ok()?.trim().parse().ok())
        .unwrap_or(0);
    println!("restored count {}", count);
    let freq = guest_rt::counter().1;
    loop {
        count += 1;
        let mut t = Text::<64>::new();
        let _ = write!(t, "====0.0-D\ncount {}", count);
        guest_rt::ramoops::put_record(region, t.as_bytes());
        let start = guest_rt::counter().0;
        while guest_rt::counter().0 - start < freq / 100 {
            core::hint::spin_loop();
        }
    }
}

guest_rt::guest_main!(main);
