//! When a vCPU owns the pointer-authentication key registers.
//!
//! A vCPU runs either *lazy* (HCR_EL2.API/APK clear: the CPU keeps the hypervisor's key,
//! and the guest's first PAC instruction or key-register access traps) or *live* (its keys
//! are in the CPU, switched at every exit and entry). The first trap of a lazy vCPU makes
//! it live for the rest of its residency (its time on a physical CPU, from load to unload).
//! What it is at its next load is the policy's choice:
//!
//! - `Lazy` (Linux KVM 5.1 to 6.9): always lazy at load. A guest that uses PAC all the time
//!   pays one trap per residency.
//! - `Eager` (KVM since 6.10): always live. A guest that never uses PAC pays a key switch at
//!   every exit.
//! - `Adaptive` (the default): live at load if the vCPU used PAC in its last residency,
//!   lazy otherwise. A residency counts as using PAC if it trapped, or, for one that began
//!   live (and so cannot trap), if the guest's SCTLR_EL1 enables a PAC key at unload (its
//!   signing instructions then really use the keys). A PAC-heavy guest traps once and then
//!   stays live; a PAC-free one never switches. A guest that only uses PACGA or writes keys,
//!   with no key enabled, alternates (one trap every other residency). The bookkeeping is a
//!   few flag moves per residency, so that adaptive costs no more than the better policy.
//!
//! A VM without PAuth (or a CPU without it) is never live: its traps get UNDEF.

/// How a vCPU's residencies start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyPolicy {
    Lazy,
    Adaptive,
    Eager,
}

impl KeyPolicy {
    pub fn parse(s: &str) -> Option<KeyPolicy> {
        match s {
            "lazy" => Some(KeyPolicy::Lazy),
            "adaptive" => Some(KeyPolicy::Adaptive),
            "eager" => Some(KeyPolicy::Eager),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            KeyPolicy::Lazy => "lazy",
            KeyPolicy::Adaptive => "adaptive",
            KeyPolicy::Eager => "eager",
        }
    }
}

/// SCTLR_EL1 bits that enable a PAC key for EL1 and EL0: EnIA, EnIB, EnDA, EnDB.
pub const SCTLR_EN_KEYS: u64 = 1 << 31 | 1 << 30 | 1 << 27 | 1 << 13;

/// What happened to a trap of a PAC instruction or key-register access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trap {
    /// The vCPU now owns the keys: retry the instruction.
    Switched,
    /// It already owned them (cannot happen with API/APK set; answered like `Switched`).
    AlreadyLive,
    /// No PAuth for this VM: the instruction is UNDEFINED.
    Unavailable,
}

/// One vCPU's key ownership across residencies.
#[derive(Clone, Debug)]
pub struct KeyOwnership {
    policy: KeyPolicy,
    enabled: bool,
    /// The policy as bit masks (1 or 0), so that every policy runs the same instructions
    /// at unload and only the work it causes (traps, switches) tells them apart.
    always_live: u8,
    adaptive: u8,
    live: bool,
    /// Live at the next load.
    next_live: bool,
    entered_live: bool,
    trapped: bool,
}

impl KeyOwnership {
    /// `enabled`: the VM has PAuth (and the CPU too).
    pub fn new(policy: KeyPolicy, enabled: bool) -> KeyOwnership {
        KeyOwnership {
            policy,
            enabled,
            always_live: (enabled && policy == KeyPolicy::Eager) as u8,
            adaptive: (enabled && policy == KeyPolicy::Adaptive) as u8,
            live: false,
            next_live: enabled && policy == KeyPolicy::Eager,
            entered_live: false,
            trapped: false,
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub fn policy(&self) -> KeyPolicy {
        self.policy
    }

    /// Whether the keys are live now.
    pub fn live(&self) -> bool {
        self.live
    }

    /// A residency begins; returns whether it starts live.
    pub fn load(&mut self) -> bool {
        self.live = self.next_live;
        self.entered_live = self.live;
        self.trapped = false;
        self.live
    }

    /// A PAC instruction or key-register access trapped.
    pub fn trap(&mut self) -> Trap {
        if !self.enabled {
            return Trap::Unavailable;
        }
        if self.live {
            return Trap::AlreadyLive;
        }
        self.live = true;
        self.trapped = true;
        Trap::Switched
    }

    /// The residency ends with the guest's `sctlr` (SCTLR_EL1); decides the next one. The
    /// vCPU is lazy until then (nothing of it is in the CPU any more).
    pub fn unload(&mut self, sctlr: u64) {
        let signing = (sctlr & SCTLR_EN_KEYS != 0) as u8;
        let used = self.trapped as u8 | (self.entered_live as u8 & signing);
        self.next_live = (self.always_live | (self.adaptive & used)) != 0;
        self.live = false;
    }

    /// What the next load will choose (for tests and reports).
    pub fn next_live(&self) -> bool {
        self.next_live
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENIA: u64 = 1 << 31;

    /// Residencies of a guest that uses PAC (signing enabled, traps when lazy), `n` times;
    /// returns (traps, residencies that were live from the start).
    fn pac_user(o: &mut KeyOwnership, n: usize) -> (usize, usize) {
        let (mut traps, mut live_from_start) = (0, 0);
        for _ in 0..n {
            if o.load() {
                live_from_start += 1;
            } else {
                assert_eq!(o.trap(), Trap::Switched);
                traps += 1;
            }
            assert!(o.live());
            assert_eq!(o.trap(), Trap::AlreadyLive);
            o.unload(ENIA);
            assert!(!o.live());
        }
        (traps, live_from_start)
    }

    /// Residencies of a guest that never uses PAC; returns residencies that were live.
    fn pac_free(o: &mut KeyOwnership, n: usize) -> usize {
        let mut live = 0;
        for _ in 0..n {
            if o.load() {
                live += 1;
            }
            o.unload(0);
        }
        live
    }

    #[test]
    fn lazy_traps_once_per_residency() {
        let mut o = KeyOwnership::new(KeyPolicy::Lazy, true);
        assert_eq!(pac_user(&mut o, 10), (10, 0));
        assert_eq!(pac_free(&mut KeyOwnership::new(KeyPolicy::Lazy, true), 10), 0);
    }

    #[test]
    fn eager_is_always_live() {
        assert_eq!(pac_user(&mut KeyOwnership::new(KeyPolicy::Eager, true), 10), (0, 10));
        assert_eq!(pac_free(&mut KeyOwnership::new(KeyPolicy::Eager, true), 10), 10);
    }

    #[test]
    fn adaptive_is_never_worse_than_the_better_one() {
        // PAC user: one trap in all, then live (eager costs 0 traps, lazy 10).
        assert_eq!(pac_user(&mut KeyOwnership::new(KeyPolicy::Adaptive, true), 10), (1, 9));
        // PAC-free: never live (as lazy; eager would be live 10 times).
        assert_eq!(pac_free(&mut KeyOwnership::new(KeyPolicy::Adaptive, true), 10), 0);
    }

    #[test]
    fn adaptive_goes_back_to_lazy_when_a_guest_stops_using_pac() {
        let mut o = KeyOwnership::new(KeyPolicy::Adaptive, true);
        pac_user(&mut o, 3);
        assert!(o.next_live());
        // Signing switched off and keys unchanged during a live residency: lazy next time.
        assert!(o.load());
        o.unload(0);
        assert!(!o.next_live());
        assert!(!o.load());
        o.unload(ENIA); // enabled but never trapped while lazy: stays lazy
        assert!(!o.next_live());
    }

    #[test]
    fn without_pauth_never_live() {
        for p in [KeyPolicy::Lazy, KeyPolicy::Adaptive, KeyPolicy::Eager] {
            let mut o = KeyOwnership::new(p, false);
            assert!(!o.load());
            assert_eq!(o.trap(), Trap::Unavailable);
            assert!(!o.live());
            o.unload(ENIA);
            assert!(!o.next_live());
        }
    }

    #[test]
    fn pacga_only_guest_alternates() {
        // No key enabled in SCTLR_EL1: traps every other residency.
        let mut o = KeyOwnership::new(KeyPolicy::Adaptive, true);
        let mut traps = 0;
        for _ in 0..10 {
            if !o.load() {
                o.trap();
                traps += 1;
            }
            o.unload(0);
        }
        assert_eq!(traps, 5);
    }

    #[test]
    fn policy_names_round_trip() {
        for p in [KeyPolicy::Lazy, KeyPolicy::Adaptive, KeyPolicy::Eager] {
            assert_eq!(KeyPolicy::parse(p.name()), Some(p));
        }
        assert_eq!(KeyPolicy::parse("sometimes"), None);
    }
}
