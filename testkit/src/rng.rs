//! [`Rng`]: the seeded random source of the thrasher, the system tests and
//! the benchmarks, so that a failing seed replays the same run.

use rand::rngs::StdRng;
use rand::{Rng as _, RngCore, SeedableRng};

/// A reproducible generator (`rand`'s [`StdRng`] seeded from a `u64`) with
/// the few draws the tests and benchmarks make.
#[derive(Clone, Debug)]
pub struct Rng(StdRng);

impl Rng {
    /// A generator seeded with `seed` (any value, zero included).
    pub fn new(seed: u64) -> Self {
        Rng(StdRng::seed_from_u64(seed))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// A value in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.0.random_range(0..n)
        }
    }

    /// `len` random bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        self.0.fill_bytes(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::Rng;

    #[test]
    fn a_seed_replays_the_same_draws() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        assert_eq!(a.bytes(33), b.bytes(33));
        assert_eq!(a.below(1000), b.below(1000));
        assert_ne!(Rng::new(8).bytes(16), Rng::new(7).bytes(16));
    }

    #[test]
    fn below_stays_in_range_and_zero_means_zero() {
        let mut rng = Rng::new(1);
        assert!((0..1000).all(|_| rng.below(10) < 10));
        assert_eq!(rng.below(0), 0);
        assert_eq!(rng.below(1), 0);
    }
}
