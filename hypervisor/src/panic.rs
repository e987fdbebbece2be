//! The hypervisor's panic path: report on the console without taking locks, then stop the
//! machine with a distinct exit status.

use crate::arch::firmware;
use crate::console::PanicWriter;
use crate::percpu::this_cpu;
use crate::vm::status;
use core::fmt::Write;
use core::panic::PanicInfo;
use core::sync::atomic::{AtomicBool, Ordering};

static PANICKING: AtomicBool = AtomicBool::new(false);

#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    if PANICKING.swap(true, Ordering::SeqCst) {
        // A panic while reporting a panic (or on a second CPU at once): just stop.
        firmware::exit(status::HYPERVISOR_PANIC);
    }
    let _ = writeln!(PanicWriter, "\n*** HYPERVISOR PANIC on cpu{}: {info}", this_cpu().index());
    firmware::exit(status::HYPERVISOR_PANIC)
}
