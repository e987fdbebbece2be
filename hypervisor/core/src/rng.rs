//! A small deterministic pseudo-random generator (xorshift64*) for test guests and host
//! tests: seeded, so that a failure can be replayed from its seed. Not for anything secret.

pub struct Rng(u64);

impl Rng {
    /// Any seed works (zero is mapped to a non-zero state).
    pub const fn new(seed: u64) -> Rng {
        Rng(if seed == 0 { 0x9e37_79b9_7f4a_7c15 } else { seed })
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A value below `n` (0 for n = 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}
