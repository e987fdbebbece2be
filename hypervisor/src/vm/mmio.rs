//! Data aborts on guest-physical addresses stage-2 leaves unmapped: emulated when a device
//! lives there, otherwise answered with an abort in the guest.

use super::exit::{skip_instruction, Next};
use super::vcpu::{Vcpu, VcpuRun};
use super::{inject, Vm};
use crate::vdev::{vgic, virtio_mmio};
use aarch64_cpu::registers::*;
use crate::vdev::virtio_blk::GuestDisk;
use hv_core::esr::{DataAbort, Esr};
use hv_core::guest_dt::layout;
use hv_core::hypercall::Counter;
use hv_core::mmio::MmioDevice;
use hv_core::virtio_mmio::{Transport, VirtioDevice};
use hv_core::ranges::Range;

/// Which of the VM's devices an access reached (what must happen after it differs).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Device {
    Uart,
    PvPanic,
    Gic,
    /// An empty virtio-mmio slot.
    Virtio,
    /// The VM's disk number n (`Vm::disks`), in its slot.
    Disk(usize),
    /// The VM's pmsg port (`Vm::pmsg_port`).
    PmsgPort,
    /// The VM's entropy device (`Vm::entropy`).
    Entropy,
    /// The VM's memory balloon (`Vm::balloon`).
    Balloon,
    /// The VM's network card (`Vm::net`).
    Net,
}

/// The faulting IPA: page from HPFAR_EL2.FIPA, offset from FAR_EL2.
pub fn fault_ipa(far: u64) -> u64 {
    let hpfar = HPFAR_EL2.get();
    ((hpfar >> 4) << 12) & 0x000f_ffff_ffff_f000 | (far & 0xfff)
}

/// The device at `ipa`, its register interface and the offset into it. A virtio device's
/// registers are reached through its own field of `Vm` instead (its writes need the VM's
/// memory): its entry carries the empty slots' interface only to fill the tuple. Inlined
/// into the fast path: the UART's registers are the hot case.
#[inline(always)]
fn device_at(vm: &Vm, ipa: u64) -> Option<(Device, &dyn MmioDevice, u64)> {
    let uart = Range::new(layout::UART_BASE, layout::UART_SIZE);
    if uart.contains(ipa) {
        return Some((Device::Uart, &vm.uart, ipa - uart.start));
    }
    if Range::new(layout::PVPANIC_BASE, layout::PVPANIC_SIZE).contains(ipa) {
        return Some((Device::PvPanic, &vm.pvpanic, ipa - layout::PVPANIC_BASE));
    }
    if Range::new(layout::VIRTIO_BASE, virtio_mmio::WINDOW).contains(ipa) {
        return Some(virtio_device_at(vm, ipa - layout::VIRTIO_BASE));
    }
    match &vm.vgic {
        Some(g) if vgic::contains(ipa, vm.vcpus.len()) => Some((Device::Gic, g, ipa - layout::GICD_BASE)),
        _ => None,
    }
}

/// The virtio device at `offset` into the slots' window, and the offset into its slot (into
/// the window for an empty slot). Out of line: the fast path stays small for the UART.
#[inline(never)]
fn virtio_device_at(vm: &Vm, offset: u64) -> (Device, &dyn MmioDevice, u64) {
    let (slot, in_slot) = (offset / layout::VIRTIO_SLOT_SIZE, offset % layout::VIRTIO_SLOT_SIZE);
    let which = if let Some(n) = vm.disks.iter().position(|d| d.slot == slot) {
        Device::Disk(n)
    } else if slot == crate::vdev::virtio_console::SLOT && vm.pmsg_port.is_some() {
        Device::PmsgPort
    } else if slot == crate::vdev::virtio_rng::SLOT && vm.entropy.is_some() {
        Device::Entropy
    } else if slot == crate::vdev::virtio_balloon::SLOT && vm.balloon.is_some() {
        Device::Balloon
    } else if slot == crate::vdev::virtio_net::SLOT && vm.net.is_some() {
        Device::Net
    } else {
        return (Device::Virtio, &virtio_mmio::VirtioSlots, offset);
    };
    (which, &virtio_mmio::VirtioSlots, in_slot)
}

/// Calls `f` with slot `slot`'s transport and device under the device's lock, or with
/// None for an empty slot (for the window's image, vm/virtio_image.rs).
pub(super) fn with_virtio_slot<R>(vm: &Vm, slot: u64, f: &mut dyn FnMut(Option<(&Transport, &dyn VirtioDevice)>) -> R) -> R {
    let mut some = |t: &Transport, d: &dyn VirtioDevice| f(Some((t, d)));
    match virtio_device_at(vm, slot * layout::VIRTIO_SLOT_SIZE).0 {
        Device::Disk(n) => vm.disks[n].with_registers(&mut some),
        Device::PmsgPort if let Some(p) = &vm.pmsg_port => p.with_registers(&mut some),
        Device::Entropy if let Some(e) = &vm.entropy => e.with_registers(&mut some),
        Device::Balloon if let Some(b) = &vm.balloon => b.with_registers(&mut some),
        Device::Net if let Some(c) = &vm.net => c.with_registers(&mut some),
        _ => f(None),
    }
}

/// A register access to one of the VM's disks; a write may serve requests and move the
/// slot's interrupt line.
fn disk_access(vm: &Vm, run: &mut VcpuRun, disk: &GuestDisk, offset: u64, da: DataAbort) {
    let reg = da.reg as usize;
    if da.write {
        let value = if reg == 31 { 0 } else { run.regs.x[reg] };
        let line = disk.write(&vm.mem, offset, da.access_size, da.store_value(value));
        vm.set_virtio_line(disk.slot, line);
    } else if reg != 31 {
        run.regs.x[reg] = da.load_result(disk.read(offset, da.access_size));
    }
}

/// A register access to the VM's pmsg port (a notification writes to the pstore disk), its
/// entropy device, its balloon (a notification may give memory back to the host) or its
/// network card (a notification sends frames through the switch).
#[cold]
#[inline(never)]
fn served_device_access(vm: &Vm, run: &mut VcpuRun, which: Device, offset: u64, da: DataAbort) {
    let reg = da.reg as usize;
    let value = if reg == 31 { 0 } else { run.regs.x[reg] };
    let (size, value) = (da.access_size, da.store_value(value));
    let read = match (which, &vm.pmsg_port, &vm.entropy) {
        (Device::PmsgPort, Some(port), _) if da.write => {
            vm.set_virtio_line(crate::vdev::virtio_console::SLOT, port.write(&vm.mem, offset, size, value));
            return;
        }
        (Device::PmsgPort, Some(port), _) => port.read(offset, size),
        (Device::Entropy, _, Some(e)) if da.write => {
            vm.set_virtio_line(crate::vdev::virtio_rng::SLOT, e.write(&vm.mem, offset, size, value));
            return;
        }
        (Device::Entropy, _, Some(e)) => e.read(offset, size),
        (Device::Balloon, _, _) => match &vm.balloon {
            Some(b) if da.write => {
                let served = b.write(&vm.mem, offset, size, value);
                vm.set_virtio_line(crate::vdev::virtio_balloon::SLOT, served.line);
                super::memory_given_back(served.given_back);
                return;
            }
            Some(b) => b.read(offset, size),
            None => return,
        },
        (Device::Net, _, _) => match &vm.net {
            Some(card) if da.write => {
                let (line, sent) = card.write(&vm.mem, offset, size, value);
                vm.set_virtio_line(crate::vdev::virtio_net::SLOT, line);
                super::network::transmit(vm, sent);
                return;
            }
            Some(card) => card.read(offset, size),
            None => return,
        },
        _ => return,
    };
    if reg != 31 {
        run.regs.x[reg] = da.load_result(read);
    }
}

/// An access to no RAM or device, or one without a syndrome: an abort in the guest. Out
/// of line, so that the emulation path keeps a small frame (this one formats a warning).
#[cold]
#[inline(never)]
fn refuse(vm: &Vm, vcpu: &Vcpu, run: &mut VcpuRun, esr: Esr, ipa: u64, far: u64, is_device: bool) -> Next {
    let da = esr.data_abort();
    let why = if is_device { "an access the hypervisor cannot decode (no syndrome)" } else { "no RAM or device" };
    vm.warn(format_args!(
        "vCPU {}: {} at IPA {ipa:#x} (VA {far:#x}, PC {:#x}): {}, {why}: abort injected",
        vcpu.index,
        if da.write { "write" } else { "read" },
        ELR_EL2.get(),
        da.fault_kind()
    ));
    inject::data_abort(run, far, da.write)
}

/// Inlined into the fast exit path (and the slow one): the MMIO exits of a booting guest
/// come through here by the ten thousand.
#[inline(always)]
pub fn handle_data_abort(vm: &Vm, vcpu: &Vcpu, run: &mut VcpuRun, esr: Esr) -> Next {
    let da = esr.data_abort();
    let far = FAR_EL2.get();
    let ipa = fault_ipa(far);
    // Devices first: they lie outside RAM, and their registers are the hot case.
    let device = device_at(vm, ipa);
    if device.is_none() && vm.is_ram(ipa, 1) {
        let access = if da.write { "write" } else { "read" };
        return super::exit::ram_fault(vm, vcpu, run, ipa, far, da.fsc, access);
    }
    let Some((which, dev, offset)) = device.filter(|_| da.isv && !da.s1ptw) else {
        return refuse(vm, vcpu, run, esr, ipa, far, device.is_some());
    };
    run.count(Counter::MmioAccesses);
    if which == Device::Gic && vm.vgic.as_ref().is_some_and(|g| g.reaches_interrupt_state(offset)) {
        // What the guest reads or changes of its timers' interrupts must follow their
        // lines now.
        vcpu.sync_lines(run);
    }
    // Register 31 is XZR here: reads as zero, writes are discarded.
    let reg = da.reg as usize;
    // The VM's virtio devices: their writes reach guest memory, and what reads return
    // lives in the register image.
    let virtio_device = match which {
        Device::Disk(n) => {
            disk_access(vm, run, &vm.disks[n], offset, da);
            true
        }
        Device::PmsgPort | Device::Entropy | Device::Balloon | Device::Net => {
            served_device_access(vm, run, which, offset, da);
            true
        }
        _ => false,
    };
    if virtio_device {
        if da.write {
            vm.virtio_written(ipa - layout::VIRTIO_BASE);
        }
        skip_instruction();
        return Next::Resume;
    }
    if da.write {
        let value = if reg == 31 { 0 } else { run.regs.x[reg] };
        dev.write(offset, da.access_size, da.store_value(value));
        match (which, &vm.vgic) {
            (Device::Gic, Some(g)) => vm.notify(g.after_write()),
            (Device::PvPanic, _) => {
                if let Some(stop) = vm.after_pvpanic_write() {
                    skip_instruction();
                    return stop;
                }
            }
            _ => {}
        }
    } else {
        let raw = match (which, &vm.vgic) {
            (Device::Gic, Some(g)) => g.read_as(vcpu.index, offset, da.access_size),
            _ => dev.read(offset, da.access_size),
        };
        let value = da.load_result(raw);
        if reg != 31 {
            run.regs.x[reg] = value;
        }
    }
    if which == Device::Uart && (da.write || hv_core::pl011::Pl011::read_has_effects(offset)) {
        // A write, or reading data (which drains the input), may change the UART's
        // interrupt line; other reads change nothing (the flag register is read at every
        // byte the guest prints). What reads return changes with all but a byte printed.
        if !(da.write && hv_core::pl011::Pl011::read_has_effects(offset)) {
            vm.sync_uart_image();
        }
        if da.write && !hv_core::pl011::Pl011::write_moves_line(offset) {
            // Output (every byte a guest prints): only its panic watch can have news.
            vm.after_uart_output();
        } else {
            vm.after_uart_activity();
        }
        if !da.write && crate::console::input_held() {
            // The guest took a byte: input held back for want of room can follow.
            super::deliver_console_input();
        }
    }
    skip_instruction();
    Next::Resume
}
