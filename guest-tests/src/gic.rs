//! The guest's GICv3 at the virt machine's addresses: enough to take this vCPU's own
//! interrupts (SGIs and PPIs, group 1) and to look at their state, the same way on the
//! hypervisor and on bare QEMU.

use core::arch::asm;
use hv_core::guest_dt::layout::{GICD_BASE, GICR_BASE, GICR_STRIDE};

const GICD_CTLR_ARE: u32 = 1 << 4;
const GICD_CTLR_GRP1: u32 = 1 << 1;
const GICR_WAKER: u64 = 0x14;
const SGI: u64 = 0x1_0000;
const IGROUPR0: u64 = SGI + 0x80;
const ISENABLER0: u64 = SGI + 0x100;
const ICENABLER0: u64 = SGI + 0x180;
const ISPENDR0: u64 = SGI + 0x200;
const ICPENDR0: u64 = SGI + 0x280;
const ISACTIVER0: u64 = SGI + 0x300;
const IPRIORITYR: u64 = SGI + 0x400;

fn rd(offset: u64) -> *mut u32 {
    (GICR_BASE + crate::vcpu_index() as u64 * GICR_STRIDE + offset) as *mut u32
}

// Single loads and stores without writeback, so that a trapped access has its syndrome
// (the compiler may otherwise pick forms a hypervisor cannot decode, as Linux's accessors
// avoid too).
fn read(p: *mut u32) -> u32 {
    let v: u32;
    // SAFETY: a GIC register in the guest's device mapping.
    unsafe { asm!("ldr {:w}, [{}]", out(reg) v, in(reg) p, options(nostack)) };
    v
}

fn write(p: *mut u32, v: u32) {
    // SAFETY: as above.
    unsafe { asm!("str {:w}, [{}]", in(reg) v, in(reg) p, options(nostack)) };
}

/// The distributor on (affinity routing, group 1). Once, from any vCPU.
pub fn init_distributor() {
    write(GICD_BASE as *mut u32, GICD_CTLR_ARE | GICD_CTLR_GRP1);
}

/// This vCPU's redistributor awake, its SGIs and PPIs group 1 at priority 0x80 and
/// disabled, and its CPU interface on (priority mask open, group 1 enabled). PSTATE.I is
/// left as it is.
pub fn init_cpu() {
    write(rd(GICR_WAKER), read(rd(GICR_WAKER)) & !(1 << 1));
    while read(rd(GICR_WAKER)) & (1 << 2) != 0 {
        core::hint::spin_loop();
    }
    write(rd(ICENABLER0), u32::MAX);
    write(rd(ICPENDR0), u32::MAX);
    write(rd(IGROUPR0), u32::MAX);
    for i in 0..8 {
        write(rd(IPRIORITYR + 4 * i), 0x8080_8080);
    }
    // SAFETY: GIC CPU-interface registers of this vCPU: system-register access on,
    // priority mask open, binary point 0, group 1 on.
    unsafe {
        asm!("msr S3_0_C12_C12_5, {sre}", "isb", "msr S3_0_C4_C6_0, {pmr}", "msr S3_0_C12_C12_3, xzr",
             "msr S3_0_C12_C12_7, {on}", "isb",
             sre = in(reg) 1u64, pmr = in(reg) 0xffu64, on = in(reg) 1u64, options(nostack));
    }
}

pub fn enable(intid: u32) {
    write(rd(ISENABLER0), 1 << intid);
}

pub fn disable(intid: u32) {
    write(rd(ICENABLER0), 1 << intid);
}

/// GICR_ISPENDR0's bit for a private interrupt.
pub fn pending(intid: u32) -> bool {
    read(rd(ISPENDR0)) & (1 << intid) != 0
}

pub fn active(intid: u32) -> bool {
    read(rd(ISACTIVER0)) & (1 << intid) != 0
}

/// Acknowledges the highest-priority pending interrupt (1023: none).
pub fn ack() -> u32 {
    let v: u64;
    // SAFETY: ICC_IAR1_EL1 read: acknowledges an interrupt, completed by `eoi`.
    unsafe { asm!("mrs {}, S3_0_C12_C12_0", out(reg) v, options(nostack)) };
    v as u32
}

/// Priority drop and deactivation (EOImode 0).
pub fn eoi(intid: u32) {
    // SAFETY: ICC_EOIR1_EL1 write for an interrupt this vCPU acknowledged.
    unsafe { asm!("msr S3_0_C12_C12_1, {}", "isb", in(reg) intid as u64, options(nostack)) };
}

/// ISR_EL1.I: an IRQ is pending for this vCPU (taken or not).
pub fn irq_signalled() -> bool {
    let v: u64;
    // SAFETY: reading ISR_EL1 has no side effects.
    unsafe { asm!("isb", "mrs {}, isr_el1", out(reg) v, options(nomem, nostack)) };
    v & (1 << 7) != 0
}

/// Unmasks IRQs (PSTATE.I clear).
pub fn irqs_on() {
    // SAFETY: the runtime takes IRQs through the handler set with exceptions::on_irq.
    unsafe { asm!("msr daifclr, #2", "isb", options(nostack)) };
}

pub fn irqs_off() {
    // SAFETY: masking IRQs has no other effect.
    unsafe { asm!("msr daifset, #2", "isb", options(nostack)) };
}
