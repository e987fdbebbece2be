//! virtio-balloon (virtio 1.2 section 5.5): how a guest gives memory back to the host. The
//! host sets a target (`num_pages` in config space); the driver inflates (hands pages over
//! on the inflate queue, as 4 KiB page frame numbers) or deflates towards it, and says how
//! many it holds (`actual`). With VIRTIO_BALLOON_F_REPORTING the driver also reports ranges
//! of its free memory on a queue of its own (Linux's free page reporting: 2 MiB and larger
//! runs, a few seconds after they became free), and with VIRTIO_BALLOON_F_STATS_VQ it
//! answers the host's requests for memory statistics.
//!
//! This is the protocol, portable and host-tested: config space, which queue is which,
//! and reading requests out of the guest's buffers. What the pages become (unmapped, their
//! frames back to the host) is the hypervisor's vdev layer. Everything the driver sends is
//! untrusted: PFNs outside RAM, unaligned or overlapping reports, short statistics are
//! refused or ignored and counted, never a panic.

use crate::virtio_mmio::{config_bytes_read, VirtioDevice, F_RING_EVENT_IDX, F_RING_INDIRECT_DESC};
use crate::virtqueue::{Chain, GuestRam, OutOfRam};
use alloc::vec::Vec;

pub const DEVICE_ID: u32 = 5;
pub const F_STATS_VQ: u64 = 1 << 1;
pub const F_DEFLATE_ON_OOM: u64 = 1 << 2;
pub const F_REPORTING: u64 = 1 << 5;
pub const QUEUE_SIZE: u16 = 128;
/// What a balloon PFN counts, whatever the guest's page size (VIRTIO_BALLOON_PFN_SHIFT).
pub const PAGE: u64 = 4096;
/// PFNs read from one inflate or deflate request at most (Linux sends 256).
pub const PFNS_MAX: usize = 4096;
/// Statistics entries read at most (Linux sends 10).
const STATS_MAX: usize = 32;
/// Bytes of a statistics entry: le16 tag, le64 value, packed.
const STAT_BYTES: usize = 10;
/// Config space: le32 num_pages, le32 actual, le32 free_page_hint_cmd_id, le32 poison_val.
const CONFIG_BYTES: u64 = 16;
const ACTUAL_AT: u64 = 4;

/// What a queue is for. Queue numbers follow the negotiated features: inflate 0,
/// deflate 1, then statistics (STATS_VQ) and reporting (REPORTING) in that order, each
/// only if negotiated, as Linux and QEMU number them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Queue {
    Inflate,
    Deflate,
    Stats,
    Reporting,
}

/// Queue `q`'s role under the driver's features.
pub fn queue_role(driver_features: u64, q: u16) -> Option<Queue> {
    let mut roles = [Some(Queue::Inflate), Some(Queue::Deflate), None, None];
    let mut n = 2;
    if driver_features & F_STATS_VQ != 0 {
        roles[n] = Some(Queue::Stats);
        n += 1;
    }
    if driver_features & F_REPORTING != 0 {
        roles[n] = Some(Queue::Reporting);
    }
    roles.get(q as usize).copied().flatten()
}

/// The device's state: the host's target and what the driver says it holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BalloonDevice {
    /// Pages the host wants in the balloon.
    pub target: u32,
    /// Pages the driver says it holds.
    pub actual: u32,
}

impl BalloonDevice {
    fn config(&self) -> [u8; CONFIG_BYTES as usize] {
        let mut c = [0u8; CONFIG_BYTES as usize];
        c[0..4].copy_from_slice(&self.target.to_le_bytes());
        c[4..8].copy_from_slice(&self.actual.to_le_bytes());
        c
    }
}

impl VirtioDevice for BalloonDevice {
    fn device_id(&self) -> u32 {
        DEVICE_ID
    }

    fn features(&self) -> u64 {
        F_STATS_VQ | F_DEFLATE_ON_OOM | F_REPORTING | F_RING_INDIRECT_DESC | F_RING_EVENT_IDX
    }

    fn queue_max(&self, q: usize) -> u16 {
        if q < 4 {
            QUEUE_SIZE
        } else {
            0
        }
    }

    fn read_config(&self, offset: u64, size: u8) -> u64 {
        config_bytes_read(&self.config(), offset, size)
    }

    /// Only `actual` is the driver's to write (byte by byte, as a legacy driver may).
    fn write_config(&mut self, offset: u64, size: u8, value: u64) {
        let mut bytes = self.actual.to_le_bytes();
        for i in 0..size as u64 {
            let at = offset + i;
            if (ACTUAL_AT..ACTUAL_AT + 4).contains(&at) {
                bytes[(at - ACTUAL_AT) as usize] = (value >> (8 * i)) as u8;
            }
        }
        self.actual = u32::from_le_bytes(bytes);
    }

    /// The driver's balloon is gone with the driver; the host's target stays.
    fn reset(&mut self) {
        self.actual = 0;
    }
}

/// The page runs (first guest-physical address, bytes) of an inflate or deflate request:
/// its device-readable bytes as le32 PFNs, consecutive ones merged, at most PFNS_MAX read
/// (a partial PFN at the end is ignored). Returns the runs and the PFNs read.
pub fn page_runs(chain: &Chain, ram: &impl GuestRam) -> Result<(Vec<(u64, u64)>, usize), OutOfRam> {
    let mut runs: Vec<(u64, u64)> = Vec::new();
    let mut read = 0usize;
    let mut bytes = [0u8; 256];
    for b in chain.buffers.iter().filter(|b| !b.device_writes) {
        let mut at = 0u64;
        let whole = b.len as u64 & !3;
        while at < whole && read < PFNS_MAX {
            let n = ((whole - at) as usize).min(bytes.len()).min((PFNS_MAX - read) * 4);
            ram.read(b.addr + at, &mut bytes[..n])?;
            for pfn in bytes[..n].chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as u64) {
                let addr = pfn * PAGE;
                match runs.last_mut() {
                    Some((start, len)) if *start + *len == addr => *len += PAGE,
                    _ => runs.push((addr, PAGE)),
                }
            }
            read += n / 4;
            at += n as u64;
        }
    }
    Ok((runs, read))
}

/// Why a reported range was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Start or length not a multiple of 4 KiB, or empty.
    Unaligned,
    /// Not all of it is the VM's RAM.
    NotRam,
    /// It overlaps a range reported earlier in the same request.
    Overlapping,
    /// The driver made the buffer device-readable (a report is device-writable).
    WrongDirection,
}

/// The ranges of a free page report (one per buffer), each checked: page-aligned, inside
/// the VM's RAM (`is_ram`), not overlapping one before it in the request.
pub fn reported_ranges(chain: &Chain, is_ram: impl Fn(u64, u64) -> bool) -> Vec<Result<(u64, u64), Refused>> {
    let mut seen: Vec<(u64, u64)> = Vec::new();
    chain
        .buffers
        .iter()
        .map(|b| {
            let (addr, len) = (b.addr, b.len as u64);
            if !b.device_writes {
                return Err(Refused::WrongDirection);
            }
            if len == 0 || addr % PAGE != 0 || len % PAGE != 0 {
                return Err(Refused::Unaligned);
            }
            if addr.checked_add(len).is_none() || !is_ram(addr, len) {
                return Err(Refused::NotRam);
            }
            if seen.iter().any(|&(a, l)| addr < a + l && a < addr + len) {
                return Err(Refused::Overlapping);
            }
            seen.push((addr, len));
            Ok((addr, len))
        })
        .collect()
}

/// Statistics tags (virtio 1.2 section 5.5.6.3).
pub mod tag {
    pub const SWAP_IN: u16 = 0;
    pub const SWAP_OUT: u16 = 1;
    pub const MAJOR_FAULTS: u16 = 2;
    pub const MINOR_FAULTS: u16 = 3;
    pub const FREE: u16 = 4;
    pub const TOTAL: u16 = 5;
    pub const AVAILABLE: u16 = 6;
    pub const CACHES: u16 = 7;
    pub const HUGETLB_ALLOCATIONS: u16 = 8;
    pub const HUGETLB_FAILURES: u16 = 9;
    /// Names as the VM's counters print them, by tag.
    pub const NAMES: [&str; 10] =
        ["swap_in", "swap_out", "major_faults", "minor_faults", "free_memory", "total_memory", "available_memory", "disk_caches", "hugetlb_allocations", "hugetlb_failures"];
}

/// The guest's last statistics, by tag (None: not sent).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats(pub [Option<u64>; tag::NAMES.len()]);

/// Reads a statistics buffer: packed (le16 tag, le64 value) entries in the device-readable
/// bytes, at most STATS_MAX; unknown tags and a partial entry are ignored.
pub fn read_stats(chain: &Chain, ram: &impl GuestRam) -> Result<Stats, OutOfRam> {
    let mut stats = Stats::default();
    let mut left = STATS_MAX;
    for b in chain.buffers.iter().filter(|b| !b.device_writes) {
        let mut entry = [0u8; STAT_BYTES];
        let mut at = 0u64;
        while at + STAT_BYTES as u64 <= b.len as u64 && left > 0 {
            ram.read(b.addr + at, &mut entry)?;
            let t = u16::from_le_bytes([entry[0], entry[1]]) as usize;
            let mut v = [0u8; 8];
            v.copy_from_slice(&entry[2..]);
            if let Some(slot) = stats.0.get_mut(t) {
                *slot = Some(u64::from_le_bytes(v));
            }
            at += STAT_BYTES as u64;
            left -= 1;
        }
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtqueue::test_ram::{Ram, BASE};
    use crate::virtqueue::Buffer;
    use std::vec;

    fn readable(addr: u64, len: u32) -> Buffer {
        Buffer { addr, len, device_writes: false }
    }

    fn writable(addr: u64, len: u32) -> Buffer {
        Buffer { addr, len, device_writes: true }
    }

    #[test]
    fn queues_are_numbered_by_the_negotiated_features() {
        assert_eq!(queue_role(0, 0), Some(Queue::Inflate));
        assert_eq!(queue_role(0, 1), Some(Queue::Deflate));
        assert_eq!(queue_role(0, 2), None);
        assert_eq!(queue_role(F_STATS_VQ, 2), Some(Queue::Stats));
        assert_eq!(queue_role(F_REPORTING, 2), Some(Queue::Reporting));
        assert_eq!(queue_role(F_STATS_VQ | F_REPORTING, 3), Some(Queue::Reporting));
        assert_eq!(queue_role(F_STATS_VQ | F_REPORTING, 4), None);
        assert_eq!(queue_role(u64::MAX, u16::MAX), None);
    }

    #[test]
    fn config_space_target_and_actual() {
        let mut d = BalloonDevice { target: 0x1234_5678, actual: 0 };
        assert_eq!(d.read_config(0, 4), 0x1234_5678);
        assert_eq!(d.read_config(1, 1), 0x56);
        d.write_config(0, 4, 7);
        assert_eq!(d.target, 0x1234_5678, "num_pages is the host's");
        d.write_config(4, 4, 0xaabb_ccdd);
        assert_eq!(d.actual, 0xaabb_ccdd);
        d.write_config(5, 1, 0x11);
        assert_eq!(d.actual, 0xaabb_11dd, "byte writes, as legacy drivers do");
        assert_eq!(d.read_config(4, 4), 0xaabb_11dd);
        assert_eq!(d.read_config(14, 4), 0, "past config space reads as zero");
        d.write_config(12, 8, u64::MAX);
        assert_eq!(d.actual, 0xaabb_11dd);
        d.reset();
        assert_eq!((d.target, d.actual), (0x1234_5678, 0));
    }

    #[test]
    fn pfns_become_page_runs() {
        let ram = Ram::new();
        let pfns: Vec<u8> = [0x40000u32, 0x40001, 0x40002, 0x40010, 0x40011, 0x7].iter().flat_map(|p| p.to_le_bytes()).collect();
        ram.put(BASE + 0x100, &pfns);
        let chain = Chain { head: 0, buffers: vec![readable(BASE + 0x100, pfns.len() as u32 + 3), writable(BASE + 0x800, 64)].into() };
        let (runs, n) = page_runs(&chain, &ram).unwrap();
        assert_eq!(n, 6, "a partial PFN is not read");
        assert_eq!(runs, vec![(0x4000_0000, 3 * PAGE), (0x4001_0000, 2 * PAGE), (0x7000, PAGE)]);
        let outside = Chain { head: 0, buffers: vec![readable(BASE + 0xfff0, 64)].into() };
        assert_eq!(page_runs(&outside, &ram), Err(OutOfRam));
    }

    #[test]
    fn a_request_reads_at_most_pfns_max() {
        let ram = Ram::sized(64 << 10);
        let chain = Chain { head: 0, buffers: vec![readable(BASE, 32 << 10)].into() };
        let (runs, n) = page_runs(&chain, &ram).unwrap();
        assert_eq!(n, PFNS_MAX);
        assert_eq!(runs, vec![(0, PAGE); PFNS_MAX], "all PFN 0: none consecutive");
    }

    #[test]
    fn reports_are_checked() {
        let ram = |a: u64, l: u64| a >= BASE && a + l <= BASE + (1 << 30);
        let chain = Chain {
            head: 0,
            buffers: vec![
                writable(BASE, 2 << 20),
                writable(BASE + 0x1000, 0x1000),
                writable(BASE + (4 << 20) + 8, 0x1000),
                writable(BASE + (4 << 20), 0),
                writable(BASE - 0x1000, 0x2000),
                writable(BASE + (1 << 30) - 0x1000, 0x1000),
                readable(BASE + (8 << 20), 0x1000),
                writable(u64::MAX & !0xfff, 0xf000_0000),
            ].into(),
        };
        assert_eq!(
            reported_ranges(&chain, ram),
            vec![
                Ok((BASE, 2 << 20)),
                Err(Refused::Overlapping),
                Err(Refused::Unaligned),
                Err(Refused::Unaligned),
                Err(Refused::NotRam),
                Ok((BASE + (1 << 30) - 0x1000, 0x1000)),
                Err(Refused::WrongDirection),
                Err(Refused::NotRam),
            ]
        );
    }

    /// Random RAM and chains: PFN runs, reports and statistics never panic and stay
    /// bounded (`make fuzz` runs it long).
    #[test]
    fn garbage_requests_never_panic() {
        let mut rng = crate::rng::Rng::new(0xba11);
        let ram = Ram::sized(1 << 16);
        for _ in 0..crate::fuzz_tests::iters(20_000) {
            for _ in 0..16 {
                let at = BASE + rng.below((1 << 16) - 8);
                ram.put(at, &rng.next().to_le_bytes());
            }
            let buffers: Vec<Buffer> = (0..rng.below(6))
                .map(|_| Buffer {
                    addr: if rng.below(4) == 0 { rng.next() } else { BASE + rng.below(1 << 16) },
                    len: if rng.below(8) == 0 { rng.next() as u32 } else { rng.below(1 << 14) as u32 },
                    device_writes: rng.below(2) == 0,
                })
                .collect();
            let chain = Chain { head: 0, buffers: buffers.into() };
            if let Ok((runs, n)) = page_runs(&chain, &ram) {
                assert!(n <= PFNS_MAX && runs.len() <= n);
            }
            let _ = read_stats(&chain, &ram);
            let reported = reported_ranges(&chain, |a, l| a >= BASE && a.checked_add(l).is_some_and(|e| e <= BASE + (1 << 30)));
            let ok: Vec<(u64, u64)> = reported.iter().filter_map(|r| r.ok()).collect();
            for (i, &(a, l)) in ok.iter().enumerate() {
                assert!(a % PAGE == 0 && l % PAGE == 0 && l > 0);
                assert!(ok[..i].iter().all(|&(b, m)| a + l <= b || b + m <= a), "taken ranges never overlap");
            }
            let mut d = BalloonDevice { target: rng.next() as u32, actual: 0 };
            d.write_config(rng.below(24), rng.below(9) as u8, rng.next());
            let _ = d.read_config(rng.below(24), rng.below(9) as u8);
        }
    }

    #[test]
    fn statistics() {
        let ram = Ram::new();
        let mut bytes = Vec::new();
        for (t, v) in [(tag::FREE, 100u64 << 20), (tag::TOTAL, 512 << 20), (99, 1), (tag::MAJOR_FAULTS, 3)] {
            bytes.extend_from_slice(&t.to_le_bytes());
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        ram.put(BASE + 0x200, &bytes);
        let chain = Chain { head: 0, buffers: vec![readable(BASE + 0x200, bytes.len() as u32 + 5)].into() };
        let s = read_stats(&chain, &ram).unwrap();
        assert_eq!(s.0[tag::FREE as usize], Some(100 << 20));
        assert_eq!(s.0[tag::TOTAL as usize], Some(512 << 20));
        assert_eq!(s.0[tag::MAJOR_FAULTS as usize], Some(3));
        assert_eq!(s.0[tag::SWAP_IN as usize], None);
        let outside = Chain { head: 0, buffers: vec![readable(BASE + 0xfffa, 10)].into() };
        assert_eq!(read_stats(&outside, &ram), Err(OutOfRam));
        let huge = Chain { head: 0, buffers: vec![readable(BASE, 60_000)].into() };
        assert_eq!(read_stats(&huge, &ram).unwrap().0[0], Some(0), "bounded, zeros read as tag 0");
    }
}
