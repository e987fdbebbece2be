//! Memory given to a VM never shows another VM's data. `role=1`: fill RAM with a secret
//! pattern, then power off (its frames go back to the hypervisor). Otherwise: wait until
//! the writer is done, then read every word of its own RAM (faulting it in page by page)
//! and find no secret and nothing but zeros. The reader's pages come from the pool the
//! writer's frames went back to. `role=2`: read first (as the reader, without waiting),
//! then write the secret and wait a few seconds before passing: time for the test to reset
//! the whole machine, after which the same VM, booted again, reads frames the hypervisor
//! must not take for fresh ones.

#![no_std]
#![no_main]

use guest_rt::{check, hvc, println, psci, BootInfo};
use hv_core::hypercall::Counter;

const SECRET: u64 = 0x5ec2e7;
const MIB: u64 = 1 << 20;
/// How long the reader waits for the writer (virtual time).
const WAIT_SECONDS: u64 = 3;

fn region(info: &BootInfo) -> (u64, u64) {
    // Above the image and stacks, below the device tree's 2 MiB slot.
    (info.ram_base + 16 * MIB, info.ram_base + info.ram_size - 2 * MIB)
}

fn main(info: &BootInfo) -> ! {
    let (start, end) = region(info);
    if info.arg("role") == Some(1) {
        for addr in (start..end).step_by(64) {
            // SAFETY: this guest's own RAM in a region nothing else of the program uses.
            unsafe { core::ptr::write_volatile(addr as *mut u64, SECRET << 40 | addr) };
        }
        println!("secret written: {} MiB", (end - start) / MIB);
        psci::system_off()
    }
    let role = info.arg("role");
    if role != Some(2) {
        wait(WAIT_SECONDS);
    }
    let populated = hvc::counter(Counter::PagesPopulated);
    let (mut secrets, mut nonzero) = (0u64, 0u64);
    for addr in (start..end).step_by(8) {
        // SAFETY: as above; reading fresh pages of our own RAM.
        let v = unsafe { core::ptr::read_volatile(addr as *const u64) };
        secrets += (v >> 40 == SECRET) as u64;
        nonzero += (v != 0) as u64;
    }
    let populated = hvc::counter(Counter::PagesPopulated) - populated;
    println!("scanned {} MiB ({} pages given on first touch): {} secret words, {} non-zero words", (end - start) / MIB, populated, secrets, nonzero);
    check!(secrets == 0 && nonzero == 0, "another VM's data reached this one");
    if role == Some(2) {
        for addr in (start..end).step_by(64) {
            // SAFETY: as above.
            unsafe { core::ptr::write_volatile(addr as *mut u64, SECRET << 40 | addr) };
        }
        println!("secret written, waiting for a machine reset");
        wait(WAIT_SECONDS);
    }
    guest_rt::pass()
}

/// Lets `seconds` pass, giving the CPU away meanwhile.
fn wait(seconds: u64) {
    let (t0, freq) = guest_rt::counter();
    while guest_rt::counter().0 - t0 < seconds * freq {
        hvc::yield_cpu();
    }
}

guest_rt::guest_main!(main);
