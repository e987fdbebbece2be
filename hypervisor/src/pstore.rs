//! The pstore disk: a virtio-blk disk chosen by its serial, holding zones in Linux's
//! pstore/zone format (hv_core::pstore). At boot the records of the previous run are
//! listed (and erased only on request) and never-written zones formatted; afterwards
//! records are written for hypervisor panics (a path that allocates nothing and takes no
//! lock a stopped CPU could hold) and for guests that crash, and the console zone keeps the
//! tail of the hypervisor's console.
//!
//! A record is written data first, then the sector holding its header, then flushed: at
//! most three requests, and an interrupted write leaves every other zone as it was.
//!
//! A disk large enough (hv_core::ramoops_store) also keeps every VM's ramoops region in an
//! area at its end: restored before the VM's first boot, saved (the pages the guest wrote)
//! when it stops or resets.

use crate::boot::host_dt::HostDt;
use crate::console::{self, TAIL_MAX};
use crate::drivers::virtio_blk::{BlkError, VirtioBlk};
use alloc::vec;
use core::cell::UnsafeCell;
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use hv_core::cmdline::PstoreConfig;
use hv_core::cmdline::MAX_VMS;
use hv_core::guest_dt::RamoopsSizes;
use hv_core::pstore::{self, Content, KmsgWriter, Layout, NextRecord, Reason, Ring, Timestamp, Utc, ZoneError, ZoneKind};
use hv_core::ramoops_store::{self as areas, Pages, SaveState, SlotHeader};
use spin::Mutex;

/// How much of a record the hypervisor writes (the rest of a bigger zone stays as it was,
/// beyond the record's datalen).
const RECORD_MAX: usize = 64 << 10;
/// Records from earlier runs listed one per line at boot; beyond, one line says how many.
const LIST_AT_MOST: usize = 3;
/// The part of the console tail that goes into a panic record.
const PANIC_TAIL: usize = 12 << 10;

struct Store {
    disk: VirtioBlk,
    layout: Layout,
    next: NextRecord,
    /// The newest record's time: every new record gets a later one, so that "newest"
    /// (which decides where the next record goes, for Linux too) stays right when records
    /// come within one second of the RTC (the nanoseconds then count records).
    last: Timestamp,
    /// Where the VMs' ramoops areas start, if the disk holds them.
    areas: Option<u64>,
    /// Each VM's next save, once its region was restored or saved.
    ramoops: [Option<SaveState>; MAX_VMS],
    /// How each VM's region is divided (its device tree's ramoops node): saved with it.
    ramoops_sizes: [RamoopsSizes; MAX_VMS],
    /// Each VM's pmsg zone as on the disk, once it was read.
    pmsg: [Option<alloc::vec::Vec<u8>>; MAX_VMS],
}

impl Store {
    fn stamp(&mut self) -> Timestamp {
        let now = Timestamp { sec: rtc_seconds(), nsec: 0 };
        self.last = if now > self.last { now } else { Timestamp { sec: self.last.sec, nsec: self.last.nsec + 1 } };
        self.last
    }
}

static STORE: Mutex<Option<Store>> = Mutex::new(None);
static RTC: AtomicU64 = AtomicU64::new(0);

/// A buffer for building one zone's bytes; used under the STORE lock, or by the panic path
/// once every other CPU is stopped.
struct ZoneBuf(UnsafeCell<[u8; RECORD_MAX]>);
// SAFETY: see `zone_buf`: one user at a time by construction.
unsafe impl Sync for ZoneBuf {}
static ZONE_BUF: ZoneBuf = ZoneBuf(UnsafeCell::new([0; RECORD_MAX]));

/// # Safety
/// The caller holds the STORE lock, or is the panic path with the other CPUs stopped.
#[allow(clippy::mut_from_ref)]
unsafe fn zone_buf() -> &'static mut [u8; RECORD_MAX] {
    // SAFETY: per the function's contract, nobody else uses the buffer now.
    unsafe { &mut *ZONE_BUF.0.get() }
}

/// Counter value when the console zone was last written.
static LAST_SYNC: AtomicU64 = AtomicU64::new(0);
/// The console zone is brought up to date at most this often from idle CPUs.
const SYNC_INTERVAL_MS: u64 = 1000;


/// Wall-clock seconds from the PL031 (0 without one).
fn rtc_seconds() -> i64 {
    let rtc = RTC.load(Ordering::Relaxed);
    // SAFETY: the PL031's data register (offset 0), mapped as device memory at boot.
    if rtc != 0 { unsafe { ((rtc as *const u32).read_volatile()) as i64 } } else { 0 }
}

/// Devices this module drives, for the EL2 tables: the virtio transports and the RTC.
pub fn devices(dt: &HostDt) -> alloc::vec::Vec<hv_core::ranges::Range> {
    let mut v: alloc::vec::Vec<_> = dt.virtio_mmio().into_iter().map(|(r, _)| r).collect();
    v.extend(dt.rtc());
    v
}

/// Finds the pstore disk, lists and formats its zones. No disk: a notice, nothing else.
pub fn init(dt: &HostDt, cfg: &PstoreConfig) {
    if let Some(r) = dt.rtc() {
        RTC.store(r.start, Ordering::Relaxed);
    }
    let serial = core::str::from_utf8(cfg.serial()).unwrap_or("?");
    let found = crate::drivers::disks::probe(&dt.virtio_mmio(), cfg.serial());
    let Some(disk) = found else {
        log::info!("pstore: no virtio-blk disk with serial \"{serial}\": panics are not recorded on disk");
        return;
    };
    let bytes = disk.capacity * 512;
    let area_start = areas::areas_start(bytes);
    let layout = match Layout::new(areas::zone_bytes(bytes), cfg.order, cfg.kmsg_size, cfg.console_size, cfg.pmsg_size) {
        Ok(l) => l,
        Err(e) => {
            log::error!("pstore: disk \"{serial}\" ({} KiB) cannot hold the zones: {e}", bytes >> 10);
            disk.release();
            return;
        }
    };
    let mut store = Store { disk, layout, next: NextRecord::default(), last: Timestamp::default(), areas: area_start, ramoops: [None; MAX_VMS], ramoops_sizes: [RamoopsSizes::DEFAULT; MAX_VMS], pmsg: [const { None }; MAX_VMS] };
    match store.recover(cfg.erase) {
        Ok(()) => {
            log::info!("pstore: disk \"{serial}\" at virtio-mmio {:#x} (v{}), next record in zone {}", store.disk.base, store.disk.version, store.next.zone);
            log::info!(
                "pstore: {} kmsg zones of {} KiB, console {} KiB, pmsg {} KiB, {} order",
                layout.kmsg_count(),
                layout.kmsg_size >> 10,
                layout.console_size >> 10,
                layout.pmsg_size >> 10,
                match layout.order {
                    pstore::Order::KmsgFirst => "kmsg-first",
                    pstore::Order::Linux => "linux",
                }
            );
            log::info!("pstore: Linux reads it with {}", layout.linux_params("/dev/vda"));
            match area_start {
                Some(a) => log::info!(
                    "pstore: the VMs' ramoops regions ({} KiB each) are kept at {:#x}..{:#x}",
                    hv_core::guest_dt::RAMOOPS_SIZE >> 10,
                    a,
                    a + areas::areas_bytes()
                ),
                None => log::info!(
                    "pstore: no room for the VMs' ramoops regions (a disk of at least {} MiB keeps them across power-off)",
                    areas::min_disk().div_ceil(1 << 20)
                ),
            }
            store.list_pmsg();
            *STORE.lock() = Some(store);
        }
        Err(e) => log::error!("pstore: disk error while reading or formatting its zones ({e:?}): not used"),
    }
}

impl Store {
    /// Reads every zone: lists the records, skips (and reports) damaged zones, formats
    /// blank ones, erases on request; picks the next record's zone and counters.
    fn recover(&mut self, erase: bool) -> Result<(), BlkError> {
        let mut disk = vec![0u8; self.layout.total as usize];
        self.disk.read(0, &mut disk)?;
        let mut records = 0;
        let mut blank = alloc::vec::Vec::new();
        let kmsg_records = pstore::scan(&self.layout, &disk).filter(|(_, c)| matches!(c, Ok(Content::Kmsg(_)))).count();
        // Many records: one line for all (the newest named), each at log=debug.
        let one_each = if kmsg_records <= LIST_AT_MOST { log::Level::Info } else { log::Level::Debug };
        let mut newest: Option<(Timestamp, alloc::string::String)> = None;
        for (z, content) in pstore::scan(&self.layout, &disk) {
            let name = (z.kind.name(), z.index);
            match content {
                Ok(Content::Kmsg(r)) => {
                    records += 1;
                    let first = r.text.split(|b| *b == b'\n').next().unwrap_or(&[]);
                    let first = core::str::from_utf8(first).unwrap_or("(not text)");
                    if newest.as_ref().is_none_or(|(t, _)| r.time > *t) {
                        let what = alloc::format!("{}-pstore_blk-{}: {} #{} at {} UTC: {first}", name.0, name.1, r.reason.name(), r.counter, Utc(r.time.sec));
                        newest = Some((r.time, what));
                    }
                    log::log!(
                        one_each,
                        "pstore: found {}-pstore_blk-{}: {} #{} at {} UTC: {}",
                        name.0,
                        name.1,
                        r.reason.name(),
                        r.counter,
                        Utc(r.time.sec),
                        first
                    );
                }
                Ok(Content::Ring(a, b)) => {
                    let text = if b.is_empty() { a } else { b };
                    let last = text.trim_ascii_end().rsplit(|c| *c == b'\n').next().unwrap_or(&[]);
                    log::info!(
                        "pstore: found {}-pstore_blk-{}: {} bytes, ending \"{}\"",
                        name.0,
                        name.1,
                        a.len() + b.len(),
                        core::str::from_utf8(last).unwrap_or("(not text)")
                    );
                }
                Err(ZoneError::Empty) => {}
                Err(ZoneError::BadSignature { .. }) if pstore::is_blank(&disk[z.offset as usize..][..pstore::ZONE_HEADER]) => blank.push(z),
                Err(e) => log::warn!("pstore: {}-pstore_blk-{} at offset {:#x}: skipped: {e}", name.0, name.1, z.offset),
            }
        }
        if let (true, Some((_, what))) = (one_each == log::Level::Debug, &newest) {
            log::info!("pstore: {kmsg_records} records from earlier runs (log=debug lists them), the newest {what}");
        }
        let found = || {
            pstore::scan(&self.layout, &disk).filter_map(|(z, c)| match c {
                Ok(Content::Kmsg(r)) => Some((z.index, r)),
                _ => None,
            })
        };
        self.next = NextRecord::after(self.layout.kmsg_count(), found());
        self.last = found().map(|(_, r)| r.time).max().unwrap_or_default();
        drop(disk);
        let zones: alloc::vec::Vec<_> = if erase { self.layout.zones().collect() } else { blank };
        for z in &zones {
            self.write_empty_header(z.kind, z.offset)?;
        }
        if erase {
            log::info!("pstore: {records} record(s) erased (pstore_erase=on)");
            self.next = NextRecord::default();
        } else if !zones.is_empty() {
            log::info!("pstore: {} blank zone(s) formatted", zones.len());
        }
        self.disk.flush()
    }

    /// Reads each VM's pmsg zone (kept for appending) and lists those with messages.
    fn list_pmsg(&mut self) {
        let Some(base) = self.areas else { return };
        for vm in 0..MAX_VMS {
            let mut zone = vec![0u8; areas::PMSG_ZONE as usize];
            if self.disk.read(areas::pmsg_offset(base, vm) / 512, &mut zone).is_err() {
                continue;
            }
            if let Ok((a, b)) = pstore::decode_ring(ZoneKind::Pmsg, &zone) {
                let text = [a, b].concat();
                let last = text.trim_ascii_end().rsplit(|c| *c == b'\n').next().unwrap_or(&[]);
                if !text.is_empty() {
                    log::info!("pstore: VM {vm} pmsg: {} bytes, ending \"{}\"", text.len(), core::str::from_utf8(last).unwrap_or("(not text)"));
                }
            }
            self.pmsg[vm] = Some(zone);
        }
    }

    fn write_empty_header(&mut self, kind: ZoneKind, offset: u64) -> Result<(), BlkError> {
        let mut sector = [0u8; 512];
        sector[..pstore::ZONE_HEADER].copy_from_slice(&pstore::empty_header(kind));
        self.disk.write(offset / 512, &sector)
    }

    /// Writes the record built in `zone` (its first `len` bytes) into the next kmsg zone:
    /// the sectors after the first, then the first (the header), then a flush.
    fn write_record(&mut self, zone: &[u8]) -> Result<usize, BlkError> {
        let index = self.next.zone;
        let z = self.layout.kmsg_zone(index).ok_or(BlkError::OutOfRange)?;
        let len = zone.len().min(z.size as usize).next_multiple_of(512).min(zone.len());
        let sector = z.offset / 512;
        if len > 512 {
            self.disk.write(sector + 1, &zone[512..len])?;
        }
        self.disk.write(sector, &zone[..512])?;
        self.disk.flush()?;
        self.next.zone = (index + 1) % self.layout.kmsg_count();
        Ok(index)
    }

    /// Builds the console zone from the console's tail in `buf`; the bytes to write.
    fn fill_console(&self, tail: (&[u8], &[u8]), buf: &mut [u8]) -> usize {
        let Some(z) = self.layout.console_zone() else { return 0 };
        let size = (z.size as usize).min(buf.len());
        let mut ring = Ring::new(ZoneKind::Console, &mut buf[..size]);
        ring.append(tail.0);
        ring.append(tail.1);
        size - size % 512
    }

    /// Writes the console zone built by `fill_console` (then flushes).
    fn write_console(&mut self, buf: &[u8], len: usize) -> Result<(), BlkError> {
        let Some(z) = self.layout.console_zone() else { return Ok(()) };
        if len == 0 {
            return Ok(());
        }
        self.disk.write(z.offset / 512, &buf[..len])?;
        self.disk.flush()
    }
}

/// Builds a record's text with `fill` into the zone buffer and writes it (reason Panic).
fn record(store: &mut Store, buf: &mut [u8; RECORD_MAX], fill: impl FnOnce(&mut KmsgWriter)) -> Result<(usize, u32), BlkError> {
    let zone_size = (store.layout.kmsg_size as usize).min(RECORD_MAX);
    let zone = &mut buf[..zone_size];
    zone.fill(0);
    let mut w = KmsgWriter::new(zone);
    fill(&mut w);
    store.next.panic_counter += 1;
    let counter = store.next.panic_counter;
    let time = store.stamp();
    let text = w.finish(time, counter, Reason::Panic);
    let used = (pstore::ZONE_HEADER + pstore::KMSG_HEADER + text).next_multiple_of(512).min(zone_size);
    let index = store.write_record(&buf[..used])?;
    Ok((index, counter))
}

/// A guest crashed (its kernel panicked, it reported a panic, its vectors loop, an
/// SError): a Panic record with the reason and its console's last lines.
pub fn record_guest_crash(vm: usize, reason: fmt::Arguments, console: (&[u8], &[u8])) {
    let mut guard = STORE.lock();
    let Some(store) = guard.as_mut() else { return };
    // SAFETY: we hold the STORE lock.
    let buf = unsafe { zone_buf() };
    let (f, t0) = crate::arch::cpu::counter();
    let result = record(store, buf, |w| {
        let _ = writeln!(w, "VM {vm}: guest crash: {reason}");
        let _ = writeln!(w, "--- VM {vm} console, last lines ---");
        w.push(console.0);
        w.push(console.1);
    });
    let us = (crate::arch::cpu::counter().1 - t0) * 1_000_000 / f.max(1);
    match result {
        Ok((zone, n)) => log::info!("pstore: VM {vm} crash recorded in dmesg-pstore_blk-{zone} (Panic #{n}, {us} us): {reason}"),
        Err(e) => log::error!("pstore: VM {vm} crash not recorded: {e:?}"),
    }
}

/// Why HV_PMSG_WRITE failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PmsgError {
    /// No pstore disk with room for the VMs' areas.
    NoDisk,
    Disk,
}

/// Whether VM `vm` has a pmsg ring: a pstore disk with room for the VMs' areas.
pub fn pmsg_available(vm: usize) -> bool {
    vm < MAX_VMS && STORE.lock().as_ref().is_some_and(|s| s.areas.is_some())
}

/// Appends `bytes` to VM `vm`'s pmsg ring on the disk: the data sectors it touched, then
/// the first sector (the header), then a flush.
pub fn pmsg_write(vm: usize, bytes: &[u8]) -> Result<(), PmsgError> {
    let mut guard = STORE.lock();
    let store = guard.as_mut().ok_or(PmsgError::NoDisk)?;
    let base = store.areas.filter(|_| vm < MAX_VMS).ok_or(PmsgError::NoDisk)?;
    let offset = areas::pmsg_offset(base, vm);
    if store.pmsg[vm].is_none() {
        let mut zone = vec![0u8; areas::PMSG_ZONE as usize];
        store.disk.read(offset / 512, &mut zone).map_err(|_| PmsgError::Disk)?;
        store.pmsg[vm] = Some(zone);
    }
    let Store { disk, pmsg, .. } = store;
    let zone = pmsg[vm].as_mut().ok_or(PmsgError::Disk)?;
    let mut ring = Ring::open(ZoneKind::Pmsg, zone);
    let size = areas::PMSG_ZONE as usize - pstore::ZONE_HEADER;
    let (from, n) = (ring.position(), bytes.len().min(size));
    ring.append(bytes);
    // The zone's bytes holding ring data [from, from + n), wrapping: one or two runs.
    let runs = if from + n <= size { [(from, n), (0, 0)] } else { [(from, size - from), (0, from + n - size)] };
    for (at, len) in runs.into_iter().filter(|(_, len)| *len != 0) {
        let (first, last) = ((pstore::ZONE_HEADER + at) / 512, (pstore::ZONE_HEADER + at + len).div_ceil(512));
        // The first sector goes last, with the header.
        let first = first.max(1);
        if first < last {
            disk.write(offset / 512 + first as u64, &zone[first * 512..last * 512]).map_err(|_| PmsgError::Disk)?;
        }
    }
    disk.write(offset / 512, &zone[..512]).map_err(|_| PmsgError::Disk)?;
    disk.flush().map_err(|_| PmsgError::Disk)
}

/// VM `vm`'s ramoops region as last saved, into `region` (the region's size): the save's
/// generation and time, or None (no disk areas, nothing saved yet, damaged copies, or a
/// copy divided otherwise than `sizes`, the VM's division now: Linux would not find its
/// records there). Either way the VM's saves start from here, divided as `sizes`.
pub fn restore_ramoops(vm: usize, region: &mut [u8], sizes: RamoopsSizes) -> Option<(u64, i64)> {
    let mut guard = STORE.lock();
    let store = guard.as_mut()?;
    let base = store.areas?;
    *store.ramoops_sizes.get_mut(vm)? = sizes;
    let slot = store.ramoops.get_mut(vm)?;
    let mut headers = [None, None];
    for (i, h) in headers.iter_mut().enumerate() {
        let mut sector = [0u8; 512];
        if store.disk.read(areas::slot_offset(base, vm, i) / 512, &mut sector).is_ok() {
            *h = SlotHeader::decode(&sector, vm);
        }
    }
    // Saves from scratch still come after every copy on the disk.
    let on_disk = areas::newest(headers).map(|(i, h)| (i, h.generation));
    // The newest copy whose bytes match its checksum; else the other one.
    for _ in 0..2 {
        let Some((i, h)) = areas::newest(headers) else { break };
        if h.sizes != sizes {
            let z = h.sizes;
            log::warn!(
                "pstore: VM {vm}'s saved ramoops region is divided as ramoops={},{},{},{} (KiB), not as its device tree says now: not restored",
                z.record >> 10,
                z.console >> 10,
                z.ftrace >> 10,
                z.pmsg >> 10
            );
            break;
        }
        let at = (areas::slot_offset(base, vm, i) + areas::SLOT_HEADER) / 512;
        if store.disk.read(at, region).is_ok() && areas::fnv64(region) == h.checksum {
            *slot = Some(SaveState::new(Some((i, &h)), headers[1 - i].map(|o| o.generation)));
            return Some((h.generation, h.saved_at));
        }
        log::warn!("pstore: VM {vm}'s saved ramoops region in slot {i} is damaged: not used");
        headers[i] = None;
    }
    region.fill(0);
    *slot = Some(SaveState::replacing(on_disk));
    None
}

/// Saves VM `vm`'s ramoops region (`region`, of which the guest wrote `written` since the
/// last save): the pages the older copy lacks, then its header, then a flush. Returns
/// (pages written, generation), or None without disk areas or on a disk error (logged).
pub fn save_ramoops(vm: usize, region: &[u8], written: &Pages) -> Option<(usize, u64)> {
    let page = areas::PAGE as usize;
    let mut guard = STORE.lock();
    let store = guard.as_mut()?;
    let result = store.save_region(vm, written, &|p| region.get(p * page..(p + 1) * page));
    if let Err(e) = result {
        log::warn!("pstore: VM {vm}'s ramoops region not saved: {e:?}");
    }
    result.ok().flatten()
}

/// The panic path (after `record_panic`, every other CPU stopped): saves VM `vm`'s region
/// from its host frames (the guest's memory, identity-mapped; 0: a page that left the
/// region, and then nothing is saved). Allocates nothing.
pub fn save_ramoops_at_panic(vm: usize, frames: &[u64; areas::REGION_PAGES], written: &Pages) -> Option<(usize, u64)> {
    if frames.contains(&0) {
        return None;
    }
    let mut guard = STORE.try_lock()?;
    let store = guard.as_mut()?;
    store
        .save_region(vm, written, &|p| {
            // SAFETY: frames[p] is a page of the VM's region, mapped to it when tracking
            // began and not unmapped since (unmapping zeroes its entry); the other CPUs are
            // stopped, so it is not freed while it is read; the hypervisor's memory is
            // identity-mapped.
            frames.get(p).map(|f| unsafe { core::slice::from_raw_parts(*f as *const u8, areas::PAGE as usize) })
        })
        .ok()
        .flatten()
}

impl Store {
    /// Writes the pages of VM `vm`'s region its older slot lacks (`page(i)`: page i's
    /// bytes), then that slot's header, then a flush. Ok(None) without disk areas.
    fn save_region<'a>(&mut self, vm: usize, written: &Pages, page: &dyn Fn(usize) -> Option<&'a [u8]>) -> Result<Option<(usize, u64)>, BlkError> {
        let Some(base) = self.areas else { return Ok(None) };
        let Some(state) = self.ramoops.get_mut(vm) else { return Ok(None) };
        let state = *state.get_or_insert(SaveState::new(None, None));
        let pages = state.to_write(written);
        let slot = areas::slot_offset(base, vm, state.next_slot);
        let mut checksum = areas::FNV_START;
        for p in 0..areas::REGION_PAGES {
            let bytes = page(p).ok_or(BlkError::OutOfRange)?;
            checksum = areas::fnv64_more(checksum, bytes);
            if pages.contains(p) {
                self.disk.write((slot + areas::SLOT_HEADER + p as u64 * areas::PAGE) / 512, bytes)?;
            }
        }
        let header = SlotHeader {
            vm: vm as u32,
            generation: state.generation + 1,
            region_size: hv_core::guest_dt::RAMOOPS_SIZE,
            checksum,
            saved_at: rtc_seconds(),
            changed: *written,
            sizes: self.ramoops_sizes[vm],
        };
        self.disk.write(slot / 512, &header.encode())?;
        self.disk.flush()?;
        let state = self.ramoops[vm].as_mut().ok_or(BlkError::OutOfRange)?;
        state.saved(written);
        Ok(Some((pages.count(), state.generation)))
    }
}

/// The machine stops normally, or a VM did: the console zone gets the console's tail.
pub fn sync() {
    let mut guard = STORE.lock();
    let Some(store) = guard.as_mut() else { return };
    console::take_tail_changed();
    LAST_SYNC.store(crate::arch::cpu::counter().1, Ordering::Relaxed);
    // SAFETY: we hold the STORE lock.
    let buf = unsafe { zone_buf() };
    // Copied out under the tail's lock, written without it: lines logged meanwhile still
    // reach the tail.
    let len = console::with_tail(TAIL_MAX, |tail| store.fill_console(tail, buf));
    if let Err(e) = store.write_console(buf, len) {
        // Once is enough: a disk that fails keeps failing; idle CPUs stop trying.
        if !SYNC_FAILED.swap(true, Ordering::Relaxed) {
            log::warn!("pstore: console zone not written: {e:?}");
        }
    }
}

/// The console zone could not be written: idle CPUs stop trying.
static SYNC_FAILED: AtomicBool = AtomicBool::new(false);

/// A CPU with nothing to run: keeps the console zone close to the console (at most once a
/// second, only if it changed, never waiting for the disk's lock).
pub fn idle_sync() {
    let (freq, now) = crate::arch::cpu::counter();
    if !console::tail_changed()
        || SYNC_FAILED.load(Ordering::Relaxed)
        || now - LAST_SYNC.load(Ordering::Relaxed) < freq / 1000 * SYNC_INTERVAL_MS
    {
        return;
    }
    if STORE.is_locked() {
        return;
    }
    sync();
}

/// Requests and time the last panic record took (for `make bench`).
pub struct PanicCost {
    pub requests: u64,
    pub bytes: usize,
    pub micros: u64,
}

/// The panic path, once every other CPU is stopped (or did not answer in time): a Panic
/// record with the message, the CPU, a frame-pointer backtrace and the console tail, then
/// the console zone. Takes the store even if a stopped CPU (or this one) held its lock.
pub fn record_panic(cpu: usize, message: &dyn fmt::Display, frames: &[u64]) -> Option<PanicCost> {
    if STORE.is_locked() {
        // SAFETY: the other CPUs are stopped; if this CPU held the lock, the code that held
        // it will never run again. The device is reset below before use.
        unsafe { STORE.force_unlock() };
    }
    let mut guard = STORE.try_lock()?;
    let store = guard.as_mut()?;
    // A request may have been in flight when the panic struck: start the device over.
    if !store.disk.reset_for_panic() {
        return None;
    }
    // SAFETY: the other CPUs are stopped and this is the only path running on this one.
    let buf = unsafe { zone_buf() };
    let tail = console::freeze_tail()?;
    let (f, t0) = crate::arch::cpu::counter();
    let before = store.disk.requests;
    let (head, rest) = tail.last(PANIC_TAIL);
    let mut written = 0;
    let result = record(store, buf, |w| {
        let _ = writeln!(w, "hypervisor panic on cpu{cpu}: {message}");
        let _ = write!(w, "backtrace:");
        for pc in frames {
            let _ = write!(w, " {pc:#x}");
        }
        let _ = writeln!(w, "\n--- hypervisor console, last lines ---");
        w.push(head);
        w.push(rest);
        written = pstore::ZONE_HEADER + pstore::KMSG_HEADER + w.text_len();
    });
    let requests = store.disk.requests - before;
    let micros = (crate::arch::cpu::counter().1 - t0) * 1_000_000 / f.max(1);
    let len = store.fill_console(tail.last(TAIL_MAX), buf);
    let _ = store.write_console(buf, len);
    match result {
        Ok(_) => Some(PanicCost { requests, bytes: written, micros }),
        Err(_) => None,
    }
}
