//! vCPUs sharing a physical CPU: run in two VMs on one CPU, each vCPU fills its registers
//! (general-purpose, EL1 system registers, FP/SIMD, both timers, pointer-authentication
//! keys) with values of its own, waits (WFI, which hands the CPU to the other VM; its
//! virtual timer, due 20 ms later, ends the wait once the other VM is gone), and checks they
//! came back intact. Bootargs: tag=N makes the values differ between the VMs.

#![no_std]
#![no_main]

use core::arch::asm;
use guest_rt::{check, check_eq, counter, gic, hvc, println, BootInfo};
use hv_core::hypercall::Counter;

const ROUNDS: u64 = 100;

fn main(info: &BootInfo) -> ! {
    let tag = info.arg("tag").unwrap_or(0);
    let wfx_before = hvc::counter(Counter::WfxTraps);
    gic::init_distributor();
    gic::init_cpu();
    gic::enable(27);
    for round in 0..ROUNDS {
        let p = tag << 48 | round << 8;
        let (now, freq) = counter();
        // Far enough ahead that it cannot fire before the WFI (which would then not trap),
        // whatever the other VM does meanwhile (it gets at most a 10 ms slice).
        let wake = now + freq / 50;
        // SAFETY: these EL1/EL0 registers hold nothing this guest relies on (no EL0, no
        // thread pointers, the physical timer disabled, the virtual one only wakes the WFI
        // with interrupts masked); writing them is the point of the test.
        unsafe {
            asm!(
                "msr tpidr_el1, {a}", "msr tpidr_el0, {b}", "msr tpidrro_el0, {c}",
                "msr contextidr_el1, {d}", "msr cntp_cval_el0, {e}", "msr sp_el0, {f}",
                "msr cntv_cval_el0, {w}", "msr cntv_ctl_el0, {one}",
                ".arch_extension fp", "fmov d0, {a}", "fmov d7, {b}", "fmov d31, {c}",
                // APIAKeyLo_EL1 and APGAKeyHi_EL1 (this guest signs nothing with them)
                "msr S3_0_C2_C1_0, {a}", "msr S3_0_C2_C3_1, {e}",
                a = in(reg) p | 1, b = in(reg) p | 2, c = in(reg) p | 3,
                d = in(reg) (p | 4) & 0xffff_ffff, e = in(reg) p | 5, f = in(reg) p | 6,
                w = in(reg) wake, one = in(reg) 1u64,
                options(nostack)
            );
        }
        let regs: [u64; 17];
        // SAFETY: WFI with known values in caller-saved and callee-saved registers; the
        // registers are declared as inputs and outputs.
        unsafe {
            let (mut r9, mut r10, mut r11, mut r12, mut r13, mut r14, mut r15, mut r16, mut r17) =
                (p | 9, p | 10, p | 11, p | 12, p | 13, p | 14, p | 15, p | 16, p | 17);
            let (mut r20, mut r21, mut r22, mut r23, mut r24, mut r25, mut r26, mut r27) =
                (p | 20, p | 21, p | 22, p | 23, p | 24, p | 25, p | 26, p | 27);
            asm!("wfi",
                inout("x9") r9, inout("x10") r10, inout("x11") r11, inout("x12") r12, inout("x13") r13,
                inout("x14") r14, inout("x15") r15, inout("x16") r16, inout("x17") r17,
                inout("x20") r20, inout("x21") r21, inout("x22") r22, inout("x23") r23,
                inout("x24") r24, inout("x25") r25, inout("x26") r26, inout("x27") r27,
                options(nostack));
            regs = [r9, r10, r11, r12, r13, r14, r15, r16, r17, r20, r21, r22, r23, r24, r25, r26, r27];
        }
        for (i, r) in regs.iter().enumerate() {
            let n = if i < 9 { 9 + i as u64 } else { 11 + i as u64 };
            check_eq!(*r, p | n, "x{} after WFI in round {}", n, round);
        }
        let (a, b, c, d, e, f, q0, q7, q31, ka, kg, w): (u64, u64, u64, u64, u64, u64, u64, u64, u64, u64, u64, u64);
        // SAFETY: reads of the registers written above, and the virtual timer turned off.
        unsafe {
            asm!(
                "mrs {a}, tpidr_el1", "mrs {b}, tpidr_el0", "mrs {c}, tpidrro_el0",
                "mrs {d}, contextidr_el1", "mrs {e}, cntp_cval_el0", "mrs {f}, sp_el0",
                "mrs {w}, cntv_cval_el0", "msr cntv_ctl_el0, xzr",
                ".arch_extension fp", "fmov {g}, d0", "fmov {h}, d7", "fmov {i}, d31",
                "mrs {j}, S3_0_C2_C1_0", "mrs {k}, S3_0_C2_C3_1",
                a = out(reg) a, b = out(reg) b, c = out(reg) c, d = out(reg) d, e = out(reg) e,
                f = out(reg) f, g = out(reg) q0, h = out(reg) q7, i = out(reg) q31, j = out(reg) ka, k = out(reg) kg,
                w = out(reg) w,
                options(nostack)
            );
        }
        // The timer is off now: nothing may stay pending to end the next wait early (an
        // interrupt it raised meanwhile is withdrawn; the acknowledge sees none).
        let intid = gic::ack();
        if intid < 1020 {
            gic::eoi(intid);
        }
        check_eq!([a, b, c, d, e, f], [p | 1, p | 2, p | 3, (p | 4) & 0xffff_ffff, p | 5, p | 6], "EL1/EL0 registers after WFI in round {}", round);
        check_eq!([q0, q7, q31], [p | 1, p | 2, p | 3], "FP registers after WFI in round {}", round);
        check_eq!([ka, kg], [p | 1, p | 5], "pointer-authentication keys after WFI in round {}", round);
        check_eq!(w, wake, "virtual timer's compare value after WFI in round {}", round);
    }
    let waits = hvc::counter(Counter::WfxTraps) - wfx_before;
    check!(waits >= ROUNDS, "every WFI trapped ({} of {})", waits, ROUNDS);
    println!("tag {}: registers intact across {} waits", tag, ROUNDS);
    guest_rt::pass()
}

guest_rt::guest_main!(main);
