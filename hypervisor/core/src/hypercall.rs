//! The hypercall ABI: SMC Calling Convention function IDs (over HVC, or SMC trapped by
//! HCR_EL2.TSC), their decoding into [`Call`], and return codes.
//!
//! Shared by the hypervisor (which decodes) and the test guests (which call).

/// Function IDs.
pub mod id {
    // Arm architecture calls (owning entity 0).
    pub const SMCCC_VERSION: u32 = 0x8000_0000;
    pub const SMCCC_ARCH_FEATURES: u32 = 0x8000_0001;
    pub const SMCCC_ARCH_WORKAROUND_1: u32 = 0x8000_8000;

    // PSCI (owning entity 4). 64-bit variants are 0xC4..., 32-bit 0x84....
    pub const PSCI_VERSION: u32 = 0x8400_0000;
    pub const PSCI_CPU_SUSPEND_32: u32 = 0x8400_0001;
    pub const PSCI_CPU_SUSPEND_64: u32 = 0xc400_0001;
    pub const PSCI_CPU_OFF: u32 = 0x8400_0002;
    pub const PSCI_CPU_ON_32: u32 = 0x8400_0003;
    pub const PSCI_CPU_ON_64: u32 = 0xc400_0003;
    pub const PSCI_AFFINITY_INFO_32: u32 = 0x8400_0004;
    pub const PSCI_AFFINITY_INFO_64: u32 = 0xc400_0004;
    pub const PSCI_MIGRATE_INFO_TYPE: u32 = 0x8400_0006;
    pub const PSCI_SYSTEM_OFF: u32 = 0x8400_0008;
    pub const PSCI_SYSTEM_RESET: u32 = 0x8400_0009;
    pub const PSCI_FEATURES: u32 = 0x8400_000a;

    // This hypervisor's own calls (owning entity 6, vendor-specific hypervisor service).
    pub const HV_VERSION: u32 = 0xc600_0001;
    pub const HV_CONSOLE_WRITE: u32 = 0xc600_0002;
    pub const HV_TEST_VERDICT: u32 = 0xc600_0003;
    pub const HV_COUNTER: u32 = 0xc600_0004;
    /// Gives the physical CPU to another vCPU waiting for it, if there is one.
    pub const HV_YIELD: u32 = 0xc600_0005;
    /// Three counters read at one instant: x1..x3 name them, x1..x3 return their values.
    pub const HV_COUNTERS: u32 = 0xc600_0006;
    /// Appends x2 bytes at x1 (at most [`super::PMSG_WRITE_MAX`]) to the VM's persistent
    /// message ring on the pstore disk (pstore's pmsg), durable when the call returns;
    /// x0 = bytes written.
    pub const HV_PMSG_WRITE: u32 = 0xc600_0007;
    /// Guest memory (balloon-like), on the caller's own RAM; sizes and addresses 4 KiB
    /// aligned. x1 = IPA, x2 = size. Unmap: x0 = bytes that were mapped.
    pub const HV_MEM_UNMAP: u32 = 0xc600_0010;
    /// x3 = permissions ([`super::mem_perm`]); x0 = bytes whose permissions changed.
    pub const HV_MEM_PROTECT: u32 = 0xc600_0011;
    /// Aging: x3 bit 0 set = only test. x0 = young pages, x1 = young bitmap of the first 64
    /// pages, x2 = 1 if the hypervisor's own translation cache had the range young.
    pub const HV_MEM_AGE: u32 = 0xc600_0012;
    /// Reclaim: ages the range, then unmaps and frees the pages found cold in at least x3
    /// passes in a row (x3 = 0: age only). x0 = pages reclaimed.
    pub const HV_MEM_RECLAIM: u32 = 0xc600_0013;
    /// Reads the 8 bytes at x1 (8-aligned) the way the hypervisor reads guest memory
    /// (through its translation cache): x1 = the value.
    pub const HV_MEM_PEEK: u32 = 0xc600_0014;
    /// Logs the VM's stage-2 notifier trace; x0 = events so far.
    pub const HV_MEM_TRACE: u32 = 0xc600_0015;
    /// Makes the hypervisor fault on purpose (only with `debug_faults=on`), to test crash
    /// reporting: x1 = a [`super::DebugFault`].
    pub const HV_DEBUG_FAULT: u32 = 0xc600_00ff;

    /// Every function ID the hypervisor answers (the decoder's tests and the fuzz tests
    /// check against this one list). SMCCC_ARCH_WORKAROUND_1 is not one of them.
    pub const IMPLEMENTED: [u32; 28] = [
        SMCCC_VERSION, SMCCC_ARCH_FEATURES, PSCI_VERSION, PSCI_CPU_SUSPEND_32, PSCI_CPU_SUSPEND_64, PSCI_CPU_OFF,
        PSCI_CPU_ON_32, PSCI_CPU_ON_64, PSCI_AFFINITY_INFO_32, PSCI_AFFINITY_INFO_64, PSCI_MIGRATE_INFO_TYPE,
        PSCI_SYSTEM_OFF, PSCI_SYSTEM_RESET, PSCI_FEATURES, HV_VERSION, HV_CONSOLE_WRITE, HV_TEST_VERDICT, HV_COUNTER,
        HV_YIELD, HV_COUNTERS, HV_PMSG_WRITE, HV_MEM_UNMAP, HV_MEM_PROTECT, HV_MEM_AGE, HV_MEM_RECLAIM, HV_MEM_PEEK, HV_MEM_TRACE,
        HV_DEBUG_FAULT,
    ];
}

/// SMCCC and PSCI return codes (as the signed value placed in x0).
pub mod ret {
    pub const SUCCESS: i64 = 0;
    pub const NOT_SUPPORTED: i64 = -1;
    pub const INVALID_PARAMETERS: i64 = -2;
    pub const DENIED: i64 = -3;
    pub const ALREADY_ON: i64 = -4;
    pub const ON_PENDING: i64 = -5;
    pub const INTERNAL_FAILURE: i64 = -6;
    pub const NOT_PRESENT: i64 = -7;
    pub const INVALID_ADDRESS: i64 = -9;
}

/// SMCCC version reported: 1.1.
pub const SMCCC_VERSION_1_1: u64 = 0x1_0001;
/// PSCI version reported: 1.1.
pub const PSCI_VERSION_1_1: u64 = 0x1_0001;
/// MIGRATE_INFO_TYPE: no Trusted OS that needs migration.
pub const PSCI_TOS_NOT_PRESENT: u64 = 2;
/// Hypervisor version reported by HV_VERSION as (major << 16 | minor << 8 | patch).
pub const HV_VERSION_VALUE: u64 = 0 << 16 | 1 << 8;
/// The longest buffer one HV_CONSOLE_WRITE takes.
pub const CONSOLE_WRITE_MAX: u64 = 4096;
/// The longest buffer one HV_PMSG_WRITE takes.
pub const PMSG_WRITE_MAX: u64 = 4096;

/// HV_MEM_PROTECT permission bits. Allowed: none, R, RW, RX, RWX.
pub mod mem_perm {
    pub const READ: u64 = 1;
    pub const WRITE: u64 = 2;
    pub const EXEC: u64 = 4;

    /// (read, write, exec) for an allowed combination.
    pub fn decode(perm: u64) -> Option<(bool, bool, bool)> {
        match perm {
            0 | 1 | 3 | 5 | 7 => Some((perm & READ != 0, perm & WRITE != 0, perm & EXEC != 0)),
            _ => None,
        }
    }
}

/// AFFINITY_INFO results.
pub mod affinity {
    pub const ON: i64 = 0;
    pub const OFF: i64 = 1;
    pub const ON_PENDING: i64 = 2;
}

/// Per-vCPU counters readable with HV_COUNTER.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum Counter {
    /// Every exit from the guest to the hypervisor.
    Exits = 0,
    Hypercalls = 1,
    /// Data aborts emulated as device accesses.
    MmioAccesses = 2,
    /// Aborts and UNDEFs injected into the guest.
    InjectedFaults = 3,
    SysregTraps = 4,
    WfxTraps = 5,
    /// PAC instructions and key-register accesses trapped while the keys were not live.
    PauthTraps = 6,
    /// Exits of the vCPU while it owned the key registers (its keys saved, the
    /// hypervisor's put back).
    KeySwitchExits = 7,
    /// Exits with no key switch (`Exits - KeySwitchExits`).
    PlainExits = 8,
    /// Times the vCPU was loaded on a physical CPU (residencies).
    Loads = 9,
    /// Not a count: 1 if the vCPU owns the key registers right now, else 0.
    KeysLive = 10,
    // The VM's guest memory (VM-wide, not per vCPU):
    /// Stage-2 translation faults on guest RAM that mapped a page.
    Stage2Faults = 11,
    /// Access-flag faults (a page touched again after aging).
    AccessFaults = 12,
    /// Accesses the stage-2 permissions refused (an abort injected).
    PermissionFaults = 13,
    /// Unmap and protect operations, each one invalidation through the notifiers.
    Invalidations = 14,
    /// Entries the hypervisor's translation cache dropped on invalidations.
    CacheDropped = 15,
    /// Pages given memory on first touch (populate=lazy) or refaulted.
    PagesPopulated = 16,
    /// Pages whose memory went back to the hypervisor (unmap, reclaim).
    PagesReleased = 17,
    CacheHits = 18,
    CacheMisses = 19,
    /// Fault paths that lost a race with an invalidation and let the guest fault again.
    FaultRetries = 20,
    // Per vCPU again:
    /// First FP/SIMD or SVE uses in a residency that moved the vCPU's registers into the CPU.
    FpLoads = 21,
}

impl Counter {
    pub const ALL: [Counter; 22] = [
        Counter::Exits,
        Counter::Hypercalls,
        Counter::MmioAccesses,
        Counter::InjectedFaults,
        Counter::SysregTraps,
        Counter::WfxTraps,
        Counter::PauthTraps,
        Counter::KeySwitchExits,
        Counter::PlainExits,
        Counter::Loads,
        Counter::KeysLive,
        Counter::Stage2Faults,
        Counter::AccessFaults,
        Counter::PermissionFaults,
        Counter::Invalidations,
        Counter::CacheDropped,
        Counter::PagesPopulated,
        Counter::PagesReleased,
        Counter::CacheHits,
        Counter::CacheMisses,
        Counter::FaultRetries,
        Counter::FpLoads,
    ];

    /// Counters kept per VM rather than per vCPU.
    pub fn is_vm_wide(self) -> bool {
        (Counter::Stage2Faults as u64..=Counter::FaultRetries as u64).contains(&(self as u64))
    }

    pub fn from_raw(v: u64) -> Option<Counter> {
        Counter::ALL.get(v as usize).copied()
    }

    pub fn name(self) -> &'static str {
        match self {
            Counter::Exits => "exits",
            Counter::Hypercalls => "hypercalls",
            Counter::MmioAccesses => "mmio",
            Counter::InjectedFaults => "injected",
            Counter::SysregTraps => "sysreg",
            Counter::WfxTraps => "wfx",
            Counter::PauthTraps => "pauth_traps",
            Counter::KeySwitchExits => "key_switch_exits",
            Counter::PlainExits => "plain_exits",
            Counter::Loads => "loads",
            Counter::KeysLive => "keys_live",
            Counter::Stage2Faults => "s2_faults",
            Counter::AccessFaults => "access_faults",
            Counter::PermissionFaults => "perm_faults",
            Counter::Invalidations => "invalidations",
            Counter::CacheDropped => "cache_dropped",
            Counter::PagesPopulated => "populated",
            Counter::PagesReleased => "released",
            Counter::CacheHits => "cache_hits",
            Counter::CacheMisses => "cache_misses",
            Counter::FaultRetries => "fault_retries",
            Counter::FpLoads => "fp_loads",
        }
    }
}

/// What HV_DEBUG_FAULT makes the hypervisor do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum DebugFault {
    /// A Rust panic.
    Panic = 0,
    /// A load from an unmapped address at EL2.
    DataAbort = 1,
    /// Unbounded recursion into the stack's guard page.
    StackOverflow = 2,
    /// The hypervisor's own PAC key changed under a signed return address.
    PacKey = 3,
}

impl DebugFault {
    pub fn from_raw(v: u64) -> Option<DebugFault> {
        match v {
            0 => Some(DebugFault::Panic),
            1 => Some(DebugFault::DataAbort),
            2 => Some(DebugFault::StackOverflow),
            3 => Some(DebugFault::PacKey),
            _ => None,
        }
    }
}

/// A decoded call. Arguments are taken from x1..x3 (truncated to 32 bits for SMC32 calls).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    SmcccVersion,
    SmcccArchFeatures { function: u32 },
    PsciVersion,
    PsciCpuSuspend,
    PsciCpuOff,
    PsciCpuOn { target: u64, entry: u64, context: u64 },
    PsciAffinityInfo { target: u64, lowest_level: u64 },
    PsciMigrateInfoType,
    PsciSystemOff,
    PsciSystemReset,
    PsciFeatures { function: u32 },
    HvVersion,
    HvConsoleWrite { addr: u64, len: u64 },
    HvTestVerdict { code: u64 },
    HvCounter { counter: u64 },
    HvYield,
    HvCounters { counters: [u64; 3] },
    HvPmsgWrite { addr: u64, len: u64 },
    HvDebugFault { fault: u64 },
    HvMemUnmap { ipa: u64, size: u64 },
    HvMemProtect { ipa: u64, size: u64, perm: u64 },
    HvMemAge { ipa: u64, size: u64, test_only: bool },
    HvMemReclaim { ipa: u64, size: u64, passes: u64 },
    HvMemPeek { ipa: u64 },
    HvMemTrace,
    /// Anything else: answered with NOT_SUPPORTED.
    Unknown { function: u32 },
}

/// Bit 30 of a function ID: the SMC64 calling convention (64-bit arguments).
fn is_smc64(function: u32) -> bool {
    function & (1 << 30) != 0
}

impl Call {
    /// The answer to a call that only asks for a constant (SMCCC_VERSION, PSCI_VERSION,
    /// MIGRATE_INFO_TYPE, HV_VERSION), from x0 alone: the exit path answers these before
    /// anything else (a guest's null call). None for every other call.
    #[inline(always)]
    pub fn constant_answer(x0: u64) -> Option<u64> {
        match x0 as u32 {
            id::SMCCC_VERSION => Some(SMCCC_VERSION_1_1),
            id::PSCI_VERSION => Some(PSCI_VERSION_1_1),
            id::PSCI_MIGRATE_INFO_TYPE => Some(PSCI_TOS_NOT_PRESENT),
            id::HV_VERSION => Some(HV_VERSION_VALUE),
            _ => None,
        }
    }

    /// Decodes x0..x3 as the guest left them. Inlined: it is on every hypercall's path,
    /// where a call and a returned-in-memory enum cost more than the decoding.
    #[inline(always)]
    pub fn decode(x0: u64, x1: u64, x2: u64, x3: u64) -> Call {
        // SMCCC: the function ID is w0; the upper half of x0 is ignored.
        let function = x0 as u32;
        let arg = |x: u64| if is_smc64(function) { x } else { x & 0xffff_ffff };
        let (a1, a2, a3) = (arg(x1), arg(x2), arg(x3));
        // Fast calls only, with bits 23:16 clear (SMCCC); then by owning entity and number,
        // which compiles to small jump tables rather than a search over every ID.
        if function & 0x8000_0000 == 0 || function & 0x00ff_0000 != 0 {
            return Call::Unknown { function };
        }
        let smc64 = is_smc64(function);
        match ((function >> 24) & 0x3f, function & 0xffff, smc64) {
            (0, 0x0000, false) => Call::SmcccVersion,
            (0, 0x0001, false) => Call::SmcccArchFeatures { function: a1 as u32 },
            (4, 0x0000, false) => Call::PsciVersion,
            (4, 0x0001, _) => Call::PsciCpuSuspend,
            (4, 0x0002, false) => Call::PsciCpuOff,
            (4, 0x0003, _) => Call::PsciCpuOn { target: a1, entry: a2, context: a3 },
            (4, 0x0004, _) => Call::PsciAffinityInfo { target: a1, lowest_level: a2 },
            (4, 0x0006, false) => Call::PsciMigrateInfoType,
            (4, 0x0008, false) => Call::PsciSystemOff,
            (4, 0x0009, false) => Call::PsciSystemReset,
            (4, 0x000a, false) => Call::PsciFeatures { function: a1 as u32 },
            (6, 0x0001, true) => Call::HvVersion,
            (6, 0x0002, true) => Call::HvConsoleWrite { addr: a1, len: a2 },
            (6, 0x0007, true) => Call::HvPmsgWrite { addr: a1, len: a2 },
            (6, 0x0003, true) => Call::HvTestVerdict { code: a1 },
            (6, 0x0004, true) => Call::HvCounter { counter: a1 },
            (6, 0x0005, true) => Call::HvYield,
            (6, 0x0006, true) => Call::HvCounters { counters: [a1, a2, a3] },
            (6, 0x0010, true) => Call::HvMemUnmap { ipa: a1, size: a2 },
            (6, 0x0011, true) => Call::HvMemProtect { ipa: a1, size: a2, perm: a3 },
            (6, 0x0012, true) => Call::HvMemAge { ipa: a1, size: a2, test_only: a3 & 1 != 0 },
            (6, 0x0013, true) => Call::HvMemReclaim { ipa: a1, size: a2, passes: a3 },
            (6, 0x0014, true) => Call::HvMemPeek { ipa: a1 },
            (6, 0x0015, true) => Call::HvMemTrace,
            (6, 0x00ff, true) => Call::HvDebugFault { fault: a1 },
            _ => Call::Unknown { function },
        }
    }

    /// Whether `function` names a call this ABI implements (for PSCI_FEATURES and
    /// SMCCC_ARCH_FEATURES).
    pub fn is_implemented(function: u32) -> bool {
        !matches!(Call::decode(function as u64, 0, 0, 0), Call::Unknown { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_known_calls() {
        assert_eq!(Call::decode(0x8000_0000, 0, 0, 0), Call::SmcccVersion);
        assert_eq!(
            Call::decode(0xc400_0003, 0x1, 0x4008_0000, 0xdead_beef_0000),
            Call::PsciCpuOn { target: 1, entry: 0x4008_0000, context: 0xdead_beef_0000 }
        );
        assert_eq!(Call::decode(id::HV_CONSOLE_WRITE as u64, 0x4000_1000, 12, 0), Call::HvConsoleWrite { addr: 0x4000_1000, len: 12 });
        assert_eq!(Call::decode(id::HV_PMSG_WRITE as u64, 0x4000_2000, 9, 0), Call::HvPmsgWrite { addr: 0x4000_2000, len: 9 });
    }

    #[test]
    fn smc32_calls_ignore_the_upper_halves_of_arguments() {
        assert_eq!(
            Call::decode(0x8400_0003, 0xffff_ffff_0000_0002, 0x1_4008_0000, 7),
            Call::PsciCpuOn { target: 2, entry: 0x4008_0000, context: 7 }
        );
    }

    #[test]
    fn unknown_and_malformed_ids_are_unknown() {
        assert_eq!(Call::decode(0x8600_ff01, 0, 0, 0), Call::Unknown { function: 0x8600_ff01 });
        assert_eq!(Call::decode(0x1_8000_0000, 0, 0, 0), Call::SmcccVersion, "only w0 is the function ID");
        assert!(Call::is_implemented(id::PSCI_CPU_ON_64));
        assert!(!Call::is_implemented(0x8400_0007));
    }

    #[test]
    fn constant_answers_are_exactly_the_constant_calls() {
        for entity in 0..64u64 {
            for number in 0..0x200u64 {
                for high in [0, 1 << 30, 0xffff_ffff_0000_0000] {
                    let x0 = 0x8000_0000 | high | entity << 24 | number;
                    let want = match Call::decode(x0, 1, 2, 3) {
                        Call::SmcccVersion => Some(SMCCC_VERSION_1_1),
                        Call::PsciVersion => Some(PSCI_VERSION_1_1),
                        Call::PsciMigrateInfoType => Some(PSCI_TOS_NOT_PRESENT),
                        Call::HvVersion => Some(HV_VERSION_VALUE),
                        _ => None,
                    };
                    assert_eq!(Call::constant_answer(x0), want, "{x0:#x}");
                }
            }
        }
    }

    #[test]
    fn the_implemented_list_is_exactly_what_decodes() {
        // Every fast-call ID of every owning entity, both conventions, numbers up to 0x1ff:
        // a call decodes if and only if the list names it.
        for entity in 0..64u32 {
            for number in 0..0x200u32 {
                for smc64 in [0, 1 << 30] {
                    let f = 0x8000_0000 | smc64 | entity << 24 | number;
                    assert_eq!(Call::is_implemented(f), id::IMPLEMENTED.contains(&f), "{f:#x}");
                }
            }
        }
        assert!(!Call::is_implemented(id::SMCCC_ARCH_WORKAROUND_1));
    }

    #[test]
    fn decoding_matches_every_id_constant() {
        for f in id::IMPLEMENTED {
            assert!(Call::is_implemented(f), "{f:#x}");
            // The other calling convention of a call defined for one only, and the same
            // number with reserved bits or as a yielding call, are not calls.
            assert!(!Call::is_implemented(f | 0x0001_0000), "{f:#x} with reserved bits");
            assert!(!Call::is_implemented(f & !0x8000_0000), "{f:#x} as a yielding call");
        }
        assert!(!Call::is_implemented(0xc000_0000), "SMCCC_VERSION is SMC32 only");
        assert!(!Call::is_implemented(0x8600_0001), "our calls are SMC64");
    }

    #[test]
    fn counters_round_trip() {
        for c in Counter::ALL {
            assert_eq!(Counter::from_raw(c as u64), Some(c));
        }
        assert_eq!(Counter::from_raw(99), None);
    }
}
