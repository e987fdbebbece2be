//! The hypervisor's final EL2 stage-1 tables: RAM identity-mapped and never executable,
//! except the image's text (read-only, executable) and rodata (read-only); stack guard
//! pages unmapped; only the devices the hypervisor drives mapped as device memory.

use super::tables::{FrameTables, TlbScope};
use crate::arch::mmu::EL2_VA_BITS;
use crate::arch::stacks::{stack_guard, MAX_CPUS};
use core::sync::atomic::{AtomicU64, Ordering};
use hv_core::pgtable::{Attrs, MapError, PageTable, PAGE_SIZE};
use hv_core::ranges::{cover, subtract, Range};

/// Root of the final tables, for secondary CPUs (boot.S reads it before enabling their MMU).
#[no_mangle]
static FINAL_TTBR0: AtomicU64 = AtomicU64::new(0);

extern "C" {
    static __image_start: u8;
    static __text_end: u8;
    static __rodata_end: u8;
    static __image_end: u8;
}

fn symbol(s: &u8) -> u64 {
    s as *const u8 as u64
}

/// The physical range the image occupies (text, data, BSS, stacks).
pub fn image_range() -> Range {
    // SAFETY: linker symbols; only their addresses are taken, never their contents.
    let (start, end) = unsafe { (symbol(&__image_start), symbol(&__image_end)) };
    Range { start, end }
}

/// Builds the tables and returns their root. `ram` is all RAM, `devices` what the
/// hypervisor drives.
pub fn build(ram: &[Range], devices: &[Range]) -> Result<u64, MapError> {
    let mut mem = FrameTables { scope: TlbScope::El2 };
    let mut t = PageTable::new(&mut mem, hv_core::pgtable::Regime::El2, EL2_VA_BITS)?;
    // SAFETY: linker symbols, address only.
    let (text_end, rodata_end) = unsafe { (symbol(&__text_end), symbol(&__rodata_end)) };
    let image = image_range();

    for r in subtract(ram, &[image], PAGE_SIZE) {
        t.map(&mut mem, r.start, r.start, r.size(), Attrs::RAM_RW)?;
    }
    t.map(&mut mem, image.start, image.start, text_end - image.start, Attrs::RAM_RX)?;
    t.map(&mut mem, text_end, text_end, rodata_end - text_end, Attrs::RAM_RO)?;
    t.map(&mut mem, rodata_end, rodata_end, image.end - rodata_end, Attrs::RAM_RW)?;
    for cpu in 0..MAX_CPUS {
        let (guard, size) = stack_guard(cpu);
        t.unmap(&mut mem, guard, size)?;
    }
    // Devices may share pages (32 virtio-mmio transports fit in four).
    for d in cover(devices, PAGE_SIZE).into_iter().filter(|d| d.start < d.end) {
        t.map(&mut mem, d.start, d.start, d.size(), Attrs::DEVICE_RW)?;
    }
    let root = t.root();
    log::debug!("EL2 tables: {} table pages", t.table_pages());
    // The tables live as long as the hypervisor: never destroyed.
    core::mem::forget(t);
    FINAL_TTBR0.store(root, Ordering::Release);
    Ok(root)
}
