//! A Linux kernel's panic report as its console shows it: the line that starts it ("Kernel
//! panic - not syncing: MESSAGE") and the line that ends it ("---[ end Kernel panic"), found
//! in each complete console line a VM prints (every line is searched, so an ordinary line
//! costs about a byte comparison per byte).

/// What Linux prints when it panics, and when its panic report is complete.
const PANIC_START: &[u8] = b"Kernel panic - not syncing";
const PANIC_END: &[u8] = b"---[ end Kernel panic";

/// What a console line says about a panic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen<'a> {
    Nothing,
    /// The panic line, with what it says after "Kernel panic - not syncing: ".
    Start(&'a [u8]),
    /// The end of the panic report.
    End,
}

pub fn watch(line: &[u8]) -> Seen<'_> {
    if find(line, PANIC_END).is_some() {
        return Seen::End;
    }
    match find(line, PANIC_START) {
        Some(at) => Seen::Start(line[at + PANIC_START.len()..].strip_prefix(b": ").unwrap_or(&[])),
        None => Seen::Nothing,
    }
}

/// Where `needle` (not empty) first occurs in `hay`: candidates by their first byte.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let (&first, rest) = needle.split_first()?;
    let last_start = hay.len().checked_sub(needle.len())?;
    (0..=last_start).find(|&i| hay[i] == first && &hay[i + 1..i + needle.len()] == rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_what_windows_find() {
        let hay = b"aab ab abab K---[ end Kernel panic";
        for needle in [&b"ab"[..], b"aab", b"b", b"bab", b"abc", b"---[ end Kernel panic", b"c", hay, b"aab ab abab K---[ end Kernel panicX"] {
            assert_eq!(find(hay, needle), hay.windows(needle.len()).position(|w| w == needle), "{needle:?}");
        }
        assert_eq!(find(b"", b"a"), None);
        assert_eq!(find(b"a", b""), None);
    }

    #[test]
    fn panic_lines() {
        assert_eq!(watch(b"[    1.0] Kernel panic - not syncing: sysrq triggered crash"), Seen::Start(b"sysrq triggered crash"));
        assert_eq!(watch(b"Kernel panic - not syncing"), Seen::Start(b""));
        assert_eq!(watch(b"[    1.1] ---[ end Kernel panic - not syncing: sysrq triggered crash ]---"), Seen::End);
        assert_eq!(watch(b"[    0.0] Booting Linux on physical CPU 0x0"), Seen::Nothing);
        assert_eq!(watch(b"Kernel panic - not syncin"), Seen::Nothing);
    }
}
