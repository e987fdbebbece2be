//! Memory isolation: every access outside the VM's RAM — device holes, the rest of the
//! address space up to 4 GiB, and where the hypervisor and other VMs live in host memory —
//! ends in an abort delivered to the guest, the hypervisor keeps running, and RAM works.

#![no_std]
#![no_main]

use guest_rt::exceptions::{probe_exec, probe_read, probe_write};
use guest_rt::{check, check_eq, hvc, println, BootInfo};
use hv_core::esr::ec;
use hv_core::hypercall::Counter;

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

/// The abort must be a synchronous external abort reported at EL1 (EC 0x25, FSC 0x10)
/// with the faulting address in FAR.
fn check_abort(addr: u64, write: bool) {
    let r = if write { probe_write(addr, 0x5a5a_5a5a).err() } else { probe_read(addr).err() };
    let Some(e) = r else {
        println!("{} of {:#x} did not fault", if write { "write" } else { "read" }, addr);
        guest_rt::fail(3);
    };
    check_eq!(e.ec(), ec::DABT_CURRENT as u64, "abort class for {:#x}", addr);
    check_eq!(e.esr & 0x3f, 0x10, "fault status for {:#x}", addr);
    check_eq!((e.esr >> 6) & 1, write as u64, "WnR for {:#x}", addr);
    check_eq!(e.far, addr, "FAR for {:#x}", addr);
}

fn main(info: &BootInfo) -> ! {
    let ram_end = info.ram_base + info.ram_size;
    let injected_before = hvc::counter(Counter::InjectedFaults);
    let mut probes = 0u64;

    // Holes in the device region: flash, past the GIC's distributor and this VM's single
    // redistributor, the host's RTC, just past the virtio-mmio slots, PCIe.
    for addr in [0x0u64, 0x0400_0000, 0x0801_0000, 0x080c_0000, 0x0901_0000, 0x0a00_4000, 0x0a00_8000, 0x1000_0000, 0x3eff_0000] {
        check_abort(addr, false);
        check_abort(addr, true);
        probes += 2;
    }
    // Everything from the end of RAM to 4 GiB, where the rest of host RAM (the hypervisor's
    // image, tables and heap, other VMs) lives in host-physical terms.
    let mut addr = ram_end;
    while addr < 4 * GIB {
        check_abort(addr, false);
        check_abort(addr + 8, true);
        probes += 2;
        addr += 64 * MIB;
    }
    // The rest of the guest-physical space up to 1 TiB (the VM's IPA space is 32 or 40 bits), 1 GiB at a time
    // through the probe window: every window aborts, at a varying offset.
    let mut window_probes = 0u64;
    let mut ipa = 4 * GIB;
    while ipa < 1 << 40 {
        guest_rt::map_window(ipa);
        let off = (ipa >> 30).wrapping_mul(0x9e37_79b9) % GIB & !7;
        check_abort(guest_rt::WINDOW_VA + off, false);
        check_abort(guest_rt::WINDOW_VA + (GIB - 8 - off), true);
        window_probes += 2;
        ipa += GIB;
    }
    guest_rt::map_window(3 * GIB);
    probes += window_probes;
    println!("{} probes between 4 GiB and 1 TiB of guest-physical space", window_probes);

    // The last bytes below RAM's end are RAM; the first byte past it is not.
    check!(probe_read(ram_end - 8).is_ok(), "last word of RAM");
    check_abort(ram_end, false);
    probes += 1;

    // IPA 0x40200000 is where the hypervisor sits in host memory; here it is this guest's
    // own zeroed RAM, not the hypervisor's image (whose Image magic sits at +56).
    let v = probe_read(0x4020_0038).unwrap_or(0);
    check!(v as u32 != 0x644d_5241, "guest RAM at 0x40200000 shows the hypervisor's image");

    // Instruction fetches outside RAM: stage-2 has nothing there, so the hypervisor
    // injects an instruction abort.
    for target in [ram_end, 2 * GIB, 0x0900_0000] {
        let e = probe_exec(target);
        check!(e.is_some_and(|e| e.ec() == ec::IABT_CURRENT as u64 && e.far == target), "fetch from {:#x}: {:?}", target, e);
    }
    // The UART is XN in this guest's own stage-1 tables, so that fault never reaches the
    // hypervisor; the other two did.
    probes += 2;

    let injected = hvc::counter(Counter::InjectedFaults) - injected_before;
    println!("{} probes outside RAM, {} aborts injected by the hypervisor", probes, injected);
    check_eq!(injected, probes, "every probe outside RAM was answered by the hypervisor");
    guest_rt::pass()
}

guest_rt::guest_main!(main);
