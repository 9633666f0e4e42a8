//! A tiny seeded generator (xorshift64*) for test inputs: reproducible from a
//! printed seed, no dependency, and the same on the host and in a guest.

pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (0 is mapped to a fixed non-zero state).
    pub fn new(seed: u64) -> Self {
        Rng(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    /// A seed from the clock, for "fresh random inputs" in tests; print it.
    pub fn fresh_seed() -> u64 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        nanos ^ (std::process::id() as u64).rotate_left(32)
    }

    /// The seed of a randomized test: `AGORA_SEED` when set (to replay a
    /// failure), else a fresh one. Printed either way.
    pub fn test_seed() -> u64 {
        let seed = std::env::var("AGORA_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(Self::fresh_seed);
        println!("seed {seed} (replay with AGORA_SEED={seed})");
        seed
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [-1, 1).
    pub fn f32(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    pub fn f32_vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.f32()).collect()
    }

    /// Uniform in [lo, hi].
    pub fn range(&mut self, lo: u32, hi: u32) -> u32 {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as u32
    }
}
