//! The hypervisor's memcpy, memmove, memset and memcmp (mem.S), and their check against
//! byte-at-a-time references (`selftest=on`; a boot test runs it). The references use
//! volatile accesses so that the compiler cannot turn them into calls of what they check.

use core::arch::global_asm;
use core::ptr::{read_volatile, write_volatile};

global_asm!(include_str!("mem.S"));

extern "C" {
    fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8;
    fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8;
    fn memset(dst: *mut u8, c: i32, n: usize) -> *mut u8;
    fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32;
}

const BUF: usize = 512;
/// Lengths up to this, at every offset pair listed: every path (the 64-byte loop, each
/// piece of the tail) at every misalignment.
const MAX_LEN: usize = 200;
const OFFSETS: [usize; 8] = [0, 1, 2, 3, 7, 8, 9, 15];

fn get(b: &[u8; BUF], i: usize) -> u8 {
    // SAFETY: `i` indexes `b` (checked by the slice index before the read).
    unsafe { read_volatile(&b[i]) }
}

fn set(b: &mut [u8; BUF], i: usize, v: u8) {
    // SAFETY: as in `get`.
    unsafe { write_volatile(&mut b[i], v) }
}

fn fill(b: &mut [u8; BUF], seed: u8) {
    for i in 0..BUF {
        set(b, i, (i as u8).wrapping_mul(31).wrapping_add(seed));
    }
}

/// Runs every case; the number run, or the first that failed.
pub fn check() -> Result<usize, &'static str> {
    let (mut a, mut b, mut want) = ([0u8; BUF], [0u8; BUF], [0u8; BUF]);
    let mut cases = 0;
    for len in 0..=MAX_LEN {
        for &so in &OFFSETS {
            for &d in &OFFSETS {
                // memcpy between two buffers: the range copied, nothing around it.
                fill(&mut a, 1);
                fill(&mut b, 101);
                fill(&mut want, 101);
                for i in 0..len {
                    set(&mut want, 16 + d + i, get(&a, 16 + so + i));
                }
                // SAFETY: both ranges lie inside their buffers (16 + 15 + MAX_LEN < BUF).
                let r = unsafe { memcpy(b.as_mut_ptr().add(16 + d), a.as_ptr().add(16 + so), len) };
                if r != b.as_mut_ptr().wrapping_add(16 + d) || (0..BUF).any(|i| get(&b, i) != get(&want, i)) {
                    return Err("memcpy");
                }
                // memmove within one buffer, source below, above or at the destination.
                for (dst, src) in [(16 + d, 16 + 4 * so), (16 + 4 * so, 16 + d)] {
                    fill(&mut a, 7);
                    fill(&mut want, 7);
                    for i in 0..len {
                        set(&mut b, i, get(&a, src + i));
                    }
                    for i in 0..len {
                        set(&mut want, dst + i, get(&b, i));
                    }
                    // SAFETY: both ranges lie inside `a` (16 + 60 + MAX_LEN < BUF).
                    let r = unsafe { memmove(a.as_mut_ptr().add(dst), a.as_ptr().add(src), len) };
                    if r != a.as_mut_ptr().wrapping_add(dst) || (0..BUF).any(|i| get(&a, i) != get(&want, i)) {
                        return Err("memmove");
                    }
                }
                cases += 3;
            }
            // memset: the byte value only (the int's other bits ignored), nothing around.
            fill(&mut a, 3);
            fill(&mut want, 3);
            for i in 0..len {
                set(&mut want, 16 + so + i, 0xa5);
            }
            // SAFETY: the range lies inside `a`.
            let r = unsafe { memset(a.as_mut_ptr().add(16 + so), 0x7a5, len) };
            if r != a.as_mut_ptr().wrapping_add(16 + so) || (0..BUF).any(|i| get(&a, i) != get(&want, i)) {
                return Err("memset");
            }
            // memcmp: equal, then one byte differing each way at each position (shorter
            // lengths only: the positions make it quadratic).
            if len <= 80 {
                fill(&mut a, 9);
                fill(&mut b, 9);
                // SAFETY: the ranges lie inside their buffers (for every call below too).
                let cmp = |a: &[u8; BUF], b: &[u8; BUF]| unsafe { memcmp(a.as_ptr().add(16 + so), b.as_ptr().add(16 + so), len) };
                if cmp(&a, &b) != 0 {
                    return Err("memcmp of equal bytes");
                }
                for p in 0..len {
                    let at = 16 + so + p;
                    let v = get(&a, at);
                    set(&mut b, at, v.wrapping_add(1));
                    // A later byte differing the other way must not change the answer.
                    if p + 1 < len {
                        set(&mut b, at + 1, get(&a, at + 1).wrapping_sub(1));
                    }
                    let (below, above) = (cmp(&a, &b), cmp(&b, &a));
                    if v != 0xff && (below >= 0 || above <= 0) || v == 0xff && (below <= 0 || above >= 0) {
                        return Err("memcmp of differing bytes");
                    }
                    set(&mut b, at, v);
                    if p + 1 < len {
                        set(&mut b, at + 1, get(&a, at + 1));
                    }
                    cases += 1;
                }
            }
            cases += 1;
        }
    }
    Ok(cases)
}
