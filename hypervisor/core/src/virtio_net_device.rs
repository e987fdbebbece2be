//! virtio-net (virtio 1.2 section 5.1): a VM's network card, one receive and one transmit
//! queue, a MAC address and link status in config space, MTU 1500. Offered: mergeable
//! receive buffers (a frame may span several of the driver's buffers), checksum offload both
//! ways (a frame whose checksum the sender left to the device keeps it partial for a
//! receiver that accepts that, and gets it computed for any other), MTU, MAC, STATUS. No
//! segmentation offloads (GSO): every frame is at most MTU-sized.
//!
//! This is the device's protocol, portable and host-tested: reading a transmitted frame out
//! of its chain, writing a frame into receive buffers, completing a partial checksum. Where
//! frames go (the switch) and the queues' lives are the hypervisor's. Everything the driver
//! gives is untrusted: short or oversized frames, headers asking for what was not
//! negotiated, checksum positions outside the frame are refused (the frame dropped and
//! counted), never a panic.

use crate::virtio_mmio::{config_bytes_read, VirtioDevice, F_RING_EVENT_IDX, F_RING_INDIRECT_DESC, F_VERSION_1};
use crate::virtqueue::{Chain, DeviceQueue, GuestRam, OutOfRam, QueueError};
use alloc::vec::Vec;

pub const DEVICE_ID: u32 = 1;
pub const F_CSUM: u64 = 1 << 0;
pub const F_GUEST_CSUM: u64 = 1 << 1;
pub const F_MTU: u64 = 1 << 3;
pub const F_MAC: u64 = 1 << 5;
pub const F_MRG_RXBUF: u64 = 1 << 15;
pub const F_STATUS: u64 = 1 << 16;
/// Queues: receive, transmit.
pub const RX: usize = 0;
pub const TX: usize = 1;
pub const QUEUE_SIZE: u16 = 256;
pub const MTU: u16 = 1500;
/// Ethernet header.
pub const ETH_HEADER: usize = 14;
/// Largest frame taken: the MTU, the Ethernet header and a VLAN tag.
pub const FRAME_MAX: usize = MTU as usize + ETH_HEADER + 4;
/// Receive buffers one frame may span at most (mergeable buffers).
const RX_CHAINS_MAX: usize = 32;
/// Header flags.
const NEEDS_CSUM: u8 = 1;
/// Config status: the link is up.
const LINK_UP: u16 = 1;

/// The card: its MAC address and link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetDevice {
    pub mac: [u8; 6],
    pub link_up: bool,
}

impl NetDevice {
    fn config(&self) -> [u8; 12] {
        let mut c = [0u8; 12];
        c[..6].copy_from_slice(&self.mac);
        c[6..8].copy_from_slice(&(if self.link_up { LINK_UP } else { 0 }).to_le_bytes());
        c[8..10].copy_from_slice(&1u16.to_le_bytes());
        c[10..12].copy_from_slice(&MTU.to_le_bytes());
        c
    }
}

impl VirtioDevice for NetDevice {
    fn device_id(&self) -> u32 {
        DEVICE_ID
    }

    fn features(&self) -> u64 {
        F_CSUM | F_GUEST_CSUM | F_MTU | F_MAC | F_MRG_RXBUF | F_STATUS | F_RING_INDIRECT_DESC | F_RING_EVENT_IDX
    }

    fn queue_max(&self, q: usize) -> u16 {
        if q == RX || q == TX {
            QUEUE_SIZE
        } else {
            0
        }
    }

    fn read_config(&self, offset: u64, size: u8) -> u64 {
        config_bytes_read(&self.config(), offset, size)
    }

    /// The MAC is the device's (a legacy driver may write it; QEMU takes it: so do we, as
    /// long as it is a unicast address).
    fn write_config(&mut self, offset: u64, size: u8, value: u64) {
        let mut mac = self.mac;
        for i in 0..size as u64 {
            if let Some(b) = mac.get_mut((offset + i) as usize) {
                *b = (value >> (8 * i)) as u8;
            }
        }
        if mac[0] & 1 == 0 {
            self.mac = mac;
        }
    }

    fn reset(&mut self) {}
}

/// Bytes of the header before each frame under the driver's features: 12 (with
/// num_buffers) with VERSION_1 or MRG_RXBUF, else 10.
pub fn header_len(features: u64) -> usize {
    if features & (F_VERSION_1 | F_MRG_RXBUF) != 0 {
        12
    } else {
        10
    }
}

/// A checksum the sender left to the device: computed over the frame from `start`, stored
/// at `start + offset` (which holds the pseudo-header's sum meanwhile).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartialCsum {
    pub start: u16,
    pub offset: u16,
}

/// A frame on its way through the switch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub data: Vec<u8>,
    pub csum: Option<PartialCsum>,
}

impl Frame {
    pub fn destination(&self) -> [u8; 6] {
        let mut d = [0; 6];
        d.copy_from_slice(&self.data[..6]);
        d
    }

    pub fn source(&self) -> [u8; 6] {
        let mut s = [0; 6];
        s.copy_from_slice(&self.data[6..12]);
        s
    }

    /// Computes a partial checksum now (for a receiver that cannot take it partial).
    pub fn complete_checksum(&mut self) {
        if let Some(c) = self.csum.take() {
            let (start, at) = (c.start as usize, c.start as usize + c.offset as usize);
            let sum = internet_checksum(&self.data[start..]);
            self.data[at..at + 2].copy_from_slice(&sum.to_be_bytes());
        }
    }
}

/// The ones' complement of the ones' complement sum of `bytes` as big-endian 16-bit words
/// (RFC 1071).
pub fn internet_checksum(bytes: &[u8]) -> u16 {
    let mut sum: u64 = bytes.chunks(2).map(|w| u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]) as u64).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Why a transmitted frame was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxError {
    OutOfRam,
    /// Shorter than its header and an Ethernet header.
    TooShort,
    /// Longer than FRAME_MAX.
    TooLong,
    /// The header asks for segmentation (not offered), a checksum without F_CSUM, or one
    /// outside the frame.
    BadHeader,
}

impl From<OutOfRam> for TxError {
    fn from(_: OutOfRam) -> TxError {
        TxError::OutOfRam
    }
}

/// The frame of a transmit chain: its device-readable bytes are the header, then the
/// frame (split anywhere across buffers).
pub fn read_tx(chain: &Chain, ram: &impl GuestRam, features: u64) -> Result<Frame, TxError> {
    let hlen = header_len(features);
    let mut bytes = Vec::new();
    for b in chain.buffers.iter().filter(|b| !b.device_writes) {
        if bytes.len() + b.len as usize > hlen + FRAME_MAX {
            return Err(TxError::TooLong);
        }
        let at = bytes.len();
        bytes.resize(at + b.len as usize, 0);
        ram.read(b.addr, &mut bytes[at..])?;
    }
    if bytes.len() < hlen + ETH_HEADER {
        return Err(TxError::TooShort);
    }
    let (flags, gso) = (bytes[0], bytes[1]);
    let start = u16::from_le_bytes([bytes[6], bytes[7]]);
    let offset = u16::from_le_bytes([bytes[8], bytes[9]]);
    let data = bytes.split_off(hlen);
    if gso != 0 {
        return Err(TxError::BadHeader);
    }
    let csum = if flags & NEEDS_CSUM != 0 {
        if features & F_CSUM == 0 || start as usize + offset as usize + 2 > data.len() {
            return Err(TxError::BadHeader);
        }
        Some(PartialCsum { start, offset })
    } else {
        None
    };
    Ok(Frame { data, csum })
}

/// What became of a frame offered to a receive queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Received {
    /// Written; whether the driver wants an interrupt.
    Delivered { interrupt: bool },
    /// Not enough buffers yet: nothing was taken (the frame may wait).
    NoBuffers,
    /// The driver's buffers cannot hold it (without mergeable buffers each must hold a
    /// whole frame): dropped, the buffer given back empty.
    TooBig,
}

/// Writes `frame` into the receive queue `q`: its header (checksum left partial only for a
/// driver with F_GUEST_CSUM; `num_buffers` with mergeable buffers) and data across as many
/// of the driver's buffers as it needs (one without F_MRG_RXBUF).
pub fn receive(q: &mut DeviceQueue, ram: &impl GuestRam, features: u64, frame: &Frame) -> Result<Received, QueueError> {
    let hlen = header_len(features);
    let mut frame = frame.clone();
    if features & F_GUEST_CSUM == 0 {
        frame.complete_checksum();
    }
    let total = hlen + frame.data.len();
    let mergeable = features & F_MRG_RXBUF != 0;
    let capacity = |c: &Chain| c.buffers.iter().filter(|b| b.device_writes).map(|b| b.len as usize).sum::<usize>();
    let mut chains: Vec<Chain> = Vec::new();
    let mut room = 0;
    while room < total {
        if chains.len() == if mergeable { RX_CHAINS_MAX } else { 1 } {
            // Too many small buffers, or one too small: the frame cannot go in.
            let last = chains.len() - 1;
            q.unpop(last as u16);
            q.push(ram, chains[0].head, 0)?;
            return Ok(Received::TooBig);
        }
        match q.pop(ram)? {
            Some(c) => {
                room += capacity(&c);
                chains.push(c);
            }
            None => {
                q.unpop(chains.len() as u16);
                return Ok(Received::NoBuffers);
            }
        }
    }
    let mut header = [0u8; 12];
    if let Some(c) = frame.csum {
        header[0] = NEEDS_CSUM;
        header[6..8].copy_from_slice(&c.start.to_le_bytes());
        header[8..10].copy_from_slice(&c.offset.to_le_bytes());
    }
    header[10..12].copy_from_slice(&(chains.len() as u16).to_le_bytes());
    // The header, then the data, straight from where they are into the buffers in turn.
    let mut pos = 0usize;
    let mut interrupt = false;
    for c in &chains {
        let mut written = 0u32;
        for b in c.buffers.iter().filter(|b| b.device_writes) {
            let mut at = 0usize;
            while at < b.len as usize && pos < total {
                let room = b.len as usize - at;
                let piece = if pos < hlen { &header[pos..hlen] } else { &frame.data[pos - hlen..] };
                let n = piece.len().min(room);
                ram.write(b.addr + at as u64, &piece[..n])?;
                at += n;
                pos += n;
                written += n as u32;
            }
        }
        interrupt |= q.push(ram, c.head, written)?;
    }
    Ok(Received::Delivered { interrupt })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio_mmio::QueueConfig;
    use crate::virtqueue::test_ram::{Ram, BASE};
    use crate::virtqueue::Buffer;
    use std::vec;

    const DESC: u64 = BASE;
    const AVAIL: u64 = BASE + 0x1000;
    const USED: u64 = BASE + 0x2000;
    const BUFS: u64 = BASE + 0x4000;

    fn queue() -> DeviceQueue {
        DeviceQueue::new(&QueueConfig { size: 8, ready: true, desc: DESC, driver: AVAIL, device: USED }, 0)
    }

    /// Makes `lens.len()` single-buffer chains available, each device-writable.
    fn post(ram: &Ram, lens: &[u32]) {
        for (i, &len) in lens.iter().enumerate() {
            ram.desc(DESC, i as u16, BUFS + i as u64 * 0x800, len, 2, 0);
            ram.put16(AVAIL + 4 + 2 * i as u64, i as u16);
        }
        ram.put16(AVAIL + 2, lens.len() as u16);
    }

    fn used(ram: &Ram, i: u64) -> (u32, u32) {
        let e = ram.get(USED + 4 + 8 * i, 8);
        (u32::from_le_bytes(e[..4].try_into().unwrap()), u32::from_le_bytes(e[4..].try_into().unwrap()))
    }

    fn frame(len: usize) -> Frame {
        Frame { data: (0..len).map(|i| i as u8).collect(), csum: None }
    }

    #[test]
    fn config_space_and_mac() {
        let mut d = NetDevice { mac: [0x52, 0x54, 0, 0x12, 0x35, 1], link_up: true };
        assert_eq!(d.read_config(0, 4), 0x1200_5452);
        assert_eq!(d.read_config(4, 2), 0x0135);
        assert_eq!(d.read_config(6, 2), 1, "link up");
        assert_eq!(d.read_config(8, 2), 1, "one queue pair");
        assert_eq!(d.read_config(10, 2), 1500);
        d.write_config(5, 1, 9);
        assert_eq!(d.mac[5], 9);
        d.write_config(0, 1, 0x01);
        assert_eq!(d.mac[0], 0x52, "no multicast MAC");
        d.write_config(6, 2, 0);
        assert!(d.link_up, "status is the device's");
    }

    #[test]
    fn transmit_reads_header_and_frame() {
        let ram = Ram::new();
        let mut bytes = vec![0u8; 12];
        bytes.extend((0..60).map(|i| i as u8));
        ram.put(BUFS, &bytes[..20]);
        ram.put(BUFS + 0x100, &bytes[20..]);
        let chain = Chain {
            head: 0,
            buffers: vec![Buffer { addr: BUFS, len: 20, device_writes: false }, Buffer { addr: BUFS + 0x100, len: 52, device_writes: false }].into(),
        };
        let f = read_tx(&chain, &ram, F_VERSION_1).unwrap();
        assert_eq!(f.data, (0..60).map(|i| i as u8).collect::<Vec<u8>>());
        assert_eq!(f.csum, None);
        // Legacy without mergeable buffers: a 10-byte header.
        assert_eq!(read_tx(&chain, &ram, 0).unwrap().data.len(), 62);
    }

    #[test]
    fn transmit_refuses_bad_frames() {
        let ram = Ram::new();
        let one = |len: u32| Chain { head: 0, buffers: vec![Buffer { addr: BUFS, len, device_writes: false }].into() };
        assert_eq!(read_tx(&one(12 + 13), &ram, F_VERSION_1), Err(TxError::TooShort));
        assert_eq!(read_tx(&one(12 + FRAME_MAX as u32 + 1), &ram, F_VERSION_1), Err(TxError::TooLong));
        assert_eq!(read_tx(&one(12 + 14), &ram, F_VERSION_1).map(|f| f.data.len()), Ok(14));
        ram.put(BUFS, &[0, 1]); // GSO asked for
        assert_eq!(read_tx(&one(40), &ram, F_VERSION_1), Err(TxError::BadHeader));
        ram.put(BUFS, &[NEEDS_CSUM, 0, 0, 0, 0, 0, 20, 0, 7, 0]);
        assert_eq!(read_tx(&one(40), &ram, F_VERSION_1 | F_CSUM), Err(TxError::BadHeader), "checksum field past the frame");
        ram.put(BUFS, &[NEEDS_CSUM, 0, 0, 0, 0, 0, 20, 0, 6, 0]);
        assert_eq!(read_tx(&one(40), &ram, F_VERSION_1), Err(TxError::BadHeader), "checksum without F_CSUM");
        assert_eq!(read_tx(&one(12 + 28), &ram, F_VERSION_1 | F_CSUM).unwrap().csum, Some(PartialCsum { start: 20, offset: 6 }));
        let outside = Chain { head: 0, buffers: vec![Buffer { addr: BASE + 0xfff0, len: 64, device_writes: false }].into() };
        assert_eq!(read_tx(&outside, &ram, F_VERSION_1), Err(TxError::OutOfRam));
        let huge = Chain { head: 0, buffers: vec![Buffer { addr: BUFS, len: u32::MAX, device_writes: false }].into() };
        assert_eq!(read_tx(&huge, &ram, F_VERSION_1), Err(TxError::TooLong), "bounded before reading");
    }

    #[test]
    fn checksums() {
        // RFC 1071's example: 0x0001 0xf203 0xf4f5 0xf6f7 sums to 0xddf2, complemented 0x220d.
        assert_eq!(internet_checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]), 0x220d);
        assert_eq!(internet_checksum(&[0xff]), 0x00ff);
        let mut f = Frame { data: vec![0; 40], csum: Some(PartialCsum { start: 20, offset: 4 }) };
        f.data[20..24].copy_from_slice(&[0x12, 0x34, 0x56, 0x78]);
        f.data[24..26].copy_from_slice(&[0x00, 0x10]); // the pseudo-header's sum
        f.complete_checksum();
        assert_eq!(f.csum, None);
        let mut with_pseudo = f.data[20..].to_vec();
        with_pseudo.extend([0x00, 0x10]);
        assert_eq!(internet_checksum(&with_pseudo), 0, "with the pseudo-header a completed checksum sums to zero");
    }

    #[test]
    fn receive_into_one_buffer() {
        let ram = Ram::new();
        post(&ram, &[2048]);
        let mut q = queue();
        assert_eq!(receive(&mut q, &ram, F_VERSION_1, &frame(100)), Ok(Received::Delivered { interrupt: true }));
        assert_eq!(used(&ram, 0), (0, 112));
        let got = ram.get(BUFS, 112);
        assert_eq!(got[10..12], [1, 0], "num_buffers 1");
        assert_eq!(got[12..], (0..100).map(|i| i as u8).collect::<Vec<u8>>()[..]);
        assert_eq!(receive(&mut q, &ram, F_VERSION_1, &frame(100)), Ok(Received::NoBuffers));
    }

    #[test]
    fn receive_across_mergeable_buffers() {
        let ram = Ram::new();
        post(&ram, &[600, 600, 600, 600]);
        let mut q = queue();
        let f = frame(1514);
        assert_eq!(receive(&mut q, &ram, F_VERSION_1 | F_MRG_RXBUF, &f), Ok(Received::Delivered { interrupt: true }));
        assert_eq!((used(&ram, 0), used(&ram, 1), used(&ram, 2)), ((0, 600), (1, 600), (2, 326)));
        assert_eq!(ram.get(BUFS, 12)[10..12], [3, 0], "num_buffers 3");
        let mut data = ram.get(BUFS + 12, 588);
        data.extend(ram.get(BUFS + 0x800, 600));
        data.extend(ram.get(BUFS + 0x1000, 326));
        assert_eq!(data, f.data);
        // One buffer left: not enough for another such frame; it stays available.
        assert_eq!(receive(&mut q, &ram, F_VERSION_1 | F_MRG_RXBUF, &f), Ok(Received::NoBuffers));
        assert_eq!(receive(&mut q, &ram, F_VERSION_1 | F_MRG_RXBUF, &frame(60)), Ok(Received::Delivered { interrupt: true }));
        assert_eq!(used(&ram, 3), (3, 72));
    }

    #[test]
    fn receive_refuses_what_cannot_fit() {
        let ram = Ram::new();
        post(&ram, &[100, 2048]);
        let mut q = queue();
        assert_eq!(receive(&mut q, &ram, F_VERSION_1, &frame(200)), Ok(Received::TooBig));
        assert_eq!(used(&ram, 0), (0, 0), "the small buffer given back empty");
        assert_eq!(receive(&mut q, &ram, F_VERSION_1, &frame(200)), Ok(Received::Delivered { interrupt: true }));
        assert_eq!(used(&ram, 1), (1, 212));
        // Mergeable buffers of 8 bytes each: RX_CHAINS_MAX of them cannot hold a frame.
        let ram = Ram::sized(1 << 20);
        let big = DeviceQueue::new(&QueueConfig { size: 64, ready: true, desc: DESC, driver: AVAIL, device: USED }, 0);
        for i in 0..64u16 {
            ram.desc(DESC, i, BUFS + i as u64 * 8, 8, 2, 0);
            ram.put16(AVAIL + 4 + 2 * i as u64, i);
        }
        ram.put16(AVAIL + 2, 64);
        let mut q = big;
        assert_eq!(receive(&mut q, &ram, F_VERSION_1 | F_MRG_RXBUF, &frame(1000)), Ok(Received::TooBig));
        assert_eq!(receive(&mut q, &ram, F_VERSION_1 | F_MRG_RXBUF, &frame(40)), Ok(Received::Delivered { interrupt: true }));
    }

    /// Random bytes in the rings and buffers, random chains and features: transmitted frames
    /// are refused or well-formed, receiving never panics, never writes past the RAM the
    /// test gives, and always ends (`make fuzz` runs it long).
    #[test]
    fn garbage_frames_and_rings_never_panic() {
        let mut rng = crate::rng::Rng::new(0x4e7);
        let ram = Ram::sized(1 << 20);
        let inside = |rng: &mut crate::rng::Rng| BASE + rng.below((1 << 20) - 8);
        for _ in 0..crate::fuzz_tests::iters(20_000) {
            for _ in 0..16 {
                let at = inside(&mut rng);
                ram.put(at, &rng.next().to_le_bytes());
            }
            let features = rng.next() & (F_CSUM | F_GUEST_CSUM | F_MRG_RXBUF | F_VERSION_1 | F_RING_EVENT_IDX | F_RING_INDIRECT_DESC);
            let buffers = (0..rng.below(5))
                .map(|_| Buffer {
                    addr: if rng.below(8) == 0 { rng.next() } else { inside(&mut rng) },
                    len: if rng.below(16) == 0 { rng.next() as u32 } else { rng.below(2000) as u32 },
                    device_writes: rng.below(4) == 0,
                })
                .collect();
            if let Ok(mut f) = read_tx(&Chain { head: 0, buffers }, &ram, features) {
                assert!(f.data.len() >= ETH_HEADER && f.data.len() <= FRAME_MAX);
                if let Some(c) = f.csum {
                    assert!(c.start as usize + c.offset as usize + 2 <= f.data.len());
                }
                f.complete_checksum();
            }
            let cfg = QueueConfig { size: 1 << rng.below(9), ready: true, desc: inside(&mut rng), driver: inside(&mut rng), device: inside(&mut rng) };
            let mut q = DeviceQueue::new(&cfg, features);
            let len = ETH_HEADER + rng.below((FRAME_MAX - ETH_HEADER + 1) as u64) as usize;
            let csum = (rng.below(2) == 0 && len >= 20).then(|| PartialCsum { start: rng.below(len as u64 - 18) as u16, offset: 16 });
            let f = Frame { data: (0..len).map(|_| rng.next() as u8).collect(), csum };
            for _ in 0..4 {
                let _ = receive(&mut q, &ram, features, &f);
            }
        }
    }

    #[test]
    fn partial_checksums_stay_partial_only_for_drivers_that_take_them() {
        let ram = Ram::new();
        post(&ram, &[2048, 2048]);
        let mut q = queue();
        let mut f = frame(60);
        f.csum = Some(PartialCsum { start: 34, offset: 16 });
        receive(&mut q, &ram, F_VERSION_1 | F_GUEST_CSUM, &f).unwrap();
        assert_eq!(ram.get(BUFS, 10), [NEEDS_CSUM, 0, 0, 0, 0, 0, 34, 0, 16, 0]);
        assert_eq!(ram.get(BUFS + 12, 60), f.data, "data as sent");
        receive(&mut q, &ram, F_VERSION_1, &f).unwrap();
        assert_eq!(ram.get(BUFS + 0x800, 10), [0; 10]);
        let mut with_pseudo = ram.get(BUFS + 0x800 + 12 + 34, 26);
        with_pseudo.extend([50, 51]); // what the field held: the pseudo-header's sum
        assert_eq!(internet_checksum(&with_pseudo), 0, "computed for the other");
    }
}
