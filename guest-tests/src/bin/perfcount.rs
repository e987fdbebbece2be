//! Not a bare-metal guest: a static Linux program for the Linux guest's initramfs (built
//! with the test guests, shipped as /bin/perfcount; busybox has no perf). It counts CPU
//! cycles and instructions of a user-space loop through perf_event_open(2), as `perf stat`
//! would, and prints `PERFCOUNT cycles=N instructions=N` (a negative value is the error
//! number: QEMU counts instructions only with -icount, so that event is refused there).

#![no_std]
#![no_main]

#[path = "../linux_program.rs"]
mod linux_program;
use linux_program::{print_line, syscall};

const PERF_EVENT_OPEN: u64 = 241;
const IOCTL: u64 = 29;
const READ: u64 = 63;
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

#[no_mangle]
extern "C" fn program_main(_sp: *const u64) -> u64 {
    let cycles = count(0, 1_000_000);
    let instructions = count(1, 1_000_000);
    print_line(format_args!("PERFCOUNT cycles={} instructions={}", cycles, instructions));
    (cycles <= 0) as u64
}
