//! Console output through the VM's emulated PL011 (at the guest layout's UART address).

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, Ordering};
use hv_core::guest_dt::layout::UART_BASE;

static LOCK: AtomicBool = AtomicBool::new(false);

pub struct Uart;

impl Write for Uart {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                put(b'\r');
            }
            put(b);
        }
        Ok(())
    }
}

fn put(b: u8) {
    // SAFETY: the UART data register is device memory in the guest's identity map; a
    // store is the whole protocol (the transmit FIFO is never full in the emulation).
    unsafe { core::ptr::write_volatile(UART_BASE as *mut u32, b as u32) };
}

#[doc(hidden)]
pub fn print(args: fmt::Arguments) {
    // One line at a time across vCPUs.
    while LOCK.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
        core::hint::spin_loop();
    }
    let _ = Uart.write_fmt(args);
    LOCK.store(false, Ordering::Release);
}

#[macro_export]
macro_rules! println {
    () => { $crate::console::print(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::console::print(format_args!("{}\n", format_args!($($arg)*))) };
}
