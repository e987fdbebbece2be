//! PSCI calls to the hypervisor.

use crate::hvc::{call, hvc};
use hv_core::hypercall::id;

pub fn version() -> i64 {
    call(id::PSCI_VERSION, 0, 0, 0)
}

pub fn features(function: u32) -> i64 {
    call(id::PSCI_FEATURES, function as u64, 0, 0)
}

pub fn cpu_on(mpidr: u64, entry: u64, context: u64) -> i64 {
    call(id::PSCI_CPU_ON_64, mpidr, entry, context)
}

pub fn affinity_info(mpidr: u64, lowest_level: u64) -> i64 {
    call(id::PSCI_AFFINITY_INFO_64, mpidr, lowest_level, 0)
}

pub fn cpu_off() -> ! {
    hvc(id::PSCI_CPU_OFF as u64, 0, 0, 0);
    crate::println!("CPU_OFF returned");
    loop {
        core::hint::spin_loop();
    }
}

pub fn system_off() -> ! {
    hvc(id::PSCI_SYSTEM_OFF as u64, 0, 0, 0);
    crate::println!("SYSTEM_OFF returned");
    loop {
        core::hint::spin_loop();
    }
}
