//! A guest that keeps counting in its ramoops region: it reads the count its region holds
//! (restored from the pstore disk by the hypervisor), says it, and then rewrites the record
//! with the next number every 10 ms, for ever. The test kills QEMU at random moments while
//! idle CPUs save the region, and checks that each run finds the last whole copy.

#![no_std]
#![no_main]

use core::fmt::Write;
use guest_rt::{println, BootInfo};

const PREFIX: &[u8] = b"====0.0-D\ncount ";

struct Text {
    buf: [u8; 64],
    len: usize,
}

impl Write for Text {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

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
        let mut t = Text { buf: [0; 64], len: 0 };
        let _ = t.write_str("====0.0-D\n");
        let _ = write!(t, "count {}", count);
        guest_rt::ramoops::put_record(region, &t.buf[..t.len]);
        let start = guest_rt::counter().0;
        while guest_rt::counter().0 - start < freq / 100 {
            core::hint::spin_loop();
        }
    }
}

guest_rt::guest_main!(main);
