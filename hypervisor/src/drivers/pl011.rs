//! The host's PL011 UART, driven polled for the hypervisor's own console output.

use tock_registers::interfaces::{ReadWriteable, Readable, Writeable};
use tock_registers::register_bitfields;
use tock_registers::register_structs;
use tock_registers::registers::{ReadOnly, ReadWrite};
use core::sync::atomic::{AtomicU32, Ordering};

register_bitfields! {u32,
    FR [
        /// Transmit FIFO (holding register, with the FIFOs off) empty.
        TXFE OFFSET(7) NUMBITS(1) [],
        /// Transmit FIFO full.
        TXFF OFFSET(5) NUMBITS(1) [],
        /// Receive FIFO empty.
        RXFE OFFSET(4) NUMBITS(1) [],
    ],
    LCR_H [
        /// FIFOs enabled (16 bytes deep each way, 32 from r1p5 on).
        FEN OFFSET(4) NUMBITS(1) [],
    ],
    INT [
        /// Receive timeout.
        RT OFFSET(6) NUMBITS(1) [],
        /// Receive.
        RX OFFSET(4) NUMBITS(1) [],
    ]
}

register_structs! {
    Regs {
        (0x000 => dr: ReadWrite<u32>),
        (0x004 => _reserved),
        (0x018 => fr: ReadOnly<u32, FR::Register>),
        (0x01c => _reserved2),
        (0x02c => lcr_h: ReadWrite<u32, LCR_H::Register>),
        (0x030 => _reserved4),
        (0x038 => imsc: ReadWrite<u32, INT::Register>),
        (0x03c => _reserved3),
        (0x044 => icr: ReadWrite<u32, INT::Register>),
        (0x048 => @END),
    }
}

/// DR: the character came with a break condition (QEMU: the monitor's "send break").
const DR_BE: u32 = 1 << 10;

/// What the receiver got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Received {
    Byte(u8),
    /// A break on the line (a serial console's Magic SysRq key).
    Break,
}

/// Bytes written after seeing the transmit FIFO empty before looking again: half the
/// smallest FIFO, so that two CPUs that saw it empty at once cannot overfill it.
const TX_BUDGET: u32 = 8;

pub struct Pl011 {
    regs: &'static Regs,
    /// Bytes that may still be written without reading FR (`put_byte`).
    room: AtomicU32,
    /// Bytes the transmitter takes after it was seen empty: TX_BUDGET with the FIFOs on,
    /// one (the holding register) with them off.
    budget: u32,
}

// SAFETY: the registers are only reached through `put_byte`, whose single-register
// accesses are safe from any CPU (callers serialize whole lines themselves).
unsafe impl Sync for Pl011 {}
// SAFETY: as above; the mapping is global.
unsafe impl Send for Pl011 {}

impl Pl011 {
    /// # Safety
    /// `base` must be the address of a PL011 mapped as device memory for as long as the
    /// returned value is used, and nothing else may program its transmit side.
    pub unsafe fn new(base: u64) -> Pl011 {
        // SAFETY: the caller guarantees a mapped PL011 at `base`.
        let regs: &'static Regs = unsafe { &*(base as *const Regs) };
        // The FIFOs on: a FR read (an exit to QEMU, under its global lock) every TX_BUDGET
        // bytes instead of every byte, and no input lost to a one-byte receive buffer.
        regs.lcr_h.modify(LCR_H::FEN::SET);
        let budget = if regs.lcr_h.is_set(LCR_H::FEN) { TX_BUDGET } else { 1 };
        Pl011 { regs, room: AtomicU32::new(0), budget }
    }

    /// Interrupts when input arrives (receive and receive-timeout).
    pub fn enable_rx_interrupt(&self) {
        self.regs.imsc.modify(INT::RX::SET + INT::RT::SET);
    }

    /// The next received character, if any; clears the receive interrupts when the FIFO is
    /// empty. Clear, then look again: a byte that arrives between seeing the FIFO empty and
    /// the clear raised the interrupt the clear drops, and QEMU raises it only when the FIFO
    /// goes from empty to one byte, so a byte left there would stop input for good (seen
    /// with pasted lines).
    pub fn get(&self) -> Option<Received> {
        if self.regs.fr.is_set(FR::RXFE) {
            self.regs.icr.write(INT::RX::SET + INT::RT::SET);
            if self.regs.fr.is_set(FR::RXFE) {
                return None;
            }
        }
        let dr = self.regs.dr.get();
        Some(if dr & DR_BE != 0 { Received::Break } else { Received::Byte(dr as u8) })
    }

    /// Writes a byte once the transmitter has room. FR is read only when the bytes written
    /// since it was last seen empty may have filled it.
    pub fn put_byte(&self, b: u8) {
        if self.room.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |r| r.checked_sub(1)).is_err() {
            while !self.regs.fr.is_set(FR::TXFE) {
                core::hint::spin_loop();
            }
            self.room.store(self.budget - 1, Ordering::Relaxed);
        }
        self.regs.dr.set(b as u32);
    }
}
