//! A type-1 hypervisor for AArch64: boots at EL2 on QEMU's virt machine and runs guests
//! at EL1. README.md says how to run it; its Layout section draws the layers below, lowest
//! first. A module names only its own layer and those under it (scripts/layers.py checks).

#![no_std]
#![no_main]
#![deny(unsafe_op_in_unsafe_fn)]

extern crate alloc;

// Layers, lowest first.
mod arch;
mod percpu;
mod mm;
mod boot;
mod drivers;
mod console;
mod pstore;
mod vdev;
mod vm;
mod sched;
mod panic;

use alloc::vec::Vec;
use arch::{cpu, firmware};
use boot::host_dt::{HostDt, ModuleKind};
use boot::loader::LoadError;
use core::sync::atomic::Ordering;
use hv_core::cmdline::HvConfig;
use hv_core::pgtable::{self, Regime, PAGE_SIZE};
use hv_core::ranges::{subtract, Range};
use arch::stacks::MAX_CPUS;
use hv_core::outcome::status;
use vm::VmSpec;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// QEMU virt's PL011, used only if the device tree cannot be read.
const FALLBACK_UART: u64 = 0x0900_0000;
/// The heap (VM structures, device trees, logs' formatting) gets this share of free RAM,
/// within the bounds below; page tables and guest RAM come from frames directly.
const HEAP_SHARE: u64 = 64;
const HEAP_MIN: u64 = 4 << 20;
const HEAP_MAX: u64 = 64 << 20;

/// Entry from boot.S on the boot CPU, MMU on with the boot identity map.
#[no_mangle]
extern "C" fn hv_main(dtb: u64) -> ! {
    mm::frames::init_bootstrap_heap();
    panic::init();
    let features = cpu::detect_features();
    let dt = match HostDt::new(dtb) {
        Ok(dt) => dt,
        Err(e) => {
            console::init(FALLBACK_UART);
            console::init_logging(hv_core::cmdline::LogLevel::Info);
            log::error!("no usable device tree at {dtb:#x} ({e}): boot the hypervisor as an arm64 Image with -kernel");
            firmware::exit(status::NO_GUEST);
        }
    };
    console::init(dt.uart().map_or(FALLBACK_UART, |r| r.start));
    console::init_logging(hv_core::cmdline::LogLevel::Info);
    let config = HvConfig::parse(dt.bootargs(), |bad| log::warn!("command line: {bad}"));
    console::set_level(config.log_level);
    console::set_prefix_always(config.console_prefix);
    vm::hypercall::DEBUG_FAULTS.store(config.debug_faults, Ordering::Relaxed);
    log::info!(
        "hypervisor {VERSION} at EL2: {}-bit PA, PAuth {} (return addresses {}), command line \"{}\"",
        features.pa_bits,
        if features.pauth { "yes" } else { "no" },
        arch::pauth::key_source(),
        dt.bootargs()
    );
    if config.selftest {
        match arch::mem::check() {
            Ok(cases) => log::info!("self-test: memcpy, memmove, memset and memcmp right in {cases} cases"),
            Err(what) => log::error!("self-test: {what} is wrong"),
        }
    }

    init_memory(&dt, config.ram_zeroed);
    // No VM's RAM is larger than the host's.
    let host_ram: u64 = dt.ram().map(|r| r.size()).sum();
    cpu::choose_ipa_bits(hv_core::guest_dt::layout::RAM_BASE + host_ram);
    let ipa_bits = cpu::ipa_bits();
    let start_level = pgtable::start_level(Regime::Stage2, ipa_bits).unwrap_or(1);
    VTCR.store(cpu::vtcr(ipa_bits, start_level), Ordering::Release);
    cpu::init_el2(VTCR.load(Ordering::Acquire));
    match dt.gicv3() {
        Some((d, r)) => drivers::gicv3::init(d.start, r.start, r.size()),
        None => log::warn!("no GICv3 in the device tree: a stopping VM's vCPUs on other CPUs stop only at their next exit"),
    }
    bring_online();
    if let Some(intid) = dt.uart_intid() {
        console::start_input(intid);
    }
    pstore::init(&dt, &config.pstore);
    drivers::virtio_net::probe(&dt.virtio_mmio());
    let cpus = start_secondary_cpus(&dt);
    log::info!("{cpus} CPU(s) online, {} KiB free for guests, {ipa_bits}-bit guest IPA space", mm::frames::free_bytes() >> 10);

    start_vms(&dt, &config, cpus);
    arch::enter_guest(sched::schedule(false))
}

/// VTCR_EL2 for every CPU (the same stage-2 geometry for all VMs).
static VTCR: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Entry from boot.S on secondary CPUs, MMU on with the final tables (x0, this CPU's
/// index, is already in TPIDR_EL2's header).
#[no_mangle]
extern "C" fn secondary_main() -> ! {
    cpu::init_el2(VTCR.load(Ordering::Acquire));
    bring_online();
    log::debug!("online, MPIDR {:#x}", cpu::mpidr());
    arch::enter_guest(sched::schedule(false))
}

/// Sets up this CPU's GIC redistributor and marks it online.
fn bring_online() {
    let mpidr = cpu::mpidr();
    percpu::mark_online(mpidr, drivers::gicv3::init_cpu(mpidr));
}

/// Frames and heap from the RAM the device tree lists, minus what must be kept (the image,
/// the device tree, guest modules, firmware reservations); then the final EL2 tables.
fn init_memory(dt: &HostDt, ram_zeroed: bool) {
    let powered_on = mm::frames::first_boot_since_power_on();
    let ram: Vec<Range> = dt.ram().collect();
    let mut reserved: Vec<Range> = dt.reservations().collect();
    reserved.push(mm::hyp_map::image_range());
    reserved.push(dt.range());
    reserved.extend(dt.modules().iter().map(|m| m.range));
    let free = subtract(&ram, &reserved, PAGE_SIZE);
    mm::frames::add(&free);
    // Rounded down to a power of two: the buddy allocator would round it up anyway.
    let share = (mm::frames::free_bytes() / HEAP_SHARE).clamp(HEAP_MIN, HEAP_MAX);
    let heap = 1u64 << (63 - share.leading_zeros());
    let Some(heap_range) = mm::frames::grow_heap(heap) else {
        panic!("not enough RAM for the hypervisor heap ({} MiB)", heap >> 20);
    };
    log::debug!("heap: {} MiB", heap >> 20);
    match (ram_zeroed, powered_on) {
        (true, true) => mm::frames::trust_zeroed(&free, &[heap_range], mm::hyp_map::image_range().end),
        (true, false) => log::info!("ram_zeroed=on, but the machine was reset since power-on: every frame is zeroed before use"),
        _ => {}
    }
    let mut devices: Vec<Range> = dt.uart().into_iter().collect();
    devices.extend(pstore::devices(dt));
    if let Some((d, r)) = dt.gicv3() {
        devices.push(d);
        devices.push(r);
    }
    match mm::hyp_map::build(&ram, &devices) {
        Ok(root) => arch::mmu::switch_el2_tables(root),
        Err(e) => panic!("cannot build the EL2 tables: {e:?}"),
    }
    log::info!(
        "RAM {}; hypervisor image {:#x}..{:#x}; device tree at {:#x}",
        ram.iter().map(|r| alloc::format!("{:#x}..{:#x}", r.start, r.end)).collect::<Vec<_>>().join(", "),
        mm::hyp_map::image_range().start,
        mm::hyp_map::image_range().end,
        dt.range().start
    );
}

/// Starts every other CPU of the device tree (up to MAX_CPUS) through the firmware's PSCI
/// and waits for each to come online. Returns the number of CPUs online.
fn start_secondary_cpus(dt: &HostDt) -> usize {
    let me = cpu::mpidr();
    let mut index = 1;
    for mpidr in dt.cpus().filter(|&m| m != me) {
        if index >= MAX_CPUS {
            log::warn!("CPU {mpidr:#x} and beyond left off: at most {MAX_CPUS} CPUs are used");
            break;
        }
        let r = firmware::cpu_on(mpidr, arch::secondary_entry as *const () as u64, index as u64);
        if r != 0 {
            log::error!("PSCI CPU_ON of CPU {mpidr:#x} failed ({r})");
            continue;
        }
        let (freq, t0) = cpu::counter();
        let online = &percpu::cpu(index).expect("index below MAX_CPUS").online;
        while !online.load(Ordering::Acquire) {
            if cpu::counter().1 - t0 > freq {
                log::error!("CPU {mpidr:#x} did not come online within 1 s");
                break;
            }
            core::hint::spin_loop();
        }
        if online.load(Ordering::Acquire) {
            index += 1;
        }
    }
    percpu::online_cpus()
}

/// One VM per kernel module (with the ramdisk module that follows it, if any).
fn start_vms(dt: &HostDt, config: &HvConfig, cpus: usize) {
    let mut specs: Vec<VmSpec> = Vec::new();
    for m in dt.modules() {
        match m.kind {
            ModuleKind::Kernel => specs.push(VmSpec {
                kernel: m.range,
                initrd: None,
                bootargs: m.bootargs,
                params: config.vm(specs.len()),
                boot_count: 0,
                reboots: Default::default(),
            }),
            ModuleKind::Ramdisk => match specs.last_mut() {
                Some(s) if s.initrd.is_none() => s.initrd = Some(m.range),
                _ => log::warn!("ramdisk module at {:#x} has no kernel before it: ignored", m.range.start),
            },
        }
    }
    if specs.is_empty() {
        log::error!("no guest given: pass a kernel with -device guest-loader,addr=...,kernel=... (make run does this)");
        firmware::exit(status::NO_GUEST);
    }
    let mut next_cpu = 0;
    let mut started = 0;
    for (id, spec) in specs.into_iter().enumerate() {
        let vcpus = spec.params.vcpus;
        let pcpus: Vec<usize> = (0..vcpus).map(|j| (next_cpu + j) % cpus).collect();
        let result = if vcpus > cpus && !spec.params.overcommit {
            Err(LoadError::TooManyVcpus { asked: vcpus, cpus })
        } else {
            sched::lifecycle::create_and_start(id, spec, &pcpus)
        };
        match result {
            Ok(now) => {
                next_cpu = (next_cpu + vcpus) % cpus;
                started += now as usize;
            }
            Err(e) => {
                log::error!("VM {id}: cannot start: {e}");
                vm::raise_exit_status(status::VM_CRASHED);
            }
        }
    }
    if started == 0 && sched::lifecycle::start_waiting(true) == 0 {
        sched::lifecycle::shutdown();
    }
}
