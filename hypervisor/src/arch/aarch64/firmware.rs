//! Calls out of the hypervisor: PSCI to the firmware (QEMU's, through SMC) and the
//! semihosting exit that hands a status to QEMU.

use super::exception::TrapFrame;
use hv_core::esr::{ec, Esr};
use core::arch::asm;
use core::sync::atomic::{AtomicBool, Ordering};

const PSCI_CPU_ON_64: u64 = 0xc400_0003;
const PSCI_SYSTEM_OFF: u64 = 0x8400_0008;

fn smc(function: u64, a1: u64, a2: u64, a3: u64) -> i64 {
    let ret: i64;
    // SAFETY: an SMCCC call to the firmware; per SMCCC it may clobber x0..x17.
    unsafe {
        asm!("smc #0",
            inout("x0") function => ret,
            inout("x1") a1 => _, inout("x2") a2 => _, inout("x3") a3 => _,
            out("x4") _, out("x5") _, out("x6") _, out("x7") _,
            out("x8") _, out("x9") _, out("x10") _, out("x11") _,
            out("x12") _, out("x13") _, out("x14") _, out("x15") _,
            out("x16") _, out("x17") _,
            options(nostack));
    }
    ret
}

/// Starts the physical CPU `mpidr` at `entry` (a physical address, MMU off) with x0 = `context`.
pub fn cpu_on(mpidr: u64, entry: u64, context: u64) -> i64 {
    smc(PSCI_CPU_ON_64, mpidr, entry, context)
}

/// Powers the machine off; QEMU exits with status 0.
pub fn system_off() -> ! {
    smc(PSCI_SYSTEM_OFF, 0, 0, 0);
    loop {
        aarch64_cpu::asm::wfe();
    }
}

static SEMIHOSTING_TRIED: AtomicBool = AtomicBool::new(false);

/// Ends QEMU with `status` through semihosting (SYS_EXIT with ADP_Stopped_ApplicationExit).
/// Without semihosting the HLT traps; `exit_if_semihosting_failed` then powers off.
pub fn exit(status: u32) -> ! {
    if status == 0 {
        system_off();
    }
    SEMIHOSTING_TRIED.store(true, Ordering::SeqCst);
    let block: [u64; 2] = [0x2_0026, status as u64];
    // SAFETY: the semihosting call reads the two-word block and ends the emulator.
    unsafe {
        asm!("hlt #0xf000", in("x0") 0x18u64, in("x1") block.as_ptr(), options(nostack));
    }
    system_off();
}

/// Called first on any EL2 exception: if it is the HLT of a semihosting exit that QEMU did
/// not handle, fall back to a plain power-off instead of reporting a fault.
pub fn exit_if_semihosting_failed(frame: &TrapFrame) {
    if SEMIHOSTING_TRIED.load(Ordering::SeqCst) && Esr(frame.esr).ec() == ec::UNKNOWN {
        system_off();
    }
}
