//! Pointer-authentication keys under the hypervisor's lazy, adaptive and eager switching
//! (`pauth_keys=` on its command line). Each vCPU either uses PAC (random keys of its
//! own, signing enabled in SCTLR_EL1, PACIA/PACDA/PACGA/AUTIA every round) or never does,
//! makes hypercalls (exits), and, when sharing its physical CPU, yields it every round.
//! HV_COUNTERS snapshots (traps, loads, keys live) taken around each step let the checks be
//! exact whatever the time slices do:
//! - the first PAC use in a residency that began lazy traps exactly once, and none other;
//! - at a new load the keys are live exactly as the policy says (lazy: never; eager:
//!   always; adaptive: for a vCPU that used PAC, not for one that did not);
//! - PAC values, AUTIA results and the key registers read back are the vCPU's own, round
//!   after round, however many other vCPUs (with other keys) ran in between.
//!
//! Bootargs: policy=0|1|2 (lazy, adaptive, eager: what the hypervisor was given, for the
//! checks), users=MASK (vCPUs that use PAC, default 1), rounds=N, calls=N (hypercalls per
//! round), tag=N (seed of the keys), share=1 (yield every round), rekey=1 (new random keys
//! every round).

#![no_std]
#![no_main]

use core::arch::asm;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use guest_rt::hvc::{counters, hv_version, yield_cpu};
use guest_rt::{check, check_eq, println, psci, BootInfo};
use hv_core::hypercall::Counter;
use hv_core::rng::Rng;

const VALUE: u64 = 0x4008_1234;
const MODIFIER: u64 = 0x1122_3344_5566_7788;

#[derive(Clone, Copy)]
struct Config {
    policy: u64,
    users: u64,
    rounds: u64,
    calls: u64,
    tag: u64,
    share: bool,
    rekey: bool,
}

/// The configuration, for secondary vCPUs: policy, users, rounds, calls, tag, share, rekey.
static CONFIG: [AtomicU64; 7] = [const { AtomicU64::new(0) }; 7];
static DONE: AtomicUsize = AtomicUsize::new(0);

const POLICY_NAMES: [&str; 3] = ["lazy", "adaptive", "eager"];

/// Ten key-register values that look like anything a guest might write.
fn random_keys(rng: &mut Rng) -> [u64; 10] {
    core::array::from_fn(|_| rng.next())
}

fn write_keys(k: &[u64; 10]) {
    // SAFETY: the key registers affect only this guest's own PAC results; nothing in this
    // guest is built with return-address signing.
    unsafe {
        asm!(
            "msr S3_0_C2_C1_0, {0}", "msr S3_0_C2_C1_1, {1}", "msr S3_0_C2_C1_2, {2}", "msr S3_0_C2_C1_3, {3}",
            "msr S3_0_C2_C2_0, {4}", "msr S3_0_C2_C2_1, {5}", "msr S3_0_C2_C2_2, {6}", "msr S3_0_C2_C2_3, {7}",
            "msr S3_0_C2_C3_0, {8}", "msr S3_0_C2_C3_1, {9}", "isb",
            in(reg) k[0], in(reg) k[1], in(reg) k[2], in(reg) k[3], in(reg) k[4],
            in(reg) k[5], in(reg) k[6], in(reg) k[7], in(reg) k[8], in(reg) k[9],
            options(nostack)
        );
    }
}

fn read_keys() -> [u64; 10] {
    let mut k = [0u64; 10];
    // SAFETY: reads of the key registers, which this guest may access.
    unsafe {
        asm!(
            "mrs {0}, S3_0_C2_C1_0", "mrs {1}, S3_0_C2_C1_1", "mrs {2}, S3_0_C2_C1_2", "mrs {3}, S3_0_C2_C1_3",
            "mrs {4}, S3_0_C2_C2_0", "mrs {5}, S3_0_C2_C2_1", "mrs {6}, S3_0_C2_C2_2", "mrs {7}, S3_0_C2_C2_3",
            "mrs {8}, S3_0_C2_C3_0", "mrs {9}, S3_0_C2_C3_1",
            out(reg) k[0], out(reg) k[1], out(reg) k[2], out(reg) k[3], out(reg) k[4],
            out(reg) k[5], out(reg) k[6], out(reg) k[7], out(reg) k[8], out(reg) k[9],
            options(nostack)
        );
    }
    k
}

/// Turns on all four keys for EL1/EL0 (SCTLR_EL1 EnIA, EnIB, EnDA, EnDB).
fn enable_signing() {
    // SAFETY: the enables change what PAC instructions compute, and this guest's code has
    // no PAC instructions but those below.
    unsafe {
        asm!("mrs {t}, sctlr_el1", "orr {t}, {t}, {en}", "msr sctlr_el1, {t}", "isb",
            t = out(reg) _, en = in(reg) hv_core::pauth::SCTLR_EN_KEYS, options(nostack));
    }
}

/// PACIA, PACDA and PACGA of `VALUE` with `MODIFIER`.
fn sign() -> [u64; 3] {
    let (ia, da, ga): (u64, u64, u64);
    // SAFETY: PAC instructions compute values in registers only.
    unsafe {
        asm!(".arch_extension pauth",
            "mov {ia}, {v}", "pacia {ia}, {m}", "mov {da}, {v}", "pacda {da}, {m}", "pacga {ga}, {v}, {m}",
            v = in(reg) VALUE, m = in(reg) MODIFIER, ia = out(reg) ia, da = out(reg) da, ga = out(reg) ga,
            options(nomem, nostack));
    }
    [ia, da, ga]
}

fn authenticate(signed: u64) -> u64 {
    let mut p = signed;
    // SAFETY: AUTIA computes in a register; a failure only corrupts the value.
    unsafe { asm!(".arch_extension pauth", "autia {p}, {m}", p = inout(reg) p, m = in(reg) MODIFIER, options(nomem, nostack)) };
    p
}

/// Traps, loads, and whether the keys are live, at one instant.
fn snapshot() -> [u64; 3] {
    counters([Counter::PauthTraps, Counter::Loads, Counter::KeysLive])
}

fn run(index: usize, c: Config, vcpus: usize) {
    let user = c.users >> index & 1 == 1;
    let live_at_load = match c.policy {
        0 => 0,
        1 => user as u64,
        _ => 1,
    };
    let mut rng = Rng::new(c.tag.wrapping_mul(1000).wrapping_add(index as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut keys = [0u64; 10];
    let mut reference = [0u64; 3];
    if user {
        keys = random_keys(&mut rng);
        write_keys(&keys);
        enable_signing();
        reference = sign();
        check!(reference[0] != VALUE && reference[1] != VALUE, "PACIA/PACDA changed nothing: {:#x?}", reference);
    }
    let mut reloads = 0;
    for round in 0..c.rounds {
        let [_, loads0, _] = snapshot();
        if c.share {
            yield_cpu();
        }
        let [traps1, loads1, live1] = snapshot();
        if loads1 != loads0 {
            reloads += 1;
            check_eq!(live1, live_at_load, "vCPU {}: keys live at a new load ({} policy), round {}", index, POLICY_NAMES[c.policy as usize], round);
        }
        if user {
            if c.rekey {
                keys = random_keys(&mut rng);
                write_keys(&keys);
            }
            let signed = sign();
            let [traps2, loads2, live2] = snapshot();
            if loads2 == loads1 {
                let expected = if live1 == 0 { 1 } else { 0 };
                check_eq!(traps2 - traps1, expected, "vCPU {}: traps for PAC use in a residency (live before: {}), round {}", index, live1, round);
                check_eq!(live2, 1, "vCPU {}: keys live after PAC use, round {}", index, round);
            }
            if c.rekey {
                reference = signed;
            }
            check_eq!(signed, reference, "vCPU {}: PAC values in round {}", index, round);
            check_eq!(authenticate(signed[0]), VALUE, "vCPU {}: AUTIA in round {}", index, round);
            check_eq!(read_keys(), keys, "vCPU {}: own key registers in round {}", index, round);
        } else {
            check_eq!(traps1, 0, "vCPU {}: PAuth traps of a vCPU that never uses PAC", index);
        }
        for _ in 0..c.calls {
            hv_version();
        }
    }
    if user && !c.rekey {
        check_eq!(sign(), reference, "vCPU {}: PAC values after all rounds", index);
    }
    let [traps, loads, _] = snapshot();
    let [switches, plain, exits] = counters([Counter::KeySwitchExits, Counter::PlainExits, Counter::Exits]);
    match (user, c.policy) {
        (false, 0 | 1) => {
            check_eq!((traps, switches), (0, 0), "vCPU {}: traps and key switches without PAC use", index);
        }
        (false, _) => check!(traps == 0 && switches > 0, "vCPU {}: eager switches every exit ({} of {})", index, switches, exits),
        (true, 0) if c.share => check!(
            traps > reloads && traps <= loads,
            "vCPU {}: lazy traps at every load that uses PAC ({} traps, {} reloads, {} loads)", index, traps, reloads, loads
        ),
        (true, 0) => check_eq!((traps, loads), (1, 1), "vCPU {}: lazy, alone on its CPU: one load, one trap", index),
        (true, 1) => check_eq!(traps, 1, "vCPU {}: adaptive traps once in all", index),
        (true, _) => check_eq!(traps, 0, "vCPU {}: eager never traps", index),
    }
    if c.share && vcpus > 1 {
        check!(reloads >= c.rounds / 2, "vCPU {}: only {} of {} yields gave the CPU away", index, reloads, c.rounds);
    }
    println!(
        "vCPU {} ({}, {}): {} rounds, {} reloads; pauth_traps={} key_switch_exits={} plain_exits={} loads={}",
        index,
        if user { "uses PAC" } else { "no PAC" },
        POLICY_NAMES[c.policy as usize],
        c.rounds,
        reloads,
        traps,
        switches,
        plain,
        loads
    );
}

fn config() -> Config {
    let v: [u64; 7] = core::array::from_fn(|i| CONFIG[i].load(Ordering::Acquire));
    Config { policy: v[0], users: v[1], rounds: v[2], calls: v[3], tag: v[4], share: v[5] != 0, rekey: v[6] != 0 }
}

/// Once done, a vCPU keeps giving its CPU away until all are done, so that the others'
/// yields still switch.
fn finish(vcpus: usize) {
    DONE.fetch_add(1, Ordering::AcqRel);
    while DONE.load(Ordering::Acquire) < vcpus {
        yield_cpu();
    }
}

fn main(info: &BootInfo) -> ! {
    let values = [
        info.arg("policy").unwrap_or(1).min(2),
        info.arg("users").unwrap_or(1),
        info.arg("rounds").unwrap_or(200),
        info.arg("calls").unwrap_or(20),
        info.arg("tag").unwrap_or(0),
        info.arg("share").unwrap_or(0),
        info.arg("rekey").unwrap_or(0),
    ];
    for (slot, v) in CONFIG.iter().zip(values) {
        slot.store(v, Ordering::Release);
    }
    let n = info.vcpus;
    for i in 1..n {
        check_eq!(guest_rt::start_vcpu(i, secondary, n as u64), 0, "CPU_ON({})", i);
    }
    run(0, config(), n);
    finish(n);
    println!("pac: all {} vCPU(s) kept their own keys", n);
    guest_rt::pass()
}

fn secondary(index: usize, n: u64) -> ! {
    run(index, config(), n as usize);
    finish(n as usize);
    psci::cpu_off()
}

guest_rt::guest_main!(main);
