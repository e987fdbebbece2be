//! The virtio-mmio slots of the virt machine: the device tree lists 32 transports at
//! 0x0a000000 + n * 0x200 with SPI 16 + n, and each answers (read and write, any size) as an
//! empty transport: magic "virt", version, DeviceID 0 (no device), QEMU's vendor ID.
//! Also trapped MMIO through the registers an exit's fast path does not save at first
//! (x20..x28; Linux's console and virtio writes often use them): the distributor's TYPER read
//! into one of them and into x0 agree, a priority written from one reads back through
//! another. A differential test: the same image runs on bare QEMU, whose observations must
//! agree.

#![no_std]
#![no_main]

use core::arch::asm;
use guest_rt::exceptions::expect_exception;
use guest_rt::{println, BootInfo};

const BASE: u64 = 0x0a00_0000;
const SLOT: u64 = 0x200;

fn read32(addr: u64) -> Option<u32> {
    let mut v: u32 = 0;
    // SAFETY: a device-memory load that may abort; the armed handler skips it.
    let e = expect_exception(|| unsafe { asm!("ldr {:w}, [{}]", inout(reg) v, in(reg) addr, options(nostack)) });
    e.is_none().then_some(v)
}

fn read8(addr: u64) -> Option<u8> {
    let mut v: u32 = 0;
    // SAFETY: as above.
    let e = expect_exception(|| unsafe { asm!("ldrb {:w}, [{}]", inout(reg) v, in(reg) addr, options(nostack)) });
    e.is_none().then_some(v as u8)
}

fn write32(addr: u64, v: u32) -> bool {
    // SAFETY: a device-memory store that may abort; the armed handler skips it.
    expect_exception(|| unsafe { asm!("str {:w}, [{}]", in(reg) v, in(reg) addr, options(nostack)) }).is_none()
}

/// GICD_TYPER read into x21 and into x0, and GICD_IPRIORITYR for SPIs 40..43 written from
/// x23, then read into x25 and into x1.
fn gicd_through_callee_saved() -> (u32, u32, u32, u32) {
    const GICD: u64 = hv_core::guest_dt::layout::GICD_BASE;
    let (typer_hi, typer_lo, prio_hi, prio_lo): (u32, u32, u32, u32);
    // SAFETY: loads and a store to the distributor's TYPER and to the priority bytes of
    // SPIs 40..43, which this guest never enables.
    unsafe {
        asm!(
            "ldr w21, [{gicd}, #4]",
            "ldr w0, [{gicd}, #4]",
            "str w23, [{gicd}, #0x428]",
            "ldr w25, [{gicd}, #0x428]",
            "ldr w1, [{gicd}, #0x428]",
            gicd = in(reg) GICD,
            in("x23") 0xa0a0_a0a0u64,
            out("x21") typer_hi, out("x0") typer_lo, out("x25") prio_hi, out("x1") prio_lo,
            options(nostack),
        );
    }
    (typer_hi, typer_lo, prio_hi, prio_lo)
}

fn main(info: &BootInfo) -> ! {
    let mut slots: [(u64, u32); 64] = [(0, 0); 64];
    let mut n = 0;
    for node in info.fdt.all_nodes() {
        if node.compatible().is_some_and(|c| c.all().any(|s| s == "virtio,mmio")) && n < slots.len() {
            let base = node.reg().and_then(|mut r| r.next()).map_or(0, |r| r.starting_address as u64);
            let spi = node.property("interrupts").map_or(0, |p| u32::from_be_bytes([p.value[4], p.value[5], p.value[6], p.value[7]]));
            slots[n] = (base, spi);
            n += 1;
        }
    }
    println!("observe virtio-mmio nodes in the device tree: {}", n);
    let slots = &mut slots[..n];
    slots.sort_unstable();
    let as_expected = slots.iter().enumerate().all(|(i, &(base, spi))| base == BASE + i as u64 * SLOT && spi == 16 + i as u32);
    println!("observe nodes at 0x0a000000 + n * 0x200 with SPI 16 + n: {}", as_expected);
    let mut bad = !as_expected || n != 32;
    for i in 0..32u64 {
        let b = BASE + i * SLOT;
        let regs = [read32(b), read32(b + 4), read32(b + 8), read32(b + 0xc)];
        // Status and QueueNotify written, Status and a config byte read back.
        let wrote = write32(b + 0x70, 0xf) && write32(b + 0x50, 0);
        let status = read32(b + 0x70);
        let byte = read8(b + 0x100);
        let low = read8(b);
        println!("observe slot {}: {:x?} writes {} status {:?} config {:?} magic byte {:?}", i, regs, wrote, status, byte, low);
        bad |= regs != [Some(0x7472_6976), Some(1), Some(0), Some(0x554d_4551)] || !wrote || status != Some(0) || low != Some(0x76);
    }
    let (typer_hi, typer_lo, prio_hi, prio_lo) = gicd_through_callee_saved();
    println!("observe GICD through x21/x0: TYPER equal {}; priority written from x23, through x25/x1: {:#x} {:#x}", typer_hi == typer_lo, prio_hi, prio_lo);
    bad |= typer_hi != typer_lo || prio_hi != prio_lo || prio_hi != 0xa0a0_a0a0;
    if bad {
        guest_rt::fail(1);
    }
    println!("32 empty virtio-mmio slots");
    guest_rt::pass()
}

guest_rt::guest_main!(main);
