//! A small flattened-device-tree (DTB, version 17) writer.
//!
//! Used to generate each VM's device tree. Nodes are written in order; the writer checks
//! nesting and produces a blob that any FDT parser (Linux's, the `fdt` crate) accepts.

use alloc::vec::Vec;

use crate::dtb_check::fdt::{BEGIN_NODE as FDT_BEGIN_NODE, END as FDT_END, END_NODE as FDT_END_NODE, HEADER_SIZE, MAGIC as FDT_MAGIC, PROP as FDT_PROP};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FdtError {
    /// end_node without a matching begin_node, or finish with nodes still open.
    Unbalanced,
    /// A property outside any node.
    PropertyOutsideNode,
    /// A node or property name with a NUL byte.
    BadName,
}

#[derive(Default)]
pub struct FdtWriter {
    structs: Vec<u8>,
    strings: Vec<u8>,
    reservations: Vec<(u64, u64)>,
    depth: usize,
    boot_cpuid: u32,
}

fn push_be32(v: &mut Vec<u8>, x: u32) {
    v.extend_from_slice(&x.to_be_bytes());
}

fn pad4(v: &mut Vec<u8>) {
    while v.len() % 4 != 0 {
        v.push(0);
    }
}

impl FdtWriter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a /memreserve/ entry.
    pub fn reserve(&mut self, addr: u64, size: u64) {
        self.reservations.push((addr, size));
    }

    pub fn begin_node(&mut self, name: &str) -> Result<(), FdtError> {
        if name.as_bytes().contains(&0) {
            return Err(FdtError::BadName);
        }
        push_be32(&mut self.structs, FDT_BEGIN_NODE);
        self.structs.extend_from_slice(name.as_bytes());
        self.structs.push(0);
        pad4(&mut self.structs);
        self.depth += 1;
        Ok(())
    }

    pub fn end_node(&mut self) -> Result<(), FdtError> {
        if self.depth == 0 {
            return Err(FdtError::Unbalanced);
        }
        push_be32(&mut self.structs, FDT_END_NODE);
        self.depth -= 1;
        Ok(())
    }

    fn string_offset(&mut self, name: &str) -> u32 {
        let bytes = name.as_bytes();
        let mut off = 0;
        while off < self.strings.len() {
            let end = off + self.strings[off..].iter().position(|&b| b == 0).unwrap_or(0);
            if &self.strings[off..end] == bytes {
                return off as u32;
            }
            off = end + 1;
        }
        let off = self.strings.len();
        self.strings.extend_from_slice(bytes);
        self.strings.push(0);
        off as u32
    }

    pub fn prop(&mut self, name: &str, value: &[u8]) -> Result<(), FdtError> {
        if self.depth == 0 {
            return Err(FdtError::PropertyOutsideNode);
        }
        if name.as_bytes().contains(&0) {
            return Err(FdtError::BadName);
        }
        let nameoff = self.string_offset(name);
        push_be32(&mut self.structs, FDT_PROP);
        push_be32(&mut self.structs, value.len() as u32);
        push_be32(&mut self.structs, nameoff);
        self.structs.extend_from_slice(value);
        pad4(&mut self.structs);
        Ok(())
    }

    pub fn prop_empty(&mut self, name: &str) -> Result<(), FdtError> {
        self.prop(name, &[])
    }

    pub fn prop_u32(&mut self, name: &str, v: u32) -> Result<(), FdtError> {
        self.prop(name, &v.to_be_bytes())
    }

    pub fn prop_u64(&mut self, name: &str, v: u64) -> Result<(), FdtError> {
        self.prop(name, &v.to_be_bytes())
    }

    /// A list of 32-bit cells.
    pub fn prop_cells(&mut self, name: &str, cells: &[u32]) -> Result<(), FdtError> {
        let mut v = Vec::with_capacity(cells.len() * 4);
        for c in cells {
            push_be32(&mut v, *c);
        }
        self.prop(name, &v)
    }

    /// A `reg`-style list of (address, size) pairs with two cells each.
    pub fn prop_reg64(&mut self, name: &str, pairs: &[(u64, u64)]) -> Result<(), FdtError> {
        let mut v = Vec::with_capacity(pairs.len() * 16);
        for (a, s) in pairs {
            v.extend_from_slice(&a.to_be_bytes());
            v.extend_from_slice(&s.to_be_bytes());
        }
        self.prop(name, &v)
    }

    pub fn prop_str(&mut self, name: &str, s: &str) -> Result<(), FdtError> {
        self.prop_strs(name, &[s])
    }

    /// A string list (each NUL-terminated), e.g. `compatible`.
    pub fn prop_strs(&mut self, name: &str, list: &[&str]) -> Result<(), FdtError> {
        let mut v = Vec::new();
        for s in list {
            if s.as_bytes().contains(&0) {
                return Err(FdtError::BadName);
            }
            v.extend_from_slice(s.as_bytes());
            v.push(0);
        }
        self.prop(name, &v)
    }

    /// Produces the blob. All nodes must be closed.
    pub fn finish(mut self) -> Result<Vec<u8>, FdtError> {
        if self.depth != 0 {
            return Err(FdtError::Unbalanced);
        }
        push_be32(&mut self.structs, FDT_END);
        let rsv_off = HEADER_SIZE; // already 8-byte aligned
        let rsv_size = (self.reservations.len() + 1) * 16;
        let struct_off = rsv_off + rsv_size;
        let strings_off = struct_off + self.structs.len();
        let total = strings_off + self.strings.len();
        let mut out = Vec::with_capacity(total);
        for field in [
            FDT_MAGIC,
            total as u32,
            struct_off as u32,
            strings_off as u32,
            rsv_off as u32,
            17,
            16,
            self.boot_cpuid,
            self.strings.len() as u32,
            self.structs.len() as u32,
        ] {
            push_be32(&mut out, field);
        }
        for (a, s) in self.reservations.iter().chain(core::iter::once(&(0, 0))) {
            out.extend_from_slice(&a.to_be_bytes());
            out.extend_from_slice(&s.to_be_bytes());
        }
        out.extend_from_slice(&self.structs);
        out.extend_from_slice(&self.strings);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_a_parser() {
        let mut w = FdtWriter::new();
        w.reserve(0x1000, 0x2000);
        w.begin_node("").unwrap();
        w.prop_u32("#address-cells", 2).unwrap();
        w.prop_u32("#size-cells", 2).unwrap();
        w.prop_strs("compatible", &["a,b", "c"]).unwrap();
        w.begin_node("memory@40000000").unwrap();
        w.prop_str("device_type", "memory").unwrap();
        w.prop_reg64("reg", &[(0x4000_0000, 0x800_0000)]).unwrap();
        w.end_node().unwrap();
        w.begin_node("chosen").unwrap();
        w.prop_str("bootargs", "console=ttyAMA0").unwrap();
        w.end_node().unwrap();
        w.end_node().unwrap();
        let blob = w.finish().unwrap();

        let fdt = fdt::Fdt::new(&blob).unwrap();
        assert_eq!(fdt.total_size(), blob.len());
        let mem = fdt.memory();
        let r = mem.regions().next().unwrap();
        assert_eq!(r.starting_address as u64, 0x4000_0000);
        assert_eq!(r.size, Some(0x800_0000));
        assert_eq!(fdt.chosen().bootargs(), Some("console=ttyAMA0"));
        let compat: std::vec::Vec<&str> = fdt.root().compatible().all().collect();
        assert_eq!(compat, ["a,b", "c"]);
        let rsv: std::vec::Vec<_> = fdt.memory_reservations().collect();
        assert_eq!(rsv.len(), 1);
        assert_eq!(rsv[0].address() as u64, 0x1000);
    }

    #[test]
    fn string_table_is_deduplicated() {
        let mut w = FdtWriter::new();
        w.begin_node("").unwrap();
        w.prop_u32("reg", 1).unwrap();
        w.prop_u32("reg", 2).unwrap();
        w.end_node().unwrap();
        assert_eq!(w.strings, b"reg\0");
    }

    #[test]
    fn rejects_unbalanced_trees() {
        let mut w = FdtWriter::new();
        assert_eq!(w.end_node(), Err(FdtError::Unbalanced));
        assert_eq!(w.prop_u32("x", 1), Err(FdtError::PropertyOutsideNode));
        w.begin_node("").unwrap();
        assert_eq!(w.finish().err(), Some(FdtError::Unbalanced));
    }
}
