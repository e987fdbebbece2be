//! The guest's PMU (PMUv3), when its VM has one (`pmu=on`, the default, on a CPU with
//! PMUv3): the CPU's own counters while the vCPU uses them, handed over as the debug
//! registers are (vm/debug.rs). PMU accesses trap until the vCPU first touches one in a
//! residency; a vCPU whose PMU counts or has an overflow interrupt waiting gets it at load.
//! At unload its counters are saved and the PMU stopped, so nothing counts for another vCPU
//! and no overflow of its fires while another one runs; the guest's counters never count at
//! EL2 (MDCR_EL2.HPMD). The overflow interrupt (PPI 7, INTID 23) is the physical one, handed
//! over through a hardware-linked list register like the virtual timer's. Without a PMU the
//! registers are UNDEFINED (vm/sysreg.rs) and hidden in the ID registers.

use super::exit::Next;
use super::vcpu::{Vcpu, VcpuRun};
use crate::arch::pmu;
use crate::drivers::gicv3::PMU_PPI;

/// A trapped PMU access by a vCPU whose VM has a PMU: its counters go into the CPU and the
/// access runs again, untrapped.
pub fn take(run: &mut VcpuRun) -> Next {
    if !run.pmu_live {
        pmu::restore(&run.pmu);
        run.pmu_live = true;
    }
    pmu::trap_guest_access(false);
    Next::Resume
}

/// The vCPU is being loaded.
pub fn load(vcpu: &Vcpu, run: &mut VcpuRun) {
    let in_use = vcpu.vm().has_pmu() && run.pmu.in_use();
    if in_use {
        pmu::restore(&run.pmu);
    }
    run.pmu_live = in_use;
    pmu::trap_guest_access(!in_use);
}

/// The vCPU is being unloaded: its counters, if it had them in the CPU, are saved and the
/// PMU stopped.
pub fn unload(run: &mut VcpuRun) {
    if run.pmu_live {
        pmu::save(&mut run.pmu);
        run.pmu_live = false;
    }
}

/// Brings the vGIC up to date with the PMU's overflow line of the vCPU loaded here.
pub fn sync_line(vcpu: &Vcpu, run: &VcpuRun, lrs: &mut crate::vdev::vgic::LrSnapshot) {
    if let Some(g) = &vcpu.vm().vgic {
        g.sync_hw_line(vcpu.index, PMU_PPI, run.pmu_live && pmu::irq_line(), lrs);
    }
}
