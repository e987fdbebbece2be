//! The host tool on disk images built with the shared format code.

use hv_core::pstore::{empty_header, encode_kmsg, Layout, Order, Reason, Ring, Timestamp, ZoneKind};
use std::process::Command;

fn disk_with_records() -> Vec<u8> {
    let l = Layout::new(1 << 20, Order::KmsgFirst, Layout::DEFAULT_KMSG, Layout::DEFAULT_CONSOLE, Layout::DEFAULT_PMSG).unwrap();
    let mut disk = vec![0u8; 1 << 20];
    for z in l.zones() {
        let at = z.offset as usize;
        disk[at..at + 12].copy_from_slice(&empty_header(z.kind));
    }
    let z = l.kmsg_zone(3).unwrap();
    let zone = &mut disk[z.offset as usize..(z.offset + z.size) as usize];
    encode_kmsg(zone, Timestamp { sec: 1_795_000_000, nsec: 5 }, 2, Reason::Panic, &[b"VM 1: guest panic: \"quoted\"\n", b"console tail\n"]);
    let c = l.console_zone().unwrap();
    Ring::new(ZoneKind::Console, &mut disk[c.offset as usize..(c.offset + c.size) as usize]).append(b"hypervisor log line\n");
    disk
}

fn tool(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pstore-tool")).args(args).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn lists_prints_and_emits_json() {
    let dir = std::env::temp_dir().join(format!("pstore-tool-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("disk.img");
    std::fs::write(&path, disk_with_records()).unwrap();
    let p = path.to_str().unwrap();

    let (code, out, err) = tool(&["--list", p]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("dmesg-pstore_blk-3  Panic #2  2026-11-18 11:06:40 UTC  VM 1: guest panic: \"quoted\""), "{out}");
    assert!(out.contains("console-pstore_blk-0  20 bytes"), "{out}");

    let (_, out, _) = tool(&[p]);
    assert!(out.contains("==> dmesg-pstore_blk-3 (2026-11-18 11:06:40 UTC) <==\nPanic: Total 2 times\nVM 1: guest panic: \"quoted\"\nconsole tail\n"), "{out}");

    let (_, out, _) = tool(&["--json", p]);
    assert!(out.starts_with('[') && out.trim_end().ends_with(']'), "{out}");
    let (_, listed, _) = tool(&["--list", "--json", p]);
    assert_eq!(listed, out, "--list --json is the JSON list");

    // A reader that stops early (`| head -1`): no panic, status 0.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_pstore-tool"))
        .arg(p)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let done = child.wait_with_output().unwrap();
    assert_eq!(done.status.code(), Some(0), "{}", String::from_utf8_lossy(&done.stderr));
    assert!(done.stderr.is_empty(), "{}", String::from_utf8_lossy(&done.stderr));

    // --help: the usage on stdout, status 0.
    let (code, help, _) = tool(&["--help"]);
    assert_eq!(code, 0);
    assert!(help.starts_with("usage: pstore-tool"), "{help}");
    assert!(out.contains(r#""name":"dmesg-pstore_blk-3","kind":"dmesg","zone":3,"reason":"Panic","counter":2,"time":1795000000,"nsec":5,"compressed":false,"text":"VM 1: guest panic: \"quoted\"\nconsole tail\n""#), "{out}");

    // Corrupt zone 5's lengths: reported and skipped, the rest still listed.
    let mut disk = disk_with_records();
    let at = 5 * 64 * 1024;
    disk[at + 4..at + 8].copy_from_slice(&u32::MAX.to_le_bytes());
    std::fs::write(&path, &disk).unwrap();
    let (code, out, err) = tool(&["--list", p]);
    assert_eq!(code, 0);
    assert!(err.contains("dmesg-pstore_blk-5 at offset 0x50000: skipped: lengths out of range"), "{err}");
    assert!(out.contains("dmesg-pstore_blk-3"));

    // Not a pstore disk, a missing file, bad usage.
    std::fs::write(&path, vec![0x5au8; 1 << 20]).unwrap();
    let (code, _, err) = tool(&[p]);
    assert_eq!(code, 1);
    assert!(err.contains("is not a pstore disk: none of its 16 zones has a pstore signature"), "{err}");
    let (code, _, err) = tool(&["/nonexistent/disk.img"]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot read /nonexistent/disk.img"));
    assert_eq!(tool(&["--order", "sideways", p]).0, 2);
    assert_eq!(tool(&[]).0, 2);
    std::fs::remove_dir_all(&dir).unwrap();
}
