//! The guest's FP/SIMD and SVE registers, switched lazily as KVM does: each CPU keeps the
//! registers of the last vCPU that used them (its owner). A vCPU's first FP/SIMD or SVE
//! access in a residency traps (CPTR_EL2) unless it is that owner; then the owner's
//! registers are saved, the vCPU's loaded, and the access runs again untrapped. A vCPU that
//! never touches them costs nothing, one that is alone on its CPU traps once.
//!
//! SVE (when its VM has it: `sve=on` or a length, on a CPU with SVE) runs at the VM's
//! vector length (ZCR_EL2); its Z, P and FFR registers and ZCR_EL1 move the same way. A VM
//! without SVE gets UNDEF for SVE instructions and ZCR_EL1, as its ID registers say.

use super::exit::Next;
use super::inject;
use super::vcpu::{Vcpu, VcpuRun};
use crate::arch::fp;
use crate::arch::stacks::MAX_CPUS;
use crate::percpu::this_cpu;
use hv_core::hypercall::Counter;
use core::ptr::null_mut;
use core::sync::atomic::{AtomicPtr, Ordering};

/// The vCPU whose registers each CPU holds (null: none, or no guest's).
static OWNER: [AtomicPtr<Vcpu>; MAX_CPUS] = [const { AtomicPtr::new(null_mut()) }; MAX_CPUS];

fn owner_slot() -> &'static AtomicPtr<Vcpu> {
    &OWNER[this_cpu().index()]
}

fn owns(vcpu: &Vcpu) -> bool {
    core::ptr::eq(owner_slot().load(Ordering::Relaxed), vcpu)
}

/// A trapped FP/SIMD access (`sve`: an SVE one) by the vCPU loaded here.
pub fn trap(vcpu: &Vcpu, run: &mut VcpuRun, sve: bool) -> Next {
    let has_sve = vcpu.vm().has_sve();
    if sve && !has_sve {
        return inject::undefined(run);
    }
    if !owns(vcpu) {
        let owner = owner_slot().load(Ordering::Relaxed);
        if !owner.is_null() {
            // SAFETY: an owner is a vCPU assigned to this CPU (only this CPU stores here),
            // not the loaded one, and alive: `forget` empties the slot before a vCPU is
            // reset or goes away. This CPU alone touches its running state.
            let o = unsafe { (*owner).run_mut() };
            fp::save(&mut o.fp, o.sve.as_mut());
        }
        fp::restore(&run.fp, run.sve.as_mut());
        run.count(Counter::FpLoads);
        owner_slot().store(vcpu as *const Vcpu as *mut Vcpu, Ordering::Relaxed);
    }
    fp::trap_guest(false, !has_sve);
    Next::Resume
}

/// The vCPU is being loaded: its accesses run untrapped if the CPU holds its registers.
pub fn load(vcpu: &Vcpu) {
    let mine = owns(vcpu);
    fp::trap_guest(!mine, !(mine && vcpu.vm().has_sve()));
}

/// The vCPU is reset or goes away: the CPU no longer holds registers of it (they are not
/// saved; a reset vCPU starts from zeroed ones at its next use).
pub fn forget(vcpu: &Vcpu) {
    let _ = owner_slot().compare_exchange(vcpu as *const Vcpu as *mut Vcpu, null_mut(), Ordering::Relaxed, Ordering::Relaxed);
}
