//! Lists and prints the records of a pstore disk image, like reading /sys/fs/pstore, with
//! the format code the hypervisor writes them with (hv_core::pstore), then each VM's
//! persistent messages (vm<N>-pmsg-0, HV_PMSG_WRITE) and ramoops records from the regions
//! the hypervisor saved for them (vm<N>-dmesg-ramoops-<i>, hv_core::ramoops_store).
//!
//! usage: pstore-tool [--json] [--list] [--order kmsg-first|linux] [--kmsg-size KIB]
//!                    [--console-size KIB] [--pmsg-size KIB] DISK
//!
//! The sizes must be the writer's (the hypervisor's defaults unless told otherwise). Times
//! are UTC. Exit status: 0 records listed (or none; also when the reader of the output went
//! away, as `head` does), 1 not a pstore disk or unreadable, 2 bad usage.

use hv_core::pstore::{scan, Content, Layout, Order, Utc, ZoneError, ZoneKind};
use hv_core::ramoops_store;
use std::fmt::Write as _;
use std::io::Write as _;
use std::process::ExitCode;

/// `--help` (not an error: usage on stdout, status 0).
const HELP: &str = "help";

const USAGE: &str = "usage: pstore-tool [--json] [--list] [--order kmsg-first|linux] [--kmsg-size KIB] [--console-size KIB] [--pmsg-size KIB] DISK";

struct Options {
    json: bool,
    list: bool,
    order: Order,
    kmsg: u64,
    console: u64,
    pmsg: u64,
    disk: String,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        json: false,
        list: false,
        order: Order::KmsgFirst,
        kmsg: Layout::DEFAULT_KMSG,
        console: Layout::DEFAULT_CONSOLE,
        pmsg: Layout::DEFAULT_PMSG,
        disk: String::new(),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut kib = |name: &str| -> Result<u64, String> {
            let v = it.next().ok_or(format!("{name} needs a value"))?;
            v.parse::<u64>().ok().and_then(|k| k.checked_mul(1024)).ok_or(format!("{name}: not a size in KiB: {v}"))
        };
        match a.as_str() {
            "--json" => o.json = true,
            "--list" => o.list = true,
            "--kmsg-size" => o.kmsg = kib(a)?,
            "--console-size" => o.console = kib(a)?,
            "--pmsg-size" => o.pmsg = kib(a)?,
            "--order" => {
                o.order = match it.next().map(String::as_str) {
                    Some("kmsg-first") => Order::KmsgFirst,
                    Some("linux") => Order::Linux,
                    _ => return Err("--order takes kmsg-first or linux".into()),
                }
            }
            "-h" | "--help" => return Err(HELP.into()),
            s if s.starts_with('-') => return Err(format!("unknown option {s}")),
            s if o.disk.is_empty() => o.disk = s.to_string(),
            s => return Err(format!("one disk only (also got {s})")),
        }
    }
    if o.disk.is_empty() {
        return Err("no disk image given".into());
    }
    Ok(o)
}

/// A JSON string literal.
fn json_str(bytes: &[u8]) -> String {
    let mut s = String::from("\"");
    for c in String::from_utf8_lossy(bytes).chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            c if (c as u32) < 0x20 => {
                let _ = write!(s, "\\u{:04x}", c as u32);
            }
            c => s.push(c),
        }
    }
    s.push('"');
    s
}

fn first_line(text: &[u8]) -> String {
    let line = text.split(|b| *b == b'\n').next().unwrap_or(&[]);
    String::from_utf8_lossy(line).into_owned()
}

/// A ramoops dump record as Linux reads it: its header line (`====<sec>.<nsec>-C` when
/// the rest is compressed, raw deflate) and the text, inflated. Left as it is when it does
/// not inflate.
fn inflated(text: Vec<u8>) -> Vec<u8> {
    let Some(end) = text.iter().position(|b| *b == b'\n') else { return text };
    if !text.starts_with(b"====") || !text[..end].ends_with(b"-C") {
        return text;
    }
    match miniz_oxide::inflate::decompress_to_vec(&text[end + 1..]) {
        Ok(plain) => [&text[..end - 1], b"D\n", &plain[..]].concat(),
        Err(_) => text,
    }
}

/// VM `vm`'s newest saved ramoops region whose bytes match its checksum.
fn saved_region(disk: &[u8], base: u64, vm: usize) -> Option<(&[u8], ramoops_store::SlotHeader)> {
    let slot = |i: usize| {
        let at = ramoops_store::slot_offset(base, vm, i) as usize;
        let header = ramoops_store::SlotHeader::decode(disk.get(at..at + 512)?, vm)?;
        let start = at + ramoops_store::SLOT_HEADER as usize;
        let region = disk.get(start..start + header.region_size as usize)?;
        (ramoops_store::fnv64(region) == header.checksum).then_some((region, header))
    };
    match (slot(0), slot(1)) {
        (Some(a), Some(b)) => Some(if b.1.generation > a.1.generation { b } else { a }),
        (a, b) => a.or(b),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let o = match parse(&args) {
        Ok(o) => o,
        Err(e) if e == HELP => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("pstore-tool: {e}");
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let disk = match std::fs::read(&o.disk) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("pstore-tool: cannot read {}: {e}", o.disk);
            return ExitCode::from(1);
        }
    };
    let layout = match Layout::new(hv_core::ramoops_store::zone_bytes(disk.len() as u64), o.order, o.kmsg, o.console, o.pmsg) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("pstore-tool: {} is not a pstore disk with these sizes: {e}", o.disk);
            return ExitCode::from(1);
        }
    };
    let zones: Vec<_> = scan(&layout, &disk).collect();
    let recognized = zones.iter().filter(|(_, c)| !matches!(c, Err(ZoneError::BadSignature { .. } | ZoneError::Truncated))).count();
    if recognized == 0 {
        eprintln!(
            "pstore-tool: {} is not a pstore disk: none of its {} zones has a pstore signature (kmsg zones of {} KiB, {:?} order)",
            o.disk,
            zones.len(),
            layout.kmsg_size >> 10,
            layout.order
        );
        return ExitCode::from(1);
    }
    let mut json = Vec::new();
    // The whole output, written at once at the end.
    let mut out = String::new();
    for (z, content) in &zones {
        let name = format!("{}-pstore_blk-{}", z.kind.name(), z.index);
        match content {
            Ok(Content::Kmsg(r)) => {
                if o.json {
                    json.push(format!(
                        "{{\"name\":{},\"kind\":\"{}\",\"zone\":{},\"reason\":\"{}\",\"counter\":{},\"time\":{},\"nsec\":{},\"compressed\":{},\"text\":{}}}",
                        json_str(name.as_bytes()), z.kind.name(), z.index, r.reason.name(), r.counter, r.time.sec, r.time.nsec, r.compressed, json_str(r.text)
                    ));
                } else if o.list {
                    let _ = writeln!(out, "{name}  {} #{}  {} UTC  {}", r.reason.name(), r.counter, Utc(r.time.sec), first_line(r.text));
                } else {
                    let _ = writeln!(out, "==> {name} ({} UTC) <==", Utc(r.time.sec));
                    let _ = writeln!(out, "{}: Total {} times", r.reason.name(), r.counter);
                    let _ = writeln!(out, "{}\n", String::from_utf8_lossy(r.text).trim_end_matches('\n'));
                }
            }
            Ok(Content::Ring(a, b)) => {
                let text = [*a, *b].concat();
                if o.json {
                    json.push(format!("{{\"name\":{},\"kind\":\"{}\",\"zone\":0,\"text\":{}}}", json_str(name.as_bytes()), z.kind.name(), json_str(&text)));
                } else if o.list {
                    let _ = writeln!(out, "{name}  {} bytes", text.len());
                } else {
                    let _ = writeln!(out, "==> {name} <==");
                    let _ = writeln!(out, "{}\n", String::from_utf8_lossy(&text).trim_end_matches('\n'));
                }
            }
            Err(ZoneError::Empty) => {}
            Err(e) => {
                if z.kind != ZoneKind::Dmesg || !matches!(e, ZoneError::BadSignature { found: 0 }) {
                    eprintln!("pstore-tool: {name} at offset {:#x}: skipped: {e}", z.offset);
                }
            }
        }
    }
    // Each VM's ramoops region, its newest whole copy (hv_core::ramoops_store).
    if let Some(base) = ramoops_store::areas_start(disk.len() as u64) {
        for vm in 0..hv_core::cmdline::MAX_VMS {
            let at = ramoops_store::pmsg_offset(base, vm) as usize;
            if let Some(Ok((a, b))) = disk.get(at..at + ramoops_store::PMSG_ZONE as usize).map(|z| hv_core::pstore::decode_ring(ZoneKind::Pmsg, z)) {
                let text = [a, b].concat();
                let name = format!("vm{vm}-pmsg-0");
                if text.is_empty() {
                    // Never written.
                } else if o.json {
                    json.push(format!("{{\"name\":{},\"kind\":\"pmsg\",\"vm\":{vm},\"zone\":0,\"text\":{}}}", json_str(name.as_bytes()), json_str(&text)));
                } else if o.list {
                    let _ = writeln!(out, "{name}  {} bytes", text.len());
                } else {
                    let _ = writeln!(out, "==> {name} <==");
                    let _ = writeln!(out, "{}\n", String::from_utf8_lossy(&text).trim_end_matches('\n'));
                }
            }
            let Some((region, header)) = saved_region(&disk, base, vm) else { continue };
            for mut r in ramoops_store::region_records(region, header.sizes) {
                r.text = inflated(r.text);
                let name = format!("vm{vm}-{}-ramoops-{}", r.kind, r.index);
                if o.json {
                    json.push(format!(
                        "{{\"name\":{},\"kind\":\"{}\",\"vm\":{vm},\"zone\":{},\"saved\":{},\"generation\":{},\"text\":{}}}",
                        json_str(name.as_bytes()), r.kind, r.index, header.saved_at, header.generation, json_str(&r.text)
                    ));
                } else if o.list {
                    let _ = writeln!(out, "{name}  {} bytes  saved {} UTC  {}", r.text.len(), Utc(header.saved_at), first_line(&r.text));
                } else {
                    let _ = writeln!(out, "==> {name} (saved {} UTC) <==", Utc(header.saved_at));
                    let _ = writeln!(out, "{}\n", String::from_utf8_lossy(&r.text).trim_end_matches('\n'));
                }
            }
        }
    }
    if o.json {
        let _ = writeln!(out, "[{}]", json.join(",\n "));
    }
    // A reader that went away (`| head`) is not an error.
    match std::io::stdout().lock().write_all(out.as_bytes()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pstore-tool: cannot write the output: {e}");
            ExitCode::from(1)
        }
    }
}
