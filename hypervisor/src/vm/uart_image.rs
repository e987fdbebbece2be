//! The UART's registers as the guest reads them, in a read-only page of its stage-2 while
//! no input waits (mm::guest::GuestMemory::image): Linux reads the flag register before
//! every byte it prints, and those reads are loads from memory then, not exits. A PL011's
//! only read with an effect is the data register's, which takes a byte of input: while
//! input waits the page is unmapped and every access traps, as before. Writes always trap
//! (a fault on the page's permissions), and one that changes what reads return (all but the
//! data register's) rewrites the image.

use super::Vm;
use hv_core::guest_dt::layout;
use spin::Mutex;

pub struct UartImage {
    /// The image's host frame (0: none, every access traps).
    frame: u64,
    /// One update at a time: each looks at the UART's state under it, so the last update
    /// after a change leaves the page as the state says.
    lock: Mutex<()>,
}

impl UartImage {
    pub fn new(frame: Option<u64>) -> UartImage {
        UartImage { frame: frame.unwrap_or(0), lock: Mutex::new(()) }
    }
}

impl Vm {
    /// Brings the UART's image in step with its state: rewritten and mapped while reads have
    /// no effects, unmapped while input waits.
    pub fn sync_uart_image(&self) {
        let frame = self.uart_image.frame;
        if frame == 0 {
            return;
        }
        let _one = self.uart_image.lock.lock();
        let quiet = self.uart.image(&mut |offset, value| {
            // SAFETY: a word of the image's frame (allocated for it, identity-mapped, freed
            // only at the VM's teardown), which no Rust reference points into.
            unsafe { crate::arch::store_for_guest(frame + offset, value) }
        });
        self.mem.show_image(layout::UART_BASE, quiet);
    }
}
