//! The PL011 each VM sees: enough of the register file for Linux's amba-pl011 driver and
//! earlycon. Output is line-buffered and printed with the VM prefix; input comes from the
//! terminal when this VM has the console's focus. The transmit FIFO is always empty (output
//! never waits), so its interrupt is raised whenever it is unmasked; the receive interrupts
//! while input is waiting. `irq_line` is the level of the UART's SPI.

use crate::console;
use crate::vm::mmio::MmioDevice;
use core::sync::atomic::{AtomicBool, Ordering};
use spin::Mutex;

const DR: u64 = 0x000;
const RSR: u64 = 0x004;
const FR: u64 = 0x018;
const IBRD: u64 = 0x024;
const FBRD: u64 = 0x028;
const LCR_H: u64 = 0x02c;
const CR: u64 = 0x030;
const IFLS: u64 = 0x034;
const IMSC: u64 = 0x038;
const RIS: u64 = 0x03c;
const MIS: u64 = 0x040;
const DMACR: u64 = 0x048;
/// PrimeCell peripheral and cell identification registers (0xfe0..0xffc).
const ID_BASE: u64 = 0xfe0;
const PL011_IDS: [u8; 8] = [0x11, 0x10, 0x14, 0x00, 0x0d, 0xf0, 0x05, 0xb1];

const FR_RXFE: u64 = 1 << 4;
const FR_TXFE: u64 = 1 << 7;
/// Interrupt bits (RIS, MIS, IMSC, ICR): receive, transmit, receive timeout.
const INT_RX: u32 = 1 << 4;
const INT_TX: u32 = 1 << 5;
const INT_RT: u32 = 1 << 6;
/// Input kept for the guest before more is dropped.
const RX_MAX: usize = 256;
/// Longest line kept before it is printed anyway.
const LINE_MAX: usize = 240;
/// The console's last bytes kept for crash records.
const TAIL_MAX: usize = 4096;

struct State {
    line: [u8; LINE_MAX],
    len: usize,
    tail: [u8; TAIL_MAX],
    tail_head: usize,
    tail_full: bool,
    rx: [u8; RX_MAX],
    rx_head: usize,
    rx_len: usize,
    ibrd: u32,
    fbrd: u32,
    lcr_h: u32,
    cr: u32,
    ifls: u32,
    imsc: u32,
    dmacr: u32,
}

pub struct VUart {
    vm: usize,
    state: Mutex<State>,
    /// The guest kernel's panic report has ended on this console (Linux prints "---[ end
    /// Kernel panic" before it stops for good, unless it reboots instead).
    panic_ended: AtomicBool,
    /// Its "Kernel panic - not syncing" line came (after the oops report, if any).
    panic_started: AtomicBool,
}

/// What Linux prints when it panics, and when its panic report is complete.
const PANIC_START: &[u8] = b"Kernel panic - not syncing";
const PANIC_END: &[u8] = b"---[ end Kernel panic";

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

impl VUart {
    pub fn new(vm: usize) -> VUart {
        VUart {
            vm,
            state: Mutex::new(State {
                line: [0; LINE_MAX],
                len: 0,
                tail: [0; TAIL_MAX],
                tail_head: 0,
                tail_full: false,
                rx: [0; RX_MAX],
                rx_head: 0,
                rx_len: 0,
                ibrd: 0,
                fbrd: 0,
                lcr_h: 0,
                cr: 0x300, // TXE | RXE, as after reset
                ifls: 0x12,
                imsc: 0,
                dmacr: 0,
            }),
            panic_ended: AtomicBool::new(false),
            panic_started: AtomicBool::new(false),
        }
    }

    /// Prints a complete line, watching for a guest kernel panic.
    fn line(&self, s: &mut State, len: usize) {
        let line = &s.line[..len];
        console::guest_line(self.vm, line);
        for &b in line.iter().chain(b"\n") {
            s.tail[s.tail_head] = b;
            s.tail_head = (s.tail_head + 1) % TAIL_MAX;
            s.tail_full |= s.tail_head == 0;
        }
        let line = &s.line[..len];
        if contains(line, PANIC_END) {
            self.panic_ended.store(true, Ordering::Release);
        } else if contains(line, PANIC_START) {
            log::error!("VM {}: guest kernel panic: {}", self.vm, core::str::from_utf8(line).unwrap_or("(not text)"));
            self.panic_started.store(true, Ordering::Release);
        }
    }

    /// Whether the guest's kernel reported a panic (once).
    pub fn take_panic_start(&self) -> bool {
        self.panic_started.swap(false, Ordering::AcqRel)
    }

    /// Whether the guest's panic report ended (once).
    pub fn take_panic_end(&self) -> bool {
        self.panic_ended.swap(false, Ordering::AcqRel)
    }

    /// Console output from the guest, through the UART or the console hypercall.
    pub fn write_bytes(&self, bytes: &[u8]) {
        let mut s = self.state.lock();
        for &b in bytes {
            match b {
                b'\n' => {
                    let len = s.len;
                    self.line(&mut s, len);
                    s.len = 0;
                }
                b'\r' => {}
                _ => {
                    if s.len == LINE_MAX {
                        self.line(&mut s, LINE_MAX);
                        s.len = 0;
                    }
                    let n = s.len;
                    s.line[n] = b;
                    s.len += 1;
                }
            }
        }
    }

    /// Input from the terminal. Returns how many bytes fit.
    pub fn push_input(&self, bytes: &[u8]) -> usize {
        let mut s = self.state.lock();
        let mut n = 0;
        for &b in bytes {
            if s.rx_len == RX_MAX {
                break;
            }
            let tail = (s.rx_head + s.rx_len) % RX_MAX;
            s.rx[tail] = b;
            s.rx_len += 1;
            n += 1;
        }
        n
    }

    /// The level of the UART's interrupt line.
    pub fn irq_line(&self) -> bool {
        let s = self.state.lock();
        s.ris() & s.imsc != 0
    }

    /// Prints what is left of a line (when the VM stops).
    pub fn flush(&self) {
        let mut s = self.state.lock();
        if s.len > 0 {
            let len = s.len;
            self.line(&mut s, len);
            s.len = 0;
        }
    }

    /// Calls `f` with the console's last lines, oldest first, in two parts.
    pub fn with_tail<R>(&self, f: impl FnOnce((&[u8], &[u8])) -> R) -> R {
        let s = self.state.lock();
        if s.tail_full {
            f((&s.tail[s.tail_head..], &s.tail[..s.tail_head]))
        } else {
            f((&[], &s.tail[..s.tail_head]))
        }
    }
}

impl State {
    /// Raw interrupt status: the transmit FIFO is always empty; input sets receive and
    /// receive-timeout until it has all been read.
    fn ris(&self) -> u32 {
        INT_TX | if self.rx_len > 0 { INT_RX | INT_RT } else { 0 }
    }
}

impl MmioDevice for VUart {
    fn read(&self, offset: u64, _size: u8) -> u64 {
        let mut s = self.state.lock();
        match offset {
            DR => {
                if s.rx_len == 0 {
                    return 0;
                }
                let b = s.rx[s.rx_head];
                s.rx_head = (s.rx_head + 1) % RX_MAX;
                s.rx_len -= 1;
                b as u64
            }
            RSR => 0,
            RIS => s.ris() as u64,
            MIS => (s.ris() & s.imsc) as u64,
            FR => FR_TXFE | if s.rx_len == 0 { FR_RXFE } else { 0 },
            IBRD => s.ibrd as u64,
            FBRD => s.fbrd as u64,
            LCR_H => s.lcr_h as u64,
            CR => s.cr as u64,
            IFLS => s.ifls as u64,
            IMSC => s.imsc as u64,
            DMACR => s.dmacr as u64,
            o if (ID_BASE..ID_BASE + 32).contains(&o) && o % 4 == 0 => PL011_IDS[((o - ID_BASE) / 4) as usize] as u64,
            _ => 0,
        }
    }

    fn write(&self, offset: u64, _size: u8, value: u64) {
        if offset == DR {
            self.write_bytes(&[value as u8]);
            return;
        }
        let mut s = self.state.lock();
        let v = value as u32;
        match offset {
            IBRD => s.ibrd = v & 0xffff,
            FBRD => s.fbrd = v & 0x3f,
            LCR_H => s.lcr_h = v & 0xff,
            CR => s.cr = v & 0xff87,
            IFLS => s.ifls = v & 0x3f,
            IMSC => s.imsc = v & 0x7ff,
            DMACR => s.dmacr = v & 7,
            _ => {} // RSR, ICR (no interrupt is ever raised) and read-only registers
        }
    }
}
