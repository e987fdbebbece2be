//! The guest's ramoops region (the reserved-memory node below its device tree), written the
//! way Linux's ramoops writes it, for the tests of its keeping on the pstore disk.

/// Puts a persistent_ram buffer (signature "DBGC", start 0, size) holding `text` at `at`.
pub fn put_record(at: u64, text: &[u8]) {
    let mut header = [0u8; 12];
    header[0..4].copy_from_slice(&0x4347_4244u32.to_le_bytes());
    header[8..12].copy_from_slice(&(text.len() as u32).to_le_bytes());
    for (i, b) in header.iter().chain(text).enumerate() {
        // SAFETY: the ramoops region is this guest's RAM (identity-mapped), which the test
        // programs use for nothing else.
        unsafe { core::ptr::write_volatile((at + i as u64) as *mut u8, *b) };
    }
}
