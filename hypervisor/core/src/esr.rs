//! Decoding of ESR_ELx, the syndrome of a synchronous exception.

/// Exception classes (ESR_ELx.EC) the hypervisor tells apart.
pub mod ec {
    pub const UNKNOWN: u8 = 0x00;
    pub const WFX: u8 = 0x01;
    pub const FP_ASIMD: u8 = 0x07;
    pub const PAC: u8 = 0x09;
    pub const ILLEGAL_STATE: u8 = 0x0e;
    pub const SVC64: u8 = 0x15;
    pub const HVC64: u8 = 0x16;
    pub const SMC64: u8 = 0x17;
    pub const SYSREG: u8 = 0x18;
    pub const SVE: u8 = 0x19;
    pub const FPAC: u8 = 0x1c;
    pub const IABT_LOWER: u8 = 0x20;
    pub const IABT_CURRENT: u8 = 0x21;
    pub const PC_ALIGN: u8 = 0x22;
    pub const DABT_LOWER: u8 = 0x24;
    pub const DABT_CURRENT: u8 = 0x25;
    pub const SP_ALIGN: u8 = 0x26;
    pub const SERROR: u8 = 0x2f;
    pub const BRK64: u8 = 0x3c;
}

/// A raw ESR value with accessors for its common fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Esr(pub u64);

impl Esr {
    pub fn ec(self) -> u8 {
        ((self.0 >> 26) & 0x3f) as u8
    }

    /// IL: the trapped instruction was 32 bits long.
    pub fn il32(self) -> bool {
        self.0 & (1 << 25) != 0
    }

    pub fn iss(self) -> u32 {
        (self.0 & 0x1ff_ffff) as u32
    }

    /// The immediate of an HVC/SMC/SVC/BRK.
    pub fn imm16(self) -> u16 {
        (self.0 & 0xffff) as u16
    }

    /// A human name for the class, for reports.
    pub fn class_name(self) -> &'static str {
        match self.ec() {
            ec::UNKNOWN => "unknown reason",
            ec::WFX => "WFI/WFE",
            ec::FP_ASIMD => "FP/SIMD access",
            ec::PAC => "pointer authentication",
            ec::ILLEGAL_STATE => "illegal execution state",
            ec::SVC64 => "SVC",
            ec::HVC64 => "HVC",
            ec::SMC64 => "SMC",
            ec::SYSREG => "system register access",
            ec::SVE => "SVE access",
            ec::FPAC => "pointer authentication failure",
            ec::IABT_LOWER => "instruction abort from a lower EL",
            ec::IABT_CURRENT => "instruction abort at EL2",
            ec::PC_ALIGN => "PC alignment fault",
            ec::DABT_LOWER => "data abort from a lower EL",
            ec::DABT_CURRENT => "data abort at EL2",
            ec::SP_ALIGN => "SP alignment fault",
            ec::SERROR => "SError",
            ec::BRK64 => "BRK",
            _ => "other",
        }
    }

    /// The data-abort view of the syndrome (meaningful for EC 0x24/0x25).
    pub fn data_abort(self) -> DataAbort {
        let iss = self.iss();
        DataAbort {
            isv: iss & (1 << 24) != 0,
            access_size: 1 << ((iss >> 22) & 3),
            sign_extend: iss & (1 << 21) != 0,
            reg: ((iss >> 16) & 0x1f) as u8,
            sixty_four: iss & (1 << 15) != 0,
            s1ptw: iss & (1 << 7) != 0,
            write: iss & (1 << 6) != 0,
            fsc: (iss & 0x3f) as u8,
        }
    }

    /// The trapped system-register view (EC 0x18).
    pub fn sysreg(self) -> SysregAccess {
        let iss = self.iss();
        SysregAccess {
            op0: ((iss >> 20) & 3) as u8,
            op2: ((iss >> 17) & 7) as u8,
            op1: ((iss >> 14) & 7) as u8,
            crn: ((iss >> 10) & 0xf) as u8,
            reg: ((iss >> 5) & 0x1f) as u8,
            crm: ((iss >> 1) & 0xf) as u8,
            read: iss & 1 != 0,
        }
    }
}

/// ISS of a data abort. When `isv` is clear nothing but `write` and `fsc` is valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataAbort {
    pub isv: bool,
    /// 1, 2, 4 or 8 bytes.
    pub access_size: u8,
    pub sign_extend: bool,
    /// The transfer register Rt (31 = XZR).
    pub reg: u8,
    /// The register is 64 bits wide (else 32).
    pub sixty_four: bool,
    /// The fault happened on a stage-2 walk for a stage-1 table.
    pub s1ptw: bool,
    pub write: bool,
    /// Fault status code.
    pub fsc: u8,
}

impl DataAbort {
    /// The value a store writes, from the full 64-bit source register.
    pub fn store_value(&self, reg_value: u64) -> u64 {
        reg_value & self.size_mask()
    }

    /// The value a load leaves in its 64-bit destination register, given what the device
    /// returned: truncated to the access size, sign-extended if the load was signed, and
    /// zero-extended above bit 31 for a W register.
    pub fn load_result(&self, device_value: u64) -> u64 {
        let bits = self.access_size as u32 * 8;
        let mut v = device_value & self.size_mask();
        if self.sign_extend && bits < 64 && v & (1 << (bits - 1)) != 0 {
            v |= u64::MAX << bits;
        }
        if !self.sixty_four {
            v &= 0xffff_ffff;
        }
        v
    }

    fn size_mask(&self) -> u64 {
        match self.access_size {
            8 => u64::MAX,
            n => (1u64 << (n as u32 * 8)) - 1,
        }
    }

    pub fn fault_kind(&self) -> &'static str {
        match self.fsc & 0x3c {
            0x00 => "address size fault",
            0x04 => "translation fault",
            0x08 => "access flag fault",
            0x0c => "permission fault",
            0x10 => "synchronous external abort",
            _ => "other fault",
        }
    }
}

/// ISS of a trapped MSR/MRS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SysregAccess {
    pub op0: u8,
    pub op1: u8,
    pub crn: u8,
    pub crm: u8,
    pub op2: u8,
    /// The general-purpose register read into or written from (31 = XZR).
    pub reg: u8,
    /// MRS (read) rather than MSR (write).
    pub read: bool,
}

impl SysregAccess {
    pub fn encoding(&self) -> crate::sysreg::SysReg {
        crate::sysreg::SysReg::new(self.op0, self.op1, self.crn, self.crm, self.op2)
    }
}

/// Syndromes the hypervisor builds when it injects an exception into a guest.
pub mod inject {
    use super::ec;

    const IL: u64 = 1 << 25;

    /// An UNDEFINED instruction (EC 0).
    pub const fn undefined() -> u64 {
        IL
    }

    /// A synchronous external abort on a data access, taken to EL1 from EL1 (`same_el`) or EL0.
    pub const fn data_abort(same_el: bool, write: bool) -> u64 {
        let class = if same_el { ec::DABT_CURRENT } else { ec::DABT_LOWER };
        (class as u64) << 26 | IL | (write as u64) << 6 | 0x10
    }

    /// A synchronous external abort on an instruction fetch.
    pub const fn instruction_abort(same_el: bool) -> u64 {
        let class = if same_el { ec::IABT_CURRENT } else { ec::IABT_LOWER };
        (class as u64) << 26 | IL | 0x10
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_data_abort() {
        // str w1, [x0] to an unmapped IPA: ISV, SAS=2 (word), SRT=1, WnR, translation fault L3.
        let esr = Esr((0x24 << 26) | (1 << 25) | (1 << 24) | (2 << 22) | (1 << 16) | (1 << 6) | 0x07);
        assert_eq!(esr.ec(), ec::DABT_LOWER);
        let da = esr.data_abort();
        assert!(da.isv && da.write && !da.sixty_four);
        assert_eq!((da.access_size, da.reg, da.fsc), (4, 1, 7));
        assert_eq!(da.fault_kind(), "translation fault");
    }

    #[test]
    fn load_results_are_truncated_and_extended_like_the_instruction() {
        let da = |size: u8, sign_extend: bool, sixty_four: bool| DataAbort {
            isv: true, access_size: size, sign_extend, reg: 0, sixty_four, s1ptw: false, write: false, fsc: 0,
        };
        assert_eq!(da(1, false, true).load_result(0x1ff), 0xff, "ldrb");
        assert_eq!(da(1, true, true).load_result(0x80), 0xffff_ffff_ffff_ff80, "ldrsb x");
        assert_eq!(da(1, true, false).load_result(0x80), 0xffff_ff80, "ldrsb w");
        assert_eq!(da(2, true, true).load_result(0x7fff), 0x7fff, "ldrsh, positive");
        assert_eq!(da(4, false, false).load_result(0xdead_beef_1234_5678), 0x1234_5678, "ldr w");
        assert_eq!(da(4, true, true).load_result(0x8000_0000), 0xffff_ffff_8000_0000, "ldrsw");
        assert_eq!(da(8, true, true).load_result(u64::MAX), u64::MAX, "ldr x");
        assert_eq!(da(2, false, false).store_value(0x1234_5678), 0x5678, "strh");
        assert_eq!(da(8, false, true).store_value(u64::MAX), u64::MAX, "str x");
    }

    #[test]
    fn decodes_a_sysreg_trap() {
        // mrs x3, S3_0_C15_C0_0 (IMPLEMENTATION DEFINED): op0=3 op1=0 CRn=15 CRm=0 op2=0, read.
        let esr = Esr((0x18 << 26) | (1 << 25) | (3 << 20) | (15 << 10) | (3 << 5) | 1);
        let s = esr.sysreg();
        assert_eq!((s.op0, s.op1, s.crn, s.crm, s.op2, s.reg, s.read), (3, 0, 15, 0, 0, 3, true));
    }

    #[test]
    fn injected_syndromes_have_the_right_class() {
        assert_eq!(Esr(inject::undefined()).ec(), ec::UNKNOWN);
        assert_eq!(Esr(inject::data_abort(true, true)).ec(), ec::DABT_CURRENT);
        assert!(Esr(inject::data_abort(true, true)).data_abort().write);
        assert_eq!(Esr(inject::instruction_abort(false)).ec(), ec::IABT_LOWER);
    }
}
