//! The hypervisor's console: the host PL011, the `log` back end with its
//! `[time level cpuN vmM]` prefix, guest console lines, and a lock-free writer for panics.

use crate::dev::pl011::Pl011;
use crate::percpu::{this_cpu, NO_VM};
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use hv_core::cmdline::LogLevel;
use spin::{Mutex, Once};

static UART: Once<Pl011> = Once::new();
/// Serializes whole lines from different CPUs.
static LINE_LOCK: Mutex<()> = Mutex::new(());

/// Starts console output on the PL011 at `base` (mapped as device memory).
pub fn init(base: u64) {
    // SAFETY: `base` comes from the host device tree's stdout UART, which the boot and
    // final EL2 tables map as device memory; only this module writes to it.
    UART.call_once(|| unsafe { Pl011::new(base) });
}

/// The VM that gets terminal input, and whether the escape key (Ctrl-]) came last.
static FOCUS: AtomicUsize = AtomicUsize::new(0);
static ESCAPE: AtomicBool = AtomicBool::new(false);
/// Ctrl-]: the next key, a digit, moves the input to that VM.
const ESCAPE_KEY: u8 = 0x1d;

/// Turns on terminal input: the UART interrupts this CPU (`intid` from the device tree).
pub fn start_input(intid: u32) {
    if let Some(u) = UART.get() {
        u.enable_rx_interrupt();
        crate::dev::gicv3::route_uart_here(intid);
    }
}

/// Reads what the terminal sent and hands it to the focused VM; Ctrl-] then a digit moves
/// the focus to another VM.
pub fn input() {
    let Some(u) = UART.get() else { return };
    let mut buf = [0u8; 64];
    let mut n = 0;
    while let Some(b) = u.get_byte() {
        if ESCAPE.swap(false, Ordering::Relaxed) {
            if b.is_ascii_digit() {
                let vm = (b - b'0') as usize;
                deliver(&buf[..n]);
                n = 0;
                FOCUS.store(vm, Ordering::Relaxed);
                log::info!("console input now goes to VM {vm}");
                continue;
            }
        } else if b == ESCAPE_KEY {
            ESCAPE.store(true, Ordering::Relaxed);
            continue;
        }
        buf[n] = b;
        n += 1;
        if n == buf.len() {
            deliver(&buf);
            n = 0;
        }
    }
    deliver(&buf[..n]);
}

fn deliver(bytes: &[u8]) {
    log::trace!("console input: {} byte(s)", bytes.len());
    if !bytes.is_empty() && !crate::vm::console_input(FOCUS.load(Ordering::Relaxed), bytes) {
        log::warn!("console input for VM {}, which does not run: dropped", FOCUS.load(Ordering::Relaxed));
    }
}

struct RawUart;

impl Write for RawUart {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        crate::pstore::console_tail(s.as_bytes());
        if let Some(u) = UART.get() {
            for b in s.bytes() {
                if b == b'\n' {
                    u.put_byte(b'\r');
                }
                u.put_byte(b);
            }
        }
        Ok(())
    }
}

/// Writes without taking the line lock: for the panic path, where the lock may be held by
/// the CPU that panicked.
pub struct PanicWriter;

impl Write for PanicWriter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        RawUart.write_str(s)
    }
}

fn timestamp() -> (u64, u64) {
    let (freq, count) = crate::arch::cpu::counter();
    let freq = freq.max(1);
    (count / freq, (count % freq) * 1_000_000 / freq)
}

/// Prints one line of a guest's console output, prefixed with the VM.
pub fn guest_line(vm: usize, line: &[u8]) {
    let _guard = LINE_LOCK.lock();
    let mut w = RawUart;
    let _ = write!(w, "vm{vm}| ");
    // Control characters never reach the terminal (or the tail), except tab.
    let mut clean = [0u8; 256];
    for chunk in line.chunks(clean.len()) {
        for (c, &b) in clean.iter_mut().zip(chunk) {
            *c = if b == b'\t' || (0x20..0x7f).contains(&b) { b } else { b'.' };
        }
        let clean = &clean[..chunk.len()];
        if let Some(u) = UART.get() {
            clean.iter().for_each(|&b| u.put_byte(b));
        }
        crate::pstore::console_tail(clean);
    }
    let _ = w.write_str("\n");
}

struct Logger;

impl log::Log for Logger {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }

    fn log(&self, record: &log::Record) {
        let level = match record.level() {
            log::Level::Error => 'E',
            log::Level::Warn => 'W',
            log::Level::Info => 'I',
            log::Level::Debug => 'D',
            log::Level::Trace => 'T',
        };
        let (s, us) = timestamp();
        let cpu = this_cpu();
        let vm = cpu.current_vm.load(Ordering::Relaxed);
        let _guard = LINE_LOCK.lock();
        let mut w = RawUart;
        let _ = if vm == NO_VM {
            write!(w, "[{s:>4}.{us:06} {level} cpu{} hv ] ", cpu.index())
        } else {
            write!(w, "[{s:>4}.{us:06} {level} cpu{} vm{vm}] ", cpu.index())
        };
        let _ = writeln!(w, "{}", record.args());
    }

    fn flush(&self) {}
}

static LOGGER: Logger = Logger;

pub fn init_logging(level: LogLevel) {
    let _ = log::set_logger(&LOGGER);
    set_level(level);
}

pub fn set_level(level: LogLevel) {
    log::set_max_level(match level {
        LogLevel::Error => log::LevelFilter::Error,
        LogLevel::Warn => log::LevelFilter::Warn,
        LogLevel::Info => log::LevelFilter::Info,
        LogLevel::Debug => log::LevelFilter::Debug,
        LogLevel::Trace => log::LevelFilter::Trace,
    });
}
