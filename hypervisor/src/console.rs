//! The hypervisor's console: the host PL011, the `log` back end with its
//! `[time level cpuN vmM]` prefix, guest console lines, a lock-free writer for panics, the
//! tail of everything printed (which the crash records keep on disk), and terminal input,
//! queued for the VM that has the focus (the VM layer drains the queue).

use crate::drivers::pl011::Pl011;
use crate::percpu::{this_cpu, NO_VM};
use alloc::collections::VecDeque;
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use hv_core::byte_ring::ByteRing;
use hv_core::cmdline::LogLevel;
use hv_core::console_input::{InputParser, Key};
use spin::{Mutex, MutexGuard, Once};

static UART: Once<Pl011> = Once::new();
/// Serializes whole lines from different CPUs.
static LINE_LOCK: Mutex<()> = Mutex::new(());

/// Starts console output on the PL011 at `base` (mapped as device memory).
pub fn init(base: u64) {
    // SAFETY: `base` comes from the host device tree's stdout UART, which the boot and
    // final EL2 tables map as device memory; only this module writes to it.
    UART.call_once(|| unsafe { Pl011::new(base) });
}

/// The VM that gets terminal input.
static FOCUS: AtomicUsize = AtomicUsize::new(0);
/// Terminal input not yet taken by the VM layer: (VM, byte).
static INPUT: Mutex<InputQueue> = Mutex::new(InputQueue { parser: InputParser::new(), bytes: VecDeque::new(), dropped: 0 });
/// Input the VMs did not take keeps at most this much (a guest that never reads its UART
/// must not grow the hypervisor's heap).
const INPUT_MAX: usize = 4096;

struct InputQueue {
    parser: InputParser,
    bytes: VecDeque<(usize, u8)>,
    dropped: u64,
}

/// Turns on terminal input: the UART interrupts this CPU (`intid` from the device tree).
pub fn start_input(intid: u32) {
    if let Some(u) = UART.get() {
        u.enable_rx_interrupt();
        crate::drivers::gicv3::route_uart_here(intid);
    }
}

/// Reads what the terminal sent into the input queue, each byte for the VM that has the
/// focus; Ctrl-] then a digit moves the focus to another VM.
pub fn input() {
    let Some(u) = UART.get() else { return };
    let mut q = INPUT.lock();
    while let Some(b) = u.get_byte() {
        match q.parser.feed(b) {
            Key::Byte(b) if q.bytes.len() < INPUT_MAX => q.bytes.push_back((FOCUS.load(Ordering::Relaxed), b)),
            Key::Byte(_) => q.dropped += 1,
            Key::Focus(vm) => {
                FOCUS.store(vm, Ordering::Relaxed);
                log::info!("console input now goes to VM {vm}");
            }
            Key::None => {}
        }
    }
}

/// Hands the queued input over, in order: `deliver(vm, bytes)` for each run of bytes for
/// one VM.
pub fn drain_input(deliver: &mut dyn FnMut(usize, &[u8])) {
    let mut buf = [0u8; 64];
    loop {
        let (vm, n, dropped) = {
            let mut q = INPUT.lock();
            let Some(&(vm, _)) = q.bytes.front() else { break };
            let mut n = 0;
            while n < buf.len() {
                match q.bytes.front() {
                    Some(&(v, b)) if v == vm => {
                        buf[n] = b;
                        n += 1;
                        q.bytes.pop_front();
                    }
                    _ => break,
                }
            }
            (vm, n, core::mem::take(&mut q.dropped))
        };
        if dropped > 0 {
            log::warn!("console input: {dropped} byte(s) dropped (no VM took them)");
        }
        log::trace!("console input: {n} byte(s) for VM {vm}");
        deliver(vm, &buf[..n]);
    }
}

struct RawUart;

impl Write for RawUart {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        push_tail(s.as_bytes());
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

/// `PanicWriter` as a plain function (the sink of the EL2 fault report).
pub fn panic_write(s: &str) {
    let _ = RawUart.write_str(s);
}

/// The console's last bytes kept in memory (the crash records' console zone holds them).
pub const TAIL_MAX: usize = 64 << 10;
static TAIL: Mutex<ByteRing<TAIL_MAX>> = Mutex::new(ByteRing::new());
static TAIL_ENABLED: AtomicBool = AtomicBool::new(true);
/// The tail changed since `take_tail_changed` last said so.
static TAIL_CHANGED: AtomicBool = AtomicBool::new(false);

/// Adds printed bytes to the tail. Never waits: a line that finds the tail busy (another
/// CPU's line, or a panic) is left out of it.
fn push_tail(bytes: &[u8]) {
    if TAIL_ENABLED.load(Ordering::Relaxed) {
        if let Some(mut t) = TAIL.try_lock() {
            t.push(bytes);
            TAIL_CHANGED.store(true, Ordering::Relaxed);
        }
    }
}

/// Whether the tail changed since `take_tail_changed` last said so.
pub fn tail_changed() -> bool {
    TAIL_CHANGED.load(Ordering::Relaxed)
}

/// Whether the tail changed, and forget it.
pub fn take_tail_changed() -> bool {
    TAIL_CHANGED.swap(false, Ordering::Relaxed)
}

/// Calls `f` with the tail's last `max` bytes, oldest first, in two parts.
pub fn with_tail<R>(max: usize, f: impl FnOnce((&[u8], &[u8])) -> R) -> R {
    f(TAIL.lock().last(max))
}

/// The panic path, once the other CPUs are stopped: nothing is added to the tail any more,
/// and it is taken even if a stopped CPU (or this one) held its lock.
pub fn freeze_tail() -> Option<MutexGuard<'static, ByteRing<TAIL_MAX>>> {
    TAIL_ENABLED.store(false, Ordering::Relaxed);
    if TAIL.is_locked() {
        // SAFETY: the other CPUs are stopped; a holder on this CPU was interrupted by the
        // panic and never runs again. From now on the tail is only read.
        unsafe { TAIL.force_unlock() };
    }
    TAIL.try_lock()
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
        push_tail(clean);
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
