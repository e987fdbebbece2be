//! The PL011 each VM sees (the register model is hv_core::pl011): its lock, its output (raw
//! as it comes while this VM has the console's focus, else as prefixed lines), terminal input
//! and serial breaks when it has the focus, and a watch for a guest kernel's panic on its
//! console. `irq_line` is the level of the UART's SPI.

use crate::console;
use hv_core::mmio::MmioDevice;
use core::sync::atomic::{AtomicBool, Ordering};
use hv_core::panic_watch::Seen;
use hv_core::pl011::Pl011;
use spin::Mutex;

pub struct VUart {
    vm: usize,
    state: Mutex<Pl011>,
    /// The guest kernel's panic report has ended on this console (Linux prints "---[ end
    /// Kernel panic" before it stops for good, unless it reboots instead).
    panic_ended: AtomicBool,
    /// Its "Kernel panic - not syncing" line came (after the oops report, if any).
    panic_started: AtomicBool,
    /// The panic line's message (bounded).
    panic_message: Mutex<([u8; 120], usize)>,
}

/// The data register: a write there is output.
const DR: u64 = 0;

impl VUart {
    pub fn new(vm: usize) -> VUart {
        VUart {
            vm,
            state: Mutex::new(Pl011::new()),
            panic_ended: AtomicBool::new(false),
            panic_started: AtomicBool::new(false),
            panic_message: Mutex::new(([0; 120], 0)),
        }
    }

    /// A complete line: printed with the prefix unless the VM's output passes raw; watched
    /// for a guest kernel panic.
    fn line(&self, line: &[u8]) {
        if !console::is_raw(self.vm) {
            console::guest_line(self.vm, line);
        }
        match hv_core::panic_watch::watch(line) {
            Seen::Nothing => {}
            Seen::End => self.panic_ended.store(true, Ordering::Release),
            Seen::Start(said) => {
                log::error!("VM {}: guest kernel panic: {}", self.vm, core::str::from_utf8(line).unwrap_or("(not text)"));
                // For the crash record.
                let mut m = self.panic_message.lock();
                m.1 = said.len().min(m.0.len());
                let n = m.1;
                m.0[..n].copy_from_slice(&said[..n]);
                self.panic_started.store(true, Ordering::Release);
            }
        }
    }

    /// What the guest kernel's panic line said (empty if none came), copied out: the
    /// caller may then take the UART's other locks.
    pub fn panic_message(&self) -> ([u8; 120], usize) {
        *self.panic_message.lock()
    }

    /// Whether the guest's kernel reported a panic (once).
    pub fn take_panic_start(&self) -> bool {
        self.panic_started.swap(false, Ordering::AcqRel)
    }

    /// Whether the guest's panic report ended (once).
    pub fn take_panic_end(&self) -> bool {
        self.panic_ended.swap(false, Ordering::AcqRel)
    }

    /// Console output from the guest, through the UART or the console hypercall.
    pub fn write_bytes(&self, bytes: &[u8]) {
        if console::is_raw(self.vm) {
            console::guest_raw(bytes);
        }
        self.state.lock().output(bytes, &mut |l| self.line(l));
    }

    /// Input from the terminal. Returns how many bytes fit.
    pub fn push_input(&self, bytes: &[u8]) -> usize {
        self.state.lock().push_input(bytes)
    }

    /// The VM got the console's focus: its unfinished line (a prompt) is shown.
    pub fn show_partial_line(&self) {
        let st = self.state.lock();
        console::guest_show_partial(self.vm, st.partial_line());
    }

    /// A serial break from the terminal. Whether it fit.
    pub fn push_break(&self) -> bool {
        self.state.lock().push_break()
    }

    /// Calls `put(offset, value)` for each register as a read returns it, when reading
    /// changes nothing (no input waits): true. False, having called nothing, while input
    /// waits (a read of DR takes it).
    pub fn image(&self, put: &mut dyn FnMut(u64, u32)) -> bool {
        let st = self.state.lock();
        if st.has_input() {
            return false;
        }
        for offset in (0..hv_core::pl011::REGISTERS_END).step_by(4).chain((hv_core::pl011::ID_BASE..0x1000).step_by(4)) {
            put(offset, st.peek(offset).unwrap_or(0) as u32);
        }
        true
    }

    /// The level of the UART's interrupt line.
    pub fn irq_line(&self) -> bool {
        self.state.lock().irq_line()
    }

    /// Prints what is left of a line (when the VM stops).
    pub fn flush(&self) {
        self.state.lock().flush(&mut |l| self.line(l));
        console::guest_end(self.vm);
    }

    /// Calls `f` with the console's last lines, oldest first, in two parts.
    pub fn with_tail<R>(&self, f: impl FnOnce((&[u8], &[u8])) -> R) -> R {
        f(self.state.lock().tail())
    }
}

impl MmioDevice for VUart {
    fn read(&self, offset: u64, _size: u8) -> u64 {
        self.state.lock().read(offset)
    }

    fn write(&self, offset: u64, _size: u8, value: u64) {
        if offset == DR && console::is_raw(self.vm) {
            console::guest_raw(&[value as u8]);
        }
        self.state.lock().write(offset, value, &mut |l| self.line(l));
    }
}
