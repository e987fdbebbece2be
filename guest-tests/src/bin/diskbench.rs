//! Not a bare-metal guest: a static Linux program for the Linux guest's initramfs (built
//! with the test guests, shipped as /bin/diskbench; busybox has no fio). It reads 4 KiB
//! blocks at random offsets of a block device with O_DIRECT for a second and prints
//! `DISKBENCH iops=N reads=N` (a negative value is the error number of what failed).
//!
//! Usage: diskbench /dev/vda

#![no_std]
#![no_main]

#[path = "../linux_program.rs"]
mod linux_program;
use linux_program::{print_line, syscall};

const OPENAT: u64 = 56;
const LSEEK: u64 = 62;
const PREAD64: u64 = 67;
const CLOCK_GETTIME: u64 = 113;
const AT_FDCWD: u64 = -100i64 as u64;
const O_DIRECT: u64 = 0o200000;
const SEEK_END: u64 = 2;
const CLOCK_MONOTONIC: u64 = 1;
const BLOCK: u64 = 4096;

/// The O_DIRECT buffer: aligned as the block layer wants.
#[repr(C, align(4096))]
struct Buf([u8; BLOCK as usize]);
static mut BUF: Buf = Buf([0; BLOCK as usize]);

fn now_ns() -> u64 {
    let mut ts = [0u64; 2];
    syscall(CLOCK_GETTIME, [CLOCK_MONOTONIC, ts.as_mut_ptr() as u64, 0, 0, 0]);
    ts[0] * 1_000_000_000 + ts[1]
}

fn report(iops: i64, reads: i64) -> u64 {
    print_line(format_args!("DISKBENCH iops={} reads={}", iops, reads));
    (iops <= 0) as u64
}

/// `sp` as the kernel set it up: argc, then the argv pointers.
#[no_mangle]
extern "C" fn program_main(sp: *const u64) -> u64 {
    // SAFETY: the initial stack holds argc and argc pointers to NUL-terminated strings.
    let (argc, path) = unsafe { (*sp, *sp.add(2)) };
    if argc < 2 {
        return report(-22, 0);
    }
    let fd = syscall(OPENAT, [AT_FDCWD, path, O_DIRECT, 0, 0]);
    if fd < 0 {
        return report(fd, 0);
    }
    let blocks = syscall(LSEEK, [fd as u64, 0, SEEK_END, 0, 0]) / BLOCK as i64;
    if blocks <= 0 {
        return report(-5, 0);
    }
    let buf = (&raw mut BUF) as u64;
    let (start, mut reads, mut x) = (now_ns(), 0i64, 0x9e37_79b9_7f4a_7c15u64);
    while now_ns() - start < 1_000_000_000 {
        // xorshift: a block at random.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let n = syscall(PREAD64, [fd as u64, buf, BLOCK, (x % blocks as u64) * BLOCK, 0]);
        if n != BLOCK as i64 {
            return report(if n < 0 { n } else { -5 }, reads);
        }
        reads += 1;
    }
    let ns = now_ns() - start;
    report((reads as u64 * 1_000_000_000 / ns) as i64, reads)
}
