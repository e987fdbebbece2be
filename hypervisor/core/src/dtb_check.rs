//! A structural check of a flattened device tree before the `fdt` crate reads it. That
//! crate panics on some malformed trees (a property name that is not UTF-8, a string
//! without its NUL, a truncated `#address-cells`): found by the property tests in
//! fuzz_tests.rs. This walk checks every token, name and length against the blob's bounds,
//! the order the crate expects (properties before child nodes, one root, no NOP tokens),
//! and the memory reservation map, so that a tree it accepts is one the crate reads without
//! panicking.

use core::fmt;

use fdt::{BEGIN_NODE, END, END_NODE, HEADER_SIZE as HEADER, MAGIC, NOP, PROP};

/// Flattened device tree format constants (shared with the writer, fdt_writer.rs).
pub mod fdt {
    pub const MAGIC: u32 = 0xd00d_feed;
    pub const BEGIN_NODE: u32 = 1;
    pub const END_NODE: u32 = 2;
    pub const PROP: u32 = 3;
    pub const NOP: u32 = 4;
    pub const END: u32 = 9;
    /// The header (version 17), where the memory reservation map may start.
    pub const HEADER_SIZE: usize = 40;
}
/// Deeper nesting than any real tree has.
const MAX_DEPTH: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DtbError {
    BadHeader,
    /// A token, name or value reaches beyond its block.
    OutOfBounds { at: usize },
    /// A node or property name without its NUL, or not UTF-8.
    BadName { at: usize },
    BadToken { at: usize, token: u32 },
    /// Nodes not closed, closed twice, nested too deep, or tokens after the end.
    BadNesting { at: usize },
    /// `#address-cells` or `#size-cells` shorter than one cell.
    BadCells { at: usize },
}

impl fmt::Display for DtbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed device tree: {self:?}")
    }
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at.checked_add(4)?)?.try_into().ok()?))
}

/// A NUL-terminated UTF-8 string at the start of `b`: its length without the NUL.
fn cstr(b: &[u8]) -> Option<usize> {
    let n = b.iter().position(|c| *c == 0)?;
    core::str::from_utf8(&b[..n]).ok()?;
    Some(n)
}

/// Checks the whole tree in `blob` (exactly its header's totalsize long, or longer).
pub fn check(blob: &[u8]) -> Result<(), DtbError> {
    let h = |i: usize| be32(blob, i * 4).ok_or(DtbError::BadHeader);
    if blob.len() < HEADER || h(0)? != MAGIC {
        return Err(DtbError::BadHeader);
    }
    let total = h(1)? as usize;
    let (struct_off, strings_off) = (h(2)? as usize, h(3)? as usize);
    let (strings_len, struct_len) = (h(8)? as usize, h(9)? as usize);
    let within = |off: usize, len: usize| off.checked_add(len).is_some_and(|e| e <= total) && off >= HEADER;
    if total > blob.len() || total < HEADER || !within(struct_off, struct_len) || !within(strings_off, strings_len) {
        return Err(DtbError::BadHeader);
    }
    // The memory reservation map: 16-byte entries up to an all-zero one, inside the blob.
    let mut rsv = h(4)? as usize;
    loop {
        if rsv < HEADER || rsv.checked_add(16).is_none_or(|e| e > total) {
            return Err(DtbError::OutOfBounds { at: rsv });
        }
        if blob[rsv..rsv + 16].iter().all(|b| *b == 0) {
            break;
        }
        rsv += 16;
    }
    let st = &blob[struct_off..struct_off + struct_len];
    let strings = &blob[strings_off..strings_off + strings_len];
    let mut at = 0;
    let mut depth = 0usize;
    let mut ended = false;
    // Per open node: a child node came already (properties must come first: the crate
    // expects exactly that order).
    let mut has_child = [false; MAX_DEPTH + 1];
    while at < st.len() {
        let token = be32(st, at).ok_or(DtbError::OutOfBounds { at })?;
        if ended {
            return Err(DtbError::BadNesting { at });
        }
        at += 4;
        match token {
            BEGIN_NODE => {
                let n = cstr(&st[at..]).ok_or(DtbError::BadName { at })?;
                at = (at + n + 1).next_multiple_of(4);
                if depth == 0 && has_child[0] {
                    return Err(DtbError::BadNesting { at }); // a second root
                }
                has_child[depth] = true;
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(DtbError::BadNesting { at });
                }
                has_child[depth] = false;
            }
            END_NODE => {
                depth = depth.checked_sub(1).ok_or(DtbError::BadNesting { at })?;
            }
            PROP => {
                if depth == 0 || has_child[depth] {
                    return Err(DtbError::BadNesting { at });
                }
                let len = be32(st, at).ok_or(DtbError::OutOfBounds { at })? as usize;
                let nameoff = be32(st, at + 4).ok_or(DtbError::OutOfBounds { at })? as usize;
                let value = at + 8;
                if value.checked_add(len).is_none_or(|e| e > st.len()) {
                    return Err(DtbError::OutOfBounds { at });
                }
                let name_len = strings.get(nameoff..).and_then(cstr).ok_or(DtbError::BadName { at })?;
                let name = &strings[nameoff..nameoff + name_len];
                if (name == b"#address-cells" || name == b"#size-cells") && len < 4 {
                    return Err(DtbError::BadCells { at });
                }
                at = (value + len).next_multiple_of(4);
            }
            // NOPs (left by editing a tree in place) are legal, but the crate reads them
            // only in some places; QEMU's trees have none.
            NOP => return Err(DtbError::BadToken { at: at - 4, token }),
            END => {
                if depth != 0 {
                    return Err(DtbError::BadNesting { at });
                }
                ended = true;
            }
            token => return Err(DtbError::BadToken { at: at - 4, token }),
        }
    }
    if !ended {
        return Err(DtbError::BadNesting { at });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest_dt::{build, GuestDtConfig};

    #[test]
    fn accepts_what_the_writer_makes_and_refuses_damage() {
        let blob = build(&GuestDtConfig { vm_id: 0, ram_size: 64 << 20, vcpus: 1, bootargs: "x", initrd: None, boot_count: 0, pmu: false, ramoops: None }).unwrap();
        assert_eq!(check(&blob), Ok(()));
        assert_eq!(check(&blob[..20]), Err(DtbError::BadHeader));
        let mut bad = blob.clone();
        bad[0] = 0;
        assert_eq!(check(&bad), Err(DtbError::BadHeader));
        // A property name turned into invalid UTF-8.
        let strings = u32::from_be_bytes(blob[12..16].try_into().unwrap()) as usize;
        let mut bad = blob.clone();
        bad[strings] = 0xff;
        assert!(matches!(check(&bad), Err(DtbError::BadName { .. })));
    }
}
