//! The hypervisor's panic path: report on the console without taking locks, stop the other
//! CPUs, record the panic on the pstore disk, then stop the machine with a distinct exit
//! status. EL2 exceptions are reported first (arch's fault report, written to the console's
//! lock-free writer that `init` hands down) and then end here.

use crate::arch::{firmware, stacks};
use crate::console::PanicWriter;
use crate::percpu::{self, this_cpu};
use core::fmt::Write;
use core::sync::atomic::Ordering as AtomicOrdering;
use hv_core::outcome::status;
use core::panic::PanicInfo;
use core::sync::atomic::{AtomicBool, Ordering};

static PANICKING: AtomicBool = AtomicBool::new(false);
/// Frames the backtrace follows at most.
const MAX_FRAMES: usize = 16;
/// How long the other CPUs get to stop.
const STOP_TIMEOUT_MS: u64 = 50;

/// Where arch reports exceptions taken at EL2: the console, without its locks.
pub fn init() {
    crate::arch::exception::set_fault_sink(crate::console::panic_write);
}

/// Stops every other online CPU (they park at the kick, wherever they were, guest or
/// hypervisor), waiting at most `timeout_ms` for them. Returns how many parked.
fn stop_others(timeout_ms: u64) -> usize {
    percpu::begin_stopping_others();
    let mut others = 0;
    for c in percpu::others_online() {
        others += 1;
        if c.kickable.load(AtomicOrdering::Acquire) {
            crate::drivers::gicv3::kick(c.mpidr.load(AtomicOrdering::Relaxed));
        }
    }
    let (freq, start) = crate::arch::cpu::counter();
    while percpu::parked() < others && crate::arch::cpu::counter().1 - start < freq / 1000 * timeout_ms {
        core::hint::spin_loop();
    }
    percpu::parked()
}

#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    if PANICKING.swap(true, Ordering::SeqCst) {
        // A panic while reporting a panic (or on a second CPU at once): just stop.
        firmware::exit(status::HYPERVISOR_PANIC);
    }
    let cpu = this_cpu().index();
    let _ = writeln!(PanicWriter, "\n*** HYPERVISOR PANIC on cpu{cpu}: {info}");
    let mut frames = [0u64; MAX_FRAMES];
    let n = backtrace(&mut frames);
    let _ = write!(PanicWriter, "backtrace:");
    for pc in &frames[..n] {
        let _ = write!(PanicWriter, " {pc:#x}");
    }
    let _ = writeln!(PanicWriter);
    let parked = stop_others(STOP_TIMEOUT_MS);
    let message = info.message();
    match crate::pstore::record_panic(cpu, &message, &frames[..n]) {
        Some(cost) => {
            let _ = writeln!(
                PanicWriter,
                "pstore: panic recorded ({} requests, {} bytes, {} us; {parked} other CPU(s) stopped)",
                cost.requests, cost.bytes, cost.micros
            );
        }
        None => {
            let _ = writeln!(PanicWriter, "pstore: panic not recorded (no pstore disk, or it failed)");
        }
    }
    // The guests' own crash records too: their ramoops regions, as when a VM stops.
    crate::vm::save_ramoops_at_panic(&mut |vm, pages, generation| {
        let _ = writeln!(PanicWriter, "pstore: VM {vm}'s ramoops region saved ({pages} pages, generation {generation})");
    });
    firmware::exit(status::HYPERVISOR_PANIC)
}

/// Return addresses from the frame records (x29 chain), stopping at anything that does not
/// lie on a hypervisor stack. Returns how many were found.
fn backtrace(out: &mut [u64]) -> usize {
    let mut fp = crate::arch::frame_pointer();
    let mut n = 0;
    while n < out.len() && fp % 16 == 0 && stacks::on_a_stack(fp, 16) {
        // SAFETY: [fp, fp + 16) is inside a hypervisor stack (checked just above), which is
        // mapped and readable; a frame record is two words: the caller's fp, then lr.
        let (next, lr) = unsafe { ((fp as *const u64).read_volatile(), (fp as *const u64).add(1).read_volatile()) };
        // The return address may carry a PAC signature in its upper bits.
        let pc = crate::arch::strip_pac(lr);
        if pc == 0 {
            break;
        }
        out[n] = pc;
        n += 1;
        if next <= fp {
            break; // frames grow towards higher addresses; anything else is the end
        }
        fp = next;
    }
    n
}
