//! Linux's pstore/zone on-disk format (fs/pstore/zone.c), shared by the hypervisor (which
//! writes records at panic and reads them back at boot) and the host tool (which lists
//! them): one implementation of the format.
//!
//! Every zone starts with a 12-byte header: signature (0x43474244 "DBGC" XOR the pstore
//! type), datalen and start (little-endian). Dmesg (kmsg) zones hold one record each: a
//! 40-byte kmsg header (magic, time, compressed, counter, reason) then text. Ring zones
//! (console, pmsg) hold a ring: oldest-to-newest is data[start..datalen] ++ data[..start].
//!
//! Layout ([`Layout`]): Linux puts pmsg, then console, then kmsg zones from offset 0
//! ([`Order::Linux`]). Debian's arm64 kernels build only the kmsg front end, and such a
//! Linux reads the whole disk as kmsg zones; so the default [`Order::KmsgFirst`] puts the
//! kmsg zones first and the console and pmsg zones at the end, each a whole number of kmsg
//! zones long: a kmsg-only Linux sees them as invalid kmsg zones and skips them.
//!
//! Decoding never trusts the disk: every length is checked, garbage gives an error, never
//! a panic.

use core::fmt;

/// "DBGC": the signature of a zone is this XOR its pstore type id.
pub const SIG_BASE: u32 = 0x4347_4244;
pub const ZONE_HEADER: usize = 12;
/// `struct psz_kmsg_header` (timespec64-aligned).
pub const KMSG_HEADER: usize = 40;
pub const KMSG_MAGIC: u32 = 0x4dfc_3ae5;
/// pstore/blk caps the device it uses at 128 MiB.
pub const MAX_TOTAL: u64 = 128 << 20;
pub const SECTOR: u64 = 512;
const ALIGN: u64 = 4096;

/// The pstore front ends whose zones this layout has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZoneKind {
    Dmesg,
    Console,
    Pmsg,
}

impl ZoneKind {
    pub fn type_id(self) -> u32 {
        match self {
            ZoneKind::Dmesg => 0,
            ZoneKind::Console => 2,
            ZoneKind::Pmsg => 7,
        }
    }

    pub fn signature(self) -> u32 {
        SIG_BASE ^ self.type_id()
    }

    /// The /sys/fs/pstore name prefix.
    pub fn name(self) -> &'static str {
        match self {
            ZoneKind::Dmesg => "dmesg",
            ZoneKind::Console => "console",
            ZoneKind::Pmsg => "pmsg",
        }
    }
}

/// kmsg_dump_reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    Undef,
    Panic,
    Oops,
    Emerg,
    Shutdown,
    Other(u32),
}

impl Reason {
    pub fn from_raw(v: u32) -> Reason {
        match v {
            0 => Reason::Undef,
            1 => Reason::Panic,
            2 => Reason::Oops,
            3 => Reason::Emerg,
            4 => Reason::Shutdown,
            v => Reason::Other(v),
        }
    }

    pub fn raw(self) -> u32 {
        match self {
            Reason::Undef => 0,
            Reason::Panic => 1,
            Reason::Oops => 2,
            Reason::Emerg => 3,
            Reason::Shutdown => 4,
            Reason::Other(v) => v,
        }
    }

    /// As Linux names it in /sys/fs/pstore files.
    pub fn name(self) -> &'static str {
        match self {
            Reason::Panic => "Panic",
            Reason::Oops => "Oops",
            Reason::Emerg => "Emergency",
            Reason::Shutdown => "Shutdown",
            _ => "Unknown",
        }
    }
}

/// Where zones go on the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// kmsg zones from offset 0, console and pmsg zones at the end (readable by a Linux
    /// that has only the kmsg front end).
    KmsgFirst,
    /// Linux's order: pmsg, console, kmsg.
    Linux,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayoutError {
    /// A size is not a multiple of 4 KiB.
    Unaligned,
    /// The disk cannot hold one kmsg zone next to the ring zones.
    TooSmall,
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LayoutError::Unaligned => "zone sizes must be multiples of 4 KiB",
            LayoutError::TooSmall => "the disk is too small for one kmsg zone besides the console and pmsg zones",
        })
    }
}

/// One zone's place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Zone {
    pub kind: ZoneKind,
    /// Among the zones of its kind (for the name dmesg-pstore_blk-<index>).
    pub index: usize,
    pub offset: u64,
    pub size: u64,
}

impl Zone {
    pub fn buffer_size(&self) -> usize {
        self.size as usize - ZONE_HEADER
    }
}

/// The zones of a pstore disk. The reader must use exactly the writer's sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub order: Order,
    /// Bytes used: the disk size capped at 128 MiB, rounded down to 4 KiB.
    pub total: u64,
    pub kmsg_size: u64,
    pub console_size: u64,
    pub pmsg_size: u64,
}

impl Layout {
    /// Defaults: 64 KiB kmsg zones (Debian's CONFIG_PSTORE_BLK_KMSG_SIZE), a 64 KiB console
    /// zone and a 64 KiB pmsg zone, kmsg first.
    pub const DEFAULT_KMSG: u64 = 64 << 10;
    pub const DEFAULT_CONSOLE: u64 = 64 << 10;
    pub const DEFAULT_PMSG: u64 = 64 << 10;

    pub fn new(disk_bytes: u64, order: Order, kmsg_size: u64, console_size: u64, pmsg_size: u64) -> Result<Layout, LayoutError> {
        if [kmsg_size, console_size, pmsg_size].iter().any(|s| s % ALIGN != 0) || kmsg_size == 0 {
            return Err(LayoutError::Unaligned);
        }
        let total = disk_bytes.min(MAX_TOTAL) & !(ALIGN - 1);
        let (console_size, pmsg_size) = match order {
            // Whole kmsg zones, so a kmsg-only reader's zone grid is not disturbed.
            Order::KmsgFirst => (console_size.next_multiple_of(kmsg_size), pmsg_size.next_multiple_of(kmsg_size)),
            Order::Linux => (console_size, pmsg_size),
        };
        let rings = console_size.checked_add(pmsg_size).ok_or(LayoutError::TooSmall)?;
        if total < rings || (total - rings) / kmsg_size == 0 {
            return Err(LayoutError::TooSmall);
        }
        Ok(Layout { order, total, kmsg_size, console_size, pmsg_size })
    }

    pub fn kmsg_count(&self) -> usize {
        ((self.total - self.console_size - self.pmsg_size) / self.kmsg_size) as usize
    }

    /// The zones in disk order.
    pub fn zones(&self) -> impl Iterator<Item = Zone> + '_ {
        let n = self.kmsg_count();
        let kmsg_bytes = n as u64 * self.kmsg_size;
        let (kmsg_at, console_at, pmsg_at) = match self.order {
            Order::KmsgFirst => (0, kmsg_bytes, kmsg_bytes + self.console_size),
            Order::Linux => (self.pmsg_size + self.console_size, self.pmsg_size, 0),
        };
        let rings = [
            (ZoneKind::Pmsg, pmsg_at, self.pmsg_size),
            (ZoneKind::Console, console_at, self.console_size),
        ];
        let kmsg = (0..n).map(move |i| Zone { kind: ZoneKind::Dmesg, index: i, offset: kmsg_at + i as u64 * self.kmsg_size, size: self.kmsg_size });
        rings.into_iter().filter(|r| r.2 > 0).map(|(kind, offset, size)| Zone { kind, index: 0, offset, size }).chain(kmsg)
    }

    pub fn kmsg_zone(&self, index: usize) -> Option<Zone> {
        self.zones().find(|z| z.kind == ZoneKind::Dmesg && z.index == index)
    }

    pub fn console_zone(&self) -> Option<Zone> {
        self.zones().find(|z| z.kind == ZoneKind::Console)
    }

    /// The module parameters that make Linux's pstore/blk read this disk (`blkdev` is the
    /// guest's name for it).
    pub fn linux_params<'a>(&self, blkdev: &'a str) -> LinuxParams<'a> {
        LinuxParams { layout: *self, blkdev }
    }
}

/// Displays `pstore_blk.blkdev=... pstore_blk.kmsg_size=...` for a kernel command line.
pub struct LinuxParams<'a> {
    layout: Layout,
    blkdev: &'a str,
}

impl fmt::Display for LinuxParams<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let l = &self.layout;
        write!(f, "pstore_blk.blkdev={} pstore_blk.kmsg_size={} pstore_blk.best_effort=y", self.blkdev, l.kmsg_size >> 10)?;
        match l.order {
            // The ring zones look like invalid kmsg zones: Linux must not look for its own.
            Order::KmsgFirst => write!(f, " pstore_blk.pmsg_size=0 pstore_blk.console_size=0"),
            Order::Linux => write!(f, " pstore_blk.pmsg_size={} pstore_blk.console_size={}", l.pmsg_size >> 10, l.console_size >> 10),
        }
    }
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3], b[at + 4], b[at + 5], b[at + 6], b[at + 7]])
}

/// Time of a record (CLOCK_REALTIME).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp {
    pub sec: i64,
    pub nsec: u64,
}

/// What was wrong with a zone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZoneError {
    /// Shorter than its header.
    Truncated,
    /// Not this kind's signature (never written, or something else).
    BadSignature { found: u32 },
    /// datalen or start beyond the buffer, or negative.
    BadLength { datalen: i32, start: i32 },
    /// A kmsg zone whose kmsg header is missing or has the wrong magic.
    BadKmsgHeader,
    /// Erased / nothing stored.
    Empty,
}

impl fmt::Display for ZoneError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ZoneError::Truncated => f.write_str("truncated zone"),
            ZoneError::BadSignature { found } => write!(f, "bad signature {found:#010x}"),
            ZoneError::BadLength { datalen, start } => write!(f, "lengths out of range (datalen {datalen}, start {start})"),
            ZoneError::BadKmsgHeader => f.write_str("bad kmsg header"),
            ZoneError::Empty => f.write_str("empty"),
        }
    }
}

/// A record found in a dmesg zone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KmsgRecord<'a> {
    pub time: Timestamp,
    pub compressed: bool,
    pub counter: u32,
    pub reason: Reason,
    pub text: &'a [u8],
}

/// The (datalen, start) of a zone whose signature matches `kind`, checked against its size.
fn zone_header(kind: ZoneKind, zone: &[u8]) -> Result<(usize, usize), ZoneError> {
    if zone.len() < ZONE_HEADER {
        return Err(ZoneError::Truncated);
    }
    let sig = le32(zone, 0);
    if sig != kind.signature() {
        return Err(ZoneError::BadSignature { found: sig });
    }
    let (datalen, start) = (le32(zone, 4) as i32, le32(zone, 8) as i32);
    let buffer = zone.len() - ZONE_HEADER;
    if datalen < 0 || start < 0 || datalen as usize > buffer || start as usize > buffer {
        return Err(ZoneError::BadLength { datalen, start });
    }
    if datalen == 0 {
        return Err(ZoneError::Empty);
    }
    Ok((datalen as usize, start as usize))
}

/// Reads the record of a dmesg zone (`zone` is the whole zone).
pub fn decode_kmsg(zone: &[u8]) -> Result<KmsgRecord<'_>, ZoneError> {
    let (datalen, _) = zone_header(ZoneKind::Dmesg, zone)?;
    if datalen < KMSG_HEADER {
        return Err(ZoneError::BadKmsgHeader);
    }
    let h = &zone[ZONE_HEADER..];
    if le32(h, 0) != KMSG_MAGIC {
        return Err(ZoneError::BadKmsgHeader);
    }
    Ok(KmsgRecord {
        time: Timestamp { sec: le64(h, 8) as i64, nsec: le64(h, 16) },
        compressed: h[24] != 0,
        counter: le32(h, 28),
        reason: Reason::from_raw(le32(h, 32)),
        text: &h[KMSG_HEADER..datalen],
    })
}

/// Reads a ring zone: its content oldest first, as two slices.
pub fn decode_ring(kind: ZoneKind, zone: &[u8]) -> Result<(&[u8], &[u8]), ZoneError> {
    let (datalen, start) = zone_header(kind, zone)?;
    let data = &zone[ZONE_HEADER..];
    if start > datalen {
        return Err(ZoneError::BadLength { datalen: datalen as i32, start: start as i32 });
    }
    Ok((&data[start..datalen], &data[..start]))
}

/// Writes a kmsg record into `zone` (the whole zone's bytes): header, kmsg header, then as
/// much of `text` as fits. No allocation: usable at panic time. Returns the text bytes
/// stored.
pub fn encode_kmsg(zone: &mut [u8], time: Timestamp, counter: u32, reason: Reason, text: &[&[u8]]) -> usize {
    let mut w = KmsgWriter::new(zone);
    for part in text {
        w.push(part);
    }
    w.finish(time, counter, reason)
}

/// Builds a kmsg record in place, text first, header last.
pub struct KmsgWriter<'a> {
    zone: &'a mut [u8],
    len: usize,
}

impl<'a> KmsgWriter<'a> {
    /// The zone must hold at least both headers.
    pub fn new(zone: &'a mut [u8]) -> KmsgWriter<'a> {
        KmsgWriter { zone, len: 0 }
    }

    fn room(&self) -> usize {
        self.zone.len().saturating_sub(ZONE_HEADER + KMSG_HEADER + self.len)
    }

    /// Appends what fits of `bytes`; whether all of it did.
    pub fn push(&mut self, bytes: &[u8]) -> bool {
        let n = bytes.len().min(self.room());
        if n == 0 {
            return bytes.is_empty();
        }
        let at = ZONE_HEADER + KMSG_HEADER + self.len;
        self.zone[at..at + n].copy_from_slice(&bytes[..n]);
        self.len += n;
        n == bytes.len()
    }

    pub fn text_len(&self) -> usize {
        self.len
    }

    /// Writes both headers; returns the text length.
    pub fn finish(self, time: Timestamp, counter: u32, reason: Reason) -> usize {
        if self.zone.len() < ZONE_HEADER + KMSG_HEADER {
            return 0;
        }
        let z = &mut *self.zone;
        z[0..4].copy_from_slice(&ZoneKind::Dmesg.signature().to_le_bytes());
        z[4..8].copy_from_slice(&((KMSG_HEADER + self.len) as u32).to_le_bytes());
        z[8..12].copy_from_slice(&0u32.to_le_bytes());
        let h = &mut z[ZONE_HEADER..ZONE_HEADER + KMSG_HEADER];
        h.fill(0);
        h[0..4].copy_from_slice(&KMSG_MAGIC.to_le_bytes());
        h[8..16].copy_from_slice(&time.sec.to_le_bytes());
        h[16..24].copy_from_slice(&time.nsec.to_le_bytes());
        h[28..32].copy_from_slice(&counter.to_le_bytes());
        h[32..36].copy_from_slice(&reason.raw().to_le_bytes());
        self.len
    }
}

impl fmt::Write for KmsgWriter<'_> {
    /// Text beyond the zone is dropped, never an error (the record keeps what fits).
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.push(s.as_bytes());
        Ok(())
    }
}

/// A ring zone kept in memory (the whole zone, header included) and appended to, as
/// Linux's console and pmsg zones are: once full, new bytes overwrite the oldest.
pub struct Ring<'a> {
    zone: &'a mut [u8],
}

impl<'a> Ring<'a> {
    /// Takes over `zone`, empty, for `kind`.
    pub fn new(kind: ZoneKind, zone: &'a mut [u8]) -> Ring<'a> {
        zone.fill(0);
        if zone.len() >= ZONE_HEADER {
            zone[0..4].copy_from_slice(&kind.signature().to_le_bytes());
        }
        Ring { zone }
    }

    /// Takes over `zone` holding a ring of `kind` to append to, or formats it empty if it
    /// holds none (blank, damaged, another kind).
    pub fn open(kind: ZoneKind, zone: &'a mut [u8]) -> Ring<'a> {
        match decode_ring(kind, zone) {
            Ok(_) | Err(ZoneError::Empty) if zone.len() >= ZONE_HEADER && le32(zone, 0) == kind.signature() => Ring { zone },
            _ => Ring::new(kind, zone),
        }
    }

    /// Where the next byte goes, in the ring's data.
    pub fn position(&self) -> usize {
        self.get(8)
    }

    fn get(&self, at: usize) -> usize {
        le32(self.zone, at) as usize
    }

    fn set(&mut self, at: usize, v: usize) {
        self.zone[at..at + 4].copy_from_slice(&(v as u32).to_le_bytes());
    }

    pub fn append(&mut self, mut bytes: &[u8]) {
        let size = self.zone.len().saturating_sub(ZONE_HEADER);
        if size == 0 {
            return;
        }
        if bytes.len() > size {
            bytes = &bytes[bytes.len() - size..];
        }
        let (mut datalen, mut start) = (self.get(4), self.get(8));
        while !bytes.is_empty() {
            let n = bytes.len().min(size - start);
            self.zone[ZONE_HEADER + start..ZONE_HEADER + start + n].copy_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            start = (start + n) % size;
            datalen = (datalen + n).min(size);
        }
        self.set(4, datalen);
        self.set(8, start);
    }

    pub fn bytes(&self) -> &[u8] {
        self.zone
    }
}

/// Which dmesg zone Linux (and the hypervisor) writes next, and the counter per reason to
/// continue from, given what recovery found: after the newest (largest time, ties: higher
/// index), wrapping.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NextRecord {
    pub zone: usize,
    pub panic_counter: u32,
    pub oops_counter: u32,
}

impl NextRecord {
    /// `found` yields (zone index, record) for every valid dmesg zone.
    pub fn after<'a>(count: usize, found: impl IntoIterator<Item = (usize, KmsgRecord<'a>)>) -> NextRecord {
        let mut next = NextRecord::default();
        let mut newest: Option<(Timestamp, usize)> = None;
        for (i, r) in found {
            if newest.is_none_or(|(t, j)| (r.time, i) >= (t, j)) {
                newest = Some((r.time, i));
            }
            match r.reason {
                Reason::Panic => next.panic_counter = next.panic_counter.max(r.counter),
                Reason::Oops => next.oops_counter = next.oops_counter.max(r.counter),
                _ => {}
            }
        }
        next.zone = match newest {
            Some((_, i)) if count > 0 => (i + 1) % count,
            _ => 0,
        };
        next
    }
}

/// What a zone holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Content<'a> {
    Kmsg(KmsgRecord<'a>),
    /// A ring's bytes, oldest first, in two parts.
    Ring(&'a [u8], &'a [u8]),
}

/// Every zone of `layout` in `disk` (the disk's first bytes; zones beyond it are
/// Truncated) with what it holds or why it holds nothing usable.
pub fn scan<'a>(layout: &'a Layout, disk: &'a [u8]) -> impl Iterator<Item = (Zone, Result<Content<'a>, ZoneError>)> + 'a {
    layout.zones().map(move |z| {
        let bytes = usize::try_from(z.offset)
            .ok()
            .and_then(|s| Some((s, s.checked_add(z.size as usize)?)))
            .and_then(|(s, e)| disk.get(s..e));
        let content = match bytes {
            None => Err(ZoneError::Truncated),
            Some(b) => match z.kind {
                ZoneKind::Dmesg => decode_kmsg(b).map(Content::Kmsg),
                kind => decode_ring(kind, b).map(|(x, y)| Content::Ring(x, y)),
            },
        };
        (z, content)
    })
}

/// A zone never written (all zero): formatting it (an empty header) loses nothing.
pub fn is_blank(zone_header: &[u8]) -> bool {
    zone_header.iter().all(|b| *b == 0)
}

/// The header of an empty zone of `kind`: its signature, datalen 0, start 0.
pub fn empty_header(kind: ZoneKind) -> [u8; ZONE_HEADER] {
    let mut h = [0; ZONE_HEADER];
    h[0..4].copy_from_slice(&kind.signature().to_le_bytes());
    h
}

/// Seconds since 1970 as a UTC date and time "YYYY-MM-DD hh:mm:ss" (for listings).
pub struct Utc(pub i64);

impl fmt::Display for Utc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let days = self.0.div_euclid(86_400);
        let secs = self.0.rem_euclid(86_400);
        // Howard Hinnant's days-to-civil.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        let y = yoe + era * 400 + (m <= 2) as i64;
        write!(f, "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;
    use std::vec::Vec;

    const KIB: u64 = 1024;

    #[test]
    fn default_layout_keeps_linuxs_kmsg_grid() {
        let l = Layout::new(1 << 20, Order::KmsgFirst, Layout::DEFAULT_KMSG, Layout::DEFAULT_CONSOLE, Layout::DEFAULT_PMSG).unwrap();
        assert_eq!(l.kmsg_count(), 14);
        let zones: Vec<Zone> = l.zones().collect();
        assert_eq!(zones.len(), 16);
        // Every zone sits on the 64 KiB grid a kmsg-only Linux reads.
        assert!(zones.iter().all(|z| z.offset % (64 * KIB) == 0 && z.size % (64 * KIB) == 0));
        assert_eq!(l.kmsg_zone(0).unwrap().offset, 0);
        assert_eq!(l.console_zone().unwrap().offset, 14 * 64 * KIB);
        assert_eq!(zones.iter().find(|z| z.kind == ZoneKind::Pmsg).unwrap().offset, 15 * 64 * KIB);
        assert_eq!(
            std::format!("{}", l.linux_params("/dev/vda")),
            "pstore_blk.blkdev=/dev/vda pstore_blk.kmsg_size=64 pstore_blk.best_effort=y pstore_blk.pmsg_size=0 pstore_blk.console_size=0"
        );
    }

    #[test]
    fn linux_order_is_pmsg_console_then_kmsg() {
        let l = Layout::new((1 << 20) + 100, Order::Linux, 32 * KIB, 8 * KIB, 4 * KIB).unwrap();
        assert_eq!(l.total, 1 << 20);
        let z: Vec<(ZoneKind, u64, u64)> = l.zones().map(|z| (z.kind, z.offset, z.size)).take(3).collect();
        assert_eq!(z, [(ZoneKind::Pmsg, 0, 4 * KIB), (ZoneKind::Console, 4 * KIB, 8 * KIB), (ZoneKind::Dmesg, 12 * KIB, 32 * KIB)]);
        assert_eq!(l.kmsg_count(), ((1 << 20) - 12 * KIB as usize) / (32 * KIB as usize));
        assert!(std::format!("{}", l.linux_params("/dev/vdb")).ends_with("pmsg_size=4 pstore_blk.console_size=8"));
        assert_eq!(Layout::new(200 << 20, Order::Linux, 64 * KIB, 0, 0).unwrap().total, MAX_TOTAL);
    }

    #[test]
    fn bad_layouts_are_refused() {
        assert_eq!(Layout::new(1 << 20, Order::KmsgFirst, 1000, 0, 0), Err(LayoutError::Unaligned));
        assert_eq!(Layout::new(1 << 20, Order::KmsgFirst, 0, 0, 0), Err(LayoutError::Unaligned));
        assert_eq!(Layout::new(64 * KIB, Order::KmsgFirst, 64 * KIB, 64 * KIB, 0), Err(LayoutError::TooSmall));
        assert_eq!(Layout::new(4096, Order::Linux, 64 * KIB, 0, 0), Err(LayoutError::TooSmall));
        assert_eq!(Layout::new(1 << 20, Order::Linux, 64 * KIB, u64::MAX & !4095, 4096), Err(LayoutError::TooSmall));
    }

    #[test]
    fn kmsg_record_round_trip_matches_linuxs_offsets() {
        let mut zone = vec![0xaau8; 4096];
        let t = Timestamp { sec: 1_790_000_000, nsec: 123 };
        let n = encode_kmsg(&mut zone, t, 3, Reason::Panic, &[b"hypervisor panic: ", b"oops\n"]);
        assert_eq!(n, 23);
        // Zone offsets from REFERENCE.md A.
        assert_eq!(le32(&zone, 0), 0x4347_4244);
        assert_eq!(le32(&zone, 4), 40 + 23);
        assert_eq!(le32(&zone, 12), KMSG_MAGIC);
        assert_eq!(le64(&zone, 20), 1_790_000_000);
        assert_eq!(le64(&zone, 28), 123);
        assert_eq!(zone[36], 0);
        assert_eq!(le32(&zone, 40), 3);
        assert_eq!(le32(&zone, 44), 1);
        assert_eq!(&zone[52..52 + 23], b"hypervisor panic: oops\n");
        let r = decode_kmsg(&zone).unwrap();
        assert_eq!((r.time, r.counter, r.reason, r.compressed, r.text), (t, 3, Reason::Panic, false, &b"hypervisor panic: oops\n"[..]));
    }

    #[test]
    fn text_beyond_the_zone_is_cut_not_overflowed() {
        let mut zone = vec![0u8; 100];
        let long = [b'x'; 500];
        assert_eq!(encode_kmsg(&mut zone, Timestamp::default(), 1, Reason::Oops, &[&long]), 100 - 52);
        assert_eq!(decode_kmsg(&zone).unwrap().text.len(), 48);
        let mut tiny = vec![0u8; 20];
        assert_eq!(encode_kmsg(&mut tiny, Timestamp::default(), 1, Reason::Oops, &[b"x"]), 0);
    }

    #[test]
    fn ring_wraps_like_linuxs_console_zone() {
        let mut zone = vec![0u8; ZONE_HEADER + 8];
        let mut r = Ring::new(ZoneKind::Console, &mut zone);
        r.append(b"abc");
        let (a, b) = decode_ring(ZoneKind::Console, r.bytes()).unwrap();
        assert_eq!([a, b].concat(), b"abc");
        assert_eq!((le32(r.bytes(), 4), le32(r.bytes(), 8)), (3, 3), "before wrap start == datalen");
        r.append(b"defghij");
        let (a, b) = decode_ring(ZoneKind::Console, r.bytes()).unwrap();
        assert_eq!([a, b].concat(), b"cdefghij");
        assert_eq!((le32(r.bytes(), 4), le32(r.bytes(), 8)), (8, 2), "after wrap datalen == buffer size");
        r.append(b"0123456789abc");
        let (a, b) = decode_ring(ZoneKind::Console, r.bytes()).unwrap();
        assert_eq!([a, b].concat(), b"56789abc", "longer than the ring: its last 8 bytes");
        // A pmsg zone is the same ring with its own signature.
        let mut pz = vec![0u8; ZONE_HEADER + 16];
        let mut p = Ring::new(ZoneKind::Pmsg, &mut pz);
        p.append(b"user message");
        assert_eq!(le32(p.bytes(), 0), 0x4347_4243);
        let (a, b) = decode_ring(ZoneKind::Pmsg, p.bytes()).unwrap();
        assert_eq!([a, b].concat(), b"user message");
        // The wrong kind's signature is refused.
        assert!(matches!(decode_ring(ZoneKind::Pmsg, r.bytes()), Err(ZoneError::BadSignature { .. })));
    }

    #[test]
    fn next_record_follows_the_newest_and_continues_counters() {
        let mut zones = vec![vec![0u8; 256]; 4];
        for (i, (sec, counter)) in [(100, 1), (300, 2), (200, 5)].iter().enumerate() {
            encode_kmsg(&mut zones[i], Timestamp { sec: *sec, nsec: 0 }, *counter, Reason::Panic, &[b"x"]);
        }
        let found = zones.iter().enumerate().filter_map(|(i, z)| decode_kmsg(z).ok().map(|r| (i, r)));
        assert_eq!(NextRecord::after(4, found), NextRecord { zone: 2, panic_counter: 5, oops_counter: 0 });
        assert_eq!(NextRecord::after(4, []), NextRecord::default());
        // Newest in the last zone wraps to 0.
        encode_kmsg(&mut zones[3], Timestamp { sec: 999, nsec: 0 }, 1, Reason::Oops, &[b"y"]);
        let found = zones.iter().enumerate().filter_map(|(i, z)| decode_kmsg(z).ok().map(|r| (i, r)));
        assert_eq!(NextRecord::after(4, found).zone, 0);
    }

    #[test]
    fn scan_reports_every_zone() {
        let l = Layout::new(256 * KIB, Order::KmsgFirst, 64 * KIB, 64 * KIB, 0).unwrap();
        let mut disk = vec![0u8; 256 * KIB as usize];
        encode_kmsg(&mut disk[64 * KIB as usize..128 * KIB as usize], Timestamp { sec: 1, nsec: 0 }, 1, Reason::Panic, &[b"p"]);
        disk[..ZONE_HEADER].copy_from_slice(&empty_header(ZoneKind::Dmesg));
        Ring::new(ZoneKind::Console, &mut disk[192 * KIB as usize..]).append(b"log");
        let found: Vec<(ZoneKind, usize, bool)> = scan(&l, &disk).map(|(z, c)| (z.kind, z.index, c.is_ok())).collect();
        assert_eq!(found, [(ZoneKind::Console, 0, true), (ZoneKind::Dmesg, 0, false), (ZoneKind::Dmesg, 1, true), (ZoneKind::Dmesg, 2, false)]);
        assert!(matches!(scan(&l, &disk).nth(1).unwrap().1, Err(ZoneError::Empty)));
        assert!(matches!(scan(&l, &disk[..100]).nth(2).unwrap().1, Err(ZoneError::Truncated)));
        assert!(is_blank(&disk[128 * KIB as usize..][..ZONE_HEADER]));
    }

    #[test]
    fn dates() {
        assert_eq!(std::format!("{}", Utc(0)), "1970-01-01 00:00:00");
        assert_eq!(std::format!("{}", Utc(1_795_000_000)), "2026-11-18 11:06:40");
        assert_eq!(std::format!("{}", Utc(951_782_400)), "2000-02-29 00:00:00");
    }

    /// Thousands of corrupted zones of every kind: every decode answers, none panics.
    #[test]
    fn garbage_never_panics() {
        let mut r = crate::rng::Rng::new(0xdead_beef_1234_5678);
        let mut next = || r.next();
        let mut good = vec![0u8; 512];
        encode_kmsg(&mut good, Timestamp { sec: 5, nsec: 6 }, 1, Reason::Panic, &[b"valid record text"]);
        let mut ring_zone = vec![0u8; 128];
        Ring::new(ZoneKind::Console, &mut ring_zone).append(&[b'r'; 300]);
        let (mut ok, mut errors) = (0, 0);
        for case in 0..crate::fuzz_tests::iters(20_000) {
            let base = if case % 2 == 0 { &good } else { &ring_zone };
            let len = if case % 3 == 0 { (next() % (base.len() as u64 + 1)) as usize } else { base.len() };
            let mut z = base[..len].to_vec();
            match case % 4 {
                0 => z.iter_mut().for_each(|b| *b = next() as u8),
                1 => {
                    for _ in 0..1 + next() % 4 {
                        if !z.is_empty() {
                            let i = (next() % z.len() as u64) as usize;
                            z[i] ^= 1 << (next() % 8);
                        }
                    }
                }
                2 if z.len() >= 12 => {
                    // Lengths at their edges: negative, huge, one past the end.
                    let v = [u32::MAX, 0x8000_0000, z.len() as u32 - 11, z.len() as u32, next() as u32][(next() % 5) as usize];
                    let at = [4, 8][(next() % 2) as usize];
                    z[at..at + 4].copy_from_slice(&v.to_le_bytes());
                }
                _ => {}
            }
            for r in [decode_kmsg(&z).map(|r| r.text.len()), decode_ring(ZoneKind::Console, &z).map(|(a, b)| a.len() + b.len()), decode_ring(ZoneKind::Pmsg, &z).map(|(a, _)| a.len())] {
                match r {
                    Ok(n) => {
                        assert!(n <= z.len());
                        ok += 1;
                    }
                    Err(_) => errors += 1,
                }
            }
        }
        assert!(ok > 1000 && errors > 10_000, "both outcomes exercised: {ok} ok, {errors} errors");
    }

    #[test]
    fn a_ring_reopened_keeps_its_bytes_and_wraps() {
        let mut zone = std::vec![0xaau8; ZONE_HEADER + 100];
        Ring::open(ZoneKind::Pmsg, &mut zone).append(b"first ");
        let text = |kind, zone: &[u8]| decode_ring(kind, zone).map(|(a, b)| [a, b].concat());
        assert_eq!(text(ZoneKind::Pmsg, &zone), Ok(b"first ".to_vec()), "garbage formatted, then appended");
        let mut r = Ring::open(ZoneKind::Pmsg, &mut zone);
        assert_eq!(r.position(), 6);
        r.append(&[b'x'; 120]);
        assert_eq!(text(ZoneKind::Pmsg, &zone), Ok(std::vec![b'x'; 100]), "the newest 100 bytes");
        // Another kind's zone is not appended to: it is taken over, empty.
        Ring::open(ZoneKind::Console, &mut zone).append(b"c");
        assert_eq!(text(ZoneKind::Console, &zone), Ok(b"c".to_vec()));
    }
}
