//! The seam between trapped guest accesses and the device models behind them: a device
//! model is reached by offset from its base, with any offset and size a guest may try.

/// A device model reached by trapped loads and stores. Offsets are from the device's base;
/// values are zero-extended to 64 bits. Device models must accept any offset and size.
pub trait MmioDevice {
    fn read(&self, offset: u64, size: u8) -> u64;
    fn write(&self, offset: u64, size: u8, value: u64);
}
