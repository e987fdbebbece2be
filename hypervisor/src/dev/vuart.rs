//! The PL011 each VM sees: enough of the register file for Linux's amba-pl011 driver and
//! earlycon to find it and transmit. Output is line-buffered and printed with the VM prefix;
//! reads of the receive side say "empty" (input routing comes with the interrupt controller).

use crate::console;
use crate::vm::mmio::MmioDevice;
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
/// Longest line kept before it is printed anyway.
const LINE_MAX: usize = 240;

struct State {
    line: [u8; LINE_MAX],
    len: usize,
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
}

impl VUart {
    pub fn new(vm: usize) -> VUart {
        VUart {
            vm,
            state: Mutex::new(State {
                line: [0; LINE_MAX],
                len: 0,
                ibrd: 0,
                fbrd: 0,
                lcr_h: 0,
                cr: 0x300, // TXE | RXE, as after reset
                ifls: 0x12,
                imsc: 0,
                dmacr: 0,
            }),
        }
    }

    /// Console output from the guest, through the UART or the console hypercall.
    pub fn write_bytes(&self, bytes: &[u8]) {
        let mut s = self.state.lock();
        for &b in bytes {
            match b {
                b'\n' => {
                    console::guest_line(self.vm, &s.line[..s.len]);
                    s.len = 0;
                }
                b'\r' => {}
                _ => {
                    if s.len == LINE_MAX {
                        console::guest_line(self.vm, &s.line[..s.len]);
                        s.len = 0;
                    }
                    let n = s.len;
                    s.line[n] = b;
                    s.len += 1;
                }
            }
        }
    }

    /// Prints what is left of a line (when the VM stops).
    pub fn flush(&self) {
        let mut s = self.state.lock();
        if s.len > 0 {
            console::guest_line(self.vm, &s.line[..s.len]);
            s.len = 0;
        }
    }
}

impl MmioDevice for VUart {
    fn read(&self, offset: u64, _size: u8) -> u64 {
        let s = self.state.lock();
        match offset {
            DR | RSR | RIS | MIS => 0,
            FR => FR_TXFE | FR_RXFE,
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
