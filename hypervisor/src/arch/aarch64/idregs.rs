//! Reading the CPU's ID registers by encoding (idregs.S), for the guest view in hv-core.

use hv_core::idregs::{group3_index, is_id_group3};
use hv_core::sysreg::SysReg;

extern "C" {
    fn read_id_group3(index: usize) -> u64;
}

/// The host's value of ID group-3 register `r`, or None if `r` is not one.
pub fn read(r: SysReg) -> Option<u64> {
    if !is_id_group3(r) {
        return None;
    }
    // SAFETY: the index is in 0..56 (checked above), the table's size; reading an ID
    // register has no side effects, and unallocated ones in this space read as zero.
    Some(unsafe { read_id_group3(group3_index(r)) })
}
