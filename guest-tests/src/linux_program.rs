//! What the static Linux programs of the test initramfs (bin/perfcount.rs, bin/diskbench.rs)
//! share, included by each with `#[path]` (they are not bare-metal guests and do not link
//! the guest runtime): the entry point, which hands the initial stack (argc, argv) to
//! `program_main` and exits with its result, raw system calls, printing one line to
//! standard output, and a panic handler that exits.

use core::arch::{asm, global_asm};

// The test guests' line type; these programs use part of it.
#[allow(dead_code)]
#[path = "text.rs"]
mod text;
use text::Text;

global_asm!(
    ".section .text.head, \"ax\"",
    ".global _start",
    "_start:",
    "mov x29, #0",
    "mov x0, sp", // argc, then the argv pointers, as the kernel left them
    "bl program_main",
    "mov x8, #93", // exit
    "svc #0",
);

pub const WRITE: u64 = 64;
const EXIT: u64 = 93;

pub fn syscall(nr: u64, a: [u64; 5]) -> i64 {
    let r: i64;
    // SAFETY: a Linux system call; the kernel preserves every register but x0.
    unsafe {
        asm!("svc #0", in("x8") nr, inlateout("x0") a[0] as i64 => r, in("x1") a[1], in("x2") a[2], in("x3") a[3],
             in("x4") a[4], options(nostack));
    }
    r
}

/// Writes `args` and a newline to standard output.
pub fn print_line(args: core::fmt::Arguments<'_>) {
    let mut line = Text::<96>::new();
    let _ = core::fmt::Write::write_fmt(&mut line, format_args!("{}\n", args));
    syscall(WRITE, [1, line.as_bytes().as_ptr() as u64, line.as_bytes().len() as u64, 0, 0]);
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    loop {
        syscall(EXIT, [2, 0, 0, 0, 0]);
    }
}
