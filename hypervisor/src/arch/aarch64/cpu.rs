//! Per-CPU EL2 configuration and what the CPU can do.

use aarch64_cpu::registers::*;
use spin::Once;

/// What this machine's CPUs implement (read once, on the boot CPU).
#[derive(Clone, Copy, Debug)]
pub struct Features {
    /// Physical address size in bits (ID_AA64MMFR0_EL1.PARange).
    pub pa_bits: u8,
    /// PARange's raw value (for the PS fields).
    pub pa_range: u8,
    /// FEAT_PAuth: the EL1 key registers exist and must be switched with the vCPU.
    pub pauth: bool,
    /// A GICv3 system-register CPU interface (and with it ICH_*_EL2 for virtualization).
    pub gic_sysregs: bool,
    /// FEAT_RNG: RNDR reads random numbers (the guests' entropy device uses it).
    pub rng: bool,
}

static FEATURES: Once<Features> = Once::new();

pub fn detect_features() -> Features {
    *FEATURES.call_once(|| {
        let pa_range = ID_AA64MMFR0_EL1.read(ID_AA64MMFR0_EL1::PARange) as u8;
        let pa_bits = match pa_range {
            0 => 32,
            1 => 36,
            2 => 40,
            3 => 42,
            4 => 44,
            5 => 48,
            _ => 52,
        };
        let isar1 = ID_AA64ISAR1_EL1.get();
        // APA, API, GPA, GPI fields: any non-zero means FEAT_PAuth.
        let pauth = (isar1 >> 4) & 0xff != 0 || (isar1 >> 24) & 0xff != 0;
        let gic_sysregs = ID_AA64PFR0_EL1.get() >> 24 & 0xf != 0;
        let rng = ID_AA64ISAR0_EL1.get() >> 60 & 0xf != 0;
        Features { pa_bits, pa_range, pauth, gic_sysregs, rng }
    })
}

/// The features; `detect_features` must have run.
pub fn features() -> Features {
    FEATURES.get().copied().unwrap_or(Features { pa_bits: 40, pa_range: 2, pauth: false, gic_sysregs: false, rng: false })
}

/// Fills `buf` with random bytes from RNDR (FEAT_RNG; `features().rng`); returns how many
/// it filled: fewer when the generator reported that it has none to give now.
pub fn random_bytes(buf: &mut [u8]) -> usize {
    if !features().rng {
        return 0;
    }
    let mut filled = 0;
    for chunk in buf.chunks_mut(8) {
        let (value, ok): (u64, u64);
        // SAFETY: RNDR reads the CPU's random number generator; it sets NZCV to 0b0100 when
        // it returns no number (then the value is 0), which CSET turns into ok = 0.
        unsafe { core::arch::asm!("mrs {v}, s3_3_c2_c4_0", "cset {ok}, ne", v = out(reg) value, ok = out(reg) ok, options(nomem, nostack)) };
        if ok == 0 {
            break;
        }
        chunk.copy_from_slice(&value.to_le_bytes()[..chunk.len()]);
        filled += chunk.len();
    }
    filled
}

/// HCR_EL2 while a guest runs: stage-2 on, AArch64 EL1, interrupts and SErrors routed to
/// EL2, and traps for what the hypervisor must see: SMC (TSC), set/way cache maintenance
/// (TSW), ACTLR (TACR), IMPLEMENTATION DEFINED registers (TIDCP), LOR (TLOR), and the ID
/// registers (TID3), so that features not virtualized are hidden. PAC instructions and
/// key-register accesses trap unless the vCPU owns the keys (`keys_live`, vm/pauth.rs); for
/// a VM without PAuth they always trap and get UNDEF. WFI traps (TWI) when `trap_wfi`: the
/// scheduler wants it when another vCPU waits for the CPU; a vCPU alone on its CPU waits in
/// the guest, since every interrupt for it reaches EL2 anyway (IMO), and kicks are interrupts.
pub fn guest_hcr(keys_live: bool, trap_wfi: bool) -> u64 {
    // The two fields aarch64-cpu 10 does not name.
    const PTW: u64 = 1 << 2;
    const TWI: u64 = 1 << 13;
    let pauth = if keys_live { HCR_EL2::APK::SET + HCR_EL2::API::SET } else { HCR_EL2::APK::CLEAR + HCR_EL2::API::CLEAR };
    let fields = HCR_EL2::VM::Enable
        + HCR_EL2::SWIO::SET
        + HCR_EL2::FMO::EnableVirtualFIQ
        + HCR_EL2::IMO::EnableVirtualIRQ
        + HCR_EL2::AMO::SET
        + HCR_EL2::FB::SET
        + HCR_EL2::BSU::InnerShareable
        + HCR_EL2::TID3::SET
        + HCR_EL2::TSC::EnableTrapEl1SmcToEl2
        + HCR_EL2::TIDCP::SET
        + HCR_EL2::TACR::SET
        + HCR_EL2::TSW::SET
        + HCR_EL2::RW::EL1IsAarch64
        + HCR_EL2::TLOR::SET
        + pauth;
    fields.value | PTW | if trap_wfi { TWI } else { 0 }
}

/// IPA size given to every VM (`choose_ipa_bits`).
static IPA_BITS: core::sync::atomic::AtomicU8 = core::sync::atomic::AtomicU8::new(40);

/// Picks the VMs' IPA size for guest RAM that can reach up to `ram_end` at most: 32 bits
/// (4 GiB) where that covers it, so that stage 2 starts at level 2 with concatenated
/// tables, one level fewer for every stage-2 walk (and for each of QEMU's TLB fills, which
/// walk both stages); else what the CPU supports, capped at 40 bits (1 TiB, level 1).
pub fn choose_ipa_bits(ram_end: u64) {
    let bits = if ram_end <= 1 << 32 { 32 } else { 40 };
    IPA_BITS.store(features().pa_bits.min(bits), core::sync::atomic::Ordering::Relaxed);
}

pub fn ipa_bits() -> u8 {
    IPA_BITS.load(core::sync::atomic::Ordering::Relaxed)
}

/// VTCR_EL2 for VMs of `ipa_bits` whose stage-2 root is at `start_level`.
pub fn vtcr(ipa_bits: u8, start_level: u8) -> u64 {
    let sl0 = match start_level {
        0 => VTCR_EL2::SL0::Granule4KBLevel0,
        1 => VTCR_EL2::SL0::Granule4KBLevel1,
        _ => VTCR_EL2::SL0::Granule4KBLevel2,
    };
    (VTCR_EL2::T0SZ.val(64 - ipa_bits as u64)
        + sl0
        + VTCR_EL2::IRGN0::NormalWBRAWA
        + VTCR_EL2::ORGN0::NormalWBRAWA
        + VTCR_EL2::SH0::Inner
        + VTCR_EL2::TG0::Granule4KB
        + VTCR_EL2::PS.val(features().pa_range as u64)
        + VTCR_EL2::RES1::SET)
        .value
}

extern "C" {
    fn read_mdcr_el2() -> u64;
    fn write_mdcr_el2(v: u64);
}

/// EL2 settings every physical CPU needs before it runs guests.
pub fn init_el2(vtcr_value: u64) {
    VTCR_EL2.set(vtcr_value);
    // Guests read the physical counter directly; their EL1 physical timer is emulated
    // (its accesses trap: vm/timer.rs); the virtual timer is theirs, offset 0 on every CPU.
    CNTHCTL_EL2.write(CNTHCTL_EL2::EL1PCTEN::SET + CNTHCTL_EL2::EL1PCEN::CLEAR);
    CNTVOFF_EL2.set(0);
    // Trace registers belong to the guest; FP/SIMD and SVE trap until a vCPU's registers are
    // in the CPU (fp.rs; the hypervisor is built soft-float). aarch64-cpu 10 names only TAM
    // of CPTR_EL2.
    const TTA: u64 = 1 << 20;
    const TCPAC: u64 = 1 << 31;
    CPTR_EL2.set(CPTR_EL2.get() & !(TTA | TCPAC));
    super::fp::trap_guest(true, true);
    CPTR_EL2.modify(CPTR_EL2::TAM::CLEAR);
    // PMU accesses (TPM, TPMCR) and debug registers (TDA, TDOSA, TDRA) trap until a vCPU
    // first touches them in a residency (vm/pmu.rs, vm/debug.rs). HPMN keeps its reset value
    // (every counter is the guest's); HPMD: those counters never count at EL2. Debug
    // exceptions go to EL1 (TDE clear), never to the hypervisor.
    const TDE: u64 = 1 << 8;
    const HPMD: u64 = 1 << 17;
    // SAFETY: MDCR_EL2 (not in aarch64-cpu 10: context.S) only controls traps of lower-EL
    // debug/PMU accesses and what the guest's counters count.
    unsafe { write_mdcr_el2((read_mdcr_el2() | HPMD) & !TDE) };
    super::pmu::trap_guest_access(true);
    super::debug::trap_guest_access(true);
    aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);
}

/// Sets (`on`) or clears the MDCR_EL2 trap bits `bits` on this CPU; writes only on a change.
pub fn mdcr_traps(bits: u64, on: bool) {
    // SAFETY: MDCR_EL2 only controls traps of lower-EL debug and PMU accesses.
    unsafe {
        let mdcr = read_mdcr_el2();
        let want = if on { mdcr | bits } else { mdcr & !bits };
        if want != mdcr {
            write_mdcr_el2(want);
        }
    }
}

/// MDCR_EL2.HPMN: the PMU event counters EL1 and EL0 may use.
pub fn guest_pmu_counters() -> u64 {
    // SAFETY: reading MDCR_EL2 has no side effects.
    unsafe { read_mdcr_el2() & 0x1f }
}

/// MPIDR_EL1 affinity fields of this CPU.
pub fn mpidr() -> u64 {
    MPIDR_EL1.get() & 0xff_00ff_ffff
}

/// Counter frequency in Hz and current count, for timestamps.
pub fn counter() -> (u64, u64) {
    (CNTFRQ_EL0.get(), CNTPCT_EL0.get())
}

/// Sleeps until an interrupt is pending (taken or not: PSTATE masks do not matter to WFI).
pub fn wait_for_interrupt() {
    aarch64_cpu::asm::barrier::dsb(aarch64_cpu::asm::barrier::SY);
    aarch64_cpu::asm::wfi();
}

pub fn wait_for_event() {
    aarch64_cpu::asm::wfe();
}

/// Wakes CPUs waiting in `wait_for_event` after a store they should see.
pub fn send_event() {
    aarch64_cpu::asm::barrier::dsb(aarch64_cpu::asm::barrier::ISH);
    aarch64_cpu::asm::sev();
}

extern "C" {
    fn hyp_timer_arm_at(cval: u64);
    fn hyp_timer_disarm();
}

/// The physical counter now (the guests' virtual counter too: CNTVOFF_EL2 is 0).
pub fn now() -> u64 {
    aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);
    CNTPCT_EL0.get()
}

/// Counter ticks in `us` microseconds.
pub fn ticks(us: u64) -> u64 {
    (CNTFRQ_EL0.get() / 1_000_000).max(1) * us
}

/// Raises the EL2 timer's interrupt when the counter reaches `deadline`; `None` stops it.
pub fn hyp_timer_at(deadline: Option<u64>) {
    // SAFETY: the EL2 physical timer belongs to the hypervisor alone.
    unsafe {
        match deadline {
            Some(cval) => hyp_timer_arm_at(cval),
            None => hyp_timer_disarm(),
        }
    }
}
