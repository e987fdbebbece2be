//! A guest's persistent messages (pstore's pmsg, through HV_PMSG_WRITE): `count=N`
//! numbered lines (default 3000, more than the 64 KiB ring holds, so it wraps), each
//! durable when the call returns; then the refusals: a buffer longer than 4 KiB, one
//! outside RAM. A harness would write "test 17 start" before each step and find, after a
//! crash, the last step reached. The writes are timed (each a round trip to the pstore
//! disk: make bench's pmsg row).

#![no_std]
#![no_main]

use core::fmt::Write;
use guest_rt::hvc;
use guest_rt::text::Text;
use guest_rt::{check_eq, println, BootInfo};
use hv_core::hypercall::{ret, PMSG_WRITE_MAX};

static BIG: [u8; PMSG_WRITE_MAX as usize + 1] = [b'x'; PMSG_WRITE_MAX as usize + 1];

fn main(info: &BootInfo) -> ! {
    let count = info.arg("count").unwrap_or(3000);
    let (t0, freq) = guest_rt::counter();
    for i in 1..=count {
        let mut line = Text::<64>::new();
        let _ = writeln!(line, "pmsg message {} of {}", i, count);
        check_eq!(hvc::pmsg_write(line.as_bytes()), line.as_bytes().len() as i64, "message {} written", i);
    }
    let us = (guest_rt::counter().0 - t0) * 1_000_000 / freq;
    println!("pmsg: {} messages written in {} us", count, us);
    check_eq!(hvc::pmsg_write(&BIG), ret::INVALID_PARAMETERS, "a buffer longer than PMSG_WRITE_MAX");
    let outside = hvc::call(hv_core::hypercall::id::HV_PMSG_WRITE, info.ram_base + info.ram_size, 16, 0);
    check_eq!(outside, ret::INVALID_ADDRESS, "a buffer outside RAM");
    println!("pmsg: bad buffers refused");
    guest_rt::pass()
}

guest_rt::guest_main!(main);
