//! System-register encodings, as trapped accesses report them.

/// (op0, op1, CRn, CRm, op2) packed into one value, comparable and printable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SysReg(u32);

impl SysReg {
    pub const fn new(op0: u8, op1: u8, crn: u8, crm: u8, op2: u8) -> Self {
        SysReg((op0 as u32) << 16 | (op1 as u32) << 12 | (crn as u32) << 8 | (crm as u32) << 4 | op2 as u32)
    }

    pub const fn op0(self) -> u8 {
        (self.0 >> 16) as u8
    }
    pub const fn op1(self) -> u8 {
        ((self.0 >> 12) & 0xf) as u8
    }
    pub const fn crn(self) -> u8 {
        ((self.0 >> 8) & 0xf) as u8
    }
    pub const fn crm(self) -> u8 {
        ((self.0 >> 4) & 0xf) as u8
    }
    pub const fn op2(self) -> u8 {
        (self.0 & 0xf) as u8
    }

    /// The name of registers the hypervisor knows, for logs.
    pub fn name(self) -> Option<&'static str> {
        KNOWN.iter().find(|(r, _)| *r == self).map(|(_, n)| *n)
    }
}

impl core::fmt::Display for SysReg {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "S{}_{}_C{}_C{}_{}", self.op0(), self.op1(), self.crn(), self.crm(), self.op2()),
        }
    }
}

pub const MIDR_EL1: SysReg = SysReg::new(3, 0, 0, 0, 0);
pub const MPIDR_EL1: SysReg = SysReg::new(3, 0, 0, 0, 5);
pub const ID_AA64PFR0_EL1: SysReg = SysReg::new(3, 0, 0, 4, 0);
pub const ID_AA64ISAR1_EL1: SysReg = SysReg::new(3, 0, 0, 6, 1);
pub const ID_AA64MMFR0_EL1: SysReg = SysReg::new(3, 0, 0, 7, 0);
pub const ACTLR_EL1: SysReg = SysReg::new(3, 0, 1, 0, 1);
pub const PMCR_EL0: SysReg = SysReg::new(3, 3, 9, 12, 0);
pub const CNTP_CTL_EL0: SysReg = SysReg::new(3, 3, 14, 2, 1);
pub const CNTP_CVAL_EL0: SysReg = SysReg::new(3, 3, 14, 2, 2);
pub const CNTP_TVAL_EL0: SysReg = SysReg::new(3, 3, 14, 2, 0);
/// One of the ten pointer-authentication key registers (APIAKeyLo_EL1 .. APGAKeyHi_EL1),
/// whose EL1 accesses HCR_EL2.APK traps.
pub fn is_pac_key(r: SysReg) -> bool {
    r.op0() == 3 && r.op1() == 0 && r.crn() == 2 && matches!((r.crm(), r.op2()), (1 | 2, 0..=3) | (3, 0..=1))
}

/// A PMUv3 register (PMCR_EL0 .. PMCCFILTR_EL0, PMINTENSET/CLR_EL1, PMMIR_EL1), whose EL1
/// and EL0 accesses MDCR_EL2.TPM traps.
pub fn is_pmu(r: SysReg) -> bool {
    match (r.op0(), r.op1(), r.crn(), r.crm()) {
        (3, 3, 9, 12..=14) => true,
        (3, 0, 9, 14) => matches!(r.op2(), 1 | 2 | 6),
        (3, 3, 14, 8..=15) => true,
        _ => false,
    }
}

pub const DC_ISW: SysReg = SysReg::new(1, 0, 7, 6, 2);
pub const DC_CSW: SysReg = SysReg::new(1, 0, 7, 10, 2);
pub const DC_CISW: SysReg = SysReg::new(1, 0, 7, 14, 2);

const KNOWN: &[(SysReg, &str)] = &[
    (MIDR_EL1, "MIDR_EL1"),
    (MPIDR_EL1, "MPIDR_EL1"),
    (ID_AA64PFR0_EL1, "ID_AA64PFR0_EL1"),
    (ID_AA64ISAR1_EL1, "ID_AA64ISAR1_EL1"),
    (ID_AA64MMFR0_EL1, "ID_AA64MMFR0_EL1"),
    (ACTLR_EL1, "ACTLR_EL1"),
    (PMCR_EL0, "PMCR_EL0"),
    (CNTP_CTL_EL0, "CNTP_CTL_EL0"),
    (CNTP_CVAL_EL0, "CNTP_CVAL_EL0"),
    (CNTP_TVAL_EL0, "CNTP_TVAL_EL0"),
    (DC_ISW, "DC ISW"),
    (DC_CSW, "DC CSW"),
    (DC_CISW, "DC CISW"),
];

/// IMPLEMENTATION DEFINED registers live at op0=3, CRn=11 or 15 (trapped by HCR_EL2.TIDCP).
pub fn is_implementation_defined(r: SysReg) -> bool {
    r.op0() == 3 && (r.crn() == 11 || r.crn() == 15)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;

    #[test]
    fn pmu_registers_are_recognized() {
        assert!(is_pmu(PMCR_EL0));
        assert!(is_pmu(SysReg::new(3, 3, 9, 13, 0)), "PMCCNTR_EL0");
        assert!(is_pmu(SysReg::new(3, 0, 9, 14, 1)), "PMINTENSET_EL1");
        assert!(is_pmu(SysReg::new(3, 3, 14, 8, 0)), "PMEVCNTR0_EL0");
        assert!(is_pmu(SysReg::new(3, 3, 14, 15, 7)), "PMCCFILTR_EL0");
        assert!(!is_pmu(CNTP_CTL_EL0));
        assert!(!is_pmu(SysReg::new(3, 0, 9, 14, 0)), "not a PMU register");
    }

    #[test]
    fn formats_known_and_unknown_registers() {
        assert_eq!(MPIDR_EL1.to_string(), "MPIDR_EL1");
        let r = SysReg::new(3, 1, 15, 2, 7);
        assert_eq!(r.to_string(), "S3_1_C15_C2_7");
        assert!(is_implementation_defined(r));
        assert_eq!((r.op0(), r.op1(), r.crn(), r.crm(), r.op2()), (3, 1, 15, 2, 7));
    }

    #[test]
    fn pac_key_registers() {
        let keys = (1..=3).flat_map(|crm| (0..8).map(move |op2| (crm, op2))).filter(|&(crm, op2)| super::is_pac_key(SysReg::new(3, 0, 2, crm, op2)));
        assert_eq!(keys.count(), 10);
        assert!(!super::is_pac_key(SysReg::new(3, 0, 2, 0, 0)), "TTBR0_EL1");
        assert!(!super::is_pac_key(SysReg::new(3, 0, 2, 3, 2)));
        assert!(!super::is_pac_key(SysReg::new(3, 4, 2, 1, 0)));
    }
}
