// The hypervisor's own pointer-authentication key. The image is built with
// -Zbranch-protection=pac-ret: every Rust function that saves its return address signs it
// with the APIA key (PACIASP) and authenticates it before returning (AUTIASP). So the key
// must be in APIAKey_EL1 and SCTLR_EL2.EnIA set before the first Rust function is called,
// on every CPU, and must be back in place (exception.S) before Rust runs after a guest
// that owned the key registers. A key left wrong fails authentication: a loud EL2 fault.
//
// The key is made once, on the boot CPU, and shared by all CPUs (a CPU never authenticates
// what another signed, but one key keeps the rule simple):
//   - from RNDR (FEAT_RNG), 128 bits, retried while the generator reports no entropy;
//   - otherwise from the physical counter and the device-tree address, each 64-bit half
//     put through the splitmix64 finalizer. That is weak (a guest cannot read the counter
//     of the hypervisor's boot, but the values are guessable), and the boot log says which
//     source was used.

// hyp_pac_key_source values (read by Rust for the boot log).
.equ PAC_SOURCE_NONE, 0
.equ PAC_SOURCE_RNDR, 1
.equ PAC_SOURCE_COUNTER, 2

// splitmix64's finalizer on \r (scratch \t): a bijective mix of all 64 bits.
.macro splitmix r, t
    eor     \r, \r, \r, lsr #30
    ldr     \t, =0xbf58476d1ce4e5b9
    mul     \r, \r, \t
    eor     \r, \r, \r, lsr #27
    ldr     \t, =0x94d049bb133111eb
    mul     \r, \r, \t
    eor     \r, \r, \r, lsr #31
.endm

.section .text.pauth, "ax"

// Boot CPU: x0 = a boot-time value to mix in (the device-tree address). Leaf; clobbers
// x0..x7. No effect without FEAT_PAuth address authentication.
.global hyp_pac_init_primary
hyp_pac_init_primary:
    mrs     x1, id_aa64isar1_el1
    tst     x1, #0xff0              // APA or API: address authentication
    b.eq    9f
    mrs     x1, id_aa64isar0_el1
    ubfx    x1, x1, #60, #4         // RNDR
    cbz     x1, 3f
    mov     x5, #64                 // attempts before falling back
1:  mrs     x2, s3_3_c2_c4_0        // RNDR
    b.eq    2f                      // Z set: no entropy this time
    mrs     x3, s3_3_c2_c4_0
    b.eq    2f
    mov     x6, #PAC_SOURCE_RNDR
    b       5f
2:  subs    x5, x5, #1
    b.ne    1b
3:  mrs     x2, cntpct_el0
    eor     x2, x2, x0
    splitmix x2, x4
    mrs     x3, cntpct_el0
    eor     x3, x3, x2, ror #17
    splitmix x3, x4
    mov     x6, #PAC_SOURCE_COUNTER
5:  adrp    x1, hyp_pac_key
    add     x1, x1, :lo12:hyp_pac_key
    stp     x2, x3, [x1]
    adrp    x1, hyp_pac_key_source
    str     x6, [x1, :lo12:hyp_pac_key_source]
    b       hyp_pac_install
9:  ret


// Every CPU (the boot CPU through hyp_pac_init_primary): loads the key made at boot and
// turns on EL2 address signing. Leaf; clobbers x1..x3.
.global hyp_pac_install
hyp_pac_install:
    mrs     x1, id_aa64isar1_el1
    tst     x1, #0xff0
    b.eq    9f
    adrp    x1, hyp_pac_key
    add     x1, x1, :lo12:hyp_pac_key
    ldp     x2, x3, [x1]
    msr     S3_0_C2_C1_0, x2        // APIAKeyLo_EL1
    msr     S3_0_C2_C1_1, x3        // APIAKeyHi_EL1
    mrs     x1, sctlr_el2
    orr     x1, x1, #(1 << 31)      // EnIA
    msr     sctlr_el2, x1
    isb
9:  ret

// HV_DEBUG_FAULT PacKey: changes this CPU's APIA key, so that the caller's signed return
// address no longer authenticates. Leaf (it signs nothing itself).
.global hyp_pac_corrupt_key
hyp_pac_corrupt_key:
    mrs     x1, S3_0_C2_C1_0
    mvn     x1, x1
    msr     S3_0_C2_C1_0, x1
    isb
    ret

.section .data.pauth, "aw"
.balign 16
// APIA key of EL2 (lo, hi); exception.S reloads it after a guest owned the key registers.
.global hyp_pac_key
hyp_pac_key:
    .quad   0, 0
.global hyp_pac_key_source
hyp_pac_key_source:
    .quad   PAC_SOURCE_NONE
