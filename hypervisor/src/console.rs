//! The hypervisor's console: the host PL011, the `log` back end with its
//! `[time level cpuN vmM]` prefix, guest output, a lock-free writer for panics, the tail of
//! everything printed (which the crash records keep on disk), and terminal input, queued in
//! order for the VM layer to drain (bytes, serial breaks, Ctrl-] focus requests and
//! balloon commands).
//!
//! The VM with the input focus is a terminal's raw pass-through: its output goes out byte
//! for byte as it comes (prompts, echo, escape sequences), without a prefix. Every other
//! line (the log, other VMs' output as `vmN| ` lines) starts on a fresh line, and the focused
//! VM's partial line is shown again after it. `console_prefix=on` prefixes every VM's output.

use crate::drivers::pl011::{Pl011, Received};
use crate::percpu::{this_cpu, NO_VM};
use alloc::collections::VecDeque;
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use hv_core::byte_ring::ByteRing;
use hv_core::cmdline::LogLevel;
use hv_core::console_input::{without_control_sequences, Command, InputParser, Key};
use spin::{Mutex, MutexGuard, Once};

static UART: Once<Pl011> = Once::new();
/// Serializes whole lines from different CPUs, and holds what the focused VM printed since
/// its last newline.
static LINE_LOCK: Mutex<RawLine> = Mutex::new(RawLine { bytes: [0; RAW_LINE_MAX], len: 0, overflowed: false });
/// The part of a raw line kept to show again.
const RAW_LINE_MAX: usize = 512;
/// Every VM's output line-prefixed (`console_prefix=on`).
static PREFIX_ALWAYS: AtomicBool = AtomicBool::new(false);

/// The focused VM's output since its last newline.
struct RawLine {
    bytes: [u8; RAW_LINE_MAX],
    len: usize,
    /// Longer than the buffer: not shown again (only part of it could be).
    overflowed: bool,
}

impl RawLine {
    fn track(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if b == b'\n' {
                self.len = 0;
                self.overflowed = false;
            } else if self.len < RAW_LINE_MAX {
                self.bytes[self.len] = b;
                self.len += 1;
            } else {
                self.overflowed = true;
            }
        }
    }

    /// Mid-line: a line from elsewhere must start on a fresh line.
    fn open(&self) -> bool {
        self.len > 0 || self.overflowed
    }

    /// Before a line from elsewhere.
    fn leave(&self, u: Option<&Pl011>) {
        if let (true, Some(u)) = (self.open(), u) {
            u.put_byte(b'\r');
            u.put_byte(b'\n');
        }
    }

    /// After it: the partial line again, where the guest left its cursor (its text: a
    /// control sequence sent again could make the terminal answer again).
    fn restore(&self, u: Option<&Pl011>) {
        if let (false, Some(u)) = (self.overflowed, u) {
            without_control_sequences(&self.bytes[..self.len], &mut |b| u.put_byte(b));
        }
    }
}

/// `console_prefix=on`: every VM's output as prefixed lines.
pub fn set_prefix_always(on: bool) {
    PREFIX_ALWAYS.store(on, Ordering::Relaxed);
}

/// Whether VM `vm`'s output passes raw (it has the focus), rather than as prefixed lines.
pub fn is_raw(vm: usize) -> bool {
    !PREFIX_ALWAYS.load(Ordering::Relaxed) && FOCUS.load(Ordering::Relaxed) == vm
}

/// Output of the focused VM, as it comes.
pub fn guest_raw(bytes: &[u8]) {
    let mut raw = LINE_LOCK.lock();
    if let Some(u) = UART.get() {
        bytes.iter().for_each(|&b| u.put_byte(b));
    }
    raw.track(bytes);
    // The tail keeps text: newlines, tabs and printable characters.
    if let [b] = bytes {
        // A byte at a time (a guest's data-register writes): no copy.
        if kept_in_tail(*b) {
            push_tail(bytes);
        }
        return;
    }
    let mut clean = [0u8; 64];
    for chunk in bytes.chunks(clean.len()) {
        let n = chunk.iter().filter(|&&b| kept_in_tail(b)).zip(clean.iter_mut()).map(|(&b, c)| *c = b).count();
        push_tail(&clean[..n]);
    }
}

/// What of a VM's raw output the tail keeps: newlines, tabs and printable characters.
fn kept_in_tail(b: u8) -> bool {
    b == b'\n' || b == b'\t' || (0x20..0x7f).contains(&b)
}

/// VM `vm` just got the focus: the line it was printing (`partial`, as a prefixed line it
/// was not shown yet) is shown, so that a prompt waiting for input is seen.
pub fn guest_show_partial(vm: usize, partial: &[u8]) {
    if is_raw(vm) && !partial.is_empty() {
        let mut raw = LINE_LOCK.lock();
        if let Some(u) = UART.get() {
            without_control_sequences(partial, &mut |b| u.put_byte(b));
        }
        raw.track(partial);
    }
}

/// The focused VM's output ends (it stops, or loses the focus): a partial line is closed.
fn end_raw_line(raw: &mut RawLine) {
    raw.leave(UART.get());
    if raw.open() {
        push_tail(b"\n");
    }
    raw.len = 0;
    raw.overflowed = false;
}

/// VM `vm` stops: if its raw output left a partial line, it is closed.
pub fn guest_end(vm: usize) {
    if is_raw(vm) {
        end_raw_line(&mut LINE_LOCK.lock());
    }
}

/// The VM that gets terminal input (and whose output passes raw).
pub fn focus() -> usize {
    FOCUS.load(Ordering::Relaxed)
}

/// Moves the input focus to VM `vm` (the VM layer checks that it runs).
pub fn set_focus(vm: usize) {
    let mut raw = LINE_LOCK.lock();
    if FOCUS.swap(vm, Ordering::Relaxed) != vm {
        end_raw_line(&mut raw);
    }
}

/// Starts console output on the PL011 at `base` (mapped as device memory).
pub fn init(base: u64) {
    // SAFETY: `base` comes from the host device tree's stdout UART, which the boot and
    // final EL2 tables map as device memory; only this module writes to it.
    UART.call_once(|| unsafe { Pl011::new(base) });
}

/// The VM that gets terminal input.
static FOCUS: AtomicUsize = AtomicUsize::new(0);
/// Terminal input not yet taken by the VM layer, in order.
static INPUT: Mutex<InputQueue> = Mutex::new(InputQueue { parser: InputParser::new(), events: VecDeque::new(), dropped: 0 });
/// Input the VMs did not take keeps at most this much (a guest that never reads its UART
/// must not grow the hypervisor's heap).
const INPUT_MAX: usize = 4096;

struct InputQueue {
    parser: InputParser,
    events: VecDeque<Event>,
    dropped: u64,
}

#[derive(Clone, Copy)]
enum Event {
    Byte(u8),
    Break,
    Focus(usize),
    Command(Command),
}

/// Terminal input as the VM layer takes it, in the order it came.
pub enum Input<'a> {
    /// Bytes for the VM with the focus.
    Bytes(&'a [u8]),
    /// A serial break (QEMU's Ctrl-A b) for the VM with the focus.
    Break,
    /// Ctrl-] then a digit: the user asks for the focus to move to this VM.
    Focus(usize),
    /// Ctrl-] then `-`, `+` or `m`: for the VM with the focus.
    Command(Command),
}

/// Turns on terminal input: the UART interrupts this CPU (`intid` from the device tree).
pub fn start_input(intid: u32) {
    if let Some(u) = UART.get() {
        u.enable_rx_interrupt();
        crate::drivers::gicv3::route_uart_here(intid);
    }
}

/// Reads what the terminal sent into the input queue: bytes, breaks, Ctrl-] focus
/// requests and balloon commands.
pub fn input() {
    let Some(u) = UART.get() else { return };
    let mut q = INPUT.lock();
    while let Some(r) = u.get() {
        let event = match r {
            Received::Break => Some(Event::Break),
            Received::Byte(b) => match q.parser.feed(b) {
                Key::Byte(b) => Some(Event::Byte(b)),
                Key::Focus(vm) => Some(Event::Focus(vm)),
                Key::Command(c) => Some(Event::Command(c)),
                Key::None => None,
            },
        };
        match event {
            Some(e) if q.events.len() < INPUT_MAX => q.events.push_back(e),
            Some(_) => q.dropped += 1,
            None => {}
        }
    }
}

/// Input the focused VM had no room for waits in the queue (a UART's flow control: the
/// terminal's bytes are held, not dropped, until the guest reads some).
static INPUT_HELD: AtomicBool = AtomicBool::new(false);
/// One CPU hands input over at a time (the order must hold).
static DRAINING: Mutex<()> = Mutex::new(());

/// Whether input waits for the focused VM to make room (it reads its UART: deliver again).
pub fn input_held() -> bool {
    INPUT_HELD.load(Ordering::Acquire)
}

/// Hands the queued input over, in order (runs of bytes together). `deliver` returns how
/// many of the bytes it took (other input is always taken); what it did not take stays
/// first in the queue, and handing over stops until `input_held` says to try again.
pub fn drain_input(deliver: &mut dyn FnMut(Input) -> usize) {
    loop {
        let Some(one) = DRAINING.try_lock() else { return };
        let held = drain_some(deliver);
        INPUT_HELD.store(held, Ordering::Release);
        drop(one);
        // Input that came while this CPU held DRAINING found it taken: hand it over too.
        if held || INPUT.lock().events.is_empty() {
            return;
        }
    }
}

/// `drain_input` under DRAINING: whether bytes were held back.
fn drain_some(deliver: &mut dyn FnMut(Input) -> usize) -> bool {
    let mut buf = [0u8; 64];
    loop {
        let (first, n, dropped) = {
            let mut q = INPUT.lock();
            let Some(&first) = q.events.front() else { return false };
            let mut n = 0;
            if let Event::Byte(_) = first {
                // Only this CPU removes events (DRAINING): they stay until taken.
                for e in q.events.iter().take(buf.len()) {
                    let Event::Byte(b) = *e else { break };
                    buf[n] = b;
                    n += 1;
                }
            } else {
                q.events.pop_front();
            }
            (first, n, core::mem::take(&mut q.dropped))
        };
        if dropped > 0 {
            log::warn!("console input: {dropped} byte(s) dropped (no VM took them)");
        }
        match first {
            Event::Byte(_) => {
                let taken = deliver(Input::Bytes(&buf[..n])).min(n);
                let mut q = INPUT.lock();
                q.events.drain(..taken);
                if taken < n {
                    // Held, unless Ctrl-] input waits behind: that must not wait for a
                    // guest that may never read (the bytes before it are dropped).
                    let Some(at) = q.events.iter().position(|e| !matches!(e, Event::Byte(_))) else { return true };
                    q.events.drain(..at);
                    drop(q);
                    log::warn!("console input: {at} byte(s) the VM did not read dropped");
                }
            }
            Event::Break => {
                deliver(Input::Break);
            }
            Event::Focus(vm) => {
                deliver(Input::Focus(vm));
            }
            Event::Command(c) => {
                deliver(Input::Command(c));
            }
        }
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
    let raw = LINE_LOCK.lock();
    raw.leave(UART.get());
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
    raw.restore(UART.get());
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
        let raw = LINE_LOCK.lock();
        raw.leave(UART.get());
        let mut w = RawUart;
        let _ = if vm == NO_VM {
            write!(w, "[{s:>4}.{us:06} {level} cpu{} hv ] ", cpu.index())
        } else {
            write!(w, "[{s:>4}.{us:06} {level} cpu{} vm{vm}] ", cpu.index())
        };
        let _ = writeln!(w, "{}", record.args());
        raw.restore(UART.get());
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
