// EL2 exception vectors, guest entry and guest exit.
//
// While a guest runs, SP_EL2 points at its vCPU's register frame (VcpuRegs: x0..x30), so an
// exit saves the guest's registers with plain stores before touching anything else. Only
// the registers a call may clobber (x0..x18, x30) are saved at first; then, on this CPU's
// hypervisor stack (PerCpu.stack_top at TPIDR_EL2):
//     handle_exit(regs, kind) -> regs | slow
// handles what needs no more than that (hypercalls). x19..x29 still hold the guest's values
// when it returns, as the calling convention preserves them, so a fast exit restores only
// what it saved. When `slow` (bit 0) is set, the rest of the frame is saved and
//     handle_exit_slow(regs) -> *mut VcpuRegs
// does everything else and names the vCPU to run next. Nothing of the hypervisor lives on
// the stack across a guest run. ELR_EL2/SPSR_EL2 stay live in their registers while a vCPU
// is loaded; EL1 state is switched only when a CPU changes vCPUs (context.rs).
//
// Constants: {FAULT_STACK_TOP} {REGS_X18} {REGS_X30} {STACK_TOP} {KIND_SYNC} {KIND_IRQ} {KIND_FIQ}
//            {KIND_SERROR} {FRAME_SIZE} {EL2_SYNC} {EL2_IRQ} {EL2_FIQ} {EL2_SERROR} {EL2_SP0}

.macro save_guest_and_handle kind
    stp     x0, x1, [sp, #16 * 0]
    stp     x2, x3, [sp, #16 * 1]
    stp     x4, x5, [sp, #16 * 2]
    stp     x6, x7, [sp, #16 * 3]
    stp     x8, x9, [sp, #16 * 4]
    stp     x10, x11, [sp, #16 * 5]
    stp     x12, x13, [sp, #16 * 6]
    stp     x14, x15, [sp, #16 * 7]
    stp     x16, x17, [sp, #16 * 8]
    str     x18, [sp, #{REGS_X18}]
    str     x30, [sp, #{REGS_X30}]
    mov     x0, sp
    mov     x1, #\kind
    b       guest_exit
.endm

// An exception taken from EL2 itself: always a hypervisor bug, so it is reported and the
// machine stops. The report is built on this CPU's fault stack, since the fault may be an
// overflow of the ordinary stack into its guard page. TPIDRRO_EL0 and TPIDR_EL0 (a loaded
// guest's) serve as scratch: nothing runs a guest after this. The frame holds x0..x30,
// ELR, SPSR, ESR, FAR and the SP at the fault (TrapFrame).
.macro el2_fault kind
    msr     tpidrro_el0, x0
    mov     x0, sp
    msr     tpidr_el0, x0
    mrs     x0, tpidr_el2
    ldr     x0, [x0, #{FAULT_STACK_TOP}]
    mov     sp, x0
    sub     sp, sp, #{FRAME_SIZE}
    mrs     x0, tpidrro_el0
    stp     x0, x1, [sp, #16 * 0]
    stp     x2, x3, [sp, #16 * 1]
    mov     x1, #\kind
    b       el2_fault_common
.endm

// One group of four vector entries (synchronous, IRQ, FIQ, SError), 0x80 bytes each.
.macro el2_fault_group sync, irq, fiq, serror
    .balign 0x80
    el2_fault \sync
    .balign 0x80
    el2_fault \irq
    .balign 0x80
    el2_fault \fiq
    .balign 0x80
    el2_fault \serror
.endm

.macro guest_exit_group
    .balign 0x80
    save_guest_and_handle {KIND_SYNC}
    .balign 0x80
    save_guest_and_handle {KIND_IRQ}
    .balign 0x80
    save_guest_and_handle {KIND_FIQ}
    .balign 0x80
    save_guest_and_handle {KIND_SERROR}
.endm

.section .text.vectors, "ax"
.balign 0x800
.global el2_vectors
el2_vectors:
    // Current EL with SP_EL0: never used by the hypervisor.
    el2_fault_group {EL2_SP0}, {EL2_SP0}, {EL2_SP0}, {EL2_SP0}
    // Current EL with SP_EL2.
    el2_fault_group {EL2_SYNC}, {EL2_IRQ}, {EL2_FIQ}, {EL2_SERROR}
    // Lower EL, AArch64: guest exits.
    guest_exit_group
    // Lower EL, AArch32 (a guest's 32-bit EL0): the same exits.
    guest_exit_group

guest_exit:
    mrs     x2, tpidr_el2
    ldr     x2, [x2, #{STACK_TOP}]
    mov     sp, x2
    bl      handle_exit
    tbnz    x0, #0, exit_slow
    // Fast: back into the same guest; x19..x29 were never touched.
    mov     sp, x0
restore_volatile:
    ldp     x2, x3, [sp, #16 * 1]
    ldp     x4, x5, [sp, #16 * 2]
    ldp     x6, x7, [sp, #16 * 3]
    ldp     x8, x9, [sp, #16 * 4]
    ldp     x10, x11, [sp, #16 * 5]
    ldp     x12, x13, [sp, #16 * 6]
    ldp     x14, x15, [sp, #16 * 7]
    ldp     x16, x17, [sp, #16 * 8]
    ldr     x18, [sp, #{REGS_X18}]
    ldr     x30, [sp, #{REGS_X30}]
    ldp     x0, x1, [sp, #16 * 0]
    eret
    dsb     nsh                     // no speculation past the eret
    isb

exit_slow:
    bic     x0, x0, #1
    str     x19, [x0, #8 * 19]
    stp     x20, x21, [x0, #8 * 20]
    stp     x22, x23, [x0, #8 * 22]
    stp     x24, x25, [x0, #8 * 24]
    stp     x26, x27, [x0, #8 * 26]
    stp     x28, x29, [x0, #8 * 28]
    bl      handle_exit_slow
    // fall through with x0 = the frame to resume

// x0 = *VcpuRegs. Loads all of the guest's registers and returns to it.
.global guest_resume
guest_resume:
    mov     sp, x0
    ldr     x19, [sp, #8 * 19]
    ldp     x20, x21, [sp, #8 * 20]
    ldp     x22, x23, [sp, #8 * 22]
    ldp     x24, x25, [sp, #8 * 24]
    ldp     x26, x27, [sp, #8 * 26]
    ldp     x28, x29, [sp, #8 * 28]
    b       restore_volatile

el2_fault_common:
    stp     x4, x5, [sp, #16 * 2]
    stp     x6, x7, [sp, #16 * 3]
    stp     x8, x9, [sp, #16 * 4]
    stp     x10, x11, [sp, #16 * 5]
    stp     x12, x13, [sp, #16 * 6]
    stp     x14, x15, [sp, #16 * 7]
    stp     x16, x17, [sp, #16 * 8]
    stp     x18, x19, [sp, #16 * 9]
    stp     x20, x21, [sp, #16 * 10]
    stp     x22, x23, [sp, #16 * 11]
    stp     x24, x25, [sp, #16 * 12]
    stp     x26, x27, [sp, #16 * 13]
    stp     x28, x29, [sp, #16 * 14]
    mrs     x2, elr_el2
    stp     x30, x2, [sp, #16 * 15]
    mrs     x2, spsr_el2
    mrs     x3, esr_el2
    stp     x2, x3, [sp, #16 * 16]
    mrs     x2, far_el2
    mrs     x3, tpidr_el0               // SP at the fault
    stp     x2, x3, [sp, #16 * 17]
    mov     x0, sp
    bl      el2_exception           // reports and never returns
1:  wfe
    b       1b
