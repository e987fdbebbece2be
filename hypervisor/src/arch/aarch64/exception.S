// EL2 exception vectors, guest entry and guest exit.
//
// While a guest runs, SP_EL2 points at its vCPU's register frame (VcpuRegs: x0..x30), so an
// exit saves the guest's registers with plain stores before touching anything else. Only
// the registers a call may clobber (x0..x18, x30) are saved at first; then, on this CPU's
// hypervisor stack (CpuHeader.stack_top at TPIDR_EL2):
//     handle_exit(regs, kind) -> regs | slow
// handles what needs no more than that (hypercalls, most MMIO, the vCPU's own timer
// interrupt when it alone is to be delivered). x19..x29 still hold the guest's values
// when it returns, as the calling convention preserves them, so a fast exit restores only
// what it saved. When `slow` (bit 0) is set, the rest of the frame is saved and
//     handle_exit_slow(regs) -> *mut VcpuRegs
// does everything else and names the vCPU to run next; with `full` (bit 1) as well, an MMIO
// access whose transfer register is one of x19..x29 (Linux's console and virtio writes
// often are) is first given the whole frame in
//     handle_exit_full(regs) -> regs | slow
// and resumes the guest from it unless that sets `slow`. Nothing of the hypervisor lives on
// the stack across a guest run. ELR_EL2/SPSR_EL2 stay live in their registers while a vCPU
// is loaded; EL1 state is switched only when a CPU changes vCPUs (context.rs).
//
// Pointer-authentication keys (pauth.S, vm/pauth.rs): a vCPU either runs "lazy", with
// HCR_EL2.API/APK clear, so it cannot touch the key registers, which keep the hypervisor's
// APIA key; or it owns them (REGS_KEYS_LIVE set), and then its exits come through
// el2_vectors_keys, which save its APIA key and put the hypervisor's back before any
// compiled code runs (the hypervisor signs with APIA alone: its other keys stay in their
// registers until an exit goes the slow path, which saves them), and every return to it
// loads its keys last (a fast one only APIA). el2_vectors, used while a lazy
// vCPU runs, is exactly the path of a hypervisor that ignores PAuth: no added instruction.
// guest_resume picks the table for the vCPU it enters; the fast paths keep the same vCPU.
//
// Constants: {REGS_KEYS} {REGS_KEYS_LIVE} {REGS_KEY_SWITCHES} {FAULT_STACK_TOP} {REGS_X18} {REGS_X30} {STACK_TOP} {KIND_SYNC} {KIND_IRQ} {KIND_FIQ}
//            {KIND_SERROR} {FRAME_SIZE} {EL2_SYNC} {EL2_IRQ} {EL2_FIQ} {EL2_SERROR} {EL2_SP0}

.macro save_guest_and_handle kind, exit
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
    b       \exit
.endm

// The guest's APIA key (the one the hypervisor's own code signs with) to or from the frame
// at SP, through x2 and x3: what a fast exit and its return switch.
.macro save_guest_apia
    mrs     x2, S3_0_C2_C1_0
    mrs     x3, S3_0_C2_C1_1
    stp     x2, x3, [sp, #{REGS_KEYS} + 16 * 0]
.endm

.macro load_guest_apia
    ldp     x2, x3, [sp, #{REGS_KEYS} + 16 * 0]
    msr     S3_0_C2_C1_0, x2
    msr     S3_0_C2_C1_1, x3
.endm

// The other eight key registers (APIB, APDA, APDB, APGA; lo, hi) to the frame at \frame,
// through x2..x9: the hypervisor never uses them, so they stay in the registers across a
// fast exit and are saved only when an exit goes the slow path (which may run another
// vCPU, or look at the frame).
.macro save_guest_other_keys frame
    mrs     x2, S3_0_C2_C1_2
    mrs     x3, S3_0_C2_C1_3
    mrs     x4, S3_0_C2_C2_0
    mrs     x5, S3_0_C2_C2_1
    mrs     x6, S3_0_C2_C2_2
    mrs     x7, S3_0_C2_C2_3
    mrs     x8, S3_0_C2_C3_0
    mrs     x9, S3_0_C2_C3_1
    stp     x2, x3, [\frame, #{REGS_KEYS} + 16 * 1]
    stp     x4, x5, [\frame, #{REGS_KEYS} + 16 * 2]
    stp     x6, x7, [\frame, #{REGS_KEYS} + 16 * 3]
    stp     x8, x9, [\frame, #{REGS_KEYS} + 16 * 4]
.endm

// All ten key registers (APIA, APIB, APDA, APDB, APGA; lo, hi) from the frame at SP,
// through x2..x11: a return that may follow a slow path.
.macro load_guest_keys
    ldp     x2, x3, [sp, #{REGS_KEYS} + 16 * 0]
    ldp     x4, x5, [sp, #{REGS_KEYS} + 16 * 1]
    ldp     x6, x7, [sp, #{REGS_KEYS} + 16 * 2]
    ldp     x8, x9, [sp, #{REGS_KEYS} + 16 * 3]
    ldp     x10, x11, [sp, #{REGS_KEYS} + 16 * 4]
    msr     S3_0_C2_C1_0, x2
    msr     S3_0_C2_C1_1, x3
    msr     S3_0_C2_C1_2, x4
    msr     S3_0_C2_C1_3, x5
    msr     S3_0_C2_C2_0, x6
    msr     S3_0_C2_C2_1, x7
    msr     S3_0_C2_C2_2, x8
    msr     S3_0_C2_C2_3, x9
    msr     S3_0_C2_C3_0, x10
    msr     S3_0_C2_C3_1, x11
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

.macro guest_exit_group exit
    .balign 0x80
    save_guest_and_handle {KIND_SYNC}, \exit
    .balign 0x80
    save_guest_and_handle {KIND_IRQ}, \exit
    .balign 0x80
    save_guest_and_handle {KIND_FIQ}, \exit
    .balign 0x80
    save_guest_and_handle {KIND_SERROR}, \exit
.endm

// A vector table: EL2's own exceptions, then guest exits going to \exit.
.macro vector_table exit
    // Current EL with SP_EL0: never used by the hypervisor.
    el2_fault_group {EL2_SP0}, {EL2_SP0}, {EL2_SP0}, {EL2_SP0}
    // Current EL with SP_EL2.
    el2_fault_group {EL2_SYNC}, {EL2_IRQ}, {EL2_FIQ}, {EL2_SERROR}
    // Lower EL, AArch64: guest exits.
    guest_exit_group \exit
    // Lower EL, AArch32 (a guest's 32-bit EL0): the same exits.
    guest_exit_group \exit
.endm

.section .text.vectors, "ax"
.balign 0x800
.global el2_vectors
el2_vectors:
    vector_table guest_exit

// While the running vCPU owns the key registers.
.balign 0x800
.global el2_vectors_keys
el2_vectors_keys:
    vector_table guest_exit_keys

// Exit of a vCPU that owns the key registers: x0 = frame = SP, x1 = kind; x2..x18 are
// saved already. Its APIA key goes to the frame and the hypervisor's comes back, made
// effective (ISB) before handle_exit, the first signing code (its other keys wait in their
// registers: exit_slow saves them).
guest_exit_keys:
    save_guest_apia
    ldr     x2, [sp, #{REGS_KEY_SWITCHES}]
    add     x2, x2, #1
    str     x2, [sp, #{REGS_KEY_SWITCHES}]
    adrp    x2, hyp_pac_key
    add     x2, x2, :lo12:hyp_pac_key
    ldp     x2, x3, [x2]
    msr     S3_0_C2_C1_0, x2
    msr     S3_0_C2_C1_1, x3
    isb
    mrs     x2, tpidr_el2
    ldr     x2, [x2, #{STACK_TOP}]
    mov     sp, x2
    bl      handle_exit
    tbnz    x0, #0, exit_slow
    mov     sp, x0
    // The fast path resumes the same vCPU (hypercalls never change who owns the keys).
    load_guest_apia
    b       restore_volatile

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
    // A vCPU owning the keys: the rest of them to the frame, which the slow path may hand
    // to another CPU's vCPU switch or load whole at the return (guest_resume).
    bic     x1, x0, #3
    ldr     x2, [x1, #{REGS_KEYS_LIVE}]
    cbz     x2, 3f
    save_guest_other_keys x1
3:  // Bit 1 (`full`): an MMIO access whose transfer register is one of x19..x29, handled
    // with the whole frame saved, and fast still unless handle_exit_full sets bit 0.
    tst     x0, #2
    bic     x0, x0, #3
    str     x19, [x0, #8 * 19]
    stp     x20, x21, [x0, #8 * 20]
    stp     x22, x23, [x0, #8 * 22]
    stp     x24, x25, [x0, #8 * 24]
    stp     x26, x27, [x0, #8 * 26]
    stp     x28, x29, [x0, #8 * 28]
    b.eq    1f
    bl      handle_exit_full
    tbz     x0, #0, guest_resume    // the same vCPU, its frame (a read may have set x19..x29)
    bic     x0, x0, #1
1:  bl      handle_exit_slow
    // fall through with x0 = the frame to resume

// x0 = *VcpuRegs. Loads all of the guest's registers, its keys if it owns them (last: no
// signing code runs after), the vector table for its exits, and returns to it.
.global guest_resume
guest_resume:
    mov     sp, x0
    ldr     x1, [sp, #{REGS_KEYS_LIVE}]
    cbz     x1, 1f
    load_guest_keys
    adrp    x1, el2_vectors_keys
    add     x1, x1, :lo12:el2_vectors_keys
    b       2f
1:  adrp    x1, el2_vectors
    add     x1, x1, :lo12:el2_vectors
2:  msr     vbar_el2, x1            // effective at the eret, which synchronizes context
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
