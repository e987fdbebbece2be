//! The runtime every test guest is built on: EL1 entry (start.S), console, hypercalls,
//! PSCI, exception capture for expected faults, and assertions that end the run with a
//! verdict the hypervisor reports.
//!
//! A guest binary provides `fn main(info: &BootInfo) -> !` and registers it with
//! [`guest_main!`]; it ends with [`pass`] or [`fail`] (or a failed [`check!`]).

#![no_std]

pub mod console;
pub mod exceptions;
pub mod gic;
pub mod hvc;
pub mod psci;
pub mod ramoops;
pub mod text;
pub mod virtio_driver;

use core::arch::{asm, global_asm};
use core::sync::atomic::{AtomicUsize, Ordering};

/// vCPUs the test guests' runtime starts (their stacks are static).
pub const MAX_VCPUS: usize = 64;
pub const STACK_SIZE: usize = 16 * 1024;

#[repr(C, align(16))]
pub struct Stacks(core::cell::UnsafeCell<[[u8; STACK_SIZE]; MAX_VCPUS]>);
// SAFETY: each vCPU uses only its own stack, through SP.
unsafe impl Sync for Stacks {}
#[no_mangle]
static STACKS: Stacks = Stacks(core::cell::UnsafeCell::new([[0; STACK_SIZE]; MAX_VCPUS]));

global_asm!(include_str!("start.S"), STACK_SIZE = const STACK_SIZE, MAX_VCPUS = const MAX_VCPUS);

/// What the guest learns at boot from its device tree.
pub struct BootInfo {
    pub dtb: u64,
    pub fdt: fdt::Fdt<'static>,
    pub ram_base: u64,
    pub ram_size: u64,
    pub vcpus: usize,
    pub bootargs: &'static str,
    /// Reboots of this VM before this boot.
    pub boot_count: u32,
    /// Booted by the hypervisor (its device tree says so); else directly by QEMU, where
    /// only PSCI answers hypercalls.
    pub hypervisor: bool,
}

static UNDER_HYPERVISOR: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(true);

impl BootInfo {
    /// The number after `key=` in the bootargs, if there is one.
    pub fn arg(&self, key: &str) -> Option<u64> {
        self.bootargs.split_ascii_whitespace().find_map(|w| w.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
    }
}

extern "Rust" {
    /// The guest's main function (defined by `guest_main!`).
    fn guest_entry(info: &BootInfo) -> !;
}

/// Declares the guest's main function.
#[macro_export]
macro_rules! guest_main {
    ($main:path) => {
        #[no_mangle]
        fn guest_entry(info: &$crate::BootInfo) -> ! {
            $main(info)
        }
    };
}

#[no_mangle]
extern "C" fn rt_primary(dtb: u64) -> ! {
    // SAFETY: the hypervisor put a device tree at `dtb` (x0 at entry); the header is read
    // to learn its size, and the guest never writes there.
    let fdt = unsafe {
        let size = u32::from_be((dtb as *const u32).add(1).read_volatile()) as usize;
        fdt::Fdt::new(core::slice::from_raw_parts(dtb as *const u8, size.min(2 << 20)))
    };
    let Ok(fdt) = fdt else {
        println!("no valid device tree at {:#x}", dtb);
        fail(1);
    };
    let (ram_base, ram_size) = fdt
        .memory()
        .regions()
        .next()
        .map(|r| (r.starting_address as u64, r.size.unwrap_or(0) as u64))
        .unwrap_or((0, 0));
    let boot_count = fdt.find_node("/chosen").and_then(|c| c.property(hv_core::guest_dt::BOOT_COUNT_PROPERTY));
    UNDER_HYPERVISOR.store(boot_count.is_some(), Ordering::Relaxed);
    let info = BootInfo {
        dtb,
        hypervisor: boot_count.is_some(),
        vcpus: fdt.cpus().count(),
        bootargs: fdt.chosen().bootargs().unwrap_or(""),
        boot_count: boot_count.and_then(|p| p.as_usize()).unwrap_or(0) as u32,
        fdt,
        ram_base,
        ram_size,
    };
    // SAFETY: `guest_entry` is defined by the binary through guest_main!.
    unsafe { guest_entry(&info) }
}

/// Functions secondary vCPUs run, by index, and their arguments.
static SECONDARY_FN: [AtomicUsize; MAX_VCPUS] = [const { AtomicUsize::new(0) }; MAX_VCPUS];
static SECONDARY_ARG: [AtomicUsize; MAX_VCPUS] = [const { AtomicUsize::new(0) }; MAX_VCPUS];

#[no_mangle]
extern "C" fn rt_secondary(index: usize) -> ! {
    let f = SECONDARY_FN[index].load(Ordering::Acquire);
    if f == 0 {
        psci::cpu_off();
    }
    // SAFETY: only `start_vcpu` stores here, and it stores a `fn(usize, u64) -> !`.
    let f: fn(usize, u64) -> ! = unsafe { core::mem::transmute(f) };
    f(index, SECONDARY_ARG[index].load(Ordering::Acquire) as u64)
}

/// Starts vCPU `index` (MPIDR Aff0 = index) running `f(index, arg)`. Returns PSCI's answer.
pub fn start_vcpu(index: usize, f: fn(usize, u64) -> !, arg: u64) -> i64 {
    if index >= MAX_VCPUS {
        return hv_core::hypercall::ret::INVALID_PARAMETERS;
    }
    SECONDARY_FN[index].store(f as usize, Ordering::Release);
    SECONDARY_ARG[index].store(arg as usize, Ordering::Release);
    psci::cpu_on(hv_core::guest_dt::vcpu_mpidr(index), secondary_entry_address(), index as u64)
}

/// The PSCI entry point of secondary vCPUs (start.S).
pub fn secondary_entry_address() -> u64 {
    extern "C" {
        fn secondary_start();
    }
    secondary_start as *const () as u64
}

/// This vCPU's index, from its MPIDR (16 vCPUs per Aff1 cluster, as the hypervisor numbers
/// them: hv_core::guest_dt::vcpu_mpidr).
pub fn vcpu_index() -> usize {
    hv_core::guest_dt::vcpu_index(mpidr(), MAX_VCPUS).unwrap_or(0)
}

pub fn mpidr() -> u64 {
    let v: u64;
    // SAFETY: reading MPIDR_EL1 has no side effects.
    unsafe { asm!("mrs {}, mpidr_el1", out(reg) v, options(nomem, nostack)) };
    v
}

pub fn current_el() -> u64 {
    let v: u64;
    // SAFETY: reading CurrentEL has no side effects.
    unsafe { asm!("mrs {}, CurrentEL", out(reg) v, options(nomem, nostack)) };
    (v >> 2) & 3
}

/// Virtual address of the probe window: the last 1 GiB of the 4 GiB this runtime maps.
pub const WINDOW_VA: u64 = 3 << 30;

/// Points the probe window (VA 3..4 GiB, normally IPA 3..4 GiB) at the 1 GiB-aligned IPA
/// `ipa`, as normal memory, so that any guest-physical address can be reached.
pub fn map_window(ipa: u64) {
    extern "C" {
        static mut GUEST_L1: [u64; 512];
    }
    let desc = (ipa & !((1 << 30) - 1)) | 0x701; // normal WB, EL1 RW, inner shareable, AF, block
    // SAFETY: entry 3 of this vCPU's level-1 table maps only the probe window, which no
    // Rust data lives in; the TLB invalidation makes the change visible before any probe.
    unsafe {
        core::ptr::write_volatile(core::ptr::addr_of_mut!(GUEST_L1[3]), desc);
        asm!("dsb ishst", "tlbi vmalle1", "dsb nsh", "isb", options(nostack));
    }
}

/// Points the probe window at the 1 GiB-aligned IPA `ipa` for EL0: readable, writable and
/// executable at EL0 (and so never executable at EL1), for code run at EL0.
pub fn map_window_el0(ipa: u64) {
    extern "C" {
        static mut GUEST_L1: [u64; 512];
    }
    // Normal WB, AP[2:1] = 01 (EL1 and EL0 read/write), inner shareable, AF, block, PXN.
    let desc = (ipa & !((1 << 30) - 1)) | 0x741 | 1 << 53;
    // SAFETY: as in `map_window`.
    unsafe {
        core::ptr::write_volatile(core::ptr::addr_of_mut!(GUEST_L1[3]), desc);
        asm!("dsb ishst", "tlbi vmalle1", "dsb nsh", "isb", options(nostack));
    }
}

/// The virtual counter and its frequency.
pub fn counter() -> (u64, u64) {
    let (c, f): (u64, u64);
    // SAFETY: reading the virtual counter and its frequency has no side effects; the isb
    // keeps the read from being hoisted.
    unsafe { asm!("isb", "mrs {}, cntvct_el0", "mrs {}, cntfrq_el0", out(reg) c, out(reg) f, options(nomem, nostack)) };
    (c, f)
}

/// Reports success to the hypervisor and powers the VM off.
pub fn pass() -> ! {
    println!("TEST PASS");
    if UNDER_HYPERVISOR.load(Ordering::Relaxed) {
        hvc::test_verdict(0);
    }
    psci::system_off()
}

/// Reports failure `code` (non-zero) and powers the VM off.
pub fn fail(code: u64) -> ! {
    println!("TEST FAIL (code {})", code);
    if UNDER_HYPERVISOR.load(Ordering::Relaxed) {
        hvc::test_verdict(code.max(1));
    }
    psci::system_off()
}

/// Fails the test with a message unless the condition holds.
#[macro_export]
macro_rules! check {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            $crate::println!("check failed at {}:{}: {}", file!(), line!(), format_args!($($fmt)+));
            $crate::fail(line!() as u64);
        }
    };
}

/// Writes a system register of this guest's own (by name or encoding), then ISB.
#[macro_export]
macro_rules! msr {
    ($reg:literal, $v:expr) => {
        // SAFETY: the test guest's own EL1/EL0 register; what the write does is the test.
        unsafe { core::arch::asm!(concat!("msr ", $reg, ", {}"), "isb", in(reg) $v as u64, options(nostack)) }
    };
}

/// Reads a system register (by name or encoding), after an ISB.
#[macro_export]
macro_rules! mrs {
    ($reg:literal) => {{
        let v: u64;
        // SAFETY: a register read; the ones the test guests read have no side effects.
        unsafe { core::arch::asm!("isb", concat!("mrs {}, ", $reg), out(reg) v, options(nostack)) };
        v
    }};
}

/// Fails the test unless the two values are equal.
#[macro_export]
macro_rules! check_eq {
    ($a:expr, $b:expr, $($fmt:tt)+) => {{
        let (a, b) = ($a, $b);
        if a != b {
            $crate::println!("check failed at {}:{}: {}: {:#x?} != {:#x?}", file!(), line!(), format_args!($($fmt)+), a, b);
            $crate::fail(line!() as u64);
        }
    }};
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    println!("guest panic: {}", info);
    fail(0xdead)
}
