//! The only randomness source of the noise samplers: ChaCha12 seeded from the operating system.
//!
//! Why a dedicated type rather than `impl Rng`: differential privacy is only as good as the
//! unpredictability of its noise, and a generic parameter would happily accept a seeded
//! `StdRng`, a `SmallRng` or a test stub. [`SecureRng`] has exactly one public constructor,
//! [`SecureRng::from_os_rng`], is not `Clone` (a clone would replay the same noise) and does
//! not print its state. Deterministic construction exists only for this crate's unit tests.
//!
//! ChaCha12 is `rand`'s `StdRng` algorithm; no attack is known beyond 7 rounds, and it is
//! about 1.6 times faster than ChaCha20, which matters because noise generation is
//! randomness-bound.

use super::NoiseError;
use rand_chacha::ChaCha12Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};

/// A cryptographically secure random bit source for DP noise (ChaCha12, OS-seeded).
///
/// Besides whole 64-bit words it hands out 32-bit and single-bit draws from a buffered word,
/// so the lazy Bernoulli comparisons of the samplers do not waste a word per decision.
pub struct SecureRng {
    core: ChaCha12Rng,
    /// Unused bits of the last word, lowest first.
    bits: u64,
    /// How many bits of `bits` are still unused.
    nbits: u32,
}

impl std::fmt::Debug for SecureRng {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the state: it would reveal past and future noise.
        f.write_str("SecureRng { .. }")
    }
}

impl SecureRng {
    /// Seeds ChaCha12 with 256 bits from the operating system's entropy source.
    ///
    /// # Errors
    /// [`NoiseError::Entropy`] if the OS source fails; there is deliberately no fallback.
    pub fn from_os_rng() -> Result<Self, NoiseError> {
        let core = ChaCha12Rng::try_from_os_rng().map_err(|e| NoiseError::Entropy(e.to_string()))?;
        Ok(Self { core, bits: 0, nbits: 0 })
    }

    /// A reproducible generator for statistical unit tests. Not available outside this crate's
    /// tests, so it cannot be used for real noise by accident.
    #[cfg(test)]
    pub(crate) fn seeded_for_tests(seed: u64) -> Self {
        Self { core: ChaCha12Rng::seed_from_u64(seed), bits: 0, nbits: 0 }
    }

    /// `n` independent generators for `n` threads, derived from 256 bits of this one: all
    /// share a fresh ChaCha12 key `κ` drawn from `self`, and generator `i` uses ChaCha's
    /// stream (nonce) `i`.
    ///
    /// Why this is safe: ChaCha12 keyed with a secret uniform `κ` is a pseudorandom function of
    /// (stream, block counter), so the keystreams of distinct stream ids, which never share a
    /// (stream, counter) input (each stream has its own 2⁶⁴ blocks), are computationally
    /// indistinguishable from independent uniform bits. `κ` is 256 bits of this OS-seeded
    /// generator's output, so it is unpredictable; it is used for this one split only, and
    /// `self`'s later output is a different part of its own keystream, from which `κ` cannot
    /// be recovered. The derived generators are as unpredictable as `self` and independent of
    /// each other and of `self`'s future output.
    pub(crate) fn split(&mut self, n: usize) -> Vec<SecureRng> {
        let mut key = [0u8; 32];
        for (chunk, word) in key.chunks_exact_mut(8).zip(std::iter::repeat_with(|| self.core.next_u64())) {
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        (0..n as u64)
            .map(|stream| {
                let mut core = ChaCha12Rng::from_seed(key);
                core.set_stream(stream);
                Self { core, bits: 0, nbits: 0 }
            })
            .collect()
    }

    /// 64 fresh uniform bits.
    #[inline(always)]
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.core.next_u64()
    }

    /// `BITS` uniform bits (`1 ≤ BITS ≤ 32`) in the low bits of the result, taken from the
    /// buffered word when it still has them.
    #[inline(always)]
    #[cfg(test)]
    pub(crate) fn next_bits<const BITS: u32>(&mut self) -> u64 {
        const { assert!(BITS >= 1 && BITS <= 32) };
        if self.nbits < BITS {
            // Dropping the leftover bits is fine: whether they are dropped does not depend on
            // their values, so every bit handed out stays independent and uniform.
            self.bits = self.core.next_u64();
            self.nbits = 64;
        }
        let out = self.bits & ((1u64 << BITS) - 1);
        self.bits >>= BITS;
        self.nbits -= BITS;
        out
    }

    /// One uniform bit.
    #[inline(always)]
    pub(crate) fn next_bit(&mut self) -> bool {
        if self.nbits == 0 {
            self.bits = self.core.next_u64();
            self.nbits = 64;
        }
        let out = self.bits & 1 == 1;
        self.bits >>= 1;
        self.nbits -= 1;
        out
    }

    /// Uniform integer in `[0, n)`, exact (Lemire's multiply-and-reject), for `n >= 1`.
    #[inline(always)]
    #[cfg(test)]
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n >= 1);
        if n <= 1 << 20 {
            // 32 random bits suffice: one multiplication, rejection probability below 2⁻¹².
            let n32 = n as u32;
            let mut m = u64::from(self.next_bits::<32>() as u32) * u64::from(n32);
            if (m as u32) < n32 {
                let threshold = n32.wrapping_neg() % n32;
                while (m as u32) < threshold {
                    m = u64::from(self.next_bits::<32>() as u32) * u64::from(n32);
                }
            }
            return m >> 32;
        }
        let mut m = u128::from(self.next_u64()) * u128::from(n);
        if (m as u64) < n {
            let threshold = n.wrapping_neg() % n;
            while (m as u64) < threshold {
                m = u128::from(self.next_u64()) * u128::from(n);
            }
        }
        (m >> 64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_seeded_generators_differ() {
        let mut a = SecureRng::from_os_rng().unwrap();
        let mut b = SecureRng::from_os_rng().unwrap();
        assert_ne!((a.next_u64(), a.next_u64()), (b.next_u64(), b.next_u64()));
        assert_eq!(format!("{a:?}"), "SecureRng { .. }");
    }

    /// Split generators differ from each other and from the parent's continuation, and the
    /// split is a function of the parent's state (same seed, same streams).
    #[test]
    fn split_streams_are_distinct_and_derived_from_the_parent() {
        let mut parent = SecureRng::seeded_for_tests(3);
        let mut children = parent.split(4);
        let mut firsts: Vec<[u64; 4]> =
            children.iter_mut().map(|c| [c.next_u64(), c.next_u64(), c.next_u64(), c.next_u64()]).collect();
        firsts.push([parent.next_u64(), parent.next_u64(), parent.next_u64(), parent.next_u64()]);
        for i in 0..firsts.len() {
            for j in 0..i {
                assert_ne!(firsts[i], firsts[j], "streams {i} and {j}");
            }
        }
        let mut again = SecureRng::seeded_for_tests(3).split(4);
        assert_eq!(again[2].next_u64(), firsts[2][0]);
        let mut other_parent = SecureRng::seeded_for_tests(4).split(4);
        assert_ne!(other_parent[2].next_u64(), firsts[2][0]);
    }

    #[test]
    fn bits_and_below_are_uniform() {
        let mut rng = SecureRng::seeded_for_tests(1);
        let n = 200_000;
        let ones = (0..n).filter(|_| rng.next_bit()).count() as f64;
        assert!((ones / n as f64 - 0.5).abs() < 5.0 * 0.5 / (n as f64).sqrt());
        let mut counts = [0u32; 6];
        for _ in 0..60_000 {
            counts[rng.below(6) as usize] += 1;
        }
        // Chi-square with 5 degrees of freedom; 20.5 is the 0.999 quantile.
        let chi2: f64 = counts.iter().map(|&c| (c as f64 - 10_000.0).powi(2) / 10_000.0).sum();
        assert!(chi2 < 20.5, "chi2 {chi2}, counts {counts:?}");
    }
}
