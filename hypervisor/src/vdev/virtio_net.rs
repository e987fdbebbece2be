//! The VM's network card: virtio-net (hv_core::virtio_net_device) in virtio-mmio slot 3.
//! Transmitted frames are read out of the guest's buffers on the vCPU that notified and
//! handed to the VM layer, which switches them (vm/network.rs); frames for this card are
//! written into its receive buffers by whichever CPU switches them, or wait in a bounded
//! backlog until the driver posts buffers. A card whose driver stops receiving only loses
//! its own frames (the backlog's overflow, counted): no other port waits for it.

use super::virtio_mmio::{answer, broken, live_queue, pop, Ram};
use crate::mm::guest::GuestMemory;
use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};
use hv_core::virtio_mmio::{Effect, Transport, INT_USED_BUFFER, VirtioDevice};
use hv_core::virtio_net_device::{read_tx, receive, Frame, NetDevice, Received, RX, TX};
use hv_core::virtqueue::DeviceQueue;
use spin::Mutex;

/// Its virtio-mmio slot (after the balloon's).
pub const SLOT: u64 = 3;
/// Frames waiting for receive buffers at most.
const BACKLOG_MAX: usize = 256;
/// Frames taken from the transmit queue per notification at most (the rest on the next).
const TX_BATCH: usize = 256;
/// Refusals logged per card (the rest are counted).
const WARNINGS: u64 = 8;

struct Side {
    transport: Transport,
    device: NetDevice,
    queues: [Option<DeviceQueue>; 2],
    backlog: VecDeque<Frame>,
    /// The VM stopped: nothing is written into its memory any more.
    stopped: bool,
}

#[derive(Default)]
struct Counts {
    tx_frames: AtomicU64,
    tx_bytes: AtomicU64,
    /// Transmitted frames refused (malformed).
    tx_refused: AtomicU64,
    /// Transmitted frames the switch dropped: their source was another card's address.
    tx_spoofed: AtomicU64,
    rx_frames: AtomicU64,
    rx_bytes: AtomicU64,
    /// Frames for this card dropped: backlog full, driver not ready, buffers too small.
    rx_dropped: AtomicU64,
}

pub struct NetCard {
    vm: usize,
    pub mac: [u8; 6],
    side: Mutex<Side>,
    counts: Counts,
}

impl NetCard {
    /// A card with address `mac`, link up.
    pub fn new(vm: usize, legacy: bool, mac: [u8; 6]) -> NetCard {
        let transport = Transport::new(legacy);
        let side = Side { transport, device: NetDevice { mac, link_up: true }, queues: [const { None }; 2], backlog: VecDeque::new(), stopped: false };
        NetCard { vm, mac, side: Mutex::new(side), counts: Counts::default() }
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

    /// A register write. Returns the slot's interrupt line and the frames the guest
    /// transmitted (for the switch: sent after the card's lock is dropped, so two cards
    /// sending to each other never wait on each other).
    pub fn write(&self, mem: &GuestMemory, offset: u64, size: u8, value: u64) -> (bool, Vec<Frame>) {
        let mut s = self.side.lock();
        let Side { transport, device, .. } = &mut *s;
        let mut sent = Vec::new();
        match transport.write(device, offset, size, value) {
            Effect::Reset => {
                s.queues = [const { None }; 2];
                s.backlog.clear();
            }
            Effect::Notify(q) if q as usize == TX => sent = self.take_transmitted(&mut s, mem),
            Effect::Notify(q) if q as usize == RX => self.drain(&mut s, mem),
            Effect::DriverOk => {
                self.drain(&mut s, mem);
                sent = self.take_transmitted(&mut s, mem);
            }
            _ => {}
        }
        (s.transport.interrupt_line(), sent)
    }

    fn take_transmitted(&self, s: &mut Side, mem: &GuestMemory) -> Vec<Frame> {
        let ram = Ram(mem);
        let features = s.transport.driver_features();
        let mut sent = Vec::new();
        while sent.len() < TX_BATCH {
            let Some(chain) = pop(&mut s.transport, &mut s.queues, &ram, TX) else { break };
            match read_tx(&chain, &ram, features) {
                Ok(frame) => {
                    self.counts.tx_frames.fetch_add(1, Ordering::Relaxed);
                    self.counts.tx_bytes.fetch_add(frame.data.len() as u64, Ordering::Relaxed);
                    sent.push(frame);
                }
                Err(why) => {
                    if self.counts.tx_refused.fetch_add(1, Ordering::Relaxed) < WARNINGS {
                        log::warn!("VM {}: network card: a transmitted frame refused: {why:?}", self.vm);
                    }
                }
            }
            answer(&mut s.transport, &mut s.queues, &ram, TX, chain.head, 0);
        }
        sent
    }

    /// Moves waiting frames into the driver's receive buffers while there are some.
    fn drain(&self, s: &mut Side, mem: &GuestMemory) {
        let ram = Ram(mem);
        while let Some(frame) = s.backlog.pop_front() {
            if let Some(Received::NoBuffers) | None = self.put(s, &ram, &frame) {
                s.backlog.push_front(frame);
                return;
            }
        }
    }

    /// One frame into the receive queue (None: the queue is not live or broke).
    fn put(&self, s: &mut Side, ram: &Ram, frame: &Frame) -> Option<Received> {
        let features = s.transport.driver_features();
        let q = live_queue(&s.transport, &mut s.queues, RX)?;
        match receive(q, ram, features, frame) {
            Ok(r) => {
                match r {
                    Received::Delivered { interrupt } => {
                        self.counts.rx_frames.fetch_add(1, Ordering::Relaxed);
                        self.counts.rx_bytes.fetch_add(frame.data.len() as u64, Ordering::Relaxed);
                        if interrupt {
                            s.transport.raise(INT_USED_BUFFER);
                        }
                    }
                    Received::TooBig => {
                        self.counts.rx_dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    Received::NoBuffers => {}
                }
                Some(r)
            }
            Err(_) => {
                broken(&mut s.transport, &mut s.queues);
                None
            }
        }
    }

    /// A frame for this card (from the switch, on any CPU): written into a receive buffer,
    /// or kept in the backlog until the driver posts one (dropped if that is full or the
    /// driver is not running). Returns the slot's interrupt line if it rose.
    pub fn deliver(&self, mem: &GuestMemory, frame: Frame) -> Option<bool> {
        let mut s = self.side.lock();
        if s.stopped {
            return None;
        }
        let was = s.transport.interrupt_line();
        if s.backlog.is_empty() {
            if let Some(Received::Delivered { .. } | Received::TooBig) = self.put(&mut s, &Ram(mem), &frame) {
                let now = s.transport.interrupt_line();
                return (now && !was).then_some(true);
            }
        }
        if s.backlog.len() >= BACKLOG_MAX || !s.transport.live() {
            self.counts.rx_dropped.fetch_add(1, Ordering::Relaxed);
        } else {
            s.backlog.push_back(frame);
        }
        None
    }

    /// The VM stopped: once this returns no frame is written into its memory (which may be
    /// its next boot's).
    pub fn stop(&self) {
        let mut s = self.side.lock();
        s.stopped = true;
        s.backlog.clear();
    }

    /// The switch dropped a frame of this card's: its source was another card's address.
    pub fn spoofed(&self, source: [u8; 6]) {
        if self.counts.tx_spoofed.fetch_add(1, Ordering::Relaxed) < WARNINGS {
            log::warn!("VM {}: network card: a frame from another card's address ({source:02x?}) dropped", self.vm);
        }
    }

    /// One line of counts (logged when the VM stops).
    pub fn describe(&self) -> alloc::string::String {
        let c = &self.counts;
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        alloc::format!(
            "tx_frames={} tx_bytes={} tx_refused={} tx_spoofed={} rx_frames={} rx_bytes={} rx_dropped={} backlog={}",
            n(&c.tx_frames),
            n(&c.tx_bytes),
            n(&c.tx_refused),
            n(&c.tx_spoofed),
            n(&c.rx_frames),
            n(&c.rx_bytes),
            n(&c.rx_dropped),
            self.side.lock().backlog.len()
        )
    }
}
