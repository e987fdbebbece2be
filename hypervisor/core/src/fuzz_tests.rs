//! Property tests over everything a guest or a disk controls that this crate decodes: the
//! hypercall ABI, exception syndromes, the arm64 Image header, the command line, the
//! virtual GIC's and the virtual UART's registers, device trees like the ones the
//! hypervisor reads, and SGI target lists. Seeded (the seed is printed), bounded: `FUZZ_ITERS` scales every loop
//! (`make fuzz` runs them long). The property is always the same: an answer, never a panic,
//! and the answer within the documented bounds.
//!
//! (Pstore zone recovery, the host driver's used ring, the guests' virtio-mmio transport,
//! virtqueues and virtio-blk requests have their own garbage tests in pstore.rs, virtio.rs,
//! virtio_mmio.rs, virtqueue.rs and virtio_blk_device.rs, scaled the same way.) cargo-fuzz needs a nightly toolchain this machine cannot
//! download, hence property tests on the stable one.

use crate::cmdline::HvConfig;
use crate::esr::Esr;
use crate::hypercall::{id, Call};
use crate::image::ImageHeader;
use crate::vgic::{self, Distributor, Redistributor};
use std::vec::Vec;

/// The shared generator, seeded from FUZZ_SEED or the default, plus edge values.
struct Rng(crate::rng::Rng);

impl Rng {
    fn new(salt: u64) -> Rng {
        let seed = std::env::var("FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed_f00d_u64);
        std::println!("fuzz seed {seed} (FUZZ_SEED), salt {salt:#x}");
        Rng(crate::rng::Rng::new(seed ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15)))
    }
    fn next(&mut self) -> u64 {
        self.0.next()
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0.below(n)
    }
    /// Values at the edges more often than uniform ones.
    fn edgy(&mut self) -> u64 {
        const EDGES: [u64; 10] = [0, 1, 0xfff, 0x1000, 0x4000_0000, 0x8000_0000, 0xffff_ffff, 1 << 48, i64::MAX as u64, u64::MAX];
        match self.below(3) {
            0 => EDGES[self.below(EDGES.len() as u64) as usize].wrapping_add(self.below(3)).wrapping_sub(1),
            _ => self.next(),
        }
    }
}

/// Iterations for a loop whose default is `n` (also used by the other modules' garbage
/// tests).
pub(crate) fn iters(n: u64) -> u64 {
    let scale = std::env::var("FUZZ_ITERS").ok().and_then(|s| s.parse::<u64>().ok()).unwrap_or(1);
    n * scale.max(1)
}

#[test]
fn hypercall_decoding_answers_every_input() {
    let mut r = Rng::new(1);
    let (mut known, mut unknown) = (0u64, 0u64);
    for _ in 0..iters(200_000) {
        let function = match r.below(3) {
            0 => id::IMPLEMENTED[r.below(id::IMPLEMENTED.len() as u64) as usize] as u64 | (r.next() & 0xffff_ffff_0000_0000),
            1 => (r.next() as u32 ^ (1 << r.below(32))) as u64,
            _ => r.next(),
        };
        let call = Call::decode(function, r.edgy(), r.edgy(), r.edgy());
        // SMC32 calls see only the low halves of their arguments.
        if let Call::PsciCpuOn { target, entry, context } = call {
            if function as u32 & (1 << 30) == 0 {
                assert!(target <= u32::MAX as u64 && entry <= u32::MAX as u64 && context <= u32::MAX as u64);
            }
        }
        match call {
            Call::Unknown { function: f } => {
                assert_eq!(f, function as u32);
                unknown += 1;
            }
            _ => known += 1,
        }
        // Decoded as a call exactly when the one list of implemented IDs names it.
        assert_eq!(!matches!(call, Call::Unknown { .. }), id::IMPLEMENTED.contains(&(function as u32)), "{function:#x}");
    }
    assert!(known > 1000 && unknown > 1000, "{known} known, {unknown} unknown");
}

#[test]
fn syndromes_decode_for_every_value() {
    let mut r = Rng::new(2);
    for _ in 0..iters(200_000) {
        let esr = Esr(r.edgy());
        let _ = (esr.ec(), esr.il32(), esr.iss(), esr.imm16(), esr.class_name());
        let da = esr.data_abort();
        let _ = da.fault_kind();
        // What reaches a device and a register: no bits beyond the access size, and a load
        // extended to 32 or 64 bits as its instruction says.
        let bits = da.access_size as u32 * 8;
        let (v, dev) = (r.edgy(), r.edgy());
        assert_eq!(da.store_value(v), if bits == 64 { v } else { v & ((1 << bits) - 1) });
        let loaded = da.load_result(dev);
        // The register is 32 or 64 bits wide; below the access size it holds the device's
        // bits, above them (up to the register's width) copies of the sign bit or zeros.
        let width = if da.sixty_four { 64 } else { 32 };
        let kept = bits.min(width);
        let in_width = |x: u64| if width == 64 { x } else { x & 0xffff_ffff };
        assert_eq!(loaded, in_width(loaded), "nothing above a W register: {da:?} {loaded:#x}");
        assert_eq!(loaded & (u64::MAX >> (64 - kept)), dev & (u64::MAX >> (64 - kept)), "{da:?} {dev:#x} -> {loaded:#x}");
        if kept < width {
            let negative = da.sign_extend && dev >> (bits - 1) & 1 != 0;
            let above = in_width(u64::MAX << kept);
            assert_eq!(loaded & above, if negative { above } else { 0 }, "{da:?} {dev:#x} -> {loaded:#x}");
        }
        // A system-register access names the encoding its fields say.
        let s = esr.sysreg();
        let e = s.encoding();
        assert_eq!((e.op0(), e.op1()), (s.op0, s.op1));
        let _ = std::format!("{e}");
    }
}

#[test]
fn image_headers_from_random_and_mutated_bytes() {
    let mut r = Rng::new(3);
    // A valid header to mutate: "ARM\x64" magic at 56, text_offset, image_size.
    let mut valid = [0u8; 64];
    valid[8..16].copy_from_slice(&0x8_0000u64.to_le_bytes());
    valid[16..24].copy_from_slice(&0x20_0000u64.to_le_bytes());
    valid[56..60].copy_from_slice(b"ARM\x64");
    assert!(ImageHeader::parse(&valid, 0x20_0000).is_ok());
    let mut accepted = 0;
    for _ in 0..iters(100_000) {
        let mut h: Vec<u8> = if r.below(2) == 0 { valid.to_vec() } else { (0..64).map(|_| r.next() as u8).collect() };
        for _ in 0..r.below(4) {
            let i = r.below(64) as usize;
            h[i] = r.next() as u8;
        }
        h.truncate(r.below(80) as usize);
        let file_len = r.edgy();
        if let Ok(img) = ImageHeader::parse(&h, file_len) {
            accepted += 1;
            // What the loader relies on: the image fits in the file's claims and does not wrap.
            assert!(img.text_offset.checked_add(img.image_size).is_some(), "{img:?}");
        }
    }
    assert!(accepted > 0);
}

#[test]
fn command_lines_of_any_text() {
    let mut r = Rng::new(4);
    let words = [
        "log=", "mem=", "smp=", "pauth=", "pauth_keys=", "overcommit=", "populate=", "refault=", "vm0.", "vm7.", "vm9.",
        "vm.", "debug_faults=", "selftest=", "pstore_serial=", "pstore_kmsg=", "pstore_console=", "pstore_order=", "pstore_erase=",
        "on", "off", "lazy", "eager", "64", "4", "0", "18446744073709551615", "2M", "99999999G", "=", " ", "\t", "é", "\u{0}",
    ];
    for _ in 0..iters(50_000) {
        let mut s = std::string::String::new();
        for _ in 0..r.below(12) {
            s.push_str(words[r.below(words.len() as u64) as usize]);
        }
        let mut bad = 0;
        let cfg = HvConfig::parse(&s, |_| bad += 1);
        for vm in 0..10 {
            let p = cfg.vm(vm);
            assert!(p.vcpus >= 1 && p.mem >= 2 << 20 && p.mem % (2 << 20) == 0, "{s:?} -> {p:?}");
        }
        assert!(cfg.pstore.serial().len() <= 20 && cfg.pstore.kmsg_size > 0);
    }
}

#[test]
fn virtual_gic_registers_take_any_access() {
    let mut r = Rng::new(5);
    let mut d = Distributor::default();
    let mut rd: Vec<Redistributor> = (0..4).map(|_| Redistributor::default()).collect();
    for _ in 0..iters(200_000) {
        let size = [1u8, 2, 4, 8][r.below(4) as usize];
        let offset = match r.below(3) {
            0 => r.below(0x1_0000),
            1 => r.below(0x2_0000),
            _ => r.edgy(),
        };
        let value = r.edgy();
        let i = r.below(4) as usize;
        match r.below(4) {
            0 => d.write(offset, size, value),
            1 => {
                let _ = d.read(offset, size);
            }
            2 => rd[i].write(offset, size, value),
            _ => {
                let _ = rd[i].read(offset, size, i, i == 3);
            }
        }
        if r.below(64) == 0 {
            let (dd, rr) = (&mut d, &mut rd[i]);
            let mut out = [vgic::Deliverable { intid: 0, priority: 0, group1: false, edge: false }; 4];
            let n = vgic::take_deliverable(dd, rr, i, &[], &mut out);
            // Most urgent first, each interrupt once, and taken ones no longer pending.
            let taken = &out[..n];
            assert!(taken.windows(2).all(|w| (w[0].priority, w[0].intid) < (w[1].priority, w[1].intid)), "{taken:?}");
            assert!(taken.iter().all(|d| !vgic::irq_mut(dd, rr, d.intid).is_some_and(|q| q.pending)));
            let (targets, _) = vgic::sgi_targets(r.next(), i, 4);
            assert!(targets < 1 << 4, "SGI targets only existing vCPUs: {targets:#b}");
        }
    }
}

#[test]
fn uart_registers_take_any_access() {
    use crate::pl011::{Pl011, LINE_MAX, TAIL_MAX};
    let mut r = Rng::new(7);
    let mut u = Pl011::new();
    let (mut lines, mut longest) = (0u64, 0usize);
    for _ in 0..iters(200_000) {
        let offset = if r.below(2) == 0 { r.below(0x1000) & !3 } else { r.edgy() };
        match r.below(6) {
            0 | 1 => u.write(offset, r.edgy(), &mut |l| {
                lines += 1;
                longest = longest.max(l.len());
            }),
            2 => {
                let v = u.read(offset);
                assert!(v <= u32::MAX as u64, "a 32-bit register file: {offset:#x} read {v:#x}");
                if offset == 0 {
                    assert!(v == b'x' as u64 || v == 1 << 10 || v == 0, "DR: input, a break, or nothing: {v:#x}");
                }
            }
            3 => {
                let n = r.below(300) as usize;
                let _ = u.push_input(&std::vec![b'x'; n]);
            }
            5 => {
                let _ = u.push_break();
            }
            _ => {
                let (a, b) = u.tail();
                assert!(a.len() + b.len() <= TAIL_MAX);
            }
        }
    }
    assert!(longest <= LINE_MAX && lines > 0, "{lines} lines, the longest {longest}");
}

#[test]
fn control_sequences_left_out_of_any_bytes() {
    use crate::console_input::without_control_sequences;
    let mut r = Rng::new(8);
    for _ in 0..iters(50_000) {
        let len = r.below(64) as usize;
        let bytes: Vec<u8> = (0..len).map(|_| if r.below(4) == 0 { 0x1b } else { r.next() as u8 }).collect();
        let mut kept = Vec::new();
        without_control_sequences(&bytes, &mut |b| kept.push(b));
        assert!(kept.len() <= bytes.len() && !kept.contains(&0x1b), "{bytes:?} -> {kept:?}");
    }
}

#[test]
fn device_trees_mutated_parse_or_fail_cleanly() {
    use crate::guest_dt::{build, GuestDtConfig};
    let mut r = Rng::new(6);
    let blob = build(&GuestDtConfig { vm_id: 1, ram_size: 128 << 20, vcpus: 2, bootargs: "console=ttyAMA0", initrd: Some((0x4800_0000, 0x4810_0000)), boot_count: 0, pmu: true, ramoops: Some(((0x4fd0_0000, 0x4fe0_0000), crate::guest_dt::RamoopsSizes::DEFAULT)) }).unwrap();
    let mut parsed = 0;
    for _ in 0..iters(20_000) {
        let mut b = blob.clone();
        for _ in 0..1 + r.below(6) {
            let i = r.below(b.len() as u64) as usize;
            b[i] = r.next() as u8;
        }
        b.truncate(b.len() - r.below(2) as usize * r.below(b.len() as u64) as usize);
        // What the hypervisor asks of its own device tree (boot/host_dt.rs), on the same
        // parser, for every tree the structural check lets through.
        if crate::dtb_check::check(&b).is_err() {
            continue;
        }
        if let Ok(fdt) = fdt::Fdt::new(&b) {
            parsed += 1;
            let _ = fdt.find_node("/chosen").and_then(|c| c.property("bootargs")).and_then(|p| p.as_str());
            for n in fdt.all_nodes() {
                let _ = n.compatible().map(|c| c.all().count());
                let _ = n.reg().map(|r| r.count());
                let _ = n.property("device_type").and_then(|p| p.as_str());
            }
            let _ = fdt.memory_reservations().count();
            let _ = fdt.find_node("/cpus").map(|c| c.children().count());
        }
    }
    assert!(parsed > 100, "{parsed} of the mutated trees passed the check and parsed");
}
