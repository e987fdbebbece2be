//! The VM's memory balloon: virtio-balloon (hv_core::virtio_balloon_device) in virtio-mmio
//! slot 2, served on the vCPU that notified. Pages the guest puts in the balloon, and the
//! free ranges it reports (free page reporting), are given back through
//! GuestMemory::discard: unmapped through the stage-2 notifiers (a disk's DMA into them
//! finishes first), their frames and promise returned to the host, zeroed when touched
//! again. Deflating needs nothing: a page the guest takes back faults in on its next touch.
//!
//! The host sets the target (`balloon=SIZE`, and at run time the console's Ctrl-] - and +);
//! the guest's statistics arrive on their queue and are kept for the VM's counters, asked
//! for again when the target changes and at most once a second while the guest is active.

use super::virtio_mmio::{answer, pop, Ram};
use crate::mm::guest::GuestMemory;
use core::sync::atomic::{AtomicU64, Ordering};
use hv_core::virtio_balloon_device::{page_runs, queue_role, read_stats, reported_ranges, BalloonDevice, Queue, Stats, PAGE};
use hv_core::virtio_mmio::{Effect, Transport, INT_CONFIG_CHANGE, INT_USED_BUFFER, VirtioDevice};
use hv_core::virtqueue::DeviceQueue;
use spin::Mutex;

/// Its virtio-mmio slot (after the entropy device's).
pub const SLOT: u64 = 2;
/// Refusals logged per VM (the rest are counted).
const WARNINGS: u64 = 8;

struct Side {
    transport: Transport,
    device: BalloonDevice,
    queues: [Option<DeviceQueue>; 4],
    /// The statistics buffer the driver lent (returned when new statistics are wanted).
    stats_head: Option<u16>,
    stats: Stats,
    /// When statistics were last asked for (counter value).
    stats_asked: u64,
}

/// What a register write did, for the VM layer.
pub struct Served {
    /// The slot's interrupt line afterwards.
    pub line: bool,
    /// Bytes the host got back.
    pub given_back: u64,
}

/// Counts, logged when the VM stops.
#[derive(Default)]
struct Counts {
    inflated: AtomicU64,
    deflated: AtomicU64,
    reports: AtomicU64,
    reported: AtomicU64,
    given_back: AtomicU64,
    refused: AtomicU64,
    stats_updates: AtomicU64,
    /// Time spent serving reports.
    report_us: AtomicU64,
}

pub struct MemoryBalloon {
    vm: usize,
    side: Mutex<Side>,
    counts: Counts,
}

impl MemoryBalloon {
    /// A balloon whose target is `target` bytes.
    pub fn new(vm: usize, legacy: bool, target: u64) -> MemoryBalloon {
        let transport = Transport::new(legacy);
        let device = BalloonDevice { target: (target / PAGE).min(u32::MAX as u64) as u32, actual: 0 };
        let side = Side { transport, device, queues: [const { None }; 4], stats_head: None, stats: Stats::default(), stats_asked: 0 };
        MemoryBalloon { vm, side: Mutex::new(side), counts: Counts::default() }
    }

    /// Calls `f` with its transport and device under its lock: its registers as the
    /// guest's reads see them (the VM's image of them, not counted as accesses).
    pub fn with_registers<R>(&self, f: &mut dyn FnMut(&Transport, &dyn VirtioDevice) -> R) -> R {
        let s = self.side.lock();
        f(&s.transport, &s.device)
    }

    pub fn read(&self, offset: u64, size: u8) -> u64 {
        let s = self.side.lock();
        s.transport.read(&s.device, offset, size)
    }

    /// A register write; a notification serves its queue.
    pub fn write(&self, mem: &GuestMemory, offset: u64, size: u8, value: u64) -> Served {
        let mut s = self.side.lock();
        let Side { transport, device, .. } = &mut *s;
        let mut given_back = 0;
        match transport.write(device, offset, size, value) {
            Effect::Reset => {
                s.queues = [const { None }; 4];
                s.stats_head = None;
            }
            // Linux lends its first statistics buffer before DRIVER_OK (a notification the
            // transport does not pass on): every queue is looked at when the device goes live.
            Effect::DriverOk => {
                for q in 0..4 {
                    given_back += self.serve(&mut s, mem, q);
                }
            }
            Effect::Notify(q) => {
                given_back = self.serve(&mut s, mem, q);
                let (freq, now) = crate::arch::cpu::counter();
                if now.wrapping_sub(s.stats_asked) > freq {
                    Self::ask_stats(&mut s, mem, now);
                }
            }
            _ => {}
        }
        Served { line: s.transport.interrupt_line(), given_back }
    }

    fn serve(&self, s: &mut Side, mem: &GuestMemory, q: u16) -> u64 {
        let ram = Ram(mem);
        let Some(role) = queue_role(s.transport.driver_features(), q) else { return 0 };
        let q = q as usize;
        let mut given_back = 0;
        while let Some(chain) = pop(&mut s.transport, &mut s.queues, &ram, q) {
            match role {
                Queue::Inflate | Queue::Deflate => {
                    let Ok((runs, pfns)) = page_runs(&chain, &ram) else {
                        s.transport.needs_reset();
                        return given_back;
                    };
                    if role == Queue::Inflate {
                        self.counts.inflated.fetch_add(pfns as u64, Ordering::Relaxed);
                        for (addr, len) in runs {
                            given_back += self.give_back(mem, addr, len, "inflated page");
                        }
                    } else {
                        self.counts.deflated.fetch_add(pfns as u64, Ordering::Relaxed);
                    }
                    answer(&mut s.transport, &mut s.queues, &ram, q, chain.head, 0);
                }
                Queue::Reporting => {
                    self.counts.reports.fetch_add(1, Ordering::Relaxed);
                    let started = crate::arch::cpu::counter().1;
                    let mut back = 0;
                    let ranges = reported_ranges(&chain, |a, l| mem.is_ram(a, l));
                    for r in &ranges {
                        match *r {
                            Ok((addr, len)) => {
                                self.counts.reported.fetch_add(len, Ordering::Relaxed);
                                back += self.give_back(mem, addr, len, "reported free range");
                            }
                            Err(why) => self.refuse(format_args!("a reported free range refused: {why:?}")),
                        }
                    }
                    answer(&mut s.transport, &mut s.queues, &ram, q, chain.head, 0);
                    let (freq, now) = crate::arch::cpu::counter();
                    let us = now.wrapping_sub(started) * 1_000_000 / freq.max(1);
                    self.counts.report_us.fetch_add(us, Ordering::Relaxed);
                    log::debug!("VM {}: balloon: report of {} range(s), {} KiB given back in {us} us", self.vm, ranges.len(), back >> 10);
                    given_back += back;
                }
                Queue::Stats => {
                    match read_stats(&chain, &ram) {
                        Ok(stats) => s.stats = stats,
                        Err(_) => self.refuse(format_args!("its statistics buffer is not RAM")),
                    }
                    self.counts.stats_updates.fetch_add(1, Ordering::Relaxed);
                    // Kept until the host wants new statistics; a driver that lends a
                    // second buffer gets the first back.
                    if let Some(old) = s.stats_head.replace(chain.head) {
                        answer(&mut s.transport, &mut s.queues, &ram, q, old, 0);
                    }
                }
            }
        }
        given_back
    }

    /// Gives a guest range back to the host; a range the memory refuses (outside RAM) is
    /// logged.
    fn give_back(&self, mem: &GuestMemory, addr: u64, len: u64, what: &str) -> u64 {
        match mem.discard(addr, len) {
            Ok(bytes) => {
                self.counts.given_back.fetch_add(bytes, Ordering::Relaxed);
                bytes
            }
            Err(e) => {
                self.refuse(format_args!("{what} at {addr:#x} (+{len:#x}) refused: {e:?}"));
                0
            }
        }
    }

    fn refuse(&self, what: core::fmt::Arguments) {
        if self.counts.refused.fetch_add(1, Ordering::Relaxed) < WARNINGS {
            log::warn!("VM {}: balloon: {what}", self.vm);
        }
    }

    /// Returns the lent statistics buffer, so that the driver sends new statistics.
    fn ask_stats(s: &mut Side, mem: &GuestMemory, now: u64) {
        let Some(head) = s.stats_head.take() else { return };
        s.stats_asked = now;
        if let Some(q) = (0..4u16).find(|q| queue_role(s.transport.driver_features(), *q) == Some(Queue::Stats)) {
            // Always interrupt: the driver waits for this buffer with no notification bound.
            answer(&mut s.transport, &mut s.queues, &Ram(mem), q as usize, head, 0);
            s.transport.raise(INT_USED_BUFFER);
        }
    }

    /// The host's new target (bytes in the balloon), statistics asked for; returns the
    /// slot's interrupt line.
    pub fn set_target(&self, mem: &GuestMemory, bytes: u64) -> bool {
        let mut s = self.side.lock();
        s.device.target = (bytes / PAGE).min(u32::MAX as u64) as u32;
        s.transport.raise(INT_CONFIG_CHANGE);
        Self::ask_stats(&mut s, mem, crate::arch::cpu::counter().1);
        s.transport.interrupt_line()
    }

    /// (target, actual) in bytes.
    pub fn size(&self) -> (u64, u64) {
        let s = self.side.lock();
        (s.device.target as u64 * PAGE, s.device.actual as u64 * PAGE)
    }

    /// One line of counts and the guest's last statistics.
    pub fn describe(&self) -> alloc::string::String {
        use core::fmt::Write;
        let (target, actual) = self.size();
        let c = &self.counts;
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut line = alloc::format!(
            "target={}KiB actual={}KiB inflated_pages={} deflated_pages={} reports={} reported_bytes={} given_back_bytes={} refused={} stats_updates={} report_us={}",
            target >> 10,
            actual >> 10,
            n(&c.inflated),
            n(&c.deflated),
            n(&c.reports),
            n(&c.reported),
            n(&c.given_back),
            n(&c.refused),
            n(&c.stats_updates),
            n(&c.report_us)
        );
        let stats = self.side.lock().stats;
        for (name, v) in hv_core::virtio_balloon_device::tag::NAMES.iter().zip(stats.0) {
            if let Some(v) = v {
                let _ = write!(line, " guest_{name}={v}");
            }
        }
        line
    }
}
