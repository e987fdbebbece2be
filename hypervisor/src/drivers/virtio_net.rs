//! A virtio-net driver for the network card QEMU may give the hypervisor (`-netdev user,...
//! -device virtio-net-device,...`): the uplink of the VMs' switch. One receive and one
//! transmit queue, each with its buffers in a DMA area of the hypervisor's (frames are
//! copied in and out: the switch hands frames around by value), no offloads asked for
//! (frames arrive and leave with complete checksums), interrupts for received frames.
//!
//! The device is not trusted beyond its queues' rules (hv_core::virtio): a used element that
//! makes no sense resets it.

use super::virtio_mmio::{Dma, ProbeError, Transport};
use crate::mm::frames;
use alloc::collections::VecDeque;
use alloc::vec::Vec;
use hv_core::pgtable::PAGE_SIZE;
use hv_core::ranges::Range;
use hv_core::virtio::{QueueLayout, Segment, SplitQueue};
use spin::{Mutex, Once};

const DEVICE_NET: u32 = 1;
const F_MAC: u64 = 1 << 5;
const RX: u32 = 0;
const TX: u32 = 1;
/// Entries per queue (and buffers per direction).
const QUEUE: u16 = 128;
/// A buffer: the header and a frame of at most MTU 1500 plus Ethernet header and VLAN tag.
const BUFFER: usize = 2048;
/// Frames waiting for room in the transmit queue at most (a burst QEMU has not caught up
/// with yet); more are dropped.
const PENDING_MAX: usize = 512;

pub struct VirtioNet {
    transport: Transport,
    pub mac: [u8; 6],
    /// Bytes of the header before each frame: 12 on the modern interface, 10 on the legacy.
    header: usize,
    rx: SplitQueue,
    tx: SplitQueue,
    rx_dma: Dma,
    tx_dma: Dma,
    /// Buffers by head descriptor: receive, then transmit.
    rx_buffers: u64,
    tx_buffers: u64,
    area: (u64, usize),
    /// Frames waiting for room in the transmit queue.
    pending: VecDeque<Vec<u8>>,
    /// Frames sent and received, and sent frames dropped (no room in the queue).
    pub sent: u64,
    pub received: u64,
    pub send_dropped: u64,
}

// SAFETY: the DMA memory is reached only through `&mut self` methods.
unsafe impl Send for VirtioNet {}

impl VirtioNet {
    /// Brings up the network card behind the virtio-mmio transport at `base`.
    pub fn probe(base: u64) -> Result<VirtioNet, ProbeError> {
        let transport = Transport::open(base, DEVICE_NET)?;
        transport.reset();
        if transport.queue_max(RX) < QUEUE as u32 || transport.queue_max(TX) < QUEUE as u32 {
            return Err(ProbeError::Unsupported("queues too small"));
        }
        let layout = QueueLayout::new(QUEUE, transport.queue_align()).ok_or(ProbeError::Unsupported("queue layout"))?;
        let queue_pages = layout.bytes.div_ceil(PAGE_SIZE as usize);
        let buffer_pages = QUEUE as usize * BUFFER / PAGE_SIZE as usize;
        let pages = 2 * (queue_pages + buffer_pages);
        let area = frames::alloc_zeroed(pages).ok_or(ProbeError::NoMemory)?;
        let at = |i: usize| area + (i * PAGE_SIZE as usize) as u64;
        let header = if transport.version == 2 { 12 } else { 10 };
        let mut nic = VirtioNet {
            transport,
            mac: [0; 6],
            header,
            rx: SplitQueue::new(layout),
            tx: SplitQueue::new(layout),
            rx_dma: Dma { base: at(0) },
            tx_dma: Dma { base: at(queue_pages) },
            rx_buffers: at(2 * queue_pages),
            tx_buffers: at(2 * queue_pages + buffer_pages),
            area: (area, pages),
            pending: VecDeque::new(),
            sent: 0,
            received: 0,
            send_dropped: 0,
        };
        if let Err(e) = nic.init() {
            nic.transport.reset();
            frames::free(area, pages);
            return Err(e);
        }
        Ok(nic)
    }

    /// Reset and initialization; every receive buffer made available.
    fn init(&mut self) -> Result<(), ProbeError> {
        let t = &self.transport;
        let taken = t.negotiate(F_MAC)?;
        self.rx.reset();
        self.tx.reset();
        t.set_queue(RX, &self.rx.layout(), self.rx_dma.base)?;
        t.set_queue(TX, &self.tx.layout(), self.tx_dma.base)?;
        t.driver_ok();
        if taken & F_MAC != 0 {
            for (i, b) in self.mac.iter_mut().enumerate() {
                *b = t.config8(i as u64);
            }
        }
        while self.rx.free_descriptors() > 0 {
            let Some(head) = self.rx.next_head() else { break };
            let buffer = Segment { addr: self.rx_buffers + head as u64 * BUFFER as u64, len: BUFFER as u32, device_writes: true };
            if self.rx.submit(&mut self.rx_dma, &[buffer]).is_none() {
                break;
            }
        }
        self.transport.notify(RX);
        Ok(())
    }

    /// Acknowledges the card's interrupt, sends what waited for room, then hands each frame
    /// received to `f` (at most `max`) and gives its buffer back to the card.
    pub fn receive(&mut self, max: usize, f: &mut dyn FnMut(&[u8])) {
        self.transport.ack_interrupt();
        self.flush();
        let mut done = 0;
        while done < max {
            let used = match self.rx.poll(&self.rx_dma) {
                None => break,
                Some(Ok(u)) => u,
                Some(Err(e)) => {
                    log::warn!("virtio-net at {:#x}: used ring makes no sense ({e:?}): device reset", self.transport.base);
                    let _ = self.init();
                    return;
                }
            };
            let addr = self.rx_buffers + used.head as u64 * BUFFER as u64;
            let len = (used.len as usize).min(BUFFER);
            if len > self.header {
                // SAFETY: the buffer of a completed receive, in our DMA area: the device is done
                // with it until it is made available again below.
                let bytes = unsafe { core::slice::from_raw_parts((addr + self.header as u64) as *const u8, len - self.header) };
                self.received += 1;
                f(bytes);
            }
            let buffer = Segment { addr, len: BUFFER as u32, device_writes: true };
            let _ = self.rx.submit(&mut self.rx_dma, &[buffer]);
            done += 1;
        }
        if done > 0 {
            self.transport.notify(RX);
        }
    }

    /// Sends a frame (copied), or keeps it until the transmit queue has room (the card's
    /// interrupt for sent frames); dropped (counted) when PENDING_MAX already wait.
    pub fn send(&mut self, frame: &[u8]) {
        self.flush();
        if self.header + frame.len() > BUFFER {
            self.send_dropped += 1;
        } else if self.pending.is_empty() && self.tx.free_descriptors() > 0 {
            self.submit(frame);
        } else if self.pending.len() < PENDING_MAX {
            self.pending.push_back(frame.to_vec());
        } else {
            self.send_dropped += 1;
        }
    }

    /// Takes back what the card sent and gives it what waited, while there is room.
    fn flush(&mut self) {
        while let Some(Ok(_)) = self.tx.poll(&self.tx_dma) {}
        while self.tx.free_descriptors() > 0 {
            let Some(frame) = self.pending.pop_front() else { break };
            self.submit(&frame);
        }
    }

    fn submit(&mut self, frame: &[u8]) {
        let len = self.header + frame.len();
        let Some(head) = self.tx.next_head() else {
            self.send_dropped += 1;
            return;
        };
        let addr = self.tx_buffers + head as u64 * BUFFER as u64;
        // SAFETY: the buffer of a free descriptor in our DMA area: the device does not look at
        // it until the chain is made available below; `len` fits in it.
        unsafe {
            core::ptr::write_bytes(addr as *mut u8, 0, self.header);
            core::ptr::copy_nonoverlapping(frame.as_ptr(), (addr + self.header as u64) as *mut u8, frame.len());
        }
        let buffer = Segment { addr, len: len as u32, device_writes: false };
        if self.tx.submit(&mut self.tx_dma, &[buffer]).is_some() {
            self.sent += 1;
            self.transport.notify(TX);
        } else {
            self.send_dropped += 1;
        }
    }
}

impl VirtioNet {
    /// Its counts, for the log.
    pub fn describe(&self) -> alloc::string::String {
        alloc::format!("sent={} received={} send_dropped={} pending={}", self.sent, self.received, self.send_dropped, self.pending.len())
    }
}

impl Drop for VirtioNet {
    fn drop(&mut self) {
        self.transport.reset();
        frames::free(self.area.0, self.area.1);
    }
}

/// The uplink: the card and its interrupt (routed to the boot CPU).
pub struct Uplink {
    pub nic: Mutex<VirtioNet>,
    pub intid: Option<u32>,
}

static UPLINK: Once<Option<Uplink>> = Once::new();

/// Finds the first network card among the transports (once, at boot).
pub fn probe(transports: &[(Range, Option<u32>)]) {
    UPLINK.call_once(|| {
        let mut found = None;
        for (t, intid) in transports {
            match VirtioNet::probe(t.start) {
                Ok(nic) if found.is_none() => {
                    let intid = intid.filter(|i| crate::drivers::gicv3::route_device_here(*i));
                    let m = nic.mac;
                    log::info!(
                        "virtio-net at {:#x} (MAC {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}{}): the uplink of the VMs' switch",
                        t.start,
                        m[0],
                        m[1],
                        m[2],
                        m[3],
                        m[4],
                        m[5],
                        if intid.is_none() { ", no interrupt: not used" } else { "" }
                    );
                    if intid.is_some() {
                        found = Some(Uplink { nic: Mutex::new(nic), intid });
                    }
                }
                Ok(nic) => {
                    log::info!("virtio-net at {:#x}: a second network card: left alone", t.start);
                    drop(nic);
                }
                Err(_) => {}
            }
        }
        found
    });
}

/// The uplink, if the machine has one.
pub fn uplink() -> Option<&'static Uplink> {
    UPLINK.get().and_then(Option::as_ref)
}

/// Frames received by the uplink since its last interrupt, copied.
pub fn take_received(max: usize) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    if let Some(u) = uplink() {
        u.nic.lock().receive(max, &mut |f| frames.push(f.to_vec()));
    }
    frames
}
