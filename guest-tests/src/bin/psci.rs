//! PSCI for guests: versions and features, CPU_ON of every secondary vCPU (which reports
//! in with its context argument), the error answers of CPU_ON and AFFINITY_INFO, CPU_OFF,
//! and SYSTEM_OFF at the end.

#![no_std]
#![no_main]

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use guest_rt::{check, check_eq, println, psci, BootInfo};
use hv_core::guest_dt::vcpu_mpidr;
use hv_core::hypercall::{affinity, id, ret, PSCI_TOS_NOT_PRESENT, PSCI_VERSION_1_1};

static SEEN: [AtomicU64; guest_rt::MAX_VCPUS] = [const { AtomicU64::new(0) }; guest_rt::MAX_VCPUS];
/// Secondaries stay on until this is set, so that a second CPU_ON finds them on.
static RELEASE: AtomicBool = AtomicBool::new(false);

fn main(info: &BootInfo) -> ! {
    let n = info.vcpus;
    check!(n >= 2, "this test needs at least 2 vCPUs (has {})", n);
    check_eq!(psci::version(), PSCI_VERSION_1_1 as i64, "PSCI_VERSION");
    for f in [id::PSCI_CPU_ON_64, id::PSCI_CPU_OFF, id::PSCI_AFFINITY_INFO_64, id::PSCI_SYSTEM_OFF, id::PSCI_SYSTEM_RESET, id::PSCI_FEATURES, id::SMCCC_VERSION] {
        check_eq!(psci::features(f), 0, "PSCI_FEATURES({:#x})", f);
    }
    check_eq!(psci::features(0x8400_0007), ret::NOT_SUPPORTED, "PSCI_FEATURES(CPU_FREEZE)");
    check_eq!(psci::features(id::HV_VERSION), ret::NOT_SUPPORTED, "PSCI_FEATURES of a non-PSCI call");
    check_eq!(guest_rt::hvc::call(id::PSCI_MIGRATE_INFO_TYPE, 0, 0, 0), PSCI_TOS_NOT_PRESENT as i64, "MIGRATE_INFO_TYPE");

    // vCPU 0 is on; the others are off until started.
    check_eq!(psci::affinity_info(vcpu_mpidr(0), 0), affinity::ON, "AFFINITY_INFO(0)");
    for i in 1..n {
        check_eq!(psci::affinity_info(vcpu_mpidr(i), 0), affinity::OFF, "AFFINITY_INFO({}) before CPU_ON", i);
    }
    check_eq!(psci::affinity_info(vcpu_mpidr(n), 0), ret::INVALID_PARAMETERS, "AFFINITY_INFO of a vCPU that does not exist");
    check_eq!(psci::affinity_info(0, 1), ret::INVALID_PARAMETERS, "AFFINITY_INFO above level 0");

    // Bad CPU_ON calls.
    let entry = guest_rt::secondary_entry_address();
    check_eq!(psci::cpu_on(vcpu_mpidr(n), entry, 1), ret::INVALID_PARAMETERS, "CPU_ON of a vCPU that does not exist");
    check_eq!(psci::cpu_on(0x1_0000, entry, 1), ret::INVALID_PARAMETERS, "CPU_ON with Aff2 set");
    check_eq!(psci::cpu_on(vcpu_mpidr(0), entry, 0), ret::ALREADY_ON, "CPU_ON of the calling vCPU");
    check_eq!(psci::cpu_on(vcpu_mpidr(1), 0x1000, 1), ret::INVALID_ADDRESS, "CPU_ON with an entry point below RAM");
    check_eq!(psci::cpu_on(vcpu_mpidr(1), info.ram_base + info.ram_size, 1), ret::INVALID_ADDRESS, "CPU_ON with an entry point above RAM");
    check_eq!(psci::cpu_on(vcpu_mpidr(1), entry + 2, 1), ret::INVALID_ADDRESS, "CPU_ON with a misaligned entry point");
    check_eq!(psci::affinity_info(vcpu_mpidr(1), 0), affinity::OFF, "failed CPU_ONs leave the vCPU off");

    // Start every secondary; each reports its context argument, then switches off once
    // released (so that the second CPU_ON below always finds it on).
    for i in 1..n {
        check_eq!(guest_rt::start_vcpu(i, secondary, 0x1000 + i as u64), 0, "CPU_ON({})", i);
        let again = psci::cpu_on(vcpu_mpidr(i), entry, i as u64);
        check!(again == ret::ALREADY_ON || again == ret::ON_PENDING, "second CPU_ON({}) answered {}", i, again);
    }
    for i in 1..n {
        while SEEN[i].load(Ordering::Acquire) == 0 {
            core::hint::spin_loop();
        }
        check_eq!(SEEN[i].load(Ordering::Acquire), 0x1000 + i as u64, "vCPU {} context", i);
    }
    RELEASE.store(true, Ordering::Release);
    for i in 1..n {
        while psci::affinity_info(vcpu_mpidr(i), 0) != affinity::OFF {
            core::hint::spin_loop();
        }
    }
    println!("{} secondary vCPUs started, reported and switched off", n - 1);

    // A vCPU that was switched off can be started again.
    SEEN[1].store(0, Ordering::Release);
    check_eq!(guest_rt::start_vcpu(1, secondary, 0x2001), 0, "CPU_ON after CPU_OFF");
    while SEEN[1].load(Ordering::Acquire) != 0x2001 {
        core::hint::spin_loop();
    }
    println!("vCPU 1 restarted after CPU_OFF");
    guest_rt::pass()
}

fn secondary(index: usize, arg: u64) -> ! {
    let mpidr = guest_rt::mpidr();
    if mpidr & 0xff_00ff_ffff != vcpu_mpidr(index) {
        println!("vCPU {} has MPIDR {:#x}", index, mpidr);
        guest_rt::fail(2);
    }
    println!("vCPU {} up (MPIDR {:#x}), context {:#x}", index, mpidr, arg);
    SEEN[index].store(arg, Ordering::Release);
    while !RELEASE.load(Ordering::Acquire) {
        core::hint::spin_loop();
    }
    psci::cpu_off()
}

guest_rt::guest_main!(main);
