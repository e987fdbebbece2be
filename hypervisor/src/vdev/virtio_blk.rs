//! A disk of the VM in one of its virtio-mmio slots: hv_core's virtio-mmio transport
//! (modern, version 2, or legacy, version 1) and virtio-blk device, backed by a host disk kept
//! for the VM (drivers::disks).
//!
//! Requests go to the host disk with the guest's own pages (zero-copy): when the guest
//! notifies, each request is checked (hv_core::virtio_blk_device::parse), its buffers are
//! translated to host frames and pinned, and it is made available to the host device; the
//! vCPU goes back to its guest at once. The host device's interrupt completes it: the status
//! byte and the used ring are written and the slot's SPI raised. A request whose buffers
//! the host device cannot take in one request goes through the device's bounce buffer
//! instead, synchronously.
//!
//! Pinned pages and the stage-2 notifiers (the MMU-notifier contract): the disk is a
//! notifier subscriber of its VM's memory, and `invalidate_range_start` on a page with a
//! request in flight waits until the host device is done with it (bounded: a host device
//! that does not finish in time is reset, which stops its DMA). So a page the guest
//! unmaps, that reclaim takes, or that is torn down with the VM, is never written or read by
//! the device after its frame left the VM.

use crate::drivers::disks::HostDisk;
use crate::drivers::virtio_blk::Reaped;
use crate::mm::guest::{AccessError, GuestMemory};
use alloc::collections::VecDeque;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};
use hv_core::notifier::{IpaRange, Notifier, NotifierId, Reason};
use hv_core::pgtable::PAGE_SIZE;
use hv_core::virtio::{blk, Segment};
use hv_core::virtio_blk_device::{finish, Backend, BlockDevice, IoError, Op, Parsed, RangeLimits, Request, QUEUE_SIZE, S_IOERR, S_UNSUPP};
use hv_core::virtio_mmio::{Effect, Transport, INT_USED_BUFFER, VirtioDevice};
use hv_core::virtqueue::{Buffer, Buffers, Chain, DeviceQueue};
use super::virtio_mmio::Ram;
use spin::Mutex;

/// How long a notifier waits for the host device to finish with a page before resetting it.
const DMA_WAIT_MS: u64 = 2000;


/// The host disk as the device model's backend (the bounce-buffer path).
struct HostBackend(&'static HostDisk);

impl Backend for HostBackend {
    fn sectors(&self) -> u64 {
        self.0.sectors
    }

    fn read_only(&self) -> bool {
        self.0.read_only
    }

    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), IoError> {
        self.0.blk.lock().read(sector, buf).map_err(|_| IoError)
    }

    fn write(&mut self, sector: u64, data: &[u8]) -> Result<(), IoError> {
        self.0.blk.lock().write(sector, data).map_err(|_| IoError)
    }

    fn flush(&mut self) -> Result<(), IoError> {
        self.0.blk.lock().flush().map_err(|_| IoError)
    }

    fn serial(&self) -> &[u8] {
        self.0.serial.as_bytes()
    }

    fn discard_limits(&self) -> Option<RangeLimits> {
        self.0.discard
    }

    fn write_zeroes_limits(&self) -> Option<RangeLimits> {
        self.0.write_zeroes
    }
}

/// What the guest drives: the transport, the device and its request queue.
struct GuestSide {
    transport: Transport,
    device: BlockDevice<HostBackend>,
    /// The request queue, once the driver made the device live.
    queue: Option<DeviceQueue>,
    /// Requests taken from the queue that the host queue had no room for yet.
    stalled: VecDeque<Chain>,
    /// Counts the device's resets: completions of requests made before one are dropped.
    generation: u64,
    /// The host segments of the request being started, kept for its memory (no allocation
    /// per request).
    segments: Vec<Segment>,
}

/// A request the host device is carrying out.
struct Flying {
    head: u16,
    req: Request,
    generation: u64,
    /// Its pinned guest ranges (`DiskIo::pin`).
    pin: u64,
}

/// The host side: the requests in flight, by host token, and those finished but not yet
/// answered to the guest.
struct IoState {
    flying: Vec<Option<Flying>>,
    done: Vec<(Flying, u8)>,
}

/// The part of a disk the stage-2 notifiers reach: requests in flight and pinned pages.
struct DiskIo {
    host: &'static HostDisk,
    state: Mutex<IoState>,
    /// The guest buffers the host device may be reading or writing (their pages), per
    /// request being started or in flight (by pin number), and the next pin number. Never
    /// held while taking another lock.
    pins: Mutex<(Vec<(u64, Buffers)>, u64)>,
    /// Invalidations that found pinned pages and waited for the device.
    waits: AtomicU64,
}

impl DiskIo {
    /// Whether a pinned buffer's pages overlap `range`.
    fn pinned(&self, range: IpaRange) -> bool {
        // Guest-given: rounding the end up may not wrap (such a buffer fails translation).
        let end = |b: &Buffer| b.addr.saturating_add(b.len as u64).checked_next_multiple_of(PAGE_SIZE).unwrap_or(u64::MAX);
        let pages = |b: &Buffer| IpaRange { start: b.addr & !(PAGE_SIZE - 1), end: end(b) };
        self.pins.lock().0.iter().any(|(_, buffers)| buffers.iter().any(|b| b.len != 0 && pages(b).overlaps(&range)))
    }

    /// Registers the pages of `buffers` as used by the device from now on (a copy of the
    /// list: one memcpy, where a list of page ranges took a pass); their pin number.
    fn pin(&self, buffers: &Buffers) -> u64 {
        let buffers = buffers.clone();
        let mut pins = self.pins.lock();
        let n = pins.1;
        pins.1 += 1;
        pins.0.push((n, buffers));
        n
    }

    fn unpin(&self, pin: u64) {
        let mut pins = self.pins.lock();
        if let Some(i) = pins.0.iter().position(|(n, _)| *n == pin) {
            pins.0.swap_remove(i);
        }
    }

    /// Takes what the host device finished (without touching guest memory: this runs
    /// inside invalidations); unpins its pages.
    fn reap(&self) {
        let mut st = self.state.lock();
        let mut blk = self.host.blk.lock();
        while let Some(r) = blk.reap() {
            match r {
                Reaped::Done(c) => {
                    if let Some(f) = st.flying.get_mut(c.token as usize).and_then(Option::take) {
                        self.unpin(f.pin);
                        let status = match c.status {
                            blk::S_OK => blk::S_OK,
                            S_UNSUPP => S_UNSUPP,
                            _ => S_IOERR,
                        };
                        st.done.push((f, status));
                    }
                }
                Reaped::Reset => self.fail_all(&mut st),
            }
        }
    }

    /// The host device was reset: nothing in flight will complete.
    fn fail_all(&self, st: &mut IoState) {
        for f in st.flying.iter_mut().filter_map(Option::take) {
            self.unpin(f.pin);
            st.done.push((f, S_IOERR));
        }
    }

    /// Waits until no request in flight uses `range` (None: any), reaping; a host device
    /// that takes longer than DMA_WAIT_MS is reset.
    fn wait_idle(&self, range: Option<IpaRange>) {
        let (freq, start) = crate::arch::cpu::counter();
        loop {
            let busy = match range {
                Some(r) => self.pinned(r),
                None => self.state.lock().flying.iter().any(Option::is_some),
            };
            if !busy {
                return;
            }
            self.reap();
            if crate::arch::cpu::counter().1 - start > freq / 1000 * DMA_WAIT_MS {
                log::warn!("disk \"{}\": the host device did not finish in {DMA_WAIT_MS} ms: reset", self.host.serial);
                let mut st = self.state.lock();
                self.host.blk.lock().reset();
                self.fail_all(&mut st);
                return;
            }
            core::hint::spin_loop();
        }
    }
}

impl Notifier for DiskIo {
    fn invalidate_range_start(&self, range: IpaRange, _reason: Reason) {
        // Unmap, teardown and write-protect alike: the device must be done with the pages
        // before the guest loses them (or, for a read in flight, loses write access).
        if self.pinned(range) {
            self.waits.fetch_add(1, Ordering::Relaxed);
            self.wait_idle(Some(range));
        }
    }

    fn invalidate_range_end(&self, _range: IpaRange, _reason: Reason) {}

    fn release(&self) {
        self.wait_idle(None);
    }
}

pub struct GuestDisk {
    /// Its virtio-mmio slot (0..32).
    pub slot: u64,
    pub host: &'static HostDisk,
    guest: Mutex<GuestSide>,
    io: Arc<DiskIo>,
    notifier: NotifierId,
    /// Requests served with the guest's pages, and through the bounce buffer.
    zero_copy: AtomicU64,
    /// The data buffers of the requests served with the guest's pages (how many pieces the
    /// guest's memory gave them: the per-buffer work scales with it).
    buffers: AtomicU64,
    bounced: AtomicU64,
    /// Register accesses (each one an exit of the guest).
    accesses: AtomicU64,
    /// Counter ticks spent starting and completing requests (under `-icount`, the
    /// hypervisor's instructions per request: make bench).
    busy: AtomicU64,
}

/// Requests taken from the queue per notification or completion at most: a driver that
/// keeps adding requests cannot hold its vCPU in the hypervisor for ever.
const REQUESTS_PER_PUMP: usize = QUEUE_SIZE as usize;

/// What starting a request came to.
enum Started {
    /// On its way (or already answered).
    Yes,
    /// The host queue has no room now: retry after completions.
    NoRoom,
}

impl GuestDisk {
    /// `legacy`: the legacy virtio-mmio interface (version 1) instead of the modern one.
    /// Subscribes to `mem`'s stage-2 notifiers.
    pub fn new(slot: u64, host: &'static HostDisk, legacy: bool, mem: &GuestMemory) -> GuestDisk {
        let transport = Transport::new(legacy);
        let guest = GuestSide { transport, device: BlockDevice::new(HostBackend(host)), queue: None, stalled: VecDeque::new(), generation: 0, segments: Vec::new() };
        {
            // A previous owner's requests (a VM rebooting) are over: start clean.
            let mut blk = host.blk.lock();
            if blk.in_flight() != 0 {
                blk.reset();
            }
            while blk.reap().is_some() {}
        }
        let state = IoState { flying: (0..crate::drivers::virtio_blk::MAX_QUEUE_SIZE).map(|_| None).collect(), done: Vec::new() };
        let io = Arc::new(DiskIo { host, state: Mutex::new(state), pins: Mutex::new((Vec::new(), 0)), waits: AtomicU64::new(0) });
        let notifier = mem.space.notifiers.register(io.clone());
        GuestDisk { slot, host, guest: Mutex::new(guest), io, notifier, zero_copy: AtomicU64::new(0), buffers: AtomicU64::new(0), bounced: AtomicU64::new(0), accesses: AtomicU64::new(0), busy: AtomicU64::new(0) }
    }

    /// Calls `f` with its transport and device under its lock: its registers as the
    /// guest's reads see them (the VM's image of them, not counted as accesses).
    pub fn with_registers<R>(&self, f: &mut dyn FnMut(&Transport, &dyn VirtioDevice) -> R) -> R {
        let s = self.guest.lock();
        f(&s.transport, &s.device)
    }

    pub fn read(&self, offset: u64, size: u8) -> u64 {
        self.accesses.fetch_add(1, Ordering::Relaxed);
        let g = self.guest.lock();
        g.transport.read(&g.device, offset, size)
    }

    /// A register write (a queue notification starts requests). Returns the level of the
    /// slot's interrupt line afterwards.
    pub fn write(&self, mem: &GuestMemory, offset: u64, size: u8, value: u64) -> bool {
        self.accesses.fetch_add(1, Ordering::Relaxed);
        let mut g = self.guest.lock();
        let GuestSide { transport, device, queue, .. } = &mut *g;
        match transport.write(device, offset, size, value) {
            Effect::DriverOk => {
                *queue = transport.queue(0).filter(|q| q.ready).map(|q| DeviceQueue::new(q, transport.driver_features()));
            }
            Effect::Reset => {
                // Nothing the old driver asked for may complete into the new one's rings.
                g.generation += 1;
                g.queue = None;
                g.stalled.clear();
                self.io.wait_idle(None);
                self.io.state.lock().done.clear();
            }
            Effect::Notify(0) => {
                let start = crate::arch::cpu::counter().1;
                self.pump(&mut g, mem);
                self.busy.fetch_add(crate::arch::cpu::counter().1 - start, Ordering::Relaxed);
            }
            _ => {}
        }
        g.transport.interrupt_line()
    }

    /// After the host device's interrupt: answers what it finished and starts what waited
    /// for room. Returns the slot's interrupt line if anything changed.
    pub fn complete(&self, mem: &GuestMemory) -> Option<bool> {
        let start = crate::arch::cpu::counter().1;
        let line = self.complete_now(mem);
        self.busy.fetch_add(crate::arch::cpu::counter().1 - start, Ordering::Relaxed);
        line
    }

    fn complete_now(&self, mem: &GuestMemory) -> Option<bool> {
        self.io.reap();
        let mut done = core::mem::take(&mut self.io.state.lock().done);
        let mut g = self.guest.lock();
        if done.is_empty() && g.stalled.is_empty() {
            return None;
        }
        let ram = Ram(mem);
        for (f, status) in done.drain(..) {
            if f.generation == g.generation {
                let len = finish(&f.req, status, &ram);
                self.answer(&mut g, &ram, f.head, len);
            }
        }
        self.pump(&mut g, mem);
        // The list's memory goes back for the next completions (no allocation per request).
        let mut st = self.io.state.lock();
        if st.done.is_empty() {
            st.done = done;
        }
        Some(g.transport.interrupt_line())
    }

    /// Waits until the host device has nothing of this disk's in flight (the VM stops).
    fn quiesce(&self) {
        self.io.wait_idle(None);
    }

    /// Puts a finished request in the used ring (and raises the interrupt if the driver
    /// wants one).
    fn answer(&self, g: &mut GuestSide, ram: &Ram, head: u16, len: u32) {
        let GuestSide { transport, queue, .. } = g;
        let Some(q) = queue else { return };
        match q.push(ram, head, len) {
            Ok(true) => transport.raise(INT_USED_BUFFER),
            Ok(false) => {}
            Err(_) => transport.needs_reset(),
        }
    }

    /// Starts requests: those that waited for room first, then new ones from the queue.
    fn pump(&self, g: &mut GuestSide, mem: &GuestMemory) {
        let ram = Ram(mem);
        for _ in 0..REQUESTS_PER_PUMP {
            let chain = match g.stalled.pop_front() {
                Some(c) => c,
                None => {
                    let Some(q) = &mut g.queue else { return };
                    match q.pop(&ram) {
                        Ok(Some(c)) => c,
                        Ok(None) => return,
                        Err(_) => {
                            g.transport.needs_reset();
                            return;
                        }
                    }
                }
            };
            if let Started::NoRoom = self.start(g, mem, &chain) {
                g.stalled.push_front(chain);
                return;
            }
        }
    }

    fn start(&self, g: &mut GuestSide, mem: &GuestMemory, chain: &Chain) -> Started {
        let ram = Ram(mem);
        let req = match g.device.parse(chain, &ram) {
            Parsed::Answered(len) => {
                self.answer(g, &ram, chain.head, len);
                return Started::Yes;
            }
            Parsed::Io(req) => req,
        };
        let (kind, sector, range) = match req.op {
            Op::Read { sector, .. } => (blk::T_IN, sector, None),
            Op::Write { sector, .. } => (blk::T_OUT, sector, None),
            Op::Flush if !self.host.has_flush => {
                // No volatile cache: nothing to make durable.
                let len = finish(&req, blk::S_OK, &ram);
                self.answer(g, &ram, chain.head, len);
                return Started::Yes;
            }
            Op::Flush => (blk::T_FLUSH, 0, None),
            Op::Discard { sector, sectors } => (blk::T_DISCARD, 0, Some((sector, sectors, 0))),
            Op::WriteZeroes { sector, sectors, unmap } => (blk::T_WRITE_ZEROES, 0, Some((sector, sectors, unmap as u32))),
        };
        let mut segments = core::mem::take(&mut g.segments);
        let started = self.start_io(g, mem, chain, req, (kind, sector, range), &mut segments);
        g.segments = segments;
        started
    }

    /// `start` of a request for the host disk (of `kind`, at `sector`, with `range`), its
    /// host segments built in `segments`.
    fn start_io(&self, g: &mut GuestSide, mem: &GuestMemory, chain: &Chain, req: Request, (kind, sector, range): (u32, u64, Option<(u64, u32, u32)>), segments: &mut Vec<Segment>) -> Started {
        let ram = Ram(mem);
        let pin = match self.pin(mem, &req, segments) {
            Ok(pin) => pin,
            Err(_) => {
                let len = finish(&req, S_IOERR, &ram);
                self.answer(g, &ram, chain.head, len);
                return Started::Yes;
            }
        };
        if segments.len() > self.host.seg_max as usize {
            // More pieces than one host request holds: through the bounce buffer.
            self.io.unpin(pin);
            self.bounced.fetch_add(1, Ordering::Relaxed);
            let status = g.device.execute(&req, &ram);
            let len = finish(&req, status, &ram);
            self.answer(g, &ram, chain.head, len);
            return Started::Yes;
        }
        let mut st = self.io.state.lock();
        let token = self.host.blk.lock().submit(kind, sector, segments, range);
        let Some(token) = token else {
            drop(st);
            self.io.unpin(pin);
            return Started::NoRoom;
        };
        self.zero_copy.fetch_add(1, Ordering::Relaxed);
        self.buffers.fetch_add(req.data.len() as u64, Ordering::Relaxed);
        if let Some(slot) = st.flying.get_mut(token as usize) {
            *slot = Some(Flying { head: chain.head, req, generation: g.generation, pin });
        }
        Started::Yes
    }

    /// Pins the request's buffers (`DiskIo::pin`) and translates them to host frames
    /// (contiguous frames merge into one segment). The pin comes first: an invalidation
    /// that starts later sees it and waits for the device; one already in progress makes
    /// the walk fail (`Contended`), and then the pin is dropped while it finishes and the
    /// walk starts over. Fails for buffers outside what the guest may access (a read needs
    /// pages the guest can write). Returns the pin number.
    fn pin(&self, mem: &GuestMemory, req: &Request, segments: &mut Vec<Segment>) -> Result<u64, AccessError> {
        let device_writes = matches!(req.op, Op::Read { .. });
        segments.clear();
        segments.reserve(req.data.len());
        for _ in 0..PIN_ATTEMPTS {
            let pin = self.io.pin(&req.data);
            let data: &[Buffer] = &req.data;
            let range = |i: usize| (data[i].addr, data[i].len as usize);
            let walked = mem.translate_ranges(data.len(), range, device_writes, |host, n| match segments.last_mut() {
                Some(s) if s.addr + s.len as u64 == host => s.len += n as u32,
                _ => segments.push(Segment { addr: host, len: n as u32, device_writes }),
            });
            match walked {
                Ok(()) => return Ok(pin),
                Err(e) => {
                    self.io.unpin(pin);
                    segments.clear();
                    if e != AccessError::Contended {
                        return Err(e);
                    }
                    mem.wait_invalidations();
                }
            }
        }
        Err(AccessError::Contended)
    }
}

/// Rounds of pinning a request's pages that invalidations may spoil before it fails.
const PIN_ATTEMPTS: usize = 100;

impl GuestDisk {
    /// Requests served with the guest's pages, through the bounce buffer, invalidations
    /// that waited for the device, register accesses, nanoseconds spent starting and
    /// completing requests, and the data buffers of the requests served with the guest's
    /// pages.
    pub fn counts(&self) -> [u64; 6] {
        let freq = crate::arch::cpu::counter().0.max(1);
        let busy_ns = (self.busy.load(Ordering::Relaxed) as u128 * 1_000_000_000 / freq as u128) as u64;
        let [a, b, c, d, e] = [&self.zero_copy, &self.bounced, &self.io.waits, &self.accesses, &self.buffers].map(|c| c.load(Ordering::Relaxed));
        [a, b, c, d, busy_ns, e]
    }

    /// The VM stops: waits for its requests in flight and leaves the notifiers of `mem`.
    pub fn detach(&self, mem: &GuestMemory) {
        self.quiesce();
        mem.space.notifiers.unregister(self.notifier);
    }
}
