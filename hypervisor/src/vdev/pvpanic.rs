//! The pvpanic device each VM sees (QEMU's "qemu,pvpanic-mmio", which Linux's pvpanic-mmio
//! driver and the test guests use): reading the register gives the events supported,
//! writing one reports it. A reported panic stops the VM as crashed and is recorded in
//! pstore with the VM's last console lines.

use hv_core::mmio::MmioDevice;
use core::sync::atomic::{AtomicU8, Ordering};
use hv_core::guest_dt::pvpanic;

pub struct PvPanic {
    /// Events reported and not yet acted on.
    pending: AtomicU8,
}

impl PvPanic {
    pub const fn new() -> PvPanic {
        PvPanic { pending: AtomicU8::new(0) }
    }

    /// The events reported since the last call.
    pub fn take(&self) -> u8 {
        self.pending.swap(0, Ordering::AcqRel)
    }
}

impl MmioDevice for PvPanic {
    fn read(&self, offset: u64, _size: u8) -> u64 {
        if offset == 0 { pvpanic::SUPPORTED as u64 } else { 0 }
    }

    fn write(&self, offset: u64, _size: u8, value: u64) {
        if offset == 0 {
            self.pending.fetch_or(value as u8 & pvpanic::SUPPORTED, Ordering::AcqRel);
        }
    }
}
