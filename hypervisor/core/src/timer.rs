//! The generic timers as a guest sees them: the control register's bits, the output line
//! (what the interrupt controller sees), and the EL1 physical timer, which the hypervisor
//! emulates (every access traps) with the counter value the caller passes in.
//!
//! The line is level-triggered: it is high exactly while the timer is enabled, not masked
//! and its condition (counter >= compare value) is met. Turning the timer off or masking it
//! lowers the line at once.

use crate::sysreg::{self, SysReg};

/// CNTx_CTL_EL0 bits.
pub const CTL_ENABLE: u64 = 1 << 0;
pub const CTL_IMASK: u64 = 1 << 1;
/// Read-only: the condition is met (only while enabled).
pub const CTL_ISTATUS: u64 = 1 << 2;

/// The output line of a timer whose control register reads `ctl` (ISTATUS included, as the
/// hardware timers report it).
pub fn output_level(ctl: u64) -> bool {
    ctl & (CTL_ENABLE | CTL_IMASK | CTL_ISTATUS) == CTL_ENABLE | CTL_ISTATUS
}

/// The line of an enabled, unmasked timer whose counter reached its compare value `cval`
/// (`now`), as the architecture defines ISTATUS: also when the CPU has not updated the bit
/// yet (QEMU sets it only when its own timer callback has run, which may come after the
/// guest already read a counter past the deadline).
pub fn line_level(ctl: u64, cval: u64, now: u64) -> bool {
    line_level_with(ctl, || (cval, now))
}

/// `line_level`, with the compare value and the counter (`cval_now`) read only when the
/// control register leaves the answer open (enabled, unmasked, ISTATUS clear): under QEMU
/// each timer register read ends a translation block and takes its global lock.
pub fn line_level_with(ctl: u64, cval_now: impl FnOnce() -> (u64, u64)) -> bool {
    ctl & (CTL_ENABLE | CTL_IMASK) == CTL_ENABLE && (ctl & CTL_ISTATUS != 0 || {
        let (cval, now) = cval_now();
        now >= cval
    })
}

/// The three registers of a timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerReg {
    Ctl,
    Cval,
    /// TimerValue: CVAL - counter as a signed 32-bit number.
    Tval,
}

/// Which EL1 physical-timer register a trapped encoding names.
pub fn physical_timer_reg(r: SysReg) -> Option<TimerReg> {
    match r {
        sysreg::CNTP_CTL_EL0 => Some(TimerReg::Ctl),
        sysreg::CNTP_CVAL_EL0 => Some(TimerReg::Cval),
        sysreg::CNTP_TVAL_EL0 => Some(TimerReg::Tval),
        _ => None,
    }
}

/// An emulated timer's state: control bits the guest wrote and the compare value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EmulatedTimer {
    ctl: u64,
    cval: u64,
}

impl EmulatedTimer {
    /// The condition is met: enabled and the counter reached the compare value.
    pub fn condition(&self, now: u64) -> bool {
        self.ctl & CTL_ENABLE != 0 && now >= self.cval
    }

    /// The output line at counter value `now`.
    pub fn level(&self, now: u64) -> bool {
        self.condition(now) && self.ctl & CTL_IMASK == 0
    }

    /// Enabled and unmasked: otherwise the line is low whatever the counter says (no need
    /// to read it).
    pub fn can_rise(&self) -> bool {
        self.ctl & (CTL_ENABLE | CTL_IMASK) == CTL_ENABLE
    }

    /// When the line will rise if nothing is written first: the compare value, for an
    /// enabled and unmasked timer whose line is low at `now`.
    pub fn deadline(&self, now: u64) -> Option<u64> {
        (self.ctl & (CTL_ENABLE | CTL_IMASK) == CTL_ENABLE && now < self.cval).then_some(self.cval)
    }

    pub fn read(&self, reg: TimerReg, now: u64) -> u64 {
        match reg {
            TimerReg::Ctl => self.ctl | if self.condition(now) { CTL_ISTATUS } else { 0 },
            TimerReg::Cval => self.cval,
            // Bits 63:32 are RES0; 31:0 are the signed difference, truncated.
            TimerReg::Tval => self.cval.wrapping_sub(now) & 0xffff_ffff,
        }
    }

    pub fn write(&mut self, reg: TimerReg, value: u64, now: u64) {
        match reg {
            // ISTATUS is read-only; bits above IMASK are RES0.
            TimerReg::Ctl => self.ctl = value & (CTL_ENABLE | CTL_IMASK),
            TimerReg::Cval => self.cval = value,
            // The low 32 bits, sign-extended, from now.
            TimerReg::Tval => self.cval = now.wrapping_add(value as u32 as i32 as i64 as u64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_follows_enable_mask_and_condition() {
        let mut t = EmulatedTimer::default();
        assert!(!t.level(100));
        t.write(TimerReg::Cval, 50, 10);
        assert!(!t.level(100), "disabled");
        t.write(TimerReg::Ctl, CTL_ENABLE, 10);
        assert!(!t.level(49) && t.level(50) && t.level(1 << 40));
        t.write(TimerReg::Ctl, CTL_ENABLE | CTL_IMASK, 60);
        assert!(!t.level(60), "masked");
        assert_eq!(t.read(TimerReg::Ctl, 60), CTL_ENABLE | CTL_IMASK | CTL_ISTATUS, "ISTATUS shows the condition even when masked");
        t.write(TimerReg::Ctl, 0, 60);
        assert_eq!(t.read(TimerReg::Ctl, 60), 0, "no ISTATUS while disabled");
    }

    #[test]
    fn the_counter_is_read_only_when_the_control_bits_leave_the_line_open() {
        for ctl in 0..8 {
            for (cval, now) in [(50, 49), (50, 50), (50, u64::MAX), (u64::MAX, 0)] {
                let reads = core::cell::Cell::new(0);
                let lazy = line_level_with(ctl, || {
                    reads.set(reads.get() + 1);
                    (cval, now)
                });
                assert_eq!(lazy, line_level(ctl, cval, now), "ctl {ctl:#x} cval {cval} now {now}");
                let open = ctl & (CTL_ENABLE | CTL_IMASK | CTL_ISTATUS) == CTL_ENABLE;
                assert_eq!(reads.get(), open as i32, "ctl {ctl:#x}: counter read only when needed");
            }
            let mut t = EmulatedTimer::default();
            t.write(TimerReg::Ctl, ctl, 0);
            t.write(TimerReg::Cval, 50, 0);
            if !t.can_rise() {
                assert!([0, 50, u64::MAX].iter().all(|&now| !t.level(now)), "ctl {ctl:#x}: low whatever the counter");
            } else {
                assert!(t.level(50) && !t.level(49), "ctl {ctl:#x}");
            }
        }
    }

    #[test]
    fn istatus_and_unknown_bits_cannot_be_written() {
        let mut t = EmulatedTimer::default();
        t.write(TimerReg::Ctl, u64::MAX, 0);
        t.write(TimerReg::Cval, u64::MAX, 0);
        assert_eq!(t.read(TimerReg::Ctl, 0), CTL_ENABLE | CTL_IMASK);
    }

    #[test]
    fn tval_is_a_signed_32_bit_view_of_cval() {
        let mut t = EmulatedTimer::default();
        t.write(TimerReg::Tval, 1000, 5000);
        assert_eq!(t.read(TimerReg::Cval, 0), 6000);
        assert_eq!(t.read(TimerReg::Tval, 5500), 500);
        // Past the deadline TVAL counts down through zero into negative values.
        assert_eq!(t.read(TimerReg::Tval, 6001), 0xffff_ffff);
        // A negative TVAL puts the compare value in the past.
        t.write(TimerReg::Tval, 0xffff_fff6, 5000);
        assert_eq!(t.read(TimerReg::Cval, 0), 4990);
        // Only the low 32 bits of a write count.
        t.write(TimerReg::Tval, 0x1_0000_0005, 5000);
        assert_eq!(t.read(TimerReg::Cval, 0), 5005);
    }

    #[test]
    fn deadline_only_while_the_line_can_still_rise() {
        let mut t = EmulatedTimer::default();
        t.write(TimerReg::Cval, 100, 0);
        assert_eq!(t.deadline(0), None, "disabled");
        t.write(TimerReg::Ctl, CTL_ENABLE, 0);
        assert_eq!(t.deadline(0), Some(100));
        assert_eq!(t.deadline(100), None, "already high");
        t.write(TimerReg::Ctl, CTL_ENABLE | CTL_IMASK, 0);
        assert_eq!(t.deadline(0), None, "masked");
    }

    #[test]
    fn physical_timer_encodings() {
        assert_eq!(physical_timer_reg(sysreg::CNTP_TVAL_EL0), Some(TimerReg::Tval));
        assert_eq!(physical_timer_reg(SysReg::new(3, 3, 14, 3, 1)), None, "CNTV_CTL_EL0 is the guest's own");
    }

    #[test]
    fn hardware_control_values() {
        assert!(output_level(CTL_ENABLE | CTL_ISTATUS));
        assert!(!output_level(CTL_ENABLE | CTL_ISTATUS | CTL_IMASK));
        assert!(!output_level(CTL_ENABLE));
        assert!(!output_level(CTL_ISTATUS));
        // ISTATUS as defined: the counter reached the compare value, the bit set or not yet.
        assert!(line_level(CTL_ENABLE, 100, 100));
        assert!(line_level(CTL_ENABLE | CTL_ISTATUS, 100, 99));
        assert!(!line_level(CTL_ENABLE, 100, 99));
        assert!(!line_level(CTL_ENABLE | CTL_IMASK, 100, 200));
        assert!(!line_level(CTL_ISTATUS, 100, 200), "disabled");
    }
}
