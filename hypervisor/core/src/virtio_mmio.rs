//! The virtio-mmio transport as guests see it in their machine's slots (virtio 1.2 section
//! 4.2.2; QEMU's virt machine has 32 of them). For now every slot is empty, answered as
//! QEMU answers an empty transport: magic, version and vendor ID, everything else zero,
//! writes ignored, so that a driver probing the slots finds "no device" (DeviceID 0).

/// Register offsets from a transport's base.
pub mod reg {
    pub const MAGIC: u64 = 0x000;
    pub const VERSION: u64 = 0x004;
    pub const DEVICE_ID: u64 = 0x008;
    pub const VENDOR_ID: u64 = 0x00c;
}

/// "virt", little-endian.
pub const MAGIC: u32 = 0x7472_6976;
/// QEMU's vendor ID ("QEMU").
pub const VENDOR_QEMU: u32 = 0x554d_4551;
/// The legacy transport (version 1), what QEMU's virt machine shows by default.
pub const VERSION_LEGACY: u32 = 1;

/// A read of `size` bytes at `offset` of an empty transport.
pub fn empty_slot_read(offset: u64, size: u8) -> u64 {
    let value = match offset {
        reg::MAGIC => MAGIC,
        reg::VERSION => VERSION_LEGACY,
        reg::VENDOR_ID => VENDOR_QEMU,
        _ => 0,
    } as u64;
    if size >= 8 {
        value
    } else {
        value & ((1u64 << (8 * size as u32)) - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_slot_says_virtio_but_no_device() {
        assert_eq!(empty_slot_read(reg::MAGIC, 4), 0x7472_6976);
        assert_eq!(empty_slot_read(reg::VERSION, 4), 1);
        assert_eq!(empty_slot_read(reg::DEVICE_ID, 4), 0);
        assert_eq!(empty_slot_read(reg::VENDOR_ID, 4), 0x554d_4551);
        assert_eq!(empty_slot_read(0x070, 4), 0, "Status");
        assert_eq!(empty_slot_read(reg::MAGIC, 1), 0x76, "a byte read sees the low byte");
        assert_eq!(empty_slot_read(0x1ff, 1), 0);
    }
}
