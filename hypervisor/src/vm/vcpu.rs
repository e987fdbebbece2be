//! A virtual CPU: its architectural state (touched only by the physical CPU it is assigned
//! to) and its power state (changed by other vCPUs through PSCI).

use super::exit::Pending;
use super::vgic::CpuInterface;
use super::Vm;
use core::sync::atomic::AtomicBool;
use crate::arch::exception::ExitKind;
use crate::arch::context::{El1State, FpState, VcpuRegs};
use core::cell::UnsafeCell;
use hv_core::hypercall::Counter;
use hv_core::pauth::{KeyOwnership, KeyPolicy};
use spin::Mutex;

/// What the running physical CPU owns of a vCPU.
#[repr(C)]
pub struct VcpuRun {
    /// Must stay first: exception.S saves into it through SP and `Vcpu::from_regs` relies
    /// on it being at offset 0 of the `Vcpu`.
    pub regs: VcpuRegs,
    pub el1: El1State,
    pub fp: FpState,
    pub counters: [u64; Counter::ALL.len()],
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
}

impl VcpuRun {
    pub fn count(&mut self, c: Counter) {
        self.counters[c as usize] += 1;
    }

    /// A counter's value (HV_COUNTER, the report at VM stop).
    pub fn counter(&self, c: Counter) -> u64 {
        let key_switches = self.regs.key_switch_exits;
        match c {
            Counter::KeySwitchExits => key_switches,
            Counter::PlainExits => self.counters[Counter::Exits as usize] - key_switches,
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
                counters: [0; Counter::ALL.len()],
                pauth: KeyOwnership::new(keys, pauth),
                pending: Pending::Exit(ExitKind::Sync),
                last_injection: u64::MAX,
                nested_faults: 0,
                gic: CpuInterface::default(),
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
}
