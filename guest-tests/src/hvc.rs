//! Hypercalls: SMCCC over HVC #0 (and SMC #0, which the hypervisor traps).

use core::arch::asm;
use hv_core::hypercall::id;

/// One SMCCC call with `insn` (hvc #0 or smc #0); returns x0..x3.
macro_rules! smccc_call {
    ($insn:literal, $x0:expr, $x1:expr, $x2:expr, $x3:expr) => {{
        let (a, b, c, d): (u64, u64, u64, u64);
        // SAFETY: an SMCCC call; per SMCCC 1.1 only x0..x17 may change.
        unsafe {
            asm!($insn, inout("x0") $x0 => a, inout("x1") $x1 => b, inout("x2") $x2 => c, inout("x3") $x3 => d,
                out("x4") _, out("x5") _, out("x6") _, out("x7") _, out("x8") _, out("x9") _,
                out("x10") _, out("x11") _, out("x12") _, out("x13") _, out("x14") _, out("x15") _,
                out("x16") _, out("x17") _, options(nostack));
        }
        [a, b, c, d]
    }};
}

/// An SMCCC call over HVC; returns x0..x3.
pub fn hvc(x0: u64, x1: u64, x2: u64, x3: u64) -> [u64; 4] {
    smccc_call!("hvc #0", x0, x1, x2, x3)
}

/// The same over SMC (trapped by the hypervisor through HCR_EL2.TSC).
pub fn smc(x0: u64, x1: u64, x2: u64, x3: u64) -> [u64; 4] {
    smccc_call!("smc #0", x0, x1, x2, x3)
}

/// x0 of a call as a signed SMCCC return value.
pub fn call(function: u32, a1: u64, a2: u64, a3: u64) -> i64 {
    hvc(function as u64, a1, a2, a3)[0] as i64
}

pub fn hv_version() -> u64 {
    hvc(id::HV_VERSION as u64, 0, 0, 0)[0]
}

pub fn console_write(bytes: &[u8]) -> i64 {
    call(id::HV_CONSOLE_WRITE, bytes.as_ptr() as u64, bytes.len() as u64, 0)
}

/// Appends to this VM's persistent message ring (pmsg) on the pstore disk: bytes written,
/// or an error code.
pub fn pmsg_write(bytes: &[u8]) -> i64 {
    call(id::HV_PMSG_WRITE, bytes.as_ptr() as u64, bytes.len() as u64, 0)
}

pub fn test_verdict(code: u64) {
    call(id::HV_TEST_VERDICT, code, 0, 0);
}

pub fn counter(c: hv_core::hypercall::Counter) -> u64 {
    hvc(id::HV_COUNTER as u64, c as u64, 0, 0)[0]
}

/// Three counters read at one instant (one exit).
pub fn counters(c: [hv_core::hypercall::Counter; 3]) -> [u64; 3] {
    let r = hvc(id::HV_COUNTERS as u64, c[0] as u64, c[1] as u64, c[2] as u64);
    [r[1], r[2], r[3]]
}

/// Gives this vCPU's physical CPU to another vCPU waiting for it, if any.
pub fn yield_cpu() {
    call(id::HV_YIELD, 0, 0, 0);
}

/// Guest memory calls (HV_MEM_*): x0 as a signed result.
pub mod mem {
    use super::{call, hvc};
    use hv_core::hypercall::id;

    /// Bytes that were mapped, or an error code.
    pub fn unmap(ipa: u64, size: u64) -> i64 {
        call(id::HV_MEM_UNMAP, ipa, size, 0)
    }

    /// Bytes whose permissions changed, or an error code.
    pub fn protect(ipa: u64, size: u64, perm: u64) -> i64 {
        call(id::HV_MEM_PROTECT, ipa, size, perm)
    }

    /// (young pages or an error code, young bitmap of the first 64 pages, whether the
    /// hypervisor's own accesses made the range young).
    pub fn age(ipa: u64, size: u64, test_only: bool) -> (i64, u64, bool) {
        let r = hvc(id::HV_MEM_AGE as u64, ipa, size, test_only as u64);
        (r[0] as i64, r[1], r[2] != 0)
    }

    /// Pages reclaimed, or an error code.
    pub fn reclaim(ipa: u64, size: u64, passes: u64) -> i64 {
        call(id::HV_MEM_RECLAIM, ipa, size, passes)
    }

    /// The 8 bytes at `ipa` as the hypervisor reads them, or the error code.
    pub fn peek(ipa: u64) -> Result<u64, i64> {
        let r = hvc(id::HV_MEM_PEEK as u64, ipa, 0, 0);
        if r[0] == 0 { Ok(r[1]) } else { Err(r[0] as i64) }
    }

    /// Logs the stage-2 trace; the number of events so far.
    pub fn trace() -> i64 {
        call(id::HV_MEM_TRACE, 0, 0, 0)
    }
}
