//! FP/SIMD and SVE registers of guests, switched lazily (vm/fp.rs decides when): CPTR_EL2
//! traps guest FP/SIMD (TFP) and SVE (TZ, also ZCR_EL1) accesses until the vCPU's registers
//! are in the CPU. The hypervisor itself never uses them (it is built soft-float), so the
//! registers of the last vCPU that used them stay in the CPU across other vCPUs' residencies.

use super::context::FpState;
use aarch64_cpu::registers::{Readable, Writeable, CPTR_EL2, ID_AA64PFR0_EL1};
use core::arch::asm;
use alloc::vec::Vec;

const TZ: u64 = 1 << 8;
const TFP: u64 = 1 << 10;

extern "C" {
    fn fp_state_save(state: *mut FpState);
    fn fp_state_restore(state: *const FpState);
    fn sve_state_save(z: *mut u8, p: *mut u8, ffr: *mut u8);
    fn sve_state_restore(z: *const u8, p: *const u8, ffr: *const u8);
    fn sve_vl_bytes() -> u64;
}

/// A vCPU's SVE registers at its VM's vector length.
#[derive(Clone, Debug)]
pub struct SveState {
    /// Z0-Z31 (`vl` bytes each), P0-P15 (`vl / 8` each), FFR (`vl / 8`).
    regs: Vec<u8>,
    /// Vector length in bytes.
    vl: usize,
    pub zcr_el1: u64,
}

impl SveState {
    pub fn new(vl: usize) -> SveState {
        SveState { regs: alloc::vec![0; 32 * vl + 17 * (vl / 8)], vl, zcr_el1: 0 }
    }

    fn areas(&mut self) -> (*mut u8, *mut u8, *mut u8) {
        let base = self.regs.as_mut_ptr();
        let vl = self.vl;
        // SAFETY: offsets within `regs`, sized for 32 vectors and 17 predicates of `vl`.
        unsafe { (base, base.add(32 * vl), base.add(32 * vl + 16 * (vl / 8))) }
    }
}

// ZCR_EL1 and ZCR_EL2 (not in aarch64-cpu 10), by encoding; used only inside `with_access`.
fn set_zcr_el2(v: u64) {
    // SAFETY: the vector length EL2 and below may use; SVE is not trapped here.
    unsafe { asm!("msr S3_4_C1_C2_0, {}", "isb", in(reg) v, options(nostack)) };
}

fn zcr_el1() -> u64 {
    let v: u64;
    // SAFETY: reading the guest's vector-length choice.
    unsafe { asm!("mrs {}, S3_0_C1_C2_0", out(reg) v, options(nostack)) };
    v
}

fn set_zcr_el1(v: u64) {
    // SAFETY: the loaded guest's own vector-length choice (capped by ZCR_EL2).
    unsafe { asm!("msr S3_0_C1_C2_0, {}", in(reg) v, options(nostack)) };
}

/// The CPU implements SVE.
pub fn sve_available() -> bool {
    (ID_AA64PFR0_EL1.get() >> 32) & 0xf != 0
}

/// ZCR_EL2.LEN for a vector length of `vl` bytes.
fn len(vl: usize) -> u64 {
    (vl as u64 / 16).saturating_sub(1)
}

/// The longest vector length (bytes) the CPU gives EL2, hence guests.
pub fn max_vl_bytes() -> usize {
    if !sve_available() {
        return 0;
    }
    with_access(|| {
        set_zcr_el2(0x1ff);
        // SAFETY: SVE is implemented and not trapped inside `with_access`.
        unsafe { sve_vl_bytes() as usize }
    })
}

/// Runs `f` with FP/SIMD and SVE usable at EL2, then puts CPTR_EL2 back.
fn with_access<T>(f: impl FnOnce() -> T) -> T {
    let cptr = CPTR_EL2.get();
    CPTR_EL2.set(cptr & !(TFP | TZ));
    aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);
    let r = f();
    CPTR_EL2.set(cptr);
    aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);
    r
}

/// Which guest accesses trap: FP/SIMD (and SVE) while `fp`, SVE alone while `sve`.
pub fn trap_guest(fp: bool, sve: bool) {
    let mut cptr = CPTR_EL2.get() & !(TFP | TZ);
    if fp {
        cptr |= TFP;
    }
    if sve || fp {
        cptr |= TZ;
    }
    if cptr != CPTR_EL2.get() {
        CPTR_EL2.set(cptr);
        aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);
    }
}

/// Saves the FP/SIMD registers (and SVE ones, if given) from the CPU.
pub fn save(fp: &mut FpState, sve: Option<&mut SveState>) {
    with_access(|| {
        // SAFETY: FP/SIMD accessible here; the structure has context.S's layout.
        unsafe { fp_state_save(fp) };
        if let Some(s) = sve {
            set_zcr_el2(len(s.vl));
            s.zcr_el1 = zcr_el1();
            let (z, p, ffr) = s.areas();
            // SAFETY: SVE accessible here at the state's vector length; the areas are
            // sized for it.
            unsafe { sve_state_save(z, p, ffr) };
        }
    })
}

/// Loads the FP/SIMD registers (and SVE ones, if given; ZCR_EL2 is left at their vector
/// length, the VM's) into the CPU.
pub fn restore(fp: &FpState, sve: Option<&mut SveState>) {
    with_access(|| {
        // SAFETY: as in `save`.
        unsafe { fp_state_restore(fp) };
        if let Some(s) = sve {
            set_zcr_el2(len(s.vl));
            set_zcr_el1(s.zcr_el1);
            let (z, p, ffr) = s.areas();
            // SAFETY: as in `save`.
            unsafe { sve_state_restore(z, p, ffr) };
        }
    })
}
