//! The host's GICv3, driven for the hypervisor's own use: an SGI that kicks another
//! physical CPU out of its guest, the virtual CPU interface's maintenance interrupt, and the
//! guest virtual timer's PPI, which is handed to the loaded vCPU (vdev::vgic).

use crate::arch::gic_cpuif;
use crate::arch::stacks::MAX_CPUS;
use crate::percpu;
use core::sync::atomic::{AtomicU64, Ordering};
use tock_registers::interfaces::{ReadWriteable, Readable, Writeable};
use tock_registers::registers::{ReadOnly, ReadWrite};
use tock_registers::{register_bitfields, register_structs};

/// The SGI the hypervisor uses to kick a CPU.
pub const KICK_SGI: u32 = 0;
/// The virtual CPU interface's maintenance interrupt (PPI 9).
pub const MAINTENANCE_PPI: u32 = 25;
/// The EL1 virtual timer (PPI 11): the loaded vCPU's timer.
pub const VTIMER_PPI: u32 = 27;
/// The PMU's overflow interrupt (PPI 7): the loaded vCPU's PMU.
pub const PMU_PPI: u32 = 23;
/// The physical PPIs of the loaded vCPU's own hardware (its virtual timer and PMU): handed to
/// it through hardware-linked list registers, active until the guest completes them.
pub const GUEST_PPIS: [u32; 2] = [VTIMER_PPI, PMU_PPI];
const GUEST_PPI_MASK: u32 = 1 << VTIMER_PPI | 1 << PMU_PPI;
/// The EL2 physical timer (PPI 10): the end of a time slice, or a loaded vCPU's emulated
/// timer due.
pub const HYP_TIMER_PPI: u32 = 26;

register_bitfields! {u32,
    GICD_CTLR [
        RWP OFFSET(31) NUMBITS(1) [],
        ARE_NS OFFSET(4) NUMBITS(1) [],
        ENABLE_GRP1NS OFFSET(1) NUMBITS(1) [],
    ],
    GICR_WAKER [
        CHILDREN_ASLEEP OFFSET(2) NUMBITS(1) [],
        PROCESSOR_SLEEP OFFSET(1) NUMBITS(1) [],
    ],
}

register_bitfields! {u64,
    GICR_TYPER [
        AFFINITY OFFSET(32) NUMBITS(32) [],
        LAST OFFSET(4) NUMBITS(1) [],
    ],
}

register_structs! {
    Distributor {
        (0x000 => ctlr: ReadWrite<u32, GICD_CTLR::Register>),
        (0x004 => _reserved0),
        (0x080 => igroupr: [ReadWrite<u32>; 32]),
        (0x100 => isenabler: [ReadWrite<u32>; 32]),
        (0x180 => _reserved1),
        (0x400 => ipriorityr: [ReadWrite<u8>; 1024]),
        (0x800 => _reserved2),
        (0x6000 => irouter: [ReadWrite<u64>; 1020]),
        (0x7fe0 => @END),
    },
    RedistributorRd {
        (0x000 => _ctlr),
        (0x008 => typer: ReadOnly<u64, GICR_TYPER::Register>),
        (0x010 => _statusr),
        (0x014 => waker: ReadWrite<u32, GICR_WAKER::Register>),
        (0x018 => @END),
    },
    RedistributorSgi {
        (0x000 => _reserved0),
        (0x080 => igroupr0: ReadWrite<u32>),
        (0x084 => _reserved1),
        (0x100 => isenabler0: ReadWrite<u32>),
        (0x104 => _reserved2),
        (0x300 => isactiver0: ReadWrite<u32>),
        (0x304 => _reserved3),
        (0x380 => icactiver0: ReadWrite<u32>),
        (0x384 => _reserved4),
        (0x400 => ipriorityr: [ReadWrite<u8>; 32]),
        (0x420 => @END),
    }
}

/// Each redistributor: an RD frame and an SGI frame of 64 KiB.
const GICR_STRIDE: u64 = 0x2_0000;
const SGI_FRAME: u64 = 0x1_0000;

static GICD_BASE: AtomicU64 = AtomicU64::new(0);
static GICR_BASE: AtomicU64 = AtomicU64::new(0);
/// The console UART's SPI, once routed here (0: none).
static UART_INTID: core::sync::atomic::AtomicU32 = core::sync::atomic::AtomicU32::new(0);
static GICR_END: AtomicU64 = AtomicU64::new(0);
/// SPIs of devices routed here by `route_device_here`, a bit per INTID.
static DEVICE_SPIS: [core::sync::atomic::AtomicU32; 32] = [const { core::sync::atomic::AtomicU32::new(0) }; 32];
/// Each CPU's SGI frame (0 until its redistributor is set up).
static SGI_FRAMES: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// This CPU's SGI frame, if set up.
fn sgi_frame() -> Option<&'static RedistributorSgi> {
    let base = SGI_FRAMES.get(percpu::this_cpu().index())?.load(Ordering::Acquire);
    // SAFETY: a redistributor SGI frame found by `init_cpu`, mapped as device memory; only
    // its own CPU uses it.
    (base != 0).then(|| unsafe { &*(base as *const RedistributorSgi) })
}

/// Enables the distributor (affinity routing, Group 1). Boot CPU, once.
pub fn init(gicd: u64, gicr: u64, gicr_size: u64) {
    // SAFETY: the GICD address comes from the host device tree and is mapped as device
    // memory in the EL2 tables; the hypervisor is its only driver.
    let d = unsafe { &*(gicd as *const Distributor) };
    d.ctlr.modify(GICD_CTLR::ARE_NS::SET + GICD_CTLR::ENABLE_GRP1NS::SET);
    while d.ctlr.is_set(GICD_CTLR::RWP) {
        core::hint::spin_loop();
    }
    GICD_BASE.store(gicd, Ordering::Release);
    GICR_BASE.store(gicr, Ordering::Release);
    GICR_END.store(gicr + gicr_size, Ordering::Release);
}

/// Routes the console UART's SPI to this CPU (Group 1, enabled).
pub fn route_uart_here(intid: u32) {
    if route_spi_here(intid) {
        UART_INTID.store(intid, Ordering::Release);
    }
}

/// Routes the SPI of a host device the hypervisor drives to this CPU: each one taken is
/// reported in `Arrived::device` and stays active until `device_done`.
pub fn route_device_here(intid: u32) -> bool {
    if !route_spi_here(intid) {
        return false;
    }
    DEVICE_SPIS[(intid / 32) as usize].fetch_or(1 << (intid % 32), Ordering::AcqRel);
    true
}

/// Whether `intid` is a host device's interrupt routed here (`route_device_here`).
pub fn is_device_spi(intid: u32) -> bool {
    DEVICE_SPIS.get((intid / 32) as usize).is_some_and(|w| w.load(Ordering::Relaxed) & 1 << (intid % 32) != 0)
}

/// The caller acknowledged the device behind `intid` (its line is low again, or will rise
/// anew for what comes next): the interrupt may come again.
pub fn device_done(intid: u32) {
    gic_cpuif::deactivate(intid);
}

/// Level-sensitive, Group 1, priority 0x80, enabled, routed to this CPU. False without a
/// GIC or for an INTID that is no SPI.
fn route_spi_here(intid: u32) -> bool {
    let base = GICD_BASE.load(Ordering::Acquire);
    if base == 0 || !(32..1020).contains(&intid) {
        return false;
    }
    // SAFETY: as in `init`.
    let d = unsafe { &*(base as *const Distributor) };
    let (word, bit) = ((intid / 32) as usize, 1u32 << (intid % 32));
    d.irouter[intid as usize].set(crate::arch::cpu::mpidr());
    d.igroupr[word].set(d.igroupr[word].get() | bit);
    d.ipriorityr[intid as usize].set(0x80);
    d.isenabler[word].set(bit);
    true
}

/// Whether `init` ran (the machine has a GICv3 the hypervisor drives).
pub fn initialized() -> bool {
    GICR_BASE.load(Ordering::Acquire) != 0
}

/// Wakes this CPU's redistributor and enables the kick SGI. Each CPU, after `init`.
/// Returns false when no redistributor matches the CPU.
pub fn init_cpu(mpidr: u64) -> bool {
    let (base, end) = (GICR_BASE.load(Ordering::Acquire), GICR_END.load(Ordering::Acquire));
    if base == 0 {
        return false;
    }
    let affinity = (mpidr & 0xff_ffff) | ((mpidr >> 32) & 0xff) << 24;
    let mut frame = base;
    while frame < end {
        // SAFETY: redistributor frames lie in the GICR region from the device tree, which
        // the EL2 tables map as device memory; each CPU touches only its own.
        let rd = unsafe { &*(frame as *const RedistributorRd) };
        if rd.typer.read(GICR_TYPER::AFFINITY) == affinity {
            rd.waker.modify(GICR_WAKER::PROCESSOR_SLEEP::CLEAR);
            while rd.waker.is_set(GICR_WAKER::CHILDREN_ASLEEP) {
                core::hint::spin_loop();
            }
            // SAFETY: as above, the SGI frame follows the RD frame.
            let sgi = unsafe { &*((frame + SGI_FRAME) as *const RedistributorSgi) };
            let ours = 1 << KICK_SGI | 1 << MAINTENANCE_PPI | GUEST_PPI_MASK | 1 << HYP_TIMER_PPI;
            sgi.igroupr0.set(sgi.igroupr0.get() | ours);
            for intid in [KICK_SGI, MAINTENANCE_PPI, VTIMER_PPI, PMU_PPI, HYP_TIMER_PPI] {
                sgi.ipriorityr[intid as usize].set(0x80);
            }
            sgi.isenabler0.set(ours);
            if let Some(slot) = SGI_FRAMES.get(percpu::this_cpu().index()) {
                slot.store(frame + SGI_FRAME, Ordering::Release);
            }
            gic_cpuif::enable();
            return true;
        }
        if rd.typer.is_set(GICR_TYPER::LAST) {
            break;
        }
        frame += GICR_STRIDE;
    }
    false
}

/// Interrupts the physical CPU `mpidr`: if it runs a guest, the guest exits.
pub fn kick(mpidr: u64) {
    let aff0 = mpidr & 0xff;
    let value = (1u64 << (aff0 & 0xf))       // target list
        | ((mpidr >> 8) & 0xff) << 16         // Aff1
        | (KICK_SGI as u64) << 24             // INTID
        | ((mpidr >> 16) & 0xff) << 32        // Aff2
        | (aff0 >> 4) << 44                   // RS: which 16 of Aff0
        | ((mpidr >> 32) & 0xff) << 48; // Aff3
    gic_cpuif::send_sgi(value);
}

/// Makes physical CPU `index` leave its guest (if it runs one) or its idle wait, and look at
/// its run queue. Without a GIC, idle CPUs wait for events instead, and a guest is left
/// only at its next exit.
pub fn kick_cpu(index: usize) {
    match percpu::cpu(index) {
        Some(c) if c.kickable.load(Ordering::Acquire) => kick(c.mpidr.load(Ordering::Relaxed)),
        _ => crate::arch::cpu::send_event(),
    }
}

/// `kick_cpu` for a change to CPU `index`'s run queue or to a vCPU in it (PerCpu::reschedule).
pub fn kick_cpu_to_reschedule(index: usize) {
    if let Some(c) = percpu::cpu(index) {
        c.reschedule.store(true, Ordering::Release);
    }
    kick_cpu(index);
}

/// Completes an acknowledged kick (as `handle_pending` does), for a fast path that handles
/// it itself.
pub fn complete_kick() {
    gic_cpuif::eoi(KICK_SGI);
    gic_cpuif::deactivate(KICK_SGI);
}

/// What arrived in one round of acknowledging this CPU's interrupts.
#[derive(Clone, Copy, Debug, Default)]
pub struct Arrived {
    pub kick: bool,
    pub maintenance: bool,
    /// Console input arrived.
    pub uart: bool,
    /// A host device's interrupt (its INTID; 0: none), active until `device_done`.
    pub device: u32,
    /// The hypervisor's timer fired (it is stopped now): a time slice may be over, an
    /// emulated timer due.
    pub hyp_timer: bool,
    /// The loaded vCPU's virtual timer or PMU interrupted (bit n: PPI INTID n): each stays
    /// active until the guest deactivates the virtual interrupt it is given (a
    /// hardware-linked list register).
    pub guest_ppis: u32,
}

/// Acknowledges pending interrupts and completes those the hypervisor owns, up to one whose
/// level stays high until the caller acts (the console UART's, the maintenance interrupt).
/// `first`: one the caller acknowledged already (`acknowledge`).
pub fn handle_pending(first: Option<u32>) -> Arrived {
    percpu::park_if_stopping();
    let mut arrived = Arrived::default();
    let mut acknowledged = first;
    loop {
        let intid = acknowledged.take().unwrap_or_else(gic_cpuif::ack);
        if (1020..1024).contains(&intid) {
            return arrived;
        }
        gic_cpuif::eoi(intid);
        match intid {
            VTIMER_PPI | PMU_PPI => arrived.guest_ppis |= 1 << intid,
            KICK_SGI => {
                gic_cpuif::deactivate(intid);
                arrived.kick = true;
            }
            HYP_TIMER_PPI => {
                // Level-triggered until the timer is off.
                crate::arch::cpu::hyp_timer_at(None);
                gic_cpuif::deactivate(intid);
                arrived.hyp_timer = true;
            }
            MAINTENANCE_PPI => {
                gic_cpuif::deactivate(intid);
                arrived.maintenance = true;
                // Level-triggered: it stays asserted until the caller refills the list
                // registers, so it must not be acknowledged again first.
                return arrived;
            }
            other if is_device_spi(other) => {
                // Level-triggered: completed by the caller once it acknowledged the device.
                arrived.device = other;
                return arrived;
            }
            other if other == UART_INTID.load(Ordering::Relaxed) => {
                gic_cpuif::deactivate(other);
                arrived.uart = true;
                // A level-triggered line: acknowledging again before the caller drains the
                // UART would only return it again.
                return arrived;
            }
            other => {
                gic_cpuif::deactivate(other);
                log::warn!("unexpected physical interrupt {other}");
            }
        }
    }
}

/// Acknowledges the highest-priority pending interrupt (1020..1023: none): for a fast path
/// that handles a guest PPI itself (`drop_priority` then) or passes it to `handle_pending`.
pub fn acknowledge() -> u32 {
    gic_cpuif::ack()
}

/// Completes an acknowledged guest PPI the caller handed to its vCPU: its priority drops,
/// and it stays active until the guest deactivates it (as `handle_pending` does).
pub fn drop_priority(intid: u32) {
    gic_cpuif::eoi(intid);
}

/// Which of this CPU's guest PPIs are active (handed to a vCPU, not yet deactivated).
pub fn guest_ppis_active() -> u32 {
    sgi_frame().map_or(0, |f| f.isactiver0.get() & GUEST_PPI_MASK)
}

/// Sets (or clears) the active state of the guest PPIs in `mask` (when vCPUs switch).
pub fn set_guest_ppis_active(mask: u32, active: bool) {
    let mask = mask & GUEST_PPI_MASK;
    if let (Some(f), true) = (sgi_frame(), mask != 0) {
        if active {
            f.isactiver0.set(mask);
        } else {
            f.icactiver0.set(mask);
        }
    }
}
