//! Exception kinds and the report for exceptions the hypervisor takes itself.

use core::fmt::{self, Write};
use hv_core::esr::{ec, Esr};
use spin::Once;

/// Which vector a guest exit came through (exception.S passes it to `handle_exit`).
#[repr(u64)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitKind {
    Sync = 0,
    Irq = 1,
    Fiq = 2,
    SError = 3,
}

impl ExitKind {
    pub fn from_raw(v: u64) -> ExitKind {
        match v {
            0 => ExitKind::Sync,
            1 => ExitKind::Irq,
            2 => ExitKind::Fiq,
            _ => ExitKind::SError,
        }
    }
}

/// Which vector an exception taken at EL2 came through.
#[repr(u64)]
#[derive(Clone, Copy, Debug)]
pub enum El2Kind {
    Sync = 0,
    Irq = 1,
    Fiq = 2,
    SError = 3,
    Sp0 = 4,
}

/// Registers at the time of an EL2 exception, built by exception.S.
#[repr(C)]
pub struct TrapFrame {
    pub x: [u64; 31],
    pub elr: u64,
    pub spsr: u64,
    pub esr: u64,
    pub far: u64,
    /// SP_EL2 when the exception was taken.
    pub sp: u64,
}

/// Where the report of an exception taken at EL2 goes: a writer that takes no lock (the
/// console's panic writer), handed down once at boot by the layer that owns it.
static FAULT_SINK: Once<fn(&str)> = Once::new();

pub fn set_fault_sink(sink: fn(&str)) {
    FAULT_SINK.call_once(|| sink);
}

struct Sink;

impl Write for Sink {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if let Some(sink) = FAULT_SINK.get() {
            sink(s);
        }
        Ok(())
    }
}

/// An FPAC exception, or (without FEAT_FPAC) a jump to the non-canonical address AUTIASP
/// leaves when authentication fails: the EL2 VA space is 48 bits at most, so upper bits in
/// the faulting PC are the PAC error marks.
fn failed_authentication(esr: Esr, elr: u64) -> bool {
    esr.ec() == ec::FPAC || (esr.ec() == ec::IABT_CURRENT && elr >> 48 != 0)
}

/// An exception taken at EL2 is a hypervisor bug: report everything to the fault sink and
/// panic (the panic path records it and stops the machine).
#[no_mangle]
extern "C" fn el2_exception(frame: &TrapFrame, kind: u64) -> ! {
    super::firmware::exit_if_semihosting_failed(frame);
    let esr = Esr(frame.esr);
    let kind = match kind {
        0 => "synchronous",
        1 => "IRQ",
        2 => "FIQ",
        3 => "SError",
        _ => "exception on SP_EL0",
    };
    let mut w = Sink;
    let _ = writeln!(w, "\n*** hypervisor exception at EL2: {kind}");
    let _ = writeln!(w, "ESR_EL2 {:#018x}: EC {:#04x} ({}), IL {}, ISS {:#x}", esr.0, esr.ec(), esr.class_name(), esr.il32() as u8, esr.iss());
    if matches!(esr.ec(), ec::DABT_LOWER | ec::DABT_CURRENT) {
        let da = esr.data_abort();
        let _ = writeln!(w, "  data abort: {} (FSC {:#x}), {}", da.fault_kind(), da.fsc, if da.write { "write" } else { "read" });
    }
    let _ = writeln!(w, "ELR_EL2 {:#018x}  SPSR_EL2 {:#018x}  FAR_EL2 {:#018x}  SP {:#018x}", frame.elr, frame.spsr, frame.far, frame.sp);
    if let Some(cpu) = super::stacks::guard_page_owner(frame.sp).or(super::stacks::guard_page_owner(frame.far)) {
        let _ = writeln!(w, "  stack overflow: cpu{cpu}'s stack ran into its guard page");
    }
    if failed_authentication(esr, frame.elr) {
        let _ = writeln!(
            w,
            "  pointer authentication failed: a return address signed with the hypervisor's APIA key did not \
             authenticate (the key in the CPU was not the hypervisor's)"
        );
    }
    for (i, pair) in frame.x.chunks(2).enumerate() {
        let _ = write!(w, "x{:<2} {:#018x}", i * 2, pair[0]);
        if let Some(v) = pair.get(1) {
            let _ = write!(w, "  x{:<2} {:#018x}", i * 2 + 1, v);
        }
        let _ = writeln!(w);
    }
    panic!("unexpected {kind} exception at EL2 (EC {:#x}, ELR {:#x}, FAR {:#x})", esr.ec(), frame.elr, frame.far);
}
