//! What the end of a VM means for the machine: each VM's stop reason and test verdict
//! decide QEMU's exit status, the worst outcome of all VMs winning.

/// Exit statuses of the machine (QEMU's exit code), from best to worst.
pub mod status {
    pub const OK: u32 = 0;
    pub const TEST_FAILED: u32 = 1;
    pub const VM_CRASHED: u32 = 2;
    pub const HYPERVISOR_PANIC: u32 = 3;
    pub const NO_GUEST: u32 = 4;
}

/// A test verdict reported by a guest (HV_TEST_VERDICT): 0 is a pass, any other code a
/// failure. Every 64-bit code is a valid report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Verdict(Option<u64>);

impl Verdict {
    pub const NONE: Verdict = Verdict(None);

    /// The verdict after the guest reports `code`: a failure, once reported, stays (a
    /// later pass does not undo it; a later failure keeps the first failure's code).
    pub fn report(self, code: u64) -> Verdict {
        match self.0 {
            Some(failed) if failed != 0 => self,
            _ => Verdict(Some(code)),
        }
    }

    /// The code reported, if any.
    pub fn code(self) -> Option<u64> {
        self.0
    }

    pub fn failed(self) -> bool {
        self.0.is_some_and(|c| c != 0)
    }
}

/// A VM's recent reboots (PSCI SYSTEM_RESET), to tell a crash-reboot loop (a kernel that
/// panics and reboots on panic, again and again) from a VM that reboots now and then.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reboots {
    /// Counter values of the last `REBOOT_LOOP` reboots, oldest first once full.
    at: [u64; REBOOT_LOOP],
    n: usize,
    /// Boots in a row that ended in a kernel panic, each soon after the previous reboot.
    panics_in_row: usize,
}

/// This many reboots within the window make a loop.
pub const REBOOT_LOOP: usize = 5;
/// This many boots in a row ending in a panic make a loop, however long each takes to
/// panic (within the panic window): a kernel that cannot boot (too little memory, a bad
/// root) and reboots on panic.
pub const PANIC_LOOP: usize = 3;

/// Why reboots are a loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RebootLoop {
    /// `REBOOT_LOOP` reboots within the window.
    Quick,
    /// `PANIC_LOOP` boots in a row ended in a kernel panic.
    Panics,
}

impl Reboots {
    /// A reboot at counter value `now`, after a boot that ended in a kernel panic if
    /// `panicked`. A loop if the last `REBOOT_LOOP` reboots all came within `window`
    /// counter ticks, or the last `PANIC_LOOP` boots panicked, each within `panic_window`
    /// of the reboot before it.
    pub fn reboot(&mut self, now: u64, window: u64, panicked: bool, panic_window: u64) -> Option<RebootLoop> {
        let previous = self.n.checked_sub(1).map(|i| self.at[i]);
        self.panics_in_row = match (panicked, previous) {
            (false, _) => 0,
            (true, Some(p)) if now.saturating_sub(p) <= panic_window => self.panics_in_row + 1,
            (true, _) => 1,
        };
        if self.n == REBOOT_LOOP {
            self.at.rotate_left(1);
            self.n -= 1;
        }
        self.at[self.n] = now;
        self.n += 1;
        if self.n == REBOOT_LOOP && now.saturating_sub(self.at[0]) <= window {
            Some(RebootLoop::Quick)
        } else if self.panics_in_row >= PANIC_LOOP {
            Some(RebootLoop::Panics)
        } else {
            None
        }
    }
}

/// The exit status one VM's end asks for: crashed, failed its test, or fine.
pub fn vm_status(crashed: bool, verdict: Verdict) -> u32 {
    if crashed {
        status::VM_CRASHED
    } else if verdict.failed() {
        status::TEST_FAILED
    } else {
        status::OK
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EDGES: [u64; 8] = [1, 2, 0xff, i64::MAX as u64, 1 << 63, (1 << 63) + 1, u64::MAX - 1, u64::MAX];

    #[test]
    fn every_nonzero_code_is_a_failure_and_fails_the_run() {
        for code in EDGES {
            let v = Verdict::NONE.report(code);
            assert_eq!(v.code(), Some(code), "the code is kept exactly");
            assert!(v.failed(), "{code:#x}");
            assert_eq!(vm_status(false, v), status::TEST_FAILED, "{code:#x}");
        }
    }

    #[test]
    fn a_failure_is_never_turned_into_a_pass() {
        for code in EDGES {
            let v = Verdict::NONE.report(code).report(0);
            assert_eq!(v.code(), Some(code));
            assert_eq!(vm_status(false, v), status::TEST_FAILED);
            // A second failure keeps the first code.
            assert_eq!(Verdict::NONE.report(code).report(7).code(), Some(code));
        }
        // A pass, then a failure: failed.
        assert_eq!(vm_status(false, Verdict::NONE.report(0).report(1 << 63)), status::TEST_FAILED);
    }

    #[test]
    fn reboot_loops_are_told_from_reboots_now_and_then() {
        let quick = |r: &mut Reboots, t| r.reboot(t, 1000, false, 6000);
        let mut r = Reboots::default();
        // Four quick reboots are not yet a loop; the fifth within the window is.
        for t in 0..4 {
            assert_eq!(quick(&mut r, t * 100), None);
        }
        assert_eq!(quick(&mut r, 400), Some(RebootLoop::Quick));
        // Reboots spread out: never a loop.
        let mut r = Reboots::default();
        assert!((0..50).all(|t| quick(&mut r, t * 300).is_none()));
        // A slow start, then a fast loop: caught once the last five are close.
        let mut r = Reboots::default();
        for t in [0, 5000, 10_000] {
            assert_eq!(quick(&mut r, t), None);
        }
        assert!(quick(&mut r, 10_100).is_none() && quick(&mut r, 10_200).is_none() && quick(&mut r, 10_300).is_none());
        assert_eq!(quick(&mut r, 10_400), Some(RebootLoop::Quick));
    }

    #[test]
    fn panics_in_a_row_are_a_loop_however_slow() {
        // A kernel that panics 3.6 s into every boot (window 1 s for quick loops, 60 s for
        // panics): the third panicked boot in a row is a loop.
        let mut r = Reboots::default();
        assert_eq!(r.reboot(3_600, 1_000, true, 60_000), None);
        assert_eq!(r.reboot(7_200, 1_000, true, 60_000), None);
        assert_eq!(r.reboot(10_800, 1_000, true, 60_000), Some(RebootLoop::Panics));
        // A clean reboot in between starts the count again.
        let mut r = Reboots::default();
        for (t, panicked) in [(1, true), (2, true), (3, false), (4, true), (5, true)] {
            assert_eq!(r.reboot(t * 10_000, 1_000, panicked, 60_000), None, "at {t}");
        }
        assert_eq!(r.reboot(60_000, 1_000, true, 60_000), Some(RebootLoop::Panics));
        // Panics far apart (a long-running guest that crashes now and then): no loop.
        let mut r = Reboots::default();
        assert!((1..10).all(|t| r.reboot(t * 100_000, 1_000, true, 60_000).is_none()));
    }

    #[test]
    fn pass_none_and_crash() {
        assert_eq!(vm_status(false, Verdict::NONE), status::OK);
        assert_eq!(vm_status(false, Verdict::NONE.report(0)), status::OK);
        assert_eq!(Verdict::NONE.report(0).code(), Some(0));
        assert_eq!(Verdict::NONE.code(), None);
        for v in [Verdict::NONE, Verdict::NONE.report(0), Verdict::NONE.report(u64::MAX)] {
            assert_eq!(vm_status(true, v), status::VM_CRASHED, "a crash outranks any verdict");
        }
    }
}
