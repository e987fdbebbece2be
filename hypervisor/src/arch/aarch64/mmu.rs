//! EL2 stage-1 translation control and TLB maintenance.

use aarch64_cpu::asm::barrier;
use aarch64_cpu::registers::*;
use core::arch::asm;
use hv_core::pgtable::mair;

pub const MAIR_EL2: u64 = mair::VALUE;
/// TCR_EL2 without PS (boot.S inserts the CPU's PARange): T0SZ 25 (39-bit VA, level-1
/// root), inner/outer write-back write-allocate walks, inner shareable, 4 KiB granule,
/// RES1 bits 23 and 31.
pub const TCR_EL2: u64 = 25 | 1 << 8 | 1 << 10 | 3 << 12 | 1 << 23 | 1 << 31;
/// Input address bits of the EL2 tables (matches T0SZ above).
pub const EL2_VA_BITS: u8 = 39;
/// SCTLR_EL2: RES1 bits, MMU, data cache, SP alignment check, instruction cache.
pub const SCTLR_EL2: u64 = 0x30c5_0830 | 1 | 1 << 2 | 1 << 3 | 1 << 12;

/// Switches this CPU to the EL2 tables at `root`. They must identity-map the running code.
pub fn switch_el2_tables(root: u64) {
    barrier::dsb(barrier::ISHST);
    TTBR0_EL2.set(root);
    barrier::isb(barrier::SY);
    // SAFETY: invalidates this CPU's EL2 TLB entries; the new tables map everything the
    // hypervisor runs on, so nothing is lost.
    unsafe { asm!("tlbi alle2", "dsb ish", "isb", options(nostack)) };
}

/// Beyond this many pages one full invalidation is cheaper than a walk of single ones.
const MAX_SINGLE_INVALIDATIONS: u64 = 64;

/// Issues `page_op` for each 4 KiB page of `[addr, addr + size)`, or `all_op` once when that
/// is cheaper, between the barriers TLB maintenance needs.
fn invalidate_pages(addr: u64, size: u64, page_op: impl Fn(u64), all_op: impl Fn()) {
    barrier::dsb(barrier::ISHST);
    let (first, end) = (addr >> 12, (addr + size).div_ceil(4096));
    if end - first > MAX_SINGLE_INVALIDATIONS {
        all_op();
    } else {
        (first..end).for_each(page_op);
    }
    barrier::dsb(barrier::ISH);
}

/// Invalidates EL2 stage-1 TLB entries for `[va, va + size)` on all CPUs.
pub fn invalidate_el2_range(va: u64, size: u64) {
    invalidate_pages(
        va,
        size,
        // SAFETY: TLB maintenance only drops cached translations.
        |page| unsafe { asm!("tlbi vae2is, {}", in(reg) page, options(nostack)) },
        // SAFETY: as above, for every EL2 translation.
        || unsafe { asm!("tlbi alle2is", options(nostack)) },
    );
    barrier::isb(barrier::SY);
}

/// Invalidates stage-2 (and combined stage-1+2) TLB entries for `[ipa, ipa + size)` of the
/// VM whose VTTBR_EL2 value is `vttbr`, on all CPUs. Must run in the hypervisor (no guest
/// loaded on this CPU may observe the temporary VTTBR).
pub fn invalidate_stage2_range(vttbr: u64, ipa: u64, size: u64) {
    let saved = VTTBR_EL2.get();
    VTTBR_EL2.set(vttbr);
    barrier::isb(barrier::SY);
    invalidate_pages(
        ipa,
        size,
        // SAFETY: drops the stage-2 entries of one IPA page of this VMID.
        |page| unsafe { asm!("tlbi ipas2e1is, {}", in(reg) page, options(nostack)) },
        // SAFETY: drops every stage-1 and stage-2 translation of this VMID.
        || unsafe { asm!("tlbi vmalls12e1is", options(nostack)) },
    );
    // Combined entries are tagged by VA, not IPA: drop the VMID's stage-1 entries too.
    // SAFETY: TLB maintenance only drops cached translations of this VMID.
    unsafe { asm!("tlbi vmalle1is", "dsb ish", "isb", options(nostack)) };
    VTTBR_EL2.set(saved);
    barrier::isb(barrier::SY);
}

/// Drops this CPU's stage-1 translations of the VM whose VMID is in VTTBR_EL2 now. Needed
/// when another vCPU of the same VM ran here last: vCPUs of a VM share the VMID, but each
/// expects a TLB of its own, as it would have on its own CPU.
pub fn flush_local_guest_stage1() {
    // SAFETY: TLB maintenance only drops cached translations of the current VMID.
    unsafe { asm!("tlbi vmalle1", "dsb nsh", "isb", options(nostack)) };
}
