//! SMCCC calls from guests (HVC, or SMC trapped by HCR_EL2.TSC): PSCI, the Arm
//! architecture calls, and this hypervisor's own calls. Every argument is checked; answers
//! go back in x0.

use super::exit::Next;
use super::vcpu::{Power, Vcpu, VcpuRun};
use super::{StopReason, Vm};
use hv_core::guest_dt::vcpu_index;
use core::sync::atomic::{AtomicBool, Ordering};
use hv_core::hypercall::{self as abi, affinity, id, ret, Call, Counter, DebugFault};
use hv_core::pgtable::{Attrs, MapError, MemType};

pub fn handle(vm: &Vm, vcpu: &Vcpu, run: &mut VcpuRun) -> Next {
    run.count(Counter::Hypercalls);
    let x = &run.regs.x;
    let call = Call::decode(x[0], x[1], x[2], x[3]);
    // The calls answered with a constant stay here; the rest are out of line, so that the
    // hot path (inlined into the fast exit path) saves no more registers than it needs.
    let (value, next): (i64, Next) = match call {
        Call::SmcccVersion => (abi::SMCCC_VERSION_1_1 as i64, Next::Resume),
        Call::SmcccArchFeatures { function } => (arch_features(function), Next::Resume),
        Call::PsciVersion => (abi::PSCI_VERSION_1_1 as i64, Next::Resume),
        Call::PsciFeatures { function } => (psci_features(function), Next::Resume),
        // Only standby states (no context loss): the call waits like WFI.
        Call::PsciCpuSuspend => (ret::SUCCESS, Next::Wait),
        Call::PsciCpuOff => (ret::SUCCESS, Next::Off),
        Call::PsciMigrateInfoType => (abi::PSCI_TOS_NOT_PRESENT as i64, Next::Resume),
        Call::PsciSystemOff => (ret::SUCCESS, Next::Stop(StopReason::PoweredOff)),
        Call::PsciSystemReset => (ret::SUCCESS, Next::Stop(StopReason::Reset)),
        Call::HvVersion => (abi::HV_VERSION_VALUE as i64, Next::Resume),
        Call::HvYield => (ret::SUCCESS, Next::Preempt),
        other => (other_call(vm, vcpu, run, other), Next::Resume),
    };
    run.regs.x[0] = value as u64;
    next
}

/// The calls that do more than answer: out of line.
#[inline(never)]
fn other_call(vm: &Vm, vcpu: &Vcpu, run: &mut VcpuRun, call: Call) -> i64 {
    match call {
        Call::PsciCpuOn { target, entry, context } => cpu_on(vm, target, entry, context),
        Call::PsciAffinityInfo { target, lowest_level } => affinity_info(vm, target, lowest_level),
        Call::HvConsoleWrite { addr, len } => console_write(vm, addr, len),
        Call::HvPmsgWrite { addr, len } => pmsg_write(vm, addr, len),
        Call::HvTestVerdict { code } => {
            vm.set_verdict(code);
            ret::SUCCESS
        }
        Call::HvCounter { counter } => match Counter::from_raw(counter) {
            Some(c) => vm.counter(run, c) as i64,
            None => ret::INVALID_PARAMETERS,
        },
        Call::HvCounters { counters } => counters_snapshot(vm, run, counters),
        Call::HvMemUnmap { .. }
        | Call::HvMemProtect { .. }
        | Call::HvMemAge { .. }
        | Call::HvMemReclaim { .. }
        | Call::HvMemPeek { .. }
        | Call::HvMemTrace => memory_call(vm, vcpu, run, call),
        Call::HvDebugFault { fault } => debug_fault(vcpu, fault),
        Call::Unknown { function } => unknown(vcpu, function),
        // Answered in `handle`.
        _ => ret::NOT_SUPPORTED,
    }
}

/// HV_COUNTERS: three counters at one instant, into x1..x3.
fn counters_snapshot(vm: &Vm, run: &mut VcpuRun, ids: [u64; 3]) -> i64 {
    let mut values = [0; 3];
    for (v, id) in values.iter_mut().zip(ids) {
        match Counter::from_raw(id) {
            Some(c) => *v = vm.counter(run, c),
            None => return ret::INVALID_PARAMETERS,
        }
    }
    run.regs.x[1..4].copy_from_slice(&values);
    ret::SUCCESS
}

/// HV_MEM_*: out of line, so that the hot calls' path stays small.
#[cold]
#[inline(never)]
fn memory_call(vm: &Vm, vcpu: &Vcpu, run: &mut VcpuRun, call: Call) -> i64 {
    match call {
        Call::HvMemUnmap { ipa, size } => mem_result(vm, vcpu, "unmap", vm.mem.unmap(ipa, size)),
        Call::HvMemProtect { ipa, size, perm } => mem_protect(vm, vcpu, ipa, size, perm),
        Call::HvMemAge { ipa, size, test_only } => mem_age(vm, vcpu, run, ipa, size, test_only),
        Call::HvMemReclaim { ipa, size, passes } => mem_reclaim(vm, vcpu, ipa, size, passes),
        Call::HvMemPeek { ipa } => mem_peek(vm, run, ipa),
        Call::HvMemTrace => {
            // A guest asking in a loop must not flood the log.
            if vm.within_log_budget() {
                vm.mem.log_trace(vm.id);
            }
            vm.mem.trace.total() as i64
        }
        _ => ret::NOT_SUPPORTED,
    }
}

/// A guest memory operation's answer: the bytes it covered, or an error code for a range
/// that is not page-aligned RAM of the caller.
fn mem_result(vm: &Vm, vcpu: &Vcpu, what: &str, r: Result<u64, MapError>) -> i64 {
    match r {
        Ok(bytes) => bytes as i64,
        Err(e) => {
            vm.warn(format_args!("vCPU {}: HV_MEM {what} refused: {e:?}", vcpu.index));
            match e {
                MapError::Misaligned => ret::INVALID_PARAMETERS,
                MapError::OutOfRange | MapError::AlreadyMapped | MapError::UnsupportedSize => ret::INVALID_ADDRESS,
                MapError::NoMemory => ret::INTERNAL_FAILURE,
            }
        }
    }
}

#[inline(never)]
fn mem_protect(vm: &Vm, vcpu: &Vcpu, ipa: u64, size: u64, perm: u64) -> i64 {
    let Some((read, write, exec)) = abi::mem_perm::decode(perm) else {
        return ret::INVALID_PARAMETERS;
    };
    let attrs = Attrs { mem: MemType::Normal, read, write, exec };
    mem_result(vm, vcpu, "protect", vm.mem.protect(ipa, size, attrs))
}

#[inline(never)]
fn mem_age(vm: &Vm, vcpu: &Vcpu, run: &mut VcpuRun, ipa: u64, size: u64, test_only: bool) -> i64 {
    match vm.mem.age(ipa, size, test_only) {
        Ok((pages, bitmap, hypervisor_young)) => {
            run.regs.x[1] = bitmap;
            run.regs.x[2] = hypervisor_young as u64;
            pages as i64
        }
        Err(e) => mem_result(vm, vcpu, "age", Err(e)),
    }
}

#[inline(never)]
fn mem_reclaim(vm: &Vm, vcpu: &Vcpu, ipa: u64, size: u64, passes: u64) -> i64 {
    if passes > u8::MAX as u64 {
        return ret::INVALID_PARAMETERS;
    }
    match vm.mem.reclaim(ipa, size, passes as u8) {
        Ok(pages) => pages as i64,
        Err(e) => mem_result(vm, vcpu, "reclaim", Err(e)),
    }
}

/// HV_MEM_PEEK: 8 bytes read the way the hypervisor reads guest memory.
#[inline(never)]
fn mem_peek(vm: &Vm, run: &mut VcpuRun, ipa: u64) -> i64 {
    if ipa % 8 != 0 {
        return ret::INVALID_PARAMETERS;
    }
    let mut bytes = [0u8; 8];
    match vm.mem.read(ipa, &mut bytes) {
        Ok(()) => {
            run.regs.x[1] = u64::from_le_bytes(bytes);
            ret::SUCCESS
        }
        Err(_) => ret::INVALID_ADDRESS,
    }
}

/// Set from the hypervisor's command line (`debug_faults=on`).
pub static DEBUG_FAULTS: AtomicBool = AtomicBool::new(false);

/// HV_DEBUG_FAULT: fault on purpose, if the machine's owner allowed it.
#[cold]
#[inline(never)]
fn debug_fault(vcpu: &Vcpu, fault: u64) -> i64 {
    if !DEBUG_FAULTS.load(Ordering::Relaxed) {
        return ret::NOT_SUPPORTED;
    }
    let Some(fault) = DebugFault::from_raw(fault) else {
        return ret::INVALID_PARAMETERS;
    };
    log::warn!("vCPU {}: debug fault {fault:?} requested", vcpu.index);
    match fault {
        DebugFault::Panic => panic!("debug fault requested by a guest (HV_DEBUG_FAULT)"),
        DebugFault::DataAbort => {
            let (guard, _) = crate::arch::stacks::stack_guard(0);
            // SAFETY: none: this load faults on purpose (the guard page is unmapped), which
            // is what the caller asked for; the EL2 exception report follows.
            unsafe { core::ptr::read_volatile(guard as *const u64) as i64 }
        }
        DebugFault::StackOverflow => recurse(0) as i64,
        DebugFault::PacKey => {
            crate::arch::pauth::corrupt_own_key();
            // Returning authenticates this function's return address with the changed key.
            ret::SUCCESS
        }
    }
}

/// Recursion with no end, using a page of stack per call.
#[inline(never)]
#[allow(unconditional_recursion)]
fn recurse(depth: u64) -> u64 {
    let frame = core::hint::black_box([depth; 512]);
    recurse(depth + 1).wrapping_add(frame[depth as usize % 512])
}

#[cold]
#[inline(never)]
fn unknown(vcpu: &Vcpu, function: u32) -> i64 {
    log::debug!("vCPU {}: unknown SMCCC function {function:#x}", vcpu.index);
    ret::NOT_SUPPORTED
}

/// SMCCC_ARCH_FEATURES answers for Arm architecture calls (owning entity 0) only.
fn arch_features(function: u32) -> i64 {
    match function {
        id::SMCCC_VERSION | id::SMCCC_ARCH_FEATURES => ret::SUCCESS,
        _ => ret::NOT_SUPPORTED,
    }
}

/// PSCI_FEATURES: the PSCI functions implemented, and SMCCC_VERSION (SMCCC 1.1 discovery).
fn psci_features(function: u32) -> i64 {
    let psci = function & 0xbf00_0000 == 0x8400_0000;
    if function == id::SMCCC_VERSION || (psci && Call::is_implemented(function)) {
        ret::SUCCESS
    } else {
        ret::NOT_SUPPORTED
    }
}

#[inline(never)]
fn cpu_on(vm: &Vm, target: u64, entry: u64, context: u64) -> i64 {
    let Some(index) = vcpu_index(target, vm.vcpus.len()) else {
        return ret::INVALID_PARAMETERS;
    };
    if !vm.is_ram(entry, 4) || entry % 4 != 0 {
        return ret::INVALID_ADDRESS;
    }
    let target = &vm.vcpus[index];
    let mut power = target.power.lock();
    match *power {
        Power::On => ret::ALREADY_ON,
        Power::OnPending { .. } => ret::ON_PENDING,
        Power::Off => {
            *power = Power::OnPending { entry, context };
            drop(power);
            crate::drivers::gicv3::kick_cpu_to_reschedule(target.pcpu);
            ret::SUCCESS
        }
    }
}

#[inline(never)]
fn affinity_info(vm: &Vm, target: u64, lowest_level: u64) -> i64 {
    if lowest_level != 0 {
        return ret::INVALID_PARAMETERS;
    }
    let Some(index) = vcpu_index(target, vm.vcpus.len()) else {
        return ret::INVALID_PARAMETERS;
    };
    match *vm.vcpus[index].power.lock() {
        Power::On => affinity::ON,
        Power::OnPending { .. } => affinity::ON_PENDING,
        Power::Off => affinity::OFF,
    }
}

/// HV_PMSG_WRITE: the bytes go to the VM's pmsg ring on the pstore disk, durable when this
/// returns (NOT_PRESENT without a disk with room for it).
#[inline(never)]
fn pmsg_write(vm: &Vm, addr: u64, len: u64) -> i64 {
    with_guest_buffer(vm, addr, len, abi::PMSG_WRITE_MAX, |bytes| match crate::pstore::pmsg_write(vm.id, bytes) {
        Ok(()) => len as i64,
        Err(crate::pstore::PmsgError::NoDisk) => ret::NOT_PRESENT,
        Err(crate::pstore::PmsgError::Disk) => ret::INTERNAL_FAILURE,
    })
}

#[inline(never)]
fn console_write(vm: &Vm, addr: u64, len: u64) -> i64 {
    with_guest_buffer(vm, addr, len, abi::CONSOLE_WRITE_MAX, |bytes| {
        vm.uart.write_bytes(bytes);
        vm.after_uart_activity();
        len as i64
    })
}

/// The longest guest buffer a hypercall copies out.
const BUFFER_MAX: usize = 4096;
const _: () = assert!(abi::CONSOLE_WRITE_MAX as usize <= BUFFER_MAX && abi::PMSG_WRITE_MAX as usize <= BUFFER_MAX);

/// The guest's buffer of a console or pmsg write, copied out and handed to `f`:
/// INVALID_PARAMETERS if longer than `max`, INVALID_ADDRESS if not the caller's RAM.
fn with_guest_buffer(vm: &Vm, addr: u64, len: u64, max: u64, f: impl FnOnce(&[u8]) -> i64) -> i64 {
    if len > max {
        return ret::INVALID_PARAMETERS;
    }
    let mut buf = [0u8; BUFFER_MAX];
    let Some(buf) = buf.get_mut(..len as usize) else { return ret::INVALID_PARAMETERS };
    if vm.mem.read(addr, buf).is_err() {
        return ret::INVALID_ADDRESS;
    }
    f(buf)
}
