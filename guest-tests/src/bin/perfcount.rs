//! Not a bare-metal guest: a static Linux program for the Linux guest's initramfs (built
//! with the test guests, shipped as /bin/perfcount; busybox has no perf). It counts CPU
//! cycles and instructions of a user-space loop through perf_event_open(2), as `perf stat`
//! would, and prints `PERFCOUNT cycles=N instructions=N` (a negative value is the error
//! number: QEMU counts instructions only with -icount, so that event is refused there).

#![no_std]
#![no_main]

use core::arch::{asm, global_asm};

global_asm!(
    ".section .text.head, \"ax\"",
    ".global _start",
    "_start:",
    "mov x29, #0",
    "bl perfcount_main",
    "mov x8, #93", // exit
    "svc #0",
);

fn syscall(nr: u64, a: [u64; 5]) -> i64 {
    let r: i64;
    // SAFETY: a Linux system call; the kernel preserves every register but x0.
    unsafe {
        asm!("svc #0", in("x8") nr, inlateout("x0") a[0] as i64 => r, in("x1") a[1], in("x2") a[2], in("x3") a[3],
             in("x4") a[4], options(nostack));
    }
    r
}

const PERF_EVENT_OPEN: u64 = 241;
const IOCTL: u64 = 29;
const READ: u64 = 63;
const WRITE: u64 = 64;
const IOC_ENABLE: u64 = 0x2400;
const IOC_DISABLE: u64 = 0x2401;
const IOC_RESET: u64 = 0x2403;

/// perf_event_attr (128 bytes, PERF_ATTR_SIZE_VER7): a hardware event, disabled at first,
/// user space only.
#[repr(C, align(8))]
struct Attr([u64; 16]);

/// Counts hardware event `config` (0 cycles, 1 instructions) over a loop of `n` steps:
/// the count, or the negative error number.
fn count(config: u64, n: u64) -> i64 {
    let mut attr = Attr([0; 16]);
    attr.0[0] = 128 << 32; // type PERF_TYPE_HARDWARE (0), size 128
    attr.0[1] = config;
    attr.0[5] = 1 | 1 << 5 | 1 << 6; // disabled, exclude_kernel, exclude_hv
    let fd = syscall(PERF_EVENT_OPEN, [&attr as *const Attr as u64, 0, u64::MAX, u64::MAX, 0]);
    if fd < 0 {
        return fd;
    }
    let fd = fd as u64;
    syscall(IOCTL, [fd, IOC_RESET, 0, 0, 0]);
    syscall(IOCTL, [fd, IOC_ENABLE, 0, 0, 0]);
    for i in 0..n {
        core::hint::black_box(i);
    }
    syscall(IOCTL, [fd, IOC_DISABLE, 0, 0, 0]);
    let mut value = 0u64;
    let r = syscall(READ, [fd, &mut value as *mut u64 as u64, 8, 0, 0]);
    if r != 8 {
        return if r < 0 { r } else { -5 };
    }
    value as i64
}

struct Out {
    buf: [u8; 96],
    len: usize,
}

impl core::fmt::Write for Out {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

#[no_mangle]
extern "C" fn perfcount_main() -> u64 {
    let cycles = count(0, 1_000_000);
    let instructions = count(1, 1_000_000);
    let mut out = Out { buf: [0; 96], len: 0 };
    let _ = core::fmt::Write::write_fmt(&mut out, format_args!("PERFCOUNT cycles={} instructions={}\n", cycles, instructions));
    syscall(WRITE, [1, out.buf.as_ptr() as u64, out.len as u64, 0, 0]);
    (cycles <= 0) as u64
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    loop {
        syscall(93, [2, 0, 0, 0, 0]);
    }
}
