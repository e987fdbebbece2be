//! Terminal input as the hypervisor's console reads it: bytes for the VM that has the
//! focus, and the escape key (Ctrl-]) followed by a digit moving the focus to that VM, or by
//! `-`, `+` or `m`: the focused VM's memory balloon and memory counts.

/// Ctrl-]: the next key, a digit, names the VM that gets the input from then on.
pub const ESCAPE_KEY: u8 = 0x1d;

/// What one byte typed on the terminal means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    /// Input for the focused VM.
    Byte(u8),
    /// Ctrl-] then a digit: the focus moves to this VM.
    Focus(usize),
    /// Ctrl-] then `-`, `+` or `m`.
    Command(Command),
    /// Consumed (the escape key itself).
    None,
}

/// What the hypervisor does for the focused VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// `-`: its balloon's target grows by a step (the guest gives memory back).
    Shrink,
    /// `+`: its balloon's target shrinks by a step (the guest may take memory again).
    Grow,
    /// `m`: its memory and balloon counts are logged.
    ShowMemory,
}

/// `bytes` without terminal control sequences (ESC [ ... final byte, and other ESC pairs):
/// what may be shown again on a terminal without it answering anything (a prompt that asked
/// for the cursor position must not ask twice). Calls `out` for each kept byte.
pub fn without_control_sequences(bytes: &[u8], out: &mut dyn FnMut(u8)) {
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            0x1b if bytes.get(i + 1) == Some(&b'[') => {
                // CSI: parameters and intermediates, then one final byte 0x40..=0x7e.
                i += 2;
                while i < bytes.len() && !(0x40..=0x7e).contains(&bytes[i]) {
                    i += 1;
                }
                i += 1;
            }
            0x1b => i += 2,
            b => {
                out(b);
                i += 1;
            }
        }
    }
}

/// Remembers an escape key until the next byte.
#[derive(Clone, Copy, Debug, Default)]
pub struct InputParser {
    escape: bool,
}

impl InputParser {
    pub const fn new() -> InputParser {
        InputParser { escape: false }
    }

    pub fn feed(&mut self, b: u8) -> Key {
        if core::mem::take(&mut self.escape) {
            match b {
                b'0'..=b'9' => return Key::Focus((b - b'0') as usize),
                b'-' => return Key::Command(Command::Shrink),
                b'+' => return Key::Command(Command::Grow),
                b'm' => return Key::Command(Command::ShowMemory),
                _ => {}
            }
            // Not a digit: the escape is dropped and the byte goes through.
            return Key::Byte(b);
        }
        if b == ESCAPE_KEY {
            self.escape = true;
            return Key::None;
        }
        Key::Byte(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    fn feed(bytes: &[u8]) -> Vec<Key> {
        let mut p = InputParser::new();
        bytes.iter().map(|&b| p.feed(b)).collect()
    }

    #[test]
    fn control_sequences_are_left_out() {
        let mut kept = Vec::new();
        without_control_sequences(b"/ # \x1b[6nls \x1b[1;31mred\x1b[0m\x1b7x\x1b[", &mut |b| kept.push(b));
        assert_eq!(kept, b"/ # ls redx");
    }

    #[test]
    fn plain_bytes_pass_through() {
        assert_eq!(feed(b"ls\r"), [Key::Byte(b'l'), Key::Byte(b's'), Key::Byte(b'\r')]);
        // Control characters other than the escape key are input like any other.
        assert_eq!(feed(&[0x03, 0x1b]), [Key::Byte(0x03), Key::Byte(0x1b)]);
    }

    #[test]
    fn escape_then_digit_moves_the_focus() {
        assert_eq!(feed(&[ESCAPE_KEY, b'1', b'x']), [Key::None, Key::Focus(1), Key::Byte(b'x')]);
        assert_eq!(feed(&[ESCAPE_KEY, b'0']), [Key::None, Key::Focus(0)]);
        assert_eq!(feed(&[ESCAPE_KEY, b'9']), [Key::None, Key::Focus(9)]);
    }

    #[test]
    fn escape_then_balloon_keys() {
        assert_eq!(feed(&[ESCAPE_KEY, b'-', b'-']), [Key::None, Key::Command(Command::Shrink), Key::Byte(b'-')]);
        assert_eq!(feed(&[ESCAPE_KEY, b'+']), [Key::None, Key::Command(Command::Grow)]);
        assert_eq!(feed(&[ESCAPE_KEY, b'm', b'm']), [Key::None, Key::Command(Command::ShowMemory), Key::Byte(b'm')]);
    }

    #[test]
    fn escape_then_anything_else_drops_the_escape_only() {
        assert_eq!(feed(&[ESCAPE_KEY, b'a', b'1']), [Key::None, Key::Byte(b'a'), Key::Byte(b'1')]);
        // Two escapes: the second is taken as the byte after the first.
        assert_eq!(feed(&[ESCAPE_KEY, ESCAPE_KEY, b'2']), [Key::None, Key::Byte(ESCAPE_KEY), Key::Byte(b'2')]);
    }
}
