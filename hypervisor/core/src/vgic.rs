//! The register model of a virtual GICv3 distributor and redistributors (affinity routing
//! only, a single security state, no LPIs): what a guest reads and writes through trapped
//! MMIO, and the interrupt state behind it. Delivery into the CPU's list registers is the
//! hypervisor's part; this model says which interrupts are deliverable.

use crate::guest_dt::vcpu_mpidr;

/// SPIs per VM (INTIDs 32..32+NR_SPIS).
pub const NR_SPIS: usize = 64;
pub const NR_INTIDS: u32 = 32 + NR_SPIS as u32;
/// Offset of a redistributor's SGI/PPI frame from its RD frame.
pub const SGI_FRAME: u64 = 0x1_0000;
/// GICv3 in the architecture-revision field of PIDR2.
const PIDR2_GICV3: u64 = 0x3b;
/// Implementer code of Arm in IIDR.
const IIDR_VALUE: u64 = 0x0300_043b;

/// Distributor registers.
mod gicd {
    pub const CTLR: u64 = 0x0000;
    pub const TYPER: u64 = 0x0004;
    pub const IIDR: u64 = 0x0008;
    pub const IGROUPR: u64 = 0x0080;
    pub const ISENABLER: u64 = 0x0100;
    pub const ICENABLER: u64 = 0x0180;
    pub const ISPENDR: u64 = 0x0200;
    pub const ICPENDR: u64 = 0x0280;
    pub const ISACTIVER: u64 = 0x0300;
    pub const ICACTIVER: u64 = 0x0380;
    pub const IPRIORITYR: u64 = 0x0400;
    pub const ICFGR: u64 = 0x0c00;
    pub const IROUTER: u64 = 0x6000;
    pub const PIDR2: u64 = 0xffe8;
    /// CTLR bits (single security state).
    pub const CTLR_ENABLE_GRP0: u32 = 1 << 0;
    pub const CTLR_ENABLE_GRP1: u32 = 1 << 1;
    pub const CTLR_ARE: u32 = 1 << 4;
    pub const CTLR_DS: u32 = 1 << 6;
}

/// Redistributor registers (RD frame, then SGI frame offsets from SGI_FRAME).
mod gicr {
    pub const CTLR: u64 = 0x0000;
    pub const IIDR: u64 = 0x0004;
    pub const TYPER: u64 = 0x0008;
    pub const WAKER: u64 = 0x0014;
    pub const PIDR2: u64 = 0xffe8;
    pub const WAKER_PROCESSOR_SLEEP: u32 = 1 << 1;
    pub const WAKER_CHILDREN_ASLEEP: u32 = 1 << 2;
}

/// The state of one interrupt.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Irq {
    pub enabled: bool,
    pub pending: bool,
    pub active: bool,
    pub group1: bool,
    pub edge: bool,
    pub priority: u8,
}

/// One vCPU's redistributor: its SGIs and PPIs.
#[derive(Clone, Debug)]
pub struct Redistributor {
    pub private: [Irq; 32],
    waker: u32,
    /// A superset of the private interrupts that are pending (bit per INTID): set wherever
    /// an interrupt is made pending, cleared when delivery finds it is not. Delivery scans
    /// only these (it runs at every flush of a vCPU's list registers). Code that sets
    /// `pending` directly must set the bit too (or all bits).
    pub maybe_pending: u32,
}

impl Default for Redistributor {
    fn default() -> Self {
        let mut private = [Irq::default(); 32];
        // SGIs are always edge-triggered.
        for irq in private.iter_mut().take(16) {
            irq.edge = true;
        }
        Redistributor { private, waker: gicr::WAKER_PROCESSOR_SLEEP | gicr::WAKER_CHILDREN_ASLEEP, maybe_pending: 0 }
    }
}

impl Redistributor {
    /// Makes private interrupt `intid` (0..32) pending or not.
    pub fn set_pending(&mut self, intid: u32, pending: bool) {
        if let Some(q) = self.private.get_mut(intid as usize) {
            q.pending = pending;
            if pending {
                self.maybe_pending |= 1 << intid;
            }
        }
    }
}

/// The distributor: SPIs and global control.
#[derive(Clone, Debug)]
pub struct Distributor {
    pub ctlr: u32,
    pub spis: [Irq; NR_SPIS],
    /// IROUTER: the affinity each SPI goes to.
    pub route: [u64; NR_SPIS],
    /// As [`Redistributor::maybe_pending`], for the SPIs (bit i: INTID 32 + i).
    pub maybe_pending: u64,
}

const _: () = assert!(NR_SPIS <= 64, "Distributor::maybe_pending holds a bit per SPI");

impl Default for Distributor {
    fn default() -> Self {
        Distributor { ctlr: gicd::CTLR_DS | gicd::CTLR_ARE, spis: [Irq::default(); NR_SPIS], route: [0; NR_SPIS], maybe_pending: 0 }
    }
}

/// Which bit-per-interrupt array a register offset names.
#[derive(Clone, Copy)]
enum BitArray {
    Group,
    SetEnable,
    ClearEnable,
    SetPending,
    ClearPending,
    SetActive,
    ClearActive,
}

fn bit_array(offset: u64) -> Option<(BitArray, u64)> {
    use gicd::*;
    let (kind, base) = match offset {
        o if (IGROUPR..IGROUPR + 0x80).contains(&o) => (BitArray::Group, IGROUPR),
        o if (ISENABLER..ISENABLER + 0x80).contains(&o) => (BitArray::SetEnable, ISENABLER),
        o if (ICENABLER..ICENABLER + 0x80).contains(&o) => (BitArray::ClearEnable, ICENABLER),
        o if (ISPENDR..ISPENDR + 0x80).contains(&o) => (BitArray::SetPending, ISPENDR),
        o if (ICPENDR..ICPENDR + 0x80).contains(&o) => (BitArray::ClearPending, ICPENDR),
        o if (ISACTIVER..ISACTIVER + 0x80).contains(&o) => (BitArray::SetActive, ISACTIVER),
        o if (ICACTIVER..ICACTIVER + 0x80).contains(&o) => (BitArray::ClearActive, ICACTIVER),
        _ => return None,
    };
    Some((kind, (offset - base) / 4))
}

fn read_bits(irqs: &[Irq], kind: BitArray) -> u64 {
    irqs.iter().enumerate().fold(0u64, |acc, (i, irq)| {
        let bit = match kind {
            BitArray::Group => irq.group1,
            BitArray::SetEnable | BitArray::ClearEnable => irq.enabled,
            BitArray::SetPending | BitArray::ClearPending => irq.pending,
            BitArray::SetActive | BitArray::ClearActive => irq.active,
        };
        acc | (bit as u64) << i
    })
}

fn write_bits(irqs: &mut [Irq], kind: BitArray, value: u64) {
    for (i, irq) in irqs.iter_mut().enumerate() {
        let set = value & (1 << i) != 0;
        match kind {
            BitArray::Group => irq.group1 = set,
            BitArray::SetEnable if set => irq.enabled = true,
            BitArray::ClearEnable if set => irq.enabled = false,
            BitArray::SetPending if set => irq.pending = true,
            BitArray::ClearPending if set => irq.pending = false,
            BitArray::SetActive if set => irq.active = true,
            BitArray::ClearActive if set => irq.active = false,
            _ => {}
        }
    }
}

/// IPRIORITYR: one byte per interrupt, accessed as bytes or words.
fn read_priority(irqs: &[Irq], first: usize, size: u8) -> u64 {
    (0..size as usize).fold(0, |acc, i| acc | (irqs.get(first + i).map_or(0, |q| q.priority) as u64) << (8 * i))
}

fn write_priority(irqs: &mut [Irq], first: usize, size: u8, value: u64) {
    for i in 0..size as usize {
        if let Some(q) = irqs.get_mut(first + i) {
            q.priority = (value >> (8 * i)) as u8;
        }
    }
}

/// ICFGR: two bits per interrupt, the upper one meaning edge-triggered.
fn read_config(irqs: &[Irq]) -> u64 {
    irqs.iter().enumerate().fold(0, |acc, (i, q)| acc | (q.edge as u64) << (2 * i + 1))
}

fn write_config(irqs: &mut [Irq], value: u64) {
    for (i, q) in irqs.iter_mut().enumerate() {
        q.edge = value & (1 << (2 * i + 1)) != 0;
    }
}

impl Distributor {
    /// The SPI state for INTID `intid`, if it is one.
    pub fn spi(&mut self, intid: u32) -> Option<&mut Irq> {
        self.spis.get_mut((intid as usize).checked_sub(32)?)
    }

    /// Makes SPI number `i` (INTID 32 + i) pending or not.
    pub fn set_spi_pending(&mut self, i: usize, pending: bool) {
        if let Some(q) = self.spis.get_mut(i) {
            q.pending = pending;
            if pending {
                self.maybe_pending |= 1 << i;
            }
        }
    }

    pub fn group1_enabled(&self) -> bool {
        self.ctlr & gicd::CTLR_ENABLE_GRP1 != 0
    }

    pub fn read(&self, offset: u64, size: u8) -> u64 {
        use gicd::*;
        match offset {
            CTLR => self.ctlr as u64,
            TYPER => {
                // ITLinesNumber, IDbits = 10 bits of INTID, no LPIs, no 1-of-N routing.
                let it_lines = (NR_INTIDS as u64 / 32) - 1;
                it_lines | 9 << 19 | 1 << 25
            }
            IIDR => IIDR_VALUE,
            PIDR2 => PIDR2_GICV3,
            o if bit_array(o).is_some() => {
                let (kind, reg) = bit_array(o).unwrap_or((BitArray::Group, 0));
                // Register 0 (SGIs, PPIs) lives in the redistributors with affinity routing.
                match (reg as usize).checked_sub(1) {
                    Some(r) => self.spis.get(r * 32..(r + 1) * 32).map_or(0, |irqs| read_bits(irqs, kind)),
                    None => 0,
                }
            }
            o if (IPRIORITYR..IPRIORITYR + 0x400).contains(&o) => match ((o - IPRIORITYR) as usize).checked_sub(32) {
                Some(first) => read_priority(&self.spis, first, size),
                None => 0,
            },
            o if (ICFGR..ICFGR + 0x100).contains(&o) => match (((o - ICFGR) / 4) as usize).checked_sub(2) {
                Some(r) => self.spis.get(r * 16..(r + 1) * 16).map_or(0, read_config),
                None => 0,
            },
            o if (IROUTER + 32 * 8..IROUTER + NR_INTIDS as u64 * 8).contains(&o) => {
                let v = self.route[((o - IROUTER) / 8 - 32) as usize];
                if o % 8 == 4 { v >> 32 } else { v }
            }
            _ => 0,
        }
    }

    pub fn write(&mut self, offset: u64, size: u8, value: u64) {
        use gicd::*;
        match offset {
            CTLR => self.ctlr = (value as u32 & (CTLR_ENABLE_GRP0 | CTLR_ENABLE_GRP1)) | CTLR_ARE | CTLR_DS,
            o if bit_array(o).is_some() => {
                let (kind, reg) = bit_array(o).unwrap_or((BitArray::Group, 0));
                if let Some(r) = (reg as usize).checked_sub(1) {
                    if let Some(irqs) = self.spis.get_mut(r * 32..(r + 1) * 32) {
                        write_bits(irqs, kind, value);
                        if let BitArray::SetPending = kind {
                            self.maybe_pending |= (value & 0xffff_ffff) << (r * 32);
                        }
                    }
                }
            }
            o if (IPRIORITYR..IPRIORITYR + 0x400).contains(&o) => {
                if let Some(first) = ((o - IPRIORITYR) as usize).checked_sub(32) {
                    write_priority(&mut self.spis, first, size, value);
                }
            }
            o if (ICFGR..ICFGR + 0x100).contains(&o) => {
                if let Some(r) = (((o - ICFGR) / 4) as usize).checked_sub(2) {
                    if let Some(irqs) = self.spis.get_mut(r * 16..(r + 1) * 16) {
                        write_config(irqs, value);
                    }
                }
            }
            o if (IROUTER + 32 * 8..IROUTER + NR_INTIDS as u64 * 8).contains(&o) => {
                let slot = &mut self.route[((o - IROUTER) / 8 - 32) as usize];
                // Aff3 in [39:32], Aff2..Aff0 in [23:0]; IRM (1-of-N) is not supported.
                *slot = match (o % 8, size) {
                    (0, 8) => value & 0xff_00ff_ffff,
                    (0, _) => (*slot & !0xff_ffff) | (value & 0xff_ffff),
                    _ => (*slot & 0xff_ffff) | (value & 0xff) << 32,
                };
            }
            _ => {} // read-only or unimplemented: ignored
        }
    }
}

impl Redistributor {
    /// A read at `offset` from the start of this redistributor (RD frame, then SGI frame)
    /// of vCPU `index`, `last` if it is the VM's last vCPU.
    pub fn read(&self, offset: u64, size: u8, index: usize, last: bool) -> u64 {
        if offset >= SGI_FRAME {
            return self.read_sgi_frame(offset - SGI_FRAME, size);
        }
        match offset {
            gicr::CTLR => 0,
            gicr::IIDR => IIDR_VALUE,
            gicr::TYPER | 0xc => {
                let mpidr = vcpu_mpidr(index);
                let affinity = (mpidr & 0xff_ffff) | ((mpidr >> 32) & 0xff) << 24;
                let v = affinity << 32 | (index as u64) << 8 | (last as u64) << 4;
                if offset == 0xc { v >> 32 } else if size == 4 { v & 0xffff_ffff } else { v }
            }
            gicr::WAKER => self.waker as u64,
            gicr::PIDR2 => PIDR2_GICV3,
            _ => 0,
        }
    }

    pub fn write(&mut self, offset: u64, size: u8, value: u64) {
        if offset >= SGI_FRAME {
            return self.write_sgi_frame(offset - SGI_FRAME, size, value);
        }
        if offset == gicr::WAKER {
            // The redistributor wakes (or sleeps) at once.
            let sleep = value as u32 & gicr::WAKER_PROCESSOR_SLEEP;
            self.waker = sleep | if sleep != 0 { gicr::WAKER_CHILDREN_ASLEEP } else { 0 };
        }
    }

    fn read_sgi_frame(&self, offset: u64, size: u8) -> u64 {
        use gicd::*;
        match offset {
            o if bit_array(o).is_some_and(|(_, reg)| reg == 0) => {
                let (kind, _) = bit_array(o).unwrap_or((BitArray::Group, 0));
                read_bits(&self.private, kind)
            }
            o if (IPRIORITYR..IPRIORITYR + 32).contains(&o) => read_priority(&self.private, (o - IPRIORITYR) as usize, size),
            o if o == ICFGR || o == ICFGR + 4 => {
                let half = ((o - ICFGR) / 4) as usize;
                read_config(&self.private[half * 16..half * 16 + 16])
            }
            _ => 0,
        }
    }

    fn write_sgi_frame(&mut self, offset: u64, size: u8, value: u64) {
        use gicd::*;
        match offset {
            o if bit_array(o).is_some_and(|(_, reg)| reg == 0) => {
                let (kind, _) = bit_array(o).unwrap_or((BitArray::Group, 0));
                write_bits(&mut self.private, kind, value);
                if let BitArray::SetPending = kind {
                    self.maybe_pending |= value as u32;
                }
            }
            o if (IPRIORITYR..IPRIORITYR + 32).contains(&o) => write_priority(&mut self.private, (o - IPRIORITYR) as usize, size, value),
            // SGIs are edge-triggered whatever is written; PPIs' configuration is kept.
            o if o == ICFGR + 4 => write_config(&mut self.private[16..32], value),
            _ => {}
        }
    }
}

/// An interrupt ready to be put in a list register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deliverable {
    pub intid: u32,
    pub priority: u8,
    pub group1: bool,
    /// Edge-triggered (else level: the source is checked again when the guest completes it).
    pub edge: bool,
}

/// ICH_LR<n>_EL2, the list registers through which the hardware's virtual CPU interface
/// presents interrupts to the guest.
pub mod lr {
    pub const STATE_PENDING: u64 = 1 << 62;
    pub const STATE_ACTIVE: u64 = 1 << 63;
    pub const STATE_MASK: u64 = 3 << 62;
    /// Linked to a physical interrupt (pINTID in bits 41:32): the guest's deactivation
    /// deactivates it.
    pub const HW: u64 = 1 << 61;
    pub const GROUP1: u64 = 1 << 60;
    /// Without HW: a maintenance interrupt when the guest completes it.
    pub const EOI: u64 = 1 << 41;
    const PINTID_SHIFT: u32 = 32;

    /// Whether the guest is done with what this list register held (neither pending nor
    /// active): it can take another interrupt.
    pub fn is_free(lr: u64) -> bool {
        lr & STATE_MASK == 0
    }

    /// The list register presenting `d`. `hw_linked`: the physical INTID it stands for, if
    /// the guest's completion must reach a physical interrupt (the virtual timer's PPI).
    /// An emulated level-triggered line asks for a maintenance interrupt at completion,
    /// so that its level is looked at again.
    pub fn encode(d: &super::Deliverable, hw_linked: Option<u32>) -> u64 {
        let mut v = STATE_PENDING | (d.priority as u64) << 48 | d.intid as u64;
        if d.group1 {
            v |= GROUP1;
        }
        match hw_linked {
            Some(pintid) => v |= HW | (pintid as u64 & 0x3ff) << PINTID_SHIFT,
            None if !d.edge => v |= EOI,
            None => {}
        }
        v
    }

    /// The interrupt in list register `lr` was raised again: the register's new value, if
    /// it must change. Pending already: nothing to add. Active: pending on top of active
    /// (taken again once the guest completes it). A hardware-linked one cannot be made
    /// pending and active in software: its physical source raises it again.
    pub fn raise_again(lr: u64) -> Option<u64> {
        (lr & STATE_PENDING == 0 && lr & HW == 0).then_some(lr | STATE_PENDING)
    }
}

/// Whether `q` may be delivered now: pending, enabled, not active, its group enabled.
fn deliverable(dist: &Distributor, q: &Irq) -> bool {
    let group_on = if q.group1 { gicd::CTLR_ENABLE_GRP1 } else { gicd::CTLR_ENABLE_GRP0 };
    q.pending && q.enabled && !q.active && dist.ctlr & group_on != 0
}

/// Calls `f` with each pending interrupt of vCPU `index` (its own, then the SPIs routed to
/// it), in INTID order, until it returns true; returns whether one did. This runs at every
/// flush of a vCPU's list registers: it visits only the interrupts the hints name, nearly
/// always one or none of the 96.
fn find_pending(dist: &Distributor, redist: &Redistributor, index: usize, mut f: impl FnMut(u32, &Irq) -> bool) -> bool {
    let mut bits = redist.maybe_pending;
    while bits != 0 {
        let i = bits.trailing_zeros();
        bits &= bits - 1;
        let q = &redist.private[i as usize];
        if q.pending && f(i, q) {
            return true;
        }
    }
    let mine = vcpu_mpidr(index);
    let mut bits = dist.maybe_pending;
    while bits != 0 {
        let i = bits.trailing_zeros() as usize;
        bits &= bits - 1;
        let q = &dist.spis[i];
        if q.pending && dist.route[i] == mine && f(i as u32 + 32, q) {
            return true;
        }
    }
    false
}

/// Clears the hint bits of interrupts that are not pending (after a delivery).
fn tidy_hints(dist: &mut Distributor, redist: &mut Redistributor) {
    let mut bits = redist.maybe_pending;
    while bits != 0 {
        let i = bits.trailing_zeros();
        bits &= bits - 1;
        if !redist.private[i as usize].pending {
            redist.maybe_pending &= !(1 << i);
        }
    }
    let mut bits = dist.maybe_pending;
    while bits != 0 {
        let i = bits.trailing_zeros();
        bits &= bits - 1;
        if !dist.spis[i as usize].pending {
            dist.maybe_pending &= !(1 << i);
        }
    }
}

/// Most interrupts `take_deliverable` hands out in one call (list registers: at most 16).
pub const MAX_TAKEN: usize = 16;

/// The pending, enabled interrupts of vCPU `index` (its own, and SPIs routed to it), most
/// urgent first (lowest priority value, then lowest INTID), at most `out.len()` (and
/// MAX_TAKEN), leaving out those in `skip` (already in a list register: they stay pending
/// here until it frees); the ones taken are marked no longer pending (they go to list
/// registers). Returns how many.
pub fn take_deliverable(dist: &mut Distributor, redist: &mut Redistributor, index: usize, skip: &[u32], out: &mut [Deliverable]) -> usize {
    let want = out.len().min(MAX_TAKEN);
    if want == 0 {
        return 0;
    }
    // The `want` most urgent, kept sorted by (priority, INTID) as they are found.
    let mut best = [(0u8, 0u32); MAX_TAKEN];
    let mut n = 0;
    find_pending(dist, redist, index, |intid, q| {
        if !deliverable(dist, q) || skip.contains(&intid) {
            return false;
        }
        let key = (q.priority, intid);
        if n == want && key >= best[n - 1] {
            return false;
        }
        let mut i = if n < want {
            n += 1;
            n - 1
        } else {
            want - 1
        };
        while i > 0 && best[i - 1] > key {
            best[i] = best[i - 1];
            i -= 1;
        }
        best[i] = key;
        false
    });
    for (slot, &(priority, intid)) in out.iter_mut().zip(best[..n].iter()) {
        let q = if intid < 32 { &mut redist.private[intid as usize] } else { &mut dist.spis[intid as usize - 32] };
        q.pending = false;
        *slot = Deliverable { intid, priority, group1: q.group1, edge: q.edge };
    }
    tidy_hints(dist, redist);
    n
}

/// Whether anything not in `skip` is deliverable to vCPU `index` (without taking it).
pub fn has_deliverable(dist: &Distributor, redist: &Redistributor, index: usize, skip: &[u32]) -> bool {
    find_pending(dist, redist, index, |intid, q| deliverable(dist, q) && !skip.contains(&intid))
}

/// Interrupt `intid` was just raised for vCPU `index` (a private one: its physical source
/// fired; an SPI routed to it: its device's line rose) while the vCPU's list registers held
/// everything deliverable: the list-register entry it needs when it alone is to be
/// delivered, so that it can go straight into a free list register without a whole
/// delivery. None (nothing changed) when that is not all there is to do: it is disabled,
/// active, its group off, pending already, an SPI routed elsewhere, or another interrupt
/// waits for the vCPU in the model (a whole delivery orders them).
pub fn lone_raise(dist: &Distributor, redist: &Redistributor, index: usize, intid: u32) -> Option<Deliverable> {
    let q = if intid < 32 {
        redist.private.get(intid as usize)?
    } else {
        let i = intid as usize - 32;
        dist.spis.get(i).filter(|_| dist.route[i] == vcpu_mpidr(index))?
    };
    if q.pending || !deliverable(dist, &Irq { pending: true, ..*q }) || has_deliverable(dist, redist, index, &[]) {
        return None;
    }
    Some(Deliverable { intid, priority: q.priority, group1: q.group1, edge: q.edge })
}

/// Interrupt `intid` as vCPU `index`'s redistributor or the distributor holds it.
pub fn irq_mut<'a>(dist: &'a mut Distributor, redist: &'a mut Redistributor, intid: u32) -> Option<&'a mut Irq> {
    if intid < 32 {
        redist.private.get_mut(intid as usize)
    } else {
        dist.spi(intid)
    }
}

/// The vCPUs an ICC_SGI1R_EL1 write targets, as a bit set of vCPU indices, and its INTID.
pub fn sgi_targets(value: u64, sender: usize, vcpus: usize) -> (u32, u64) {
    let intid = ((value >> 24) & 0xf) as u32;
    let mut set = 0u64;
    if value & (1 << 40) != 0 {
        // IRM: every vCPU but the sender.
        let all = if vcpus >= 64 { u64::MAX } else { (1u64 << vcpus) - 1 };
        set = all & !(1u64.checked_shl(sender as u32).unwrap_or(0));
    } else {
        let aff1 = (value >> 16) & 0xff;
        let aff2 = (value >> 32) & 0xff;
        let aff3 = (value >> 48) & 0xff;
        let rs = (value >> 44) & 0xf;
        // Only the target list's set bits (an IPI names one or a few).
        let mut list = value & 0xffff;
        while list != 0 {
            let bit = list.trailing_zeros() as u64;
            list &= list - 1;
            let mpidr = aff3 << 32 | aff2 << 16 | aff1 << 8 | (rs * 16 + bit);
            if let Some(i) = crate::guest_dt::vcpu_index(mpidr, vcpus) {
                set |= 1 << i;
            }
        }
    }
    (intid, set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distributor_identifies_itself_and_keeps_affinity_routing_on() {
        let mut d = Distributor::default();
        assert_eq!(d.read(gicd::PIDR2, 4) >> 4 & 0xf, 3);
        assert_eq!(d.read(gicd::TYPER, 4) & 0x1f, 2, "96 INTIDs");
        d.write(gicd::CTLR, 4, 0x13);
        assert_eq!(d.read(gicd::CTLR, 4) as u32, gicd::CTLR_ARE | gicd::CTLR_DS | 3);
        d.write(gicd::CTLR, 4, 0);
        assert_eq!(d.read(gicd::CTLR, 4) as u32 & gicd::CTLR_ARE, gicd::CTLR_ARE, "ARE cannot be cleared");
    }

    #[test]
    fn spi_enable_priority_config_and_routing() {
        let mut d = Distributor::default();
        d.write(gicd::ISENABLER + 4, 4, 1 << 1); // INTID 33
        assert!(d.spis[1].enabled);
        assert_eq!(d.read(gicd::ISENABLER + 4, 4), 2);
        d.write(gicd::ICENABLER + 4, 4, 1 << 1);
        assert!(!d.spis[1].enabled);
        d.write(gicd::ISENABLER, 4, u64::MAX);
        assert_eq!(d.read(gicd::ISENABLER, 4), 0, "SGIs and PPIs are not the distributor's");
        d.write(gicd::IPRIORITYR + 32, 4, 0x4030_2010);
        assert_eq!(d.spis[..4].iter().map(|q| q.priority).collect::<std::vec::Vec<_>>(), [0x10, 0x20, 0x30, 0x40]);
        d.write(gicd::IPRIORITYR + 33, 1, 0x99);
        assert_eq!(d.read(gicd::IPRIORITYR + 32, 4), 0x4030_9910);
        d.write(gicd::ICFGR + 8, 4, 0b10 << 2);
        assert!(d.spis[1].edge && !d.spis[0].edge);
        d.write(gicd::IROUTER + 33 * 8, 8, 0x1_0000_0203);
        assert_eq!(d.route[1], 0x1_0000_0203);
        assert_eq!(d.read(gicd::IROUTER + 33 * 8 + 4, 4), 1);
        // Out of range and read-only offsets are harmless.
        d.write(0xfff0, 4, u64::MAX);
        d.write(gicd::IROUTER + 200 * 8, 8, 1);
        assert_eq!(d.read(0x1234, 4), 0);
    }

    #[test]
    fn redistributor_identity_wake_and_private_interrupts() {
        let mut r = Redistributor::default();
        let typer = r.read(gicr::TYPER, 8, 2, true);
        assert_eq!(typer >> 32, 2, "affinity of vCPU 2");
        assert_eq!(typer >> 8 & 0xffff, 2);
        assert_eq!(typer & 1 << 4, 1 << 4, "Last");
        assert_eq!(r.read(gicr::TYPER, 8, 0, false) & 1 << 4, 0);
        r.write(gicr::WAKER, 4, 0);
        assert_eq!(r.read(gicr::WAKER, 4, 0, false), 0, "awake, children awake");
        r.write(SGI_FRAME + gicd::ISENABLER, 4, 1 << 27 | 1);
        assert!(r.private[27].enabled && r.private[0].enabled);
        r.write(SGI_FRAME + gicd::IPRIORITYR + 24, 4, 0xa0 << 24);
        assert_eq!(r.private[27].priority, 0xa0);
        r.write(SGI_FRAME + gicd::ICFGR, 4, 0);
        assert!(r.private[3].edge, "SGIs stay edge-triggered");
        assert_eq!(r.read(0x20000, 4, 0, false), 0);
    }

    /// Random interrupts for vCPU 0 of two: its redistributor's, and `d`'s SPIs routed to
    /// either vCPU; each pending one time in `pending_one_in` (never for 0).
    fn random_state(rng: &mut crate::rng::Rng, d: &mut Distributor, pending_one_in: u64) -> Redistributor {
        let random_irq = |rng: &mut crate::rng::Rng| Irq {
            enabled: rng.below(4) != 0,
            pending: pending_one_in != 0 && rng.below(pending_one_in) == 0,
            active: rng.below(8) == 0,
            group1: rng.below(5) != 0,
            edge: rng.below(2) == 0,
            priority: (rng.below(4) * 0x40) as u8,
        };
        let mut r = Redistributor::default();
        for q in r.private.iter_mut() {
            *q = random_irq(rng);
        }
        for (i, q) in d.spis.iter_mut().enumerate() {
            *q = random_irq(rng);
            d.route[i] = vcpu_mpidr(rng.below(2) as usize);
        }
        r
    }

    /// The selection kept while scanning gives what sorting every deliverable interrupt
    /// and taking the first ones gives, for random states, skips and output sizes.
    #[test]
    fn take_deliverable_picks_the_most_urgent_like_a_full_sort() {
        let mut rng = crate::rng::Rng::new(0x5eed);
        for round in 0..3000 {
            let mut d = Distributor::default();
            d.ctlr |= gicd::CTLR_ENABLE_GRP1 | if round % 3 == 0 { gicd::CTLR_ENABLE_GRP0 } else { 0 };
            let mut r = random_state(&mut rng, &mut d, 3);
            // Hints: exactly the pending ones, plus some that are not.
            r.maybe_pending = (0..32).filter(|&i| r.private[i].pending).fold(0, |m, i| m | 1 << i) | rng.next() as u32;
            d.maybe_pending = (0..NR_SPIS).filter(|&i| d.spis[i].pending).fold(0, |m, i| m | 1 << i) | rng.next() & rng.next();
            let skip: std::vec::Vec<u32> = (0..rng.below(4)).map(|_| rng.below(NR_INTIDS as u64) as u32).collect();
            let mut want: std::vec::Vec<(u8, u32)> = (0..NR_INTIDS)
                .filter(|&i| {
                    let q = if i < 32 { &r.private[i as usize] } else { &d.spis[i as usize - 32] };
                    deliverable(&d, q) && !skip.contains(&i) && (i < 32 || d.route[i as usize - 32] == vcpu_mpidr(0))
                })
                .map(|i| (if i < 32 { r.private[i as usize].priority } else { d.spis[i as usize - 32].priority }, i))
                .collect();
            want.sort_unstable();
            assert_eq!(has_deliverable(&d, &r, 0, &skip), !want.is_empty());
            let mut out = [Deliverable { intid: 0, priority: 0, group1: false, edge: false }; MAX_TAKEN];
            let room = rng.below(MAX_TAKEN as u64 + 1) as usize;
            let n = take_deliverable(&mut d, &mut r, 0, &skip, &mut out[..room]);
            want.truncate(room);
            let got: std::vec::Vec<(u8, u32)> = out[..n].iter().map(|x| (x.priority, x.intid)).collect();
            assert_eq!(got, want, "round {round}");
            for &(_, i) in &want {
                let q = if i < 32 { &r.private[i as usize] } else { &d.spis[i as usize - 32] };
                assert!(!q.pending, "taken interrupts are no longer pending");
            }
            for i in 0..32 {
                assert!(!r.private[i].pending || r.maybe_pending & 1 << i != 0, "hint lost for a pending private interrupt");
            }
            for i in 0..NR_SPIS {
                assert!(!d.spis[i].pending || d.maybe_pending & 1 << i != 0, "hint lost for a pending SPI");
            }
        }
    }

    /// A lone raise hands out exactly what a whole delivery after making the interrupt
    /// pending would, and declines whenever that delivery would hand out something else
    /// too, or nothing.
    #[test]
    fn lone_raise_is_a_whole_delivery_of_one() {
        let mut rng = crate::rng::Rng::new(0x1a7e);
        let (mut lone, mut declined, mut lone_spis) = (0, 0, 0);
        for round in 0..5000 {
            let mut d = Distributor::default();
            d.ctlr |= if rng.below(8) != 0 { gicd::CTLR_ENABLE_GRP1 } else { 0 };
            // Mostly quiet states: the common case is nothing else pending.
            let busy = rng.below(3) == 0;
            let mut r = random_state(&mut rng, &mut d, if busy { 6 } else { 0 });
            r.maybe_pending = u32::MAX;
            d.maybe_pending = u64::MAX;
            // The timer and PMU PPIs, and SPIs (routed to vCPU 0 or 1 at random).
            let intid = [27, 23, 30, 32, 79, 95][rng.below(6) as usize];
            let before = (r.clone(), d.clone());
            let got = lone_raise(&d, &r, 0, intid);
            assert_eq!((r.private, d.spis), (before.0.private, before.1.spis), "round {round}: nothing changed");
            let mut out = [Deliverable { intid: 0, priority: 0, group1: false, edge: false }; MAX_TAKEN];
            let was_pending = irq_mut(&mut d, &mut r, intid).is_some_and(|q| q.pending);
            if intid < 32 {
                r.set_pending(intid, true);
            } else {
                d.set_spi_pending(intid as usize - 32, true);
            }
            let n = take_deliverable(&mut d, &mut r, 0, &[], &mut out);
            match got {
                Some(x) => {
                    lone += 1;
                    lone_spis += (intid >= 32) as u32;
                    assert!(!was_pending, "round {round}");
                    assert_eq!(&out[..n], &[x], "round {round}");
                }
                None => {
                    declined += 1;
                    assert!(was_pending || n != 1 || out[0].intid != intid, "round {round}: declined a lone delivery");
                }
            }
        }
        assert!(lone > 500 && declined > 500 && lone_spis > 100, "both outcomes exercised: {lone} ({lone_spis} SPIs) / {declined}");
    }

    /// Pending states made through registers and the setters are found by delivery (they
    /// set the hints the scan follows).
    #[test]
    fn pending_through_registers_and_setters_is_delivered() {
        let mut d = Distributor::default();
        let mut r = Redistributor::default();
        d.write(gicd::CTLR, 4, 2);
        r.write(SGI_FRAME + gicd::IGROUPR, 4, u32::MAX as u64);
        r.write(SGI_FRAME + gicd::ISENABLER, 4, 1 << 3 | 1 << 27);
        d.write(gicd::IGROUPR + 4, 4, u32::MAX as u64);
        d.write(gicd::ISENABLER + 4, 4, 1 << 2 | 1 << 9);
        d.route[2] = vcpu_mpidr(0);
        d.route[9] = vcpu_mpidr(0);
        let mut out = [Deliverable { intid: 0, priority: 0, group1: false, edge: false }; 8];
        assert_eq!(take_deliverable(&mut d, &mut r, 0, &[], &mut out), 0);
        r.write(SGI_FRAME + gicd::ISPENDR, 4, 1 << 3);
        d.write(gicd::ISPENDR + 4, 4, 1 << 2);
        r.set_pending(27, true);
        d.set_spi_pending(9, true);
        let n = take_deliverable(&mut d, &mut r, 0, &[], &mut out);
        assert_eq!(out[..n].iter().map(|x| x.intid).collect::<std::vec::Vec<_>>(), [3, 27, 34, 41]);
        assert_eq!((r.maybe_pending, d.maybe_pending), (0, 0), "hints tidied after delivery");
    }

    #[test]
    fn delivery_respects_enable_group_priority_and_routing() {
        let mut d = Distributor::default();
        let mut r = Redistributor::default();
        let mut out = [Deliverable { intid: 0, priority: 0, group1: false, edge: false }; 4];
        r.private[1] = Irq { enabled: true, pending: true, group1: true, priority: 0x80, ..Default::default() };
        r.private[27] = Irq { enabled: true, pending: true, group1: true, priority: 0x20, ..Default::default() };
        r.private[5] = Irq { enabled: false, pending: true, group1: true, ..Default::default() };
        d.spis[1] = Irq { enabled: true, pending: true, group1: true, priority: 0x80, ..Default::default() };
        (r.maybe_pending, d.maybe_pending) = (u32::MAX, u64::MAX);
        d.route[1] = vcpu_mpidr(1); // another vCPU's
        assert_eq!(take_deliverable(&mut d, &mut r, 0, &[], &mut out), 0, "distributor off");
        d.write(gicd::CTLR, 4, 2);
        assert!(has_deliverable(&d, &r, 0, &[]));
        assert!(!has_deliverable(&d, &r, 0, &[1, 27]));
        let n = take_deliverable(&mut d, &mut r, 0, &[1], &mut out);
        assert_eq!(&out[..n].iter().map(|x| x.intid).collect::<std::vec::Vec<_>>(), &[27], "1 is in a list register");
        assert!(r.private[1].pending, "and stays pending");
        let n = take_deliverable(&mut d, &mut r, 0, &[], &mut out);
        assert_eq!(&out[..n].iter().map(|x| x.intid).collect::<std::vec::Vec<_>>(), &[1]);
        assert!(!r.private[27].pending && !r.private[1].pending);
        assert!(d.spis[1].pending, "routed elsewhere");
        assert!(!has_deliverable(&d, &r, 0, &[]));
        let mut r1 = Redistributor::default();
        assert_eq!(take_deliverable(&mut d, &mut r1, 1, &[], &mut out), 1);
        assert_eq!(out[0].intid, 33);
    }

    #[test]
    fn sgi_target_lists() {
        // INTID 3 to Aff0 0 and 2.
        assert_eq!(sgi_targets(3 << 24 | 0b101, 0, 4), (3, 0b101));
        // Targets beyond the VM's vCPUs are dropped.
        assert_eq!(sgi_targets(0xffff, 0, 2), (0, 0b11));
        // IRM: all but the sender.
        assert_eq!(sgi_targets(1 << 40 | 5 << 24, 1, 3), (5, 0b101));
        // Aff1 = 1 means vCPUs 16.. .
        assert_eq!(sgi_targets(1 << 16 | 1, 0, 18), (0, 1 << 16));
    }

    #[test]
    fn list_register_encoding() {
        let level = Deliverable { intid: 33, priority: 0xa0, group1: true, edge: false };
        let v = lr::encode(&level, None);
        assert_eq!(v, lr::STATE_PENDING | lr::GROUP1 | lr::EOI | 0xa0 << 48 | 33);
        let edge = Deliverable { intid: 5, priority: 0, group1: false, edge: true };
        assert_eq!(lr::encode(&edge, None), lr::STATE_PENDING | 5, "no maintenance for an SGI");
        let timer = Deliverable { intid: 27, priority: 0x80, group1: true, edge: false };
        let hw = lr::encode(&timer, Some(27));
        assert_eq!(hw, lr::STATE_PENDING | lr::GROUP1 | lr::HW | 27 << 32 | 0x80 << 48 | 27, "hardware-linked: no EOI bit");
        assert!(!lr::is_free(v) && lr::is_free(0) && lr::is_free(lr::EOI | 33));
    }

    #[test]
    fn raising_again_what_a_list_register_holds() {
        let active = lr::STATE_ACTIVE | lr::GROUP1 | 33;
        assert_eq!(lr::raise_again(active), Some(active | lr::STATE_PENDING));
        assert_eq!(lr::raise_again(lr::STATE_PENDING | 33), None, "pending already");
        assert_eq!(lr::raise_again(lr::STATE_ACTIVE | lr::HW | 27), None, "the physical source raises it");
    }
}
