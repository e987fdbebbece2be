//! The hypervisor's own return-address signing key (made and installed by pauth.S before
//! any Rust runs; exception.S puts it back after a guest owned the key registers).

extern "C" {
    fn hyp_pac_corrupt_key();
    static hyp_pac_key_source: u64;
}

/// Where the key came from, for the boot log.
pub fn key_source() -> &'static str {
    // SAFETY: written once by the boot CPU before Rust started, read-only afterwards.
    match unsafe { core::ptr::read_volatile(&raw const hyp_pac_key_source) } {
        1 => "signed with an APIA key from RNDR",
        2 => "signed with an APIA key from the counter (no FEAT_RNG: weak)",
        _ => "not signed (no FEAT_PAuth address authentication)",
    }
}

/// Changes this CPU's APIA key (HV_DEBUG_FAULT PacKey): the caller's signed return
/// address stops authenticating, which must end in a loud EL2 fault.
#[inline(never)]
pub fn corrupt_own_key() {
    // SAFETY: none in the usual sense: the hypervisor is meant to crash; it is only reached
    // with debug_faults=on.
    unsafe { hyp_pac_corrupt_key() }
}
