//! The register model of the PL011 each VM sees: enough of the register file for Linux's
//! amba-pl011 driver and earlycon. Output is line-buffered (complete lines go to a callback)
//! and the last lines are kept for crash records; input waits in a small FIFO. The transmit
//! FIFO is always empty (output never waits), so its interrupt is raised whenever it is
//! unmasked; the receive interrupts while input is waiting. The hypervisor wraps this with
//! a lock, its console and the interrupt line (vdev/vuart.rs).

use crate::byte_ring::ByteRing;

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
/// The end of the registers below the identification registers.
pub const REGISTERS_END: u64 = DMACR + 4;
/// PrimeCell peripheral and cell identification registers (0xfe0..0xffc).
pub const ID_BASE: u64 = 0xfe0;
const PL011_IDS: [u8; 8] = [0x11, 0x10, 0x14, 0x00, 0x0d, 0xf0, 0x05, 0xb1];

/// DR and RSR/ECR error bits: a break was received (DR: bit 10, with the data 0; RSR: bit 2).
const DR_BE: u16 = 1 << 10;
const RSR_BE: u64 = 1 << 2;
const FR_RXFE: u64 = 1 << 4;
const FR_TXFE: u64 = 1 << 7;
/// Interrupt bits (RIS, MIS, IMSC, ICR): receive, transmit, receive timeout.
const INT_RX: u32 = 1 << 4;
const INT_TX: u32 = 1 << 5;
const INT_RT: u32 = 1 << 6;
/// Input kept for the guest before more is dropped.
pub const RX_MAX: usize = 256;
/// Longest line kept before it is printed anyway.
pub const LINE_MAX: usize = 240;
/// The console's last bytes kept for crash records.
pub const TAIL_MAX: usize = 4096;

pub struct Pl011 {
    line: [u8; LINE_MAX],
    len: usize,
    tail: ByteRing<TAIL_MAX>,
    /// Received characters as DR shows them: the byte, and the break flag above it.
    rx: [u16; RX_MAX],
    /// RSR/ECR: the error bits of the last character read.
    rsr: u64,
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

impl Default for Pl011 {
    fn default() -> Self {
        Pl011::new()
    }
}

impl Pl011 {
    pub const fn new() -> Pl011 {
        Pl011 {
            line: [0; LINE_MAX],
            len: 0,
            tail: ByteRing::new(),
            rx: [0; RX_MAX],
            rsr: 0,
            rx_head: 0,
            rx_len: 0,
            ibrd: 0,
            fbrd: 0,
            lcr_h: 0,
            cr: 0x300, // TXE | RXE, as after reset
            ifls: 0x12,
            imsc: 0,
            dmacr: 0,
        }
    }

    /// Hands out the line being built and keeps it in the tail.
    fn end_line(&mut self, line: &mut dyn FnMut(&[u8])) {
        let len = self.len;
        line(&self.line[..len]);
        self.tail.push(&self.line[..len]);
        self.tail.push(b"\n");
        self.len = 0;
    }

    /// Output from the guest (the data register, or the console hypercall): `line` gets
    /// each completed line (a line longer than LINE_MAX is cut there). CR is dropped.
    pub fn output(&mut self, bytes: &[u8], line: &mut dyn FnMut(&[u8])) {
        for &b in bytes {
            match b {
                b'\n' => self.end_line(line),
                b'\r' => {}
                _ => {
                    if self.len == LINE_MAX {
                        self.end_line(line);
                    }
                    self.line[self.len] = b;
                    self.len += 1;
                }
            }
        }
    }

    /// The line being built (output since the last newline, CR dropped).
    pub fn partial_line(&self) -> &[u8] {
        &self.line[..self.len]
    }

    /// What is left of a line, as a line (when the VM stops).
    pub fn flush(&mut self, line: &mut dyn FnMut(&[u8])) {
        if self.len > 0 {
            self.end_line(line);
        }
    }

    /// A break on the line (the terminal's serial break: QEMU's Ctrl-A b): a NUL character
    /// with the break error, as the hardware receives it; Linux's driver takes it for Magic
    /// SysRq. Whether it fit.
    pub fn push_break(&mut self) -> bool {
        if self.rx_len == RX_MAX {
            return false;
        }
        self.rx[(self.rx_head + self.rx_len) % RX_MAX] = DR_BE;
        self.rx_len += 1;
        true
    }

    /// Input from the terminal. Returns how many bytes fit.
    pub fn push_input(&mut self, bytes: &[u8]) -> usize {
        let n = bytes.len().min(RX_MAX - self.rx_len);
        for &b in &bytes[..n] {
            self.rx[(self.rx_head + self.rx_len) % RX_MAX] = b as u16;
            self.rx_len += 1;
        }
        n
    }

    /// The console's last lines, oldest first, in two parts.
    pub fn tail(&self) -> (&[u8], &[u8]) {
        self.tail.all()
    }

    /// Raw interrupt status: the transmit FIFO is always empty; input sets receive and
    /// receive-timeout until it has all been read.
    fn ris(&self) -> u32 {
        INT_TX | if self.rx_len > 0 { INT_RX | INT_RT } else { 0 }
    }

    /// The level of the UART's interrupt line.
    pub fn irq_line(&self) -> bool {
        self.ris() & self.imsc != 0
    }

    /// Whether a write at `offset` may move the interrupt line: all but the data
    /// register's (output leaves the always-empty transmit FIFO empty).
    pub const fn write_moves_line(offset: u64) -> bool {
        offset != DR
    }

    /// A register read at `offset` (any offset; unknown ones read as zero).
    /// Whether a read at `offset` changes anything (reading DR takes a byte of input); all
    /// other reads only look.
    pub const fn read_has_effects(offset: u64) -> bool {
        offset == DR
    }

    pub fn read(&mut self, offset: u64) -> u64 {
        if offset == DR && self.rx_len > 0 {
            let c = self.rx[self.rx_head];
            self.rx_head = (self.rx_head + 1) % RX_MAX;
            self.rx_len -= 1;
            self.rsr = if c & DR_BE != 0 { RSR_BE } else { 0 };
            return c as u64;
        }
        self.look(offset)
    }

    /// What a read at `offset` returns, when reading it changes nothing now: with no input
    /// waiting, every register (a register image may answer the guest's reads then).
    pub fn peek(&self, offset: u64) -> Option<u64> {
        (offset != DR || self.rx_len == 0).then(|| self.look(offset))
    }

    /// Whether input waits (reading DR takes it).
    pub fn has_input(&self) -> bool {
        self.rx_len > 0
    }

    /// A read that changes nothing (DR with no input reads 0).
    fn look(&self, offset: u64) -> u64 {
        match offset {
            DR => 0,
            RSR => self.rsr,
            RIS => self.ris() as u64,
            MIS => (self.ris() & self.imsc) as u64,
            FR => FR_TXFE | if self.rx_len == 0 { FR_RXFE } else { 0 },
            IBRD => self.ibrd as u64,
            FBRD => self.fbrd as u64,
            LCR_H => self.lcr_h as u64,
            CR => self.cr as u64,
            IFLS => self.ifls as u64,
            IMSC => self.imsc as u64,
            DMACR => self.dmacr as u64,
            o if (ID_BASE..ID_BASE + 32).contains(&o) && o % 4 == 0 => PL011_IDS[((o - ID_BASE) / 4) as usize] as u64,
            _ => 0,
        }
    }

    /// A register write at `offset` (any offset; unknown and read-only ones are ignored).
    pub fn write(&mut self, offset: u64, value: u64, line: &mut dyn FnMut(&[u8])) {
        let v = value as u32;
        match offset {
            DR => self.output(&[value as u8], line),
            IBRD => self.ibrd = v & 0xffff,
            FBRD => self.fbrd = v & 0x3f,
            LCR_H => self.lcr_h = v & 0xff,
            CR => self.cr = v & 0xff87,
            IFLS => self.ifls = v & 0x3f,
            IMSC => self.imsc = v & 0x7ff,
            DMACR => self.dmacr = v & 7,
            // Writing ECR clears the error bits.
            RSR => self.rsr = 0,
            _ => {} // ICR (the interrupts follow the FIFO's state) and read-only registers
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    #[test]
    fn output_never_moves_the_interrupt_line() {
        assert!(!Pl011::write_moves_line(DR));
        for imsc in [0, INT_TX, INT_RX | INT_RT, 0x7ff] {
            for input in [&b""[..], b"x"] {
                let mut u = Pl011::new();
                u.write(IMSC, imsc as u64, &mut |_| {});
                u.push_input(input);
                let before = u.irq_line();
                for b in b"text\r\n" {
                    u.write(DR, *b as u64, &mut |_| {});
                    assert_eq!(u.irq_line(), before, "imsc {imsc:#x} input {input:?}");
                }
            }
        }
    }

    #[test]
    fn lines_input_interrupts_and_tail() {
        let mut u = Pl011::new();
        let mut lines: Vec<Vec<u8>> = Vec::new();
        u.output(b"hello\r\nwor", &mut |l| lines.push(l.to_vec()));
        assert_eq!(lines, [b"hello".to_vec()]);
        u.flush(&mut |l| lines.push(l.to_vec()));
        assert_eq!(lines[1], b"wor");
        assert_eq!(u.tail(), (&b""[..], &b"hello\nwor\n"[..]));
        assert!(!u.irq_line(), "interrupts masked");
        u.write(IMSC, (INT_RX | INT_TX) as u64, &mut |_| {});
        assert!(u.irq_line(), "TX is always ready");
        u.write(IMSC, INT_RX as u64, &mut |_| {});
        assert!(!u.irq_line());
        assert_eq!(u.push_input(b"ab"), 2);
        assert!(u.irq_line());
        assert_eq!(u.read(FR) & FR_RXFE, 0);
        assert_eq!((u.read(DR), u.read(DR), u.read(DR)), (b'a' as u64, b'b' as u64, 0));
        assert!(!u.irq_line());
        assert_eq!(u.read(0xfe0), 0x11);
        assert_eq!(u.push_input(&[0; 1000]), RX_MAX);
    }

    #[test]
    fn peeks_answer_as_reads_while_no_input_waits() {
        let mut rng = crate::rng::Rng::new(11);
        let mut u = Pl011::new();
        for i in 0..20_000 {
            match rng.next() % 8 {
                0 => drop(u.push_input(&[rng.next() as u8])),
                1 => drop(u.push_break()),
                2..=4 => u.write(rng.next() % 0x50 & !3, rng.next(), &mut |_| {}),
                _ => drop(u.read(DR)),
            }
            let peeks: Vec<Option<u64>> = (0..0x1000).step_by(4).map(|o| u.peek(o)).collect();
            for (n, peek) in peeks.iter().enumerate() {
                let offset = 4 * n as u64;
                match peek {
                    // A read there returns the same and changes nothing.
                    Some(v) => assert_eq!(u.read(offset), *v, "step {i}, offset {offset:#x}"),
                    None => assert!(offset == DR && u.has_input(), "step {i}: only DR with input waiting has effects"),
                }
            }
            assert_eq!(peeks, (0..0x1000).step_by(4).map(|o| u.peek(o)).collect::<Vec<_>>(), "step {i}: the reads changed nothing");
        }
    }

    #[test]
    fn a_break_reads_as_nul_with_the_break_error() {
        let mut u = Pl011::new();
        u.push_input(b"a");
        assert!(u.push_break());
        u.push_input(b"h");
        assert_eq!(u.read(DR), b'a' as u64);
        assert_eq!(u.read(RSR), 0);
        assert_eq!(u.read(DR), DR_BE as u64, "NUL with BE (bit 10)");
        assert_eq!(u.read(RSR), RSR_BE);
        assert_eq!(u.read(DR), b'h' as u64);
        assert_eq!(u.read(RSR), 0);
        for _ in 0..RX_MAX {
            u.push_break();
        }
        assert!(!u.push_break(), "a full FIFO drops it");
    }
}
