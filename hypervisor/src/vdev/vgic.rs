//! The virtual GICv3 of a VM: its distributor and redistributors emulated through trapped
//! MMIO (the model is hv_core::vgic), and delivery of pending interrupts into the list
//! registers of the physical CPU interface's virtualization support (ICH_*_EL2). Guests
//! acknowledge and complete interrupts through the ICV_* registers without exits; SGIs
//! (ICC_SGI1R_EL1 writes) trap and are routed here. The PPIs of the vCPU's own hardware
//! (virtual timer, PMU) are linked to the physical ones (hardware list registers), so the
//! guest's deactivation re-arms them.
//!
//! Their lines, and the emulated physical timer's, are level-triggered: when a line falls
//! (timer disabled, masked or moved, overflow cleared), what it made pending is taken back,
//! from the model and from the list registers, whenever the hypervisor gets control
//! (`sync_hw_line`, `set_private_level`). The guest does not exit when it writes its timer or
//! PMU, so while such an interrupt waits in a list register behind masked interrupts, the
//! guest's group-1 CPU-interface accesses trap (ICH_HCR_EL2.TALL1): its acknowledge is
//! checked against the line first.
//!
//! What needs telling which vCPU is returned as sets of vCPU indices (bit i: vCPU i); the
//! VM layer tells them (and kicks their CPUs).

use crate::arch::gic_cpuif::ich;
use crate::drivers::gicv3::{self, GUEST_PPIS};
use alloc::vec::Vec;
use hv_core::guest_dt::layout;
use hv_core::mmio::MmioDevice;
use hv_core::vgic::{has_deliverable, irq_mut, lone_raise, lr, sgi_targets, take_deliverable, Deliverable, Distributor, Redistributor};
use spin::Mutex;

const ICH_HCR_EN: u64 = 1 << 0;
/// Underflow: a maintenance interrupt when at most one list register is in use.
const ICH_HCR_UIE: u64 = 1 << 1;
/// The guest's group-1 ICC_*/ICV_* accesses trap to EL2.
const ICH_HCR_TALL1: u64 = 1 << 12;
const LR_INTID: u64 = 0xffff_ffff;
const MAX_LRS: usize = 16;

struct State {
    dist: Distributor,
    redist: Vec<Redistributor>,
}

pub struct Vgic {
    state: Mutex<State>,
    /// vCPUs (redistributors), fixed at creation.
    vcpus: usize,
}

/// A vCPU's virtual CPU interface while it is not loaded.
#[derive(Clone, Debug)]
pub struct CpuInterface {
    lrs: [u64; MAX_LRS],
    /// VMCR, AP0R0, AP1R0, HCR.
    regs: [u64; 4],
    /// The guest PPIs that were active (handed to this vCPU) when it was unloaded.
    hw_active: u32,
}

impl Default for CpuInterface {
    fn default() -> Self {
        CpuInterface { lrs: [0; MAX_LRS], regs: [0, 0, 0, ICH_HCR_EN], hw_active: 0 }
    }
}

/// Whether this machine can virtualize the GIC (a GICv3 CPU interface with ICH registers);
/// decided once at boot.
pub fn available() -> bool {
    crate::arch::cpu::features().gic_sysregs && gicv3::initialized()
}

/// The list register for `d`: the virtual timer's and the PMU's PPIs are linked to the
/// physical ones (the guest's deactivation deactivates them); everything else is emulated.
fn lr_value(d: &Deliverable) -> u64 {
    lr::encode(d, GUEST_PPIS.contains(&d.intid).then_some(d.intid))
}

impl Vgic {
    pub fn new(vcpus: usize) -> Vgic {
        Vgic { state: Mutex::new(State { dist: Distributor::default(), redist: (0..vcpus).map(|_| Redistributor::default()).collect() }), vcpus }
    }

    /// Makes SGI or PPI `intid` pending on vCPU `target`.
    fn set_private_pending(&self, target: usize, intid: u32) {
        if let Some(r) = self.state.lock().redist.get_mut(target) {
            r.set_pending(intid % 32, true);
        }
    }

    /// Moves what is deliverable to vCPU `index` into the list registers. It must be
    /// loaded on this CPU; `irqs_masked`: its PSTATE.I is set (it cannot take an interrupt
    /// before it runs on).
    pub fn flush(&self, index: usize, irqs_masked: bool) {
        let nr = ich::list_registers().min(MAX_LRS);
        let all = (1u32 << nr) - 1;
        // Only the list registers the hardware does not call empty are read, once; the
        // writes below keep `lrs` true.
        let mut lrs = LrSnapshot::default();
        lrs.fill();
        let mut free_set = all & !lrs.held;
        let mut in_lr = [u32::MAX; MAX_LRS];
        let mut used = lrs.held;
        while used != 0 {
            let n = used.trailing_zeros() as usize;
            used &= used - 1;
            let value = lrs.value(n);
            if lr::is_free(value) {
                // Free. One the guest completed with EOI maintenance requested is not
                // "empty" to the hardware and keeps the maintenance interrupt asserted
                // until it is rewritten.
                lrs.set(n, 0);
                free_set |= 1 << n;
            } else {
                in_lr[n] = value as u32;
            }
        }
        // Bytes, not usize: a 128-byte array would be zeroed by a memset call at every flush.
        let mut free = [0u8; MAX_LRS];
        let mut nfree = 0;
        while free_set != 0 {
            free[nfree] = free_set.trailing_zeros() as u8;
            free_set &= free_set - 1;
            nfree += 1;
        }
        let mut out = [Deliverable { intid: 0, priority: 0, group1: false, edge: false }; MAX_LRS];
        let (taken, more) = {
            let mut st = self.state.lock();
            let State { dist, redist } = &mut *st;
            let Some(r) = redist.get_mut(index) else { return };
            // Raised again while in a list register: pending there already, or made
            // pending on top of active (taken again once the guest completes it).
            for (n, &intid) in in_lr[..nr].iter().enumerate() {
                if intid == u32::MAX {
                    continue;
                }
                if let Some(q) = irq_mut(dist, r, intid).filter(|q| q.pending && q.enabled) {
                    q.pending = false;
                    if let Some(v) = lr::raise_again(lrs.value(n)) {
                        lrs.set(n, v);
                    }
                }
            }
            let taken = take_deliverable(dist, r, index, &in_lr[..nr], &mut out[..nfree]);
            // More than the free list registers could take: ask to be told when they drain.
            (taken, taken == nfree && has_deliverable(dist, r, index, &in_lr[..nr]))
        };
        for (d, &n) in out[..taken].iter().zip(&free[..nfree]) {
            lrs.set(n as usize, lr_value(d));
        }
        let mut hcr = (ich::hcr() | ICH_HCR_EN) & !(ICH_HCR_UIE | ICH_HCR_TALL1);
        if more {
            hcr |= ICH_HCR_UIE;
        }
        // The guest may turn its timer off (or clear its overflow) before it unmasks and
        // acknowledges.
        let mut waiting = |intid| lrs.holding(intid).is_some_and(|(_, v)| v & lr::STATE_MASK == lr::STATE_PENDING);
        if irqs_masked && GUEST_PPIS.iter().any(|&i| waiting(i)) {
            hcr |= ICH_HCR_TALL1;
        }
        ich::set_hcr(hcr);
    }

    /// Interrupt `intid` was raised for vCPU `index` (its guest PPI fired, virtual timer or
    /// PMU, or a device line routed to it rose) while it ran, loaded here with its list
    /// registers flushed: when it alone is to be delivered (hv_core::vgic::lone_raise) and a
    /// list register is empty, it goes straight there, without a whole flush (the virtual
    /// timer firing while the guest runs, and a disk's completion, take this path). Returns
    /// false, having changed nothing, otherwise. `irqs_masked`: as for `flush`.
    #[inline]
    pub fn deliver_lone(&self, index: usize, intid: u32, irqs_masked: bool) -> bool {
        let all = (1u32 << ich::list_registers().min(MAX_LRS)) - 1;
        let empty = ich::empty_lrs() & all;
        if empty == 0 {
            return false;
        }
        // Its physical PPI stays active while a list register holds it, so it cannot fire
        // then; should one hold it anyway, the whole flush sorts it out.
        let mut used = all & !empty;
        while used != 0 {
            let n = used.trailing_zeros() as usize;
            used &= used - 1;
            if holds(ich::lr(n), intid) {
                return false;
            }
        }
        let d = {
            let st = self.state.lock();
            match st.redist.get(index).and_then(|r| lone_raise(&st.dist, r, index, intid)) {
                Some(d) => d,
                None => return false,
            }
        };
        ich::set_lr(empty.trailing_zeros() as usize, lr_value(&d));
        // As `flush`: a guest with interrupts masked may turn a PPI's line off before it
        // acknowledges.
        let hcr = ich::hcr();
        if irqs_masked && GUEST_PPIS.contains(&intid) && hcr & ICH_HCR_TALL1 == 0 {
            ich::set_hcr(hcr | ICH_HCR_TALL1);
        }
        true
    }

    /// The loaded vCPU `index`'s hardware line for guest PPI `intid` (virtual timer, PMU),
    /// sampled now, is `level`. A fallen line takes back what it made pending: a list
    /// register still pending (its physical PPI is deactivated, so the next rise fires
    /// again) or the model's pending state (likewise, if the physical PPI was held for it).
    pub fn sync_hw_line(&self, index: usize, intid: u32, level: bool, lrs: &mut LrSnapshot) {
        if level {
            return;
        }
        let held = lrs.holding(intid);
        if let Some((n, v)) = held {
            if v & lr::STATE_MASK == lr::STATE_PENDING {
                lrs.set(n, 0);
                crate::arch::gic_cpuif::deactivate(intid);
            }
        }
        let mut st = self.state.lock();
        if let Some(q) = st.redist.get_mut(index).map(|r| &mut r.private[intid as usize % 32]) {
            if q.pending {
                q.pending = false;
                if held.is_none() {
                    crate::arch::gic_cpuif::deactivate(intid);
                }
            }
        }
    }

    /// Sets the level of vCPU `index`'s private, emulated, level-triggered line `intid` (its
    /// physical timer's PPI). The vCPU is loaded here (`lrs`: its list registers): a fallen
    /// line takes back a pending state they hold. Returns whether the vCPU must be told (the
    /// line rose).
    pub fn set_private_level(&self, index: usize, intid: u32, level: bool, lrs: &mut LrSnapshot) -> bool {
        if !level {
            if let Some((n, v)) = lrs.holding(intid) {
                if v & lr::STATE_PENDING != 0 {
                    lrs.set(n, v & !lr::STATE_PENDING);
                }
            }
        }
        let mut st = self.state.lock();
        let Some(r) = st.redist.get_mut(index) else { return false };
        let rose = level && !r.private[intid as usize % 32].pending;
        r.set_pending(intid % 32, level);
        rose
    }

    /// A read of the vGIC's registers by vCPU `index`, loaded here: its list registers'
    /// pending and active states show in the pending and active bits of its own
    /// interrupts (the model does not hold them while they are in list registers).
    pub fn read_as(&self, index: usize, offset: u64, size: u8) -> u64 {
        let at = region(offset, self.vcpus);
        let value = self.read_at(at, size);
        let (first_intid, state) = match at {
            Region::Redist(i, o) if i == index && size == 4 => match o.checked_sub(hv_core::vgic::SGI_FRAME) {
                Some(0x200 | 0x280) => (0, lr::STATE_PENDING),
                Some(0x300 | 0x380) => (0, lr::STATE_ACTIVE),
                _ => return value,
            },
            Region::Dist(o) if size == 4 && (0x204..0x280).contains(&o) => (((o - 0x200) / 4 * 32) as u32, lr::STATE_PENDING),
            Region::Dist(o) if size == 4 && (0x284..0x300).contains(&o) => (((o - 0x280) / 4 * 32) as u32, lr::STATE_PENDING),
            Region::Dist(o) if size == 4 && (0x304..0x380).contains(&o) => (((o - 0x300) / 4 * 32) as u32, lr::STATE_ACTIVE),
            Region::Dist(o) if size == 4 && (0x384..0x400).contains(&o) => (((o - 0x380) / 4 * 32) as u32, lr::STATE_ACTIVE),
            _ => return value,
        };
        LrSnapshot::default().busy().map(|(_, v)| v).filter(|v| v & state != 0).fold(value, |acc, v| {
            match ((v & LR_INTID) as u32).checked_sub(first_intid) {
                Some(bit) if bit < 32 => acc | 1 << bit,
                _ => acc,
            }
        })
    }

    fn vcpus(&self) -> usize {
        self.vcpus
    }

    /// Whether an access at `offset` reaches interrupts' group, enable, pending or active
    /// bits (distributor or SGI frame), where the lines of the vCPU's own devices must be
    /// current; ID, control, priority and routing registers need nothing synced.
    pub fn reaches_interrupt_state(&self, offset: u64) -> bool {
        let o = match region(offset, self.vcpus) {
            Region::Dist(o) => o,
            Region::Redist(_, o) => match o.checked_sub(hv_core::vgic::SGI_FRAME) {
                Some(o) => o,
                None => return false,
            },
            Region::None => return false,
        };
        (0x080..0x400).contains(&o)
    }

    /// An ICC_SGI1R_EL1 (or ASGI1R/SGI0R) write by vCPU `sender`: the vCPUs it made an SGI
    /// pending on, to be told.
    pub fn send_sgi(&self, sender: usize, value: u64) -> u64 {
        let (intid, targets) = sgi_targets(value, sender, self.vcpus());
        let mut st = self.state.lock();
        let mut left = targets;
        while left != 0 {
            let i = left.trailing_zeros() as usize;
            left &= left - 1;
            if let Some(r) = st.redist.get_mut(i) {
                r.set_pending(intid % 32, true);
            }
        }
        targets
    }

    /// After the guest changed distributor or redistributor state: the vCPUs that now have
    /// something to take, to be told.
    pub fn after_write(&self) -> u64 {
        let st = self.state.lock();
        let n = st.redist.len().min(64);
        (0..n).filter(|&i| has_deliverable(&st.dist, &st.redist[i], i, &[])).fold(0, |set, i| set | 1 << i)
    }

    /// Whether an interrupt waits for vCPU `index`, deliverable or already in a list register
    /// (which the caller's CPU holds: `index` must be loaded here).
    pub fn has_pending(&self, index: usize, lrs: &mut LrSnapshot) -> bool {
        let in_lrs = lrs.any_pending();
        if in_lrs {
            return true;
        }
        let st = self.state.lock();
        st.redist.get(index).is_some_and(|r| has_deliverable(&st.dist, r, index, &[]))
    }

    /// Sets the level of the emulated device line SPI `intid`: while high, the interrupt is
    /// pending. Returns the vCPU it is routed to when the line is high (to be told).
    pub fn set_level(&self, intid: u32, level: bool) -> Option<usize> {
        let mut st = self.state.lock();
        let i = (intid as usize).checked_sub(32).filter(|&i| i < st.dist.spis.len())?;
        st.dist.set_spi_pending(i, level);
        let target = hv_core::guest_dt::vcpu_index(st.dist.route[i], st.redist.len()).unwrap_or(0);
        level.then_some(target)
    }

    /// Guest PPI `intid` (virtual timer, PMU) fired while vCPU `index` was loaded here.
    pub fn hw_ppi_fired(&self, index: usize, intid: u32) {
        self.set_private_pending(index, intid);
    }
}

/// This CPU's busy list registers, read at the first question and kept for the next ones:
/// the paths that sync a loaded vCPU's lines ask about two or three interrupts in a row,
/// and under QEMU every ICH_* access ends a translation block and takes its global lock.
/// Only writes through `set` keep it true; the guest cannot change a list register while
/// the hypervisor runs.
#[derive(Default)]
pub struct LrSnapshot {
    read: bool,
    held: u32,
    /// The first KEPT_LRS list registers' values (bit n of `held` set): a small array is
    /// zeroed inline, 16 entries would take a `memset` call on every exit path.
    values: [u64; KEPT_LRS],
}

/// List registers whose values a snapshot keeps (QEMU's GICv3 has four); the others are
/// read again when asked about.
const KEPT_LRS: usize = 4;

impl LrSnapshot {
    /// Reads ICH_ELRSR_EL2 and the busy list registers kept here, the first time.
    fn fill(&mut self) {
        if !self.read {
            self.read = true;
            let all = (1u32 << ich::list_registers().min(MAX_LRS)) - 1;
            self.held = all & !ich::empty_lrs();
            let mut kept = self.held & ((1 << KEPT_LRS) - 1);
            while kept != 0 {
                let n = kept.trailing_zeros() as usize;
                kept &= kept - 1;
                self.values[n] = ich::lr(n);
            }
        }
    }

    /// List register `n`'s value (read now if it is not kept here).
    fn value(&self, n: usize) -> u64 {
        self.values.get(n).copied().unwrap_or_else(|| ich::lr(n))
    }

    /// The busy list registers, number and value.
    fn busy(&mut self) -> impl Iterator<Item = (usize, u64)> + '_ {
        self.fill();
        let mut left = self.held;
        core::iter::from_fn(move || {
            if left == 0 {
                return None;
            }
            let n = left.trailing_zeros() as usize;
            left &= left - 1;
            Some((n, self.value(n)))
        })
    }

    fn holding(&mut self, intid: u32) -> Option<(usize, u64)> {
        self.busy().find(|&(_, v)| holds(v, intid))
    }

    fn any_pending(&mut self) -> bool {
        self.busy().any(|(_, v)| v & lr::STATE_PENDING != 0)
    }

    /// Writes list register `n` (a value that holds nothing frees it: `holds` looks at the
    /// state).
    fn set(&mut self, n: usize, v: u64) {
        ich::set_lr(n, v);
        if let Some(kept) = self.values.get_mut(n) {
            *kept = v;
        }
        self.held |= 1 << n;
    }
}


/// Whether list register value `v` holds virtual INTID `intid`.
fn holds(v: u64, intid: u32) -> bool {
    !lr::is_free(v) && v & LR_INTID == intid as u64
}

/// Whether the loaded vCPU's group-1 CPU-interface accesses trap (`flush` asked for it).
pub fn trapping_group1() -> bool {
    ich::hcr() & ICH_HCR_TALL1 != 0
}

/// Lets the loaded vCPU's group-1 CPU-interface accesses through again.
pub fn stop_trapping_group1() {
    ich::set_hcr(ich::hcr() & !ICH_HCR_TALL1);
}

/// Saves the loaded vCPU's virtual CPU interface and hands the guest PPIs back.
pub fn save(c: &mut CpuInterface) {
    ich::save(&mut c.regs);
    for n in 0..ich::list_registers().min(MAX_LRS) {
        c.lrs[n] = ich::lr(n);
        ich::set_lr(n, 0);
    }
    ich::set_hcr(0);
    c.hw_active = gicv3::guest_ppis_active();
    gicv3::set_guest_ppis_active(c.hw_active, false);
}

/// Loads a vCPU's virtual CPU interface.
pub fn restore(c: &CpuInterface) {
    for n in 0..ich::list_registers().min(MAX_LRS) {
        ich::set_lr(n, c.lrs[n]);
    }
    ich::restore(&c.regs);
    gicv3::set_guest_ppis_active(c.hw_active, true);
}

impl Vgic {
    fn read_at(&self, at: Region, size: u8) -> u64 {
        let st = self.state.lock();
        match at {
            Region::Dist(o) => st.dist.read(o, size),
            Region::Redist(i, o) => st.redist.get(i).map_or(0, |r| r.read(o, size, i, i + 1 == self.vcpus)),
            Region::None => 0,
        }
    }
}

impl MmioDevice for Vgic {
    /// `offset` is from the distributor's base; redistributors follow at their own base.
    fn read(&self, offset: u64, size: u8) -> u64 {
        self.read_at(region(offset, self.vcpus), size)
    }

    fn write(&self, offset: u64, size: u8, value: u64) {
        let mut st = self.state.lock();
        let n = st.redist.len();
        match region(offset, n) {
            Region::Dist(o) => st.dist.write(o, size, value),
            Region::Redist(i, o) => st.redist[i].write(o, size, value),
            Region::None => {}
        }
    }
}

#[derive(Clone, Copy)]
enum Region {
    Dist(u64),
    Redist(usize, u64),
    None,
}

fn region(offset: u64, vcpus: usize) -> Region {
    let ipa = layout::GICD_BASE + offset;
    if ipa < layout::GICD_BASE + layout::GICD_SIZE {
        return Region::Dist(offset);
    }
    match ipa.checked_sub(layout::GICR_BASE) {
        Some(o) if ((o / layout::GICR_STRIDE) as usize) < vcpus => Region::Redist((o / layout::GICR_STRIDE) as usize, o % layout::GICR_STRIDE),
        _ => Region::None,
    }
}

/// Whether `ipa` is in the vGIC's MMIO (distributor or one of `vcpus` redistributors).
pub fn contains(ipa: u64, vcpus: usize) -> bool {
    ipa.checked_sub(layout::GICD_BASE).is_some_and(|offset| !matches!(region(offset, vcpus), Region::None))
}
