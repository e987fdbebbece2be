//! A virtual CPU: its architectural state (touched only by the physical CPU it is assigned
//! to), its power state (changed by other vCPUs through PSCI), and its load onto and unload
//! from a physical CPU (a residency; the scheduler decides when).

use super::exit::Pending;
use super::{pauth, Vm, NO_VCPU};
use crate::arch::context::{self, El1State, FpState, VcpuRegs};
use crate::arch::debug::DebugState;
use crate::arch::fp::SveState;
use crate::arch::pmu::PmuState;
use crate::arch::exception::ExitKind;
use crate::vdev::vgic::{self, CpuInterface, LrSnapshot};
use aarch64_cpu::registers::{Readable, Writeable, HCR_EL2, SPSR_EL2, VTTBR_EL2};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};
use hv_core::hypercall::Counter;
use hv_core::pauth::{KeyOwnership, KeyPolicy};
use hv_core::timer::EmulatedTimer;
use spin::Mutex;

/// What the running physical CPU owns of a vCPU.
#[repr(C)]
pub struct VcpuRun {
    /// Must stay first: exception.S saves into it through SP and `Vcpu::from_regs` relies
    /// on it being at offset 0 of the `Vcpu`.
    pub regs: VcpuRegs,
    pub el1: El1State,
    /// FP/SIMD registers (with FPSR, FPCR) and, if its VM has SVE, SVE registers, while not
    /// in a CPU (vm/fp.rs).
    pub fp: FpState,
    pub sve: Option<SveState>,
    pub counters: [u64; Counter::ALL.len()],
    /// Exits that were hypercalls answered with a constant (handle_exit's first test): one
    /// increment there instead of two, added to both counts when they are read.
    pub constant_calls: u64,
    /// Who owns the pointer-authentication key registers, residency by residency.
    pub pauth: KeyOwnership,
    /// Handed from the fast exit path to the slow one.
    pub pending: Pending,
    /// Where the last injected exception was delivered, and how many faults in a row were
    /// taken right there (an exception loop).
    pub last_injection: u64,
    pub nested_faults: u32,
    /// The virtual GIC CPU interface while the vCPU is not loaded.
    pub gic: CpuInterface,
    /// The emulated EL1 physical timer (vm/timer.rs).
    pub ptimer: EmulatedTimer,
    /// Its debug registers while not in the CPU, and whether they are in it (vm/debug.rs).
    pub debug: DebugState,
    pub debug_live: bool,
    /// Its PMU likewise (vm/pmu.rs).
    pub pmu: PmuState,
    pub pmu_live: bool,
}

impl VcpuRun {
    pub fn count(&mut self, c: Counter) {
        self.counters[c as usize] += 1;
    }

    /// A counter's value (HV_COUNTER, the report at VM stop).
    pub fn counter(&self, c: Counter) -> u64 {
        let key_switches = self.regs.key_switch_exits;
        match c {
            Counter::Exits | Counter::Hypercalls => self.counters[c as usize] + self.constant_calls,
            Counter::KeySwitchExits => key_switches,
            Counter::PlainExits => self.counters[Counter::Exits as usize] + self.constant_calls - key_switches,
            Counter::KeysLive => (self.regs.keys_live != 0) as u64,
            _ => self.counters[c as usize],
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Power {
    Off,
    /// PSCI CPU_ON accepted: start at `entry` with x0 = `context` when next scheduled.
    OnPending { entry: u64, context: u64 },
    On,
}

#[repr(C)]
pub struct Vcpu {
    run: UnsafeCell<VcpuRun>,
    pub index: usize,
    pub mpidr: u64,
    /// The physical CPU this vCPU runs on.
    pub pcpu: usize,
    pub power: Mutex<Power>,
    /// Interrupts were made pending for it: its CPU moves them to list registers at its
    /// next exit or load.
    pub needs_flush: AtomicBool,
    vm: *const Vm,
}

// SAFETY: `run` is only accessed by the physical CPU the vCPU is assigned to (`pcpu`), or
// after the vCPU is Off and its VM retired; everything else is behind locks or immutable.
unsafe impl Sync for Vcpu {}
// SAFETY: as above; `vm` points at the owning VM, which outlives the vCPU.
unsafe impl Send for Vcpu {}

impl Vcpu {
    /// `pauth`: the guest may use pointer authentication, switched by policy `keys`.
    pub fn new(index: usize, pcpu: usize, vm: *const Vm, pauth: bool, keys: KeyPolicy) -> Vcpu {
        let mpidr = hv_core::guest_dt::vcpu_mpidr(index);
        Vcpu {
            run: UnsafeCell::new(VcpuRun {
                regs: VcpuRegs::default(),
                el1: El1State::at_entry(0, mpidr),
                fp: FpState::default(),
                sve: None,
                counters: [0; Counter::ALL.len()],
                constant_calls: 0,
                pauth: KeyOwnership::new(keys, pauth),
                pending: Pending::Exit(ExitKind::Sync),
                last_injection: u64::MAX,
                nested_faults: 0,
                gic: CpuInterface::default(),
                ptimer: EmulatedTimer::default(),
                debug: DebugState::default(),
                debug_live: false,
                pmu: PmuState::default(),
                pmu_live: false,
            }),
            index,
            mpidr,
            pcpu,
            power: Mutex::new(Power::Off),
            needs_flush: AtomicBool::new(false),
            vm,
        }
    }

    /// The VM this vCPU belongs to.
    pub fn vm(&self) -> &Vm {
        // SAFETY: a VM owns its vCPUs and is only freed after all of them left every run
        // queue, so the back-pointer is valid whenever a vCPU is reachable.
        unsafe { &*self.vm }
    }

    /// The vCPU whose register frame is `regs` (the pointer exception.S hands back).
    ///
    /// # Safety
    /// `regs` must be `&vcpu.run.regs` of a live vCPU.
    pub unsafe fn from_regs<'a>(regs: *mut VcpuRegs) -> &'a Vcpu {
        // SAFETY: `regs` is at offset 0 of `VcpuRun` (repr(C)), which is at offset 0 of
        // `Vcpu` (repr(C), UnsafeCell is transparent), per the caller's guarantee.
        unsafe { &*(regs as *const Vcpu) }
    }

    /// The running state.
    ///
    /// # Safety
    /// Only the physical CPU this vCPU is assigned to may call it, and not twice at once;
    /// or any CPU once the vCPU is Off and will not run again.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn run_mut(&self) -> &mut VcpuRun {
        // SAFETY: exclusivity is the caller's guarantee.
        unsafe { &mut *self.run.get() }
    }

    pub fn regs_ptr(&self) -> *mut VcpuRegs {
        // SAFETY: only the address is taken.
        unsafe { core::ptr::addr_of_mut!((*self.run.get()).regs) }
    }

    /// Tells the vCPU it has interrupts to take: its own CPU moves them to list registers at
    /// its next exit or load; a kick makes that exit happen now if it runs elsewhere.
    pub fn notify(&self) {
        self.needs_flush.store(true, Ordering::Release);
        if self.pcpu != crate::percpu::this_cpu().index() {
            crate::drivers::gicv3::kick_cpu(self.pcpu);
        }
    }

    /// Moves the interrupts waiting for this vCPU into the list registers, if it was told
    /// of any. It must be loaded on this CPU. On every slow exit's path: the check is
    /// inlined, the work is not.
    #[inline(always)]
    pub fn flush_interrupts(&self) {
        if self.needs_flush.load(Ordering::Acquire) {
            self.flush_interrupts_now();
        }
    }

    #[inline(never)]
    fn flush_interrupts_now(&self) {
        self.needs_flush.store(false, Ordering::Release);
        if let Some(g) = &self.vm().vgic {
            // SPSR_EL2 holds the loaded vCPU's PSTATE; I is bit 7.
            g.flush(self.index, SPSR_EL2.get() & (1 << 7) != 0);
        }
    }

    /// Brings the vGIC up to date with the lines of this vCPU's own devices (both timers,
    /// the PMU); it must be loaded here. Returns its list registers as they are now. Out of
    /// line: the MMIO path calls it only for the vGIC's interrupt-state registers.
    #[inline(never)]
    pub fn sync_lines(&self, run: &VcpuRun) -> LrSnapshot {
        let mut lrs = LrSnapshot::default();
        super::timer::sync(self, run, &mut lrs);
        super::pmu::sync_line(self, run, &mut lrs);
        lrs
    }

    /// Whether an interrupt is waiting for this vCPU, loaded on this CPU.
    /// `lrs`: its list registers as `sync_lines` left them.
    pub fn has_interrupt(&self, lrs: &mut LrSnapshot) -> bool {
        self.needs_flush.load(Ordering::Acquire) || self.vm().vgic.as_ref().is_some_and(|g| g.has_pending(self.index, lrs))
    }

    /// Starts the vCPU if PSCI switched it on since it last ran (reset state at its entry
    /// point). Only its assigned CPU calls this, with the vCPU not loaded.
    pub fn start_if_pending(&self) {
        let mut power = self.power.lock();
        if let Power::OnPending { entry, context } = *power {
            // SAFETY: this CPU is the vCPU's assigned CPU and it is not running.
            let run = unsafe { self.run_mut() };
            run.regs.reset();
            run.regs.x[0] = context;
            run.el1 = El1State::at_entry(entry, self.mpidr);
            run.fp = FpState::default();
            run.sve = self.vm().has_sve().then(|| SveState::new(self.vm().sve_vl()));
            super::fp::forget(self);
            run.ptimer = EmulatedTimer::default();
            run.debug = DebugState::default();
            run.pmu = PmuState::default();
            run.last_injection = u64::MAX;
            run.nested_faults = 0;
            *power = Power::On;
        }
    }

    /// A residency begins: the vCPU's state goes into this CPU, its assigned one.
    pub fn load(&self) {
        // SAFETY: this CPU is the vCPU's assigned CPU; it is not running anywhere.
        let run = unsafe { self.run_mut() };
        let vm = self.vm();
        context::restore(&run.el1);
        super::fp::load(self);
        super::debug::load(run);
        super::pmu::load(self, run);
        VTTBR_EL2.set(vm.mem.vttbr());
        HCR_EL2.set(pauth::load(run));
        let last = vm.last_vcpu_on[self.pcpu].swap(self.index, Ordering::Relaxed);
        if last != NO_VCPU && last != self.index {
            crate::arch::mmu::flush_local_guest_stage1();
        }
        aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);
        if vm.vgic.is_some() {
            vgic::restore(&run.gic);
            // Time passed while it was away: its emulated timer may be due.
            super::timer::sync_physical(self, run, &mut LrSnapshot::default());
            self.flush_interrupts();
        }
    }

    /// The residency ends: the vCPU's state leaves this CPU (it just exited here).
    pub fn unload(&self) {
        // SAFETY: as in `load`.
        let run = unsafe { self.run_mut() };
        context::save(&mut run.el1);
        super::debug::unload(run);
        super::pmu::unload(run);
        pauth::unload(run);
        if self.vm().vgic.is_some() {
            vgic::save(&mut run.gic);
        }
    }
}
