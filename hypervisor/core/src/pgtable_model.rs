//! The page-table walker against a reference model: thousands of random map, unmap,
//! protect and aging operations on an 8 GiB stage-2 space, every result and lookup checked
//! against a page-by-page model, plus the tree's shape (no empty table, no table that could
//! be a block, every table frame accounted for) and break-before-make (the test arena).

use crate::pgtable::{Attrs, MapError, MemType, PageTable, Regime, TableMemory, PAGE_SIZE};
use crate::rng::Rng;
use crate::testmem::Arena;
use std::collections::BTreeMap;

const SPACE_BITS: u8 = 33;
const SPACE: u64 = 1 << SPACE_BITS;
const MIB2: u64 = 2 << 20;
const GIB: u64 = 1 << 30;
const OA_MASK: u64 = 0x0000_ffff_ffff_f000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Page {
    pa: u64,
    attrs: Attrs,
    young: bool,
}

const ATTRS: [Attrs; 5] = [Attrs::RAM_RWX, Attrs::RAM_RW, Attrs::RAM_RX, Attrs::RAM_RO, Attrs::DEVICE_RW];

/// Mostly read-write RAM, so that runs become uniform.
fn pick_attrs(r: &mut Rng) -> Attrs {
    if r.below(4) == 0 {
        ATTRS[r.below(ATTRS.len() as u64) as usize]
    } else {
        Attrs::RAM_RW
    }
}

/// A range whose size and alignment favour pages, 2 MiB blocks or (rarely) 1 GiB blocks.
fn random_range(r: &mut Rng) -> (u64, u64) {
    if r.below(2) == 0 {
        // A hot 4 MiB where pages come and go until whole blocks fill up again.
        let va = GIB + r.below(1024) * PAGE_SIZE;
        return (va, PAGE_SIZE * (1 + r.below(128)));
    }
    let grain = match r.below(100) {
        0 => GIB,
        1..=40 => MIB2,
        _ => PAGE_SIZE,
    };
    let va = r.below(SPACE / grain) * grain;
    let mut size = grain * (1 + r.below(if grain == GIB { 1 } else { 3 }));
    // Sometimes ragged ends, so blocks split.
    if grain != PAGE_SIZE && r.below(3) == 0 {
        size = size - PAGE_SIZE * r.below(8);
    }
    let va = if grain != PAGE_SIZE && r.below(3) == 0 { va + PAGE_SIZE * r.below(4) } else { va };
    (va, size.min(SPACE - va))
}

struct Stats {
    ops: u64,
    blocks_seen: u64,
    collapses: u64,
    splits: u64,
}

fn check_lookup(t: &PageTable, m: &Arena, model: &BTreeMap<u64, Page>, va: u64, ctx: &str) {
    let got = t.translate(m, va).map(|tr| Page { pa: tr.pa, attrs: tr.attrs, young: tr.young });
    let want = model.get(&(va / PAGE_SIZE)).copied();
    let want = want.map(|p| Page { attrs: normalize(p.attrs), ..p });
    assert_eq!(got, want, "{ctx}: lookup of {va:#x}");
}

/// Device memory is never executable.
fn normalize(a: Attrs) -> Attrs {
    Attrs { exec: a.exec && a.mem == MemType::Normal, ..a }
}

fn check_range(t: &PageTable, m: &Arena, model: &BTreeMap<u64, Page>, r: &mut Rng, va: u64, size: u64, ctx: &str) {
    let pages = size / PAGE_SIZE;
    if pages <= 2048 {
        for p in 0..pages {
            check_lookup(t, m, model, va + p * PAGE_SIZE, ctx);
        }
    } else {
        for _ in 0..2048 {
            check_lookup(t, m, model, va + r.below(pages) * PAGE_SIZE, ctx);
        }
        check_lookup(t, m, model, va, ctx);
        check_lookup(t, m, model, va + size - PAGE_SIZE, ctx);
    }
    if va >= PAGE_SIZE {
        check_lookup(t, m, model, va - PAGE_SIZE, ctx);
    }
    if va + size < SPACE {
        check_lookup(t, m, model, va + size, ctx);
    }
}

/// Walks the whole tree: every table frame reachable and counted, none empty, none
/// foldable into a block; returns (tables, mapped bytes, blocks).
fn check_shape(t: &PageTable, m: &Arena, ctx: &str) -> (usize, u64, u64) {
    fn walk(m: &Arena, table: u64, level: u8, entries: usize, root: bool, ctx: &str, acc: &mut (usize, u64, u64)) {
        acc.0 += entries.div_ceil(512);
        let shift = 12 + 9 * (3 - level as u32);
        let mut valid = 0;
        for i in 0..entries {
            let d = m.read(table, i);
            if d & 1 == 0 {
                continue;
            }
            valid += 1;
            if level < 3 && d & 2 != 0 {
                walk(m, d & OA_MASK, level + 1, 512, false, ctx, acc);
            } else {
                acc.1 += 1 << shift;
                if level < 3 {
                    acc.2 += 1;
                }
            }
        }
        assert!(root || valid > 0, "{ctx}: empty table {table:#x} at level {level}");
        if !root && level >= 2 {
            let first = m.read(table, 0);
            let leaf_type = if level == 3 { 3 } else { 1 };
            let block = 1u64 << (shift + 9);
            let foldable = first & 3 == leaf_type
                && (first & OA_MASK) % block == 0
                && (0..512).all(|i| m.read(table, i) == first + ((i as u64) << shift));
            assert!(!foldable, "{ctx}: table {table:#x} at level {level} is one uniform block");
        }
    }
    let mut acc = (0, 0, 0);
    let root_entries = 1usize << (SPACE_BITS as u32 - (12 + 9 * (3 - t.start_level() as u32)));
    walk(m, t.root(), t.start_level(), root_entries, true, ctx, &mut acc);
    assert_eq!(acc.0, t.table_pages(), "{ctx}: table count");
    assert_eq!(acc.0, m.frames.len(), "{ctx}: frames leaked or lost");
    acc
}

fn run(seed: u64, steps: u64) -> Stats {
    let mut r = Rng::new(seed);
    let mut m = Arena::default();
    let mut t = PageTable::new(&mut m, Regime::Stage2, SPACE_BITS).unwrap();
    let mut model: BTreeMap<u64, Page> = BTreeMap::new();
    let mut st = Stats { ops: 0, blocks_seen: 0, collapses: 0, splits: 0 };
    for step in 0..steps {
        let (va, size) = random_range(&mut r);
        let first = va / PAGE_SIZE;
        let last = (va + size) / PAGE_SIZE;
        let (allocs, frees) = (m.allocs, m.frees);
        let op = r.below(100);
        let ctx = std::format!("seed {seed:#x} step {step} op {op} range {va:#x}+{size:#x}");
        match op {
            0..=39 => {
                // map: output addresses block-aligned most of the time, so blocks form
                let hot = (GIB..GIB + 8 * MIB2).contains(&va);
                let delta = if !hot && r.below(5) == 0 { 0x10_0000_0000 + PAGE_SIZE * (1 + r.below(16)) } else { 0x10_0000_0000 };
                let attrs = pick_attrs(&mut r);
                if hot {
                    // demand faults: every hole of the range, page by page
                    for p in first..last {
                        let free = !model.contains_key(&p);
                        let res = t.map(&mut m, p * PAGE_SIZE, p * PAGE_SIZE + delta, PAGE_SIZE, Attrs::RAM_RW);
                        assert_eq!(res, if free { Ok(()) } else { Err(MapError::AlreadyMapped) }, "{ctx}");
                        if free {
                            model.insert(p, Page { pa: p * PAGE_SIZE + delta, attrs: Attrs::RAM_RW, young: true });
                        }
                    }
                } else if model.range(first..last).next().is_some() {
                    assert_eq!(t.map(&mut m, va, va + delta, size, attrs), Err(MapError::AlreadyMapped), "{ctx}");
                } else {
                    let res = t.map(&mut m, va, va + delta, size, attrs);
                    assert_eq!(res, Ok(()), "{ctx}");
                    for p in first..last {
                        model.insert(p, Page { pa: p * PAGE_SIZE + delta, attrs, young: true });
                    }
                }
            }
            40..=64 => {
                let mut gone_bytes = 0;
                let res = t.unmap_with(&mut m, va, size, &mut |gva, gpa, gsize| {
                    gone_bytes += gsize;
                    // what went is what the model had there, page for page
                    for p in 0..gsize / PAGE_SIZE {
                        let page = model.get(&(gva / PAGE_SIZE + p)).copied();
                        assert_eq!(page.map(|pg| pg.pa), Some(gpa + p * PAGE_SIZE), "unmapped leaf vs model");
                    }
                });
                let want = model.range(first..last).count() as u64 * PAGE_SIZE;
                assert_eq!(res, Ok(want), "{ctx}");
                assert_eq!(gone_bytes, want, "{ctx}: leaves reported gone");
                let keys: std::vec::Vec<u64> = model.range(first..last).map(|(k, _)| *k).collect();
                for k in keys {
                    model.remove(&k);
                }
            }
            65..=84 => {
                let attrs = pick_attrs(&mut r);
                let res = t.protect(&mut m, va, size, attrs);
                let mut changed = 0;
                for (_, p) in model.range_mut(first..last) {
                    if normalize(p.attrs) != normalize(attrs) {
                        changed += PAGE_SIZE;
                    }
                    p.attrs = attrs;
                }
                assert_eq!(res, Ok(changed), "{ctx}");
            }
            85..=94 => {
                // aging: whole leaves are aged; each must agree with the model
                let mut leaves = std::vec::Vec::new();
                let res = t.clear_young(&mut m, va, size, &mut |lva, lsize, was| leaves.push((lva, lsize, was)));
                let young = leaves.iter().filter(|l| l.2).count() as u64;
                assert_eq!(res, Ok(young), "{ctx}");
                let mut covered = 0;
                for (lva, lsize, was) in leaves {
                    for p in lva / PAGE_SIZE..(lva + lsize) / PAGE_SIZE {
                        let page = model.get_mut(&p).expect("aged leaf not in the model");
                        assert_eq!(page.young, was, "{ctx}: young state of {:#x}", p * PAGE_SIZE);
                        page.young = false;
                        covered += (first..last).contains(&p) as u64;
                    }
                }
                assert_eq!(covered, model.range(first..last).count() as u64, "{ctx}: every mapped page aged");
            }
            _ => {
                // the guest touches pages of the range: their leaves become young
                for i in 0..(size / PAGE_SIZE).min(128) {
                    let at = va + i * PAGE_SIZE;
                    let leaf = t.translate(&m, at);
                    assert_eq!(t.mark_young(&mut m, at), leaf.is_some(), "{ctx}");
                    if let Some(l) = leaf {
                        let base = at & !(l.size - 1);
                        for p in base / PAGE_SIZE..(base + l.size) / PAGE_SIZE {
                            model.get_mut(&p).expect("leaf page in the model").young = true;
                        }
                    }
                }
            }
        }
        assert!(m.bbm_violations.is_empty(), "{ctx}: {:?}", m.bbm_violations);
        assert_eq!(m.uninvalidated(), 0, "{ctx}: entries broken but never invalidated");
        // Tables made by unmap or protect are splits; tables freed by anything but unmap
        // are folds into blocks.
        if (40..85).contains(&op) {
            st.splits += m.allocs - allocs;
        }
        if !(40..65).contains(&op) {
            st.collapses += m.frees - frees;
        }
        check_range(&t, &m, &model, &mut r, va, size, &ctx);
        if step % 64 == 0 {
            let (_, bytes, blocks) = check_shape(&t, &m, &ctx);
            assert_eq!(bytes, model.len() as u64 * PAGE_SIZE, "{ctx}: mapped bytes");
            st.blocks_seen += blocks;
        }
        st.ops += 1;
    }
    let (_, bytes, _) = check_shape(&t, &m, "end");
    assert_eq!(bytes, model.len() as u64 * PAGE_SIZE);
    for (&p, _) in model.iter().step_by(97) {
        check_lookup(&t, &m, &model, p * PAGE_SIZE, "end");
    }
    t.destroy(&mut m);
    assert!(m.frames.is_empty(), "destroy frees every table");
    st
}

#[test]
fn random_operations_match_the_reference_model() {
    let mut total = Stats { ops: 0, blocks_seen: 0, collapses: 0, splits: 0 };
    for seed in [0x5eed_0001, 0x5eed_0002, 0x5eed_0003, 0x5eed_0004] {
        let s = run(seed, 2500);
        total.ops += s.ops;
        total.blocks_seen += s.blocks_seen;
        total.collapses += s.collapses;
        total.splits += s.splits;
    }
    std::println!("{} operations, {} block splits, {} collapses, {} blocks seen in shape checks", total.ops, total.splits, total.collapses, total.blocks_seen);
    assert_eq!(total.ops, 10_000);
    assert!(total.splits > 20 && total.collapses > 20 && total.blocks_seen > 100, "the operations exercise splits and folds");
}
