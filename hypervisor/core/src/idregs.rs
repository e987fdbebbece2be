//! What a guest sees of the CPU's ID registers (trapped by HCR_EL2.TID3): the host's
//! values with every feature the hypervisor does not virtualize hidden, so that a guest
//! kernel never turns on something whose state is not switched between VMs or whose
//! registers are not emulated.

use crate::sysreg::SysReg;

/// ID group 3: op0=3, op1=0, CRn=0, CRm=1..7 (the AArch32 and AArch64 feature registers).
pub fn is_id_group3(r: SysReg) -> bool {
    r.op0() == 3 && r.op1() == 0 && r.crn() == 0 && (1..=7).contains(&r.crm())
}

/// Position of an ID register in group 3, for a jump table of MRS instructions.
pub fn group3_index(r: SysReg) -> usize {
    (r.crm() as usize - 1) * 8 + r.op2() as usize
}

/// AArch32's debug feature register (PerfMon: its PMU).
pub const ID_DFR0_EL1: SysReg = SysReg::new(3, 0, 0, 1, 2);
pub const ID_AA64PFR0_EL1: SysReg = SysReg::new(3, 0, 0, 4, 0);
pub const ID_AA64PFR1_EL1: SysReg = SysReg::new(3, 0, 0, 4, 1);
pub const ID_AA64ZFR0_EL1: SysReg = SysReg::new(3, 0, 0, 4, 4);
pub const ID_AA64SMFR0_EL1: SysReg = SysReg::new(3, 0, 0, 4, 5);
pub const ID_AA64DFR0_EL1: SysReg = SysReg::new(3, 0, 0, 5, 0);
pub const ID_AA64DFR1_EL1: SysReg = SysReg::new(3, 0, 0, 5, 1);
pub const ID_AA64AFR0_EL1: SysReg = SysReg::new(3, 0, 0, 5, 4);
pub const ID_AA64AFR1_EL1: SysReg = SysReg::new(3, 0, 0, 5, 5);
pub const ID_AA64ISAR1_EL1: SysReg = SysReg::new(3, 0, 0, 6, 1);
pub const ID_AA64ISAR2_EL1: SysReg = SysReg::new(3, 0, 0, 6, 2);
pub const ID_AA64MMFR0_EL1: SysReg = SysReg::new(3, 0, 0, 7, 0);
pub const ID_AA64MMFR1_EL1: SysReg = SysReg::new(3, 0, 0, 7, 1);
pub const ID_AA64MMFR2_EL1: SysReg = SysReg::new(3, 0, 0, 7, 2);
pub const ID_AA64MMFR3_EL1: SysReg = SysReg::new(3, 0, 0, 7, 3);
pub const ID_AA64MMFR4_EL1: SysReg = SysReg::new(3, 0, 0, 7, 4);

/// A 4-bit field at `shift`.
const fn field(shift: u32) -> u64 {
    0xf << shift
}

/// Fields cleared (feature absent) in each register, with why.
const HIDDEN: &[(SysReg, u64)] = &[
    // EL2 and EL3 do not exist for a guest; SVE, RAS, MPAM, AMU, secure EL2 and RME have
    // state or registers the hypervisor does not switch or emulate.
    (ID_AA64PFR0_EL1, field(8) | field(12) | field(28) | field(32) | field(36) | field(40) | field(44) | field(52)),
    // MTE, RAS_frac, MPAM_frac, SME, NMI, MTE_frac, GCS, THE, MTEX, PFAR.
    (ID_AA64PFR1_EL1, field(8) | field(12) | field(16) | field(24) | field(36) | field(40) | field(44) | field(48) | field(52) | field(60)),
    (ID_AA64ZFR0_EL1, u64::MAX),
    (ID_AA64SMFR0_EL1, u64::MAX),
    // Trace, SPE, trace filter, trace buffer, MTPMU, BRBE, PMSS, HPMN0 (the PMU itself is
    // shown unless the VM has none: PMU below).
    (ID_AA64DFR0_EL1, field(4) | field(32) | field(40) | field(44) | field(48) | field(52) | field(56) | field(60)),
    (ID_AA64DFR1_EL1, u64::MAX),
    (ID_AA64AFR0_EL1, u64::MAX),
    (ID_AA64AFR1_EL1, u64::MAX),
    // MOPS needs HCRX_EL2 to be enabled for EL1.
    (ID_AA64ISAR2_EL1, field(16)),
    // FGT and ECV are EL2 features.
    (ID_AA64MMFR0_EL1, field(56) | field(60)),
    // VHE, LOR (trapped), TWED, HCX: EL2 features or not emulated.
    (ID_AA64MMFR1_EL1, field(8) | field(16) | field(32) | field(40)),
    // Nested virtualization.
    (ID_AA64MMFR2_EL1, field(24)),
    // New EL1 registers (TCR2, permission indirection, ...) that are not switched.
    (ID_AA64MMFR3_EL1, u64::MAX),
    (ID_AA64MMFR4_EL1, u64::MAX),
];

/// ID_AA64MMFR0_EL1.PARange encoding for `bits` of physical address (32..=52).
pub fn pa_range_encoding(bits: u8) -> u64 {
    match bits {
        0..=32 => 0,
        33..=36 => 1,
        37..=40 => 2,
        41..=42 => 3,
        43..=44 => 4,
        45..=48 => 5,
        _ => 6,
    }
}

/// Pointer authentication's fields: ISAR1 APA, API, GPA, GPI; ISAR2 GPA3, APA3.
const PAUTH: &[(SysReg, u64)] = &[
    (ID_AA64ISAR1_EL1, field(4) | field(8) | field(24) | field(28)),
    (ID_AA64ISAR2_EL1, field(8) | field(12)),
];

/// What a VM may see beyond the common baseline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestFeatures {
    /// Bits of guest-physical address space.
    pub ipa_bits: u8,
    /// Pointer authentication.
    pub pauth: bool,
    /// The PMU.
    pub pmu: bool,
    /// SVE.
    pub sve: bool,
}

/// The value a guest reads from ID register `r` whose host value is `host`.
pub fn guest_value(r: SysReg, host: u64, features: GuestFeatures) -> u64 {
    let ipa_bits = features.ipa_bits;
    let mut v = host;
    if let Some((_, mask)) = HIDDEN.iter().find(|(reg, _)| *reg == r) {
        v &= !mask;
    }
    if features.sve {
        // PFR0.SVE and ZFR0 as the host has them.
        match r {
            ID_AA64PFR0_EL1 => v |= host & field(32),
            ID_AA64ZFR0_EL1 => v = host,
            _ => {}
        }
    }
    if !features.pauth {
        if let Some((_, mask)) = PAUTH.iter().find(|(reg, _)| *reg == r) {
            v &= !mask;
        }
    }
    // Only PMUv3 (PMUVer 1..=14; 15 is IMPLEMENTATION DEFINED) is given to guests.
    if !features.pmu || (r == ID_AA64DFR0_EL1 && (v >> 8) & 0xf == 0xf) {
        // PMUVer, and AArch32's PerfMon.
        match r {
            ID_AA64DFR0_EL1 => v &= !field(8),
            ID_DFR0_EL1 => v &= !field(24),
            _ => {}
        }
    }
    if r == ID_AA64MMFR0_EL1 {
        // The guest's "physical" address space is its IPA space.
        let range = (v & 0xf).min(pa_range_encoding(ipa_bits));
        v = (v & !0xf) | range;
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    const ON40: GuestFeatures = GuestFeatures { ipa_bits: 40, pauth: true, pmu: true, sve: false };

    fn f(v: u64, shift: u32) -> u64 {
        (v >> shift) & 0xf
    }

    #[test]
    fn group3_covers_the_feature_registers_only() {
        assert!(is_id_group3(ID_AA64PFR0_EL1));
        assert!(is_id_group3(SysReg::new(3, 0, 0, 1, 0)), "ID_PFR0_EL1");
        assert!(!is_id_group3(SysReg::new(3, 0, 0, 0, 0)), "MIDR_EL1 is not trapped by TID3");
        assert!(!is_id_group3(SysReg::new(3, 1, 0, 0, 0)), "CCSIDR_EL1");
        assert_eq!(group3_index(ID_AA64PFR0_EL1), 24);
        assert_eq!(group3_index(SysReg::new(3, 0, 0, 7, 7)), 55);
    }

    #[test]
    fn hides_what_is_not_virtualized_and_keeps_the_rest() {
        // A host with EL2, EL3, SVE, RAS, AMU, FP/AdvSIMD and GICv3 system registers.
        let pfr0 = 0x0000_1111_1111_1111 | 1 << 32 | 1 << 28 | 1 << 44 | 1 << 24;
        let g = guest_value(ID_AA64PFR0_EL1, pfr0, ON40);
        assert_eq!((f(g, 8), f(g, 12), f(g, 32), f(g, 28), f(g, 44)), (0, 0, 0, 0, 0));
        assert_eq!(f(g, 0), 1, "EL0 AArch64 stays");
        assert_eq!(f(g, 24), 1, "GIC system registers stay");
        // An IMPLEMENTATION DEFINED PMU (not PMUv3) and trace hidden, debug architecture
        // version kept.
        let dfr0 = 0x0000_0000_0000_0f06 | 1 << 4 | 1 << 32;
        let g = guest_value(ID_AA64DFR0_EL1, dfr0, ON40);
        assert_eq!((f(g, 0), f(g, 4), f(g, 8), f(g, 32)), (6, 0, 0, 0));
        assert_eq!(guest_value(ID_AA64ZFR0_EL1, u64::MAX, ON40), 0);
        // Other registers pass through.
        let isar1 = 0x0011_1111_2112_1011;
        assert_eq!(guest_value(SysReg::new(3, 0, 0, 6, 1), isar1, ON40), isar1);
    }

    #[test]
    fn pauth_can_be_hidden() {
        let isar1 = 0x0011_1111_2112_1111u64 | 1 << 4 | 1 << 24;
        let on = GuestFeatures { pauth: true, ..ON40 };
        let off = GuestFeatures { pauth: false, ..ON40 };
        assert_eq!(guest_value(ID_AA64ISAR1_EL1, isar1, on), isar1);
        let g = guest_value(ID_AA64ISAR1_EL1, isar1, off);
        assert_eq!((f(g, 4), f(g, 8), f(g, 24), f(g, 28)), (0, 0, 0, 0));
        assert_eq!(f(g, 0), 1, "DPB stays");
        assert_eq!(guest_value(ID_AA64ISAR2_EL1, 0xff00, off), 0);
    }

    #[test]
    fn pa_range_is_capped_at_the_ipa_size() {
        let mmfr0 = 0x1122_0000_0010_1026; // PARange 6 (52 bits), FGT and ECV set
        let g = guest_value(ID_AA64MMFR0_EL1, mmfr0, ON40);
        assert_eq!(g & 0xf, 2, "40 bits");
        assert_eq!((f(g, 56), f(g, 60)), (0, 0));
        assert_eq!(guest_value(ID_AA64MMFR0_EL1, 0x1, ON40) & 0xf, 1, "never more than the host has");
        assert_eq!(pa_range_encoding(48), 5);
    }

    #[test]
    fn the_pmu_is_shown_unless_the_vm_has_none() {
        let dfr0 = 0x0000_0000_1030_5609u64;
        let on = guest_value(ID_AA64DFR0_EL1, dfr0, ON40);
        assert_eq!(f(on, 8), 6, "PMUVer shown");
        assert_eq!(f(on, 12), 5, "breakpoints shown");
        let off = GuestFeatures { pmu: false, ..ON40 };
        assert_eq!(f(guest_value(ID_AA64DFR0_EL1, dfr0, off), 8), 0);
        assert_eq!(f(guest_value(ID_DFR0_EL1, 0x0300_0000, off), 24), 0, "AArch32 PerfMon");
        assert_eq!(f(guest_value(ID_DFR0_EL1, 0x0300_0000, ON40), 24), 3);
    }

    #[test]
    fn sve_is_shown_only_to_vms_that_have_it() {
        let pfr0 = 1u64 << 32 | 0x11;
        let zfr0 = 0x0110_0000_0001_0001u64;
        assert_eq!(f(guest_value(ID_AA64PFR0_EL1, pfr0, ON40), 32), 0);
        assert_eq!(guest_value(ID_AA64ZFR0_EL1, zfr0, ON40), 0);
        let sve = GuestFeatures { sve: true, ..ON40 };
        assert_eq!(f(guest_value(ID_AA64PFR0_EL1, pfr0, sve), 32), 1);
        assert_eq!(guest_value(ID_AA64ZFR0_EL1, zfr0, sve), zfr0);
        assert_eq!(guest_value(ID_AA64SMFR0_EL1, u64::MAX, sve), 0, "SME stays hidden");
    }
}
