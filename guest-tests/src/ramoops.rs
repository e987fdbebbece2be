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

/// The text of the persistent_ram buffer at `at`, if there is one (its signature, and a
/// size within `max`).
pub fn record(at: u64, max: usize) -> Option<&'static [u8]> {
    // SAFETY: as in `put_record`; the region is only read here.
    let word = |o: u64| unsafe { core::ptr::read_volatile((at + o) as *const u32) };
    let size = word(8) as usize;
    (word(0) == 0x4347_4244 && size <= max).then(|| {
        // SAFETY: `size` bytes after the 12-byte header lie in the region (checked above).
        unsafe { core::slice::from_raw_parts((at + 12) as *const u8, size) }
    })
}
