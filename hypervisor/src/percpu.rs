//! Per-CPU state of the hypervisor (the assembly's own header and the stacks live in
//! arch::stacks): whether a CPU is online, its MPIDR, whether the GIC can kick it, the VM it
//! runs for log prefixes, the end of its time slice, and the stop every CPU obeys when
//! another one panics.

use crate::arch::stacks::{cpu_index, MAX_CPUS};
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

pub struct PerCpu {
    pub online: AtomicBool,
    /// MPIDR affinity of this CPU (for kicks).
    pub mpidr: AtomicU64,
    /// The GIC can interrupt this CPU (its redistributor is set up).
    pub kickable: AtomicBool,
    /// Id of the VM whose vCPU is loaded here (NO_VM when idle), for log prefixes.
    pub current_vm: AtomicUsize,
    /// Counter value at which the running vCPU's time slice ends (NO_DEADLINE: none, no
    /// other vCPU waits for this CPU).
    pub slice_end: AtomicU64,
    /// Set before a kick when this CPU's run queue, or the state of a vCPU in it, changed
    /// (a VM started or stopping, a vCPU switched on): that kick must look at the run
    /// queue. A kick without it only says that a vCPU here has interrupts to take.
    pub reschedule: AtomicBool,
}

pub const NO_DEADLINE: u64 = u64::MAX;

pub const NO_VM: usize = usize::MAX;

static PERCPU: [PerCpu; MAX_CPUS] = [const {
    PerCpu { online: AtomicBool::new(false), mpidr: AtomicU64::new(0), kickable: AtomicBool::new(false), current_vm: AtomicUsize::new(NO_VM),
             slice_end: AtomicU64::new(NO_DEADLINE), reschedule: AtomicBool::new(false) }
}; MAX_CPUS];

impl PerCpu {
    /// Whether another vCPU waits for this CPU (the running one has a time slice), so its
    /// vCPU's WFI must come to the scheduler (cpu::guest_hcr).
    pub fn shared(&self) -> bool {
        self.slice_end.load(core::sync::atomic::Ordering::Relaxed) != NO_DEADLINE
    }

    /// This CPU's index (0 = the boot CPU): its position in PERCPU.
    pub fn index(&self) -> usize {
        (self as *const PerCpu as usize - PERCPU.as_ptr() as usize) / core::mem::size_of::<PerCpu>()
    }
}

/// This CPU's data.
pub fn this_cpu() -> &'static PerCpu {
    &PERCPU[cpu_index()]
}

pub fn cpu(index: usize) -> Option<&'static PerCpu> {
    PERCPU.get(index)
}

/// Marks this CPU online with its MPIDR; `kickable`: its GIC redistributor is set up.
pub fn mark_online(mpidr: u64, kickable: bool) {
    let c = this_cpu();
    c.mpidr.store(mpidr, Ordering::Relaxed);
    c.kickable.store(kickable, Ordering::Relaxed);
    c.online.store(true, Ordering::Release);
}

pub fn online_cpus() -> usize {
    PERCPU.iter().filter(|c| c.online.load(Ordering::Acquire)).count()
}

/// The online CPUs other than this one.
pub fn others_online() -> impl Iterator<Item = &'static PerCpu> {
    let me = cpu_index();
    PERCPU.iter().enumerate().filter(move |(i, c)| *i != me && c.online.load(Ordering::Acquire)).map(|(_, c)| c)
}

/// Set by the panic path: every other CPU parks at its next interrupt.
static STOPPING: AtomicBool = AtomicBool::new(false);
static PARKED: AtomicUsize = AtomicUsize::new(0);
/// The CPU that stops the others (it must not park itself).
static STOPPER: AtomicUsize = AtomicUsize::new(usize::MAX);

/// From now on every other CPU parks at its next interrupt or device poll (the panic path
/// then kicks them).
pub fn begin_stopping_others() {
    STOPPER.store(cpu_index(), Ordering::SeqCst);
    STOPPING.store(true, Ordering::SeqCst);
}

/// How many CPUs parked since `begin_stopping_others`.
pub fn parked() -> usize {
    PARKED.load(Ordering::Acquire)
}

/// A CPU taking an interrupt (or polling a device) while another panics stops here for
/// good.
pub fn park_if_stopping() {
    if STOPPING.load(Ordering::Acquire) && STOPPER.load(Ordering::Acquire) != cpu_index() {
        PARKED.fetch_add(1, Ordering::AcqRel);
        loop {
            crate::arch::cpu::wait_for_event();
        }
    }
}
