//! The previous exact sampler (CKS 2020-style staircase of width `⌈2σ⌉`, with digit-by-digit
//! Bernoulli decisions), kept only for the tests as an independent reference: it shares no
//! decision code with the fast sampler, so agreement of the two with the exact pmf is
//! evidence for both.

use super::{DiscreteGaussian, NoiseError, SecureRng};

/// Bernoulli(`n/d`) for `d ≥ 1`; `n ≥ d` is certain success. Requires `d < 2¹²⁷`.
#[inline(always)]
pub(super) fn bernoulli_ratio(rng: &mut SecureRng, n: u128, d: u128) -> bool {
    if n >= d {
        return true;
    }
    if n == 0 {
        return false;
    }
    if d <= u128::from(u64::MAX) {
        bernoulli_ratio_words(rng, n as u64, d as u64)
    } else {
        bernoulli_ratio_bits(rng, n, d)
    }
}

/// Width of the digits of `U` in the word comparison: one digit decides except with
/// probability `2^-DIGIT_BITS`; small digits save random bits (the samplers are bound by
/// ChaCha output and branch mispredictions, not by arithmetic).
const DIGIT_BITS: u32 = 8;

/// Bernoulli(`n/d`) for `0 < n < d < 2⁶⁴`, comparing `DIGIT_BITS`-bit digits of a uniform `U`
/// with `n/d`.
#[inline(always)]
fn bernoulli_ratio_words(rng: &mut SecureRng, mut n: u64, d: u64) -> bool {
    let d = u128::from(d);
    loop {
        let r = u128::from(rng.next_bits::<DIGIT_BITS>());
        let lo = r * d; // R·d < 2⁷²
        let target = u128::from(n) << DIGIT_BITS; // n·2^DIGIT_BITS < 2⁷²
        if lo + d <= target {
            // U < (R + 1)/2^DIGIT_BITS ≤ n/d.
            return true;
        }
        if lo >= target {
            // U ≥ R/2^DIGIT_BITS ≥ n/d (U = n/d has probability 0).
            return false;
        }
        // R < 2^DIGIT_BITS·n/d < R + 1: compare the rest of U, 2^DIGIT_BITS·U − R, with
        // 2^DIGIT_BITS·n/d − R = (n·2^DIGIT_BITS − R·d)/d.
        n = (target - lo) as u64; // 0 < n < d
    }
}

/// Bernoulli(`n/d`) for `0 < n < d < 2¹²⁷`, comparing bits of `U` with the binary expansion of `n/d`.
#[cold]
fn bernoulli_ratio_bits(rng: &mut SecureRng, mut n: u128, d: u128) -> bool {
    assert!(d < 1 << 127, "bernoulli_ratio_bits: denominator {d} not below 2^127");
    loop {
        n <<= 1; // n < d < 2¹²⁷, no overflow
        let digit = n >= d;
        if digit {
            n -= d;
        }
        let bit = rng.next_bit();
        if bit != digit {
            // First difference: U < n/d exactly when U has the 0 and n/d the 1.
            return digit;
        }
        if n == 0 {
            // n/d's expansion ended; U's remaining bits are almost surely not all zero.
            return false;
        }
    }
}

/// Bernoulli(`exp(−n/d)`) for `0 ≤ n ≤ d < 2⁶³` (von Neumann's series, CKS Algorithm 1).
#[inline(always)]
fn bernoulli_exp_at_most_one(rng: &mut SecureRng, n: u64, d: u64) -> bool {
    let (n, d) = (u128::from(n), u128::from(d));
    let mut k: u128 = 1;
    // d·k < 2⁶³·2⁶⁴: k cannot realistically pass 2⁶⁴ (that needs 2⁶⁴ successes of
    // probabilities ≤ 1/k), and even then the product stays below 2¹²⁷ until k = 2⁶⁴.
    while bernoulli_ratio(rng, n, d * k) {
        k += 1;
        assert!(k < 1 << 64, "von Neumann series counter overflow");
    }
    k % 2 == 1
}

/// Bernoulli(`exp(−n/d)`) for any `n ≥ 0` and `1 ≤ d < 2⁶³`: `⌊n/d⌋` factors `e^{−1}`, then
/// the remainder. Stops at the first failing factor, so its cost does not grow with `n`.
#[inline(always)]
pub(super) fn bernoulli_exp(rng: &mut SecureRng, mut n: u128, d: u64) -> bool {
    let dd = u128::from(d);
    while n >= dd {
        if !bernoulli_exp_at_most_one(rng, 1, 1) {
            return false;
        }
        n -= dd;
    }
    bernoulli_exp_at_most_one(rng, n as u64, d)
}

/// Bernoulli(`exp(−m·q/d)`) for `m < 2¹²⁸`, `q ≤ 2⁶²`, `d < 2⁶³`, without forming `m·q`
/// when it would overflow (the split is exact: `mq/d = ⌊m/d⌋q + (m mod d)q/d`).
pub(super) fn bernoulli_exp_scaled(rng: &mut SecureRng, m: u128, q: u64, d: u64) -> bool {
    if let Some(n) = m.checked_mul(u128::from(q)) {
        return bernoulli_exp(rng, n, d);
    }
    let (whole, rest) = (m / u128::from(d), m % u128::from(d));
    // e^{−⌊m/d⌋·q}: ⌊m/d⌋ factors e^{−q}, each q factors e^{−1}.
    let mut i = 0u128;
    while i < whole {
        if !bernoulli_exp(rng, u128::from(q), 1) {
            return false;
        }
        i += 1;
    }
    bernoulli_exp(rng, rest * u128::from(q), d) // rest·q < 2⁶³·2⁶² fits
}

impl DiscreteGaussian {
    /// The previous staircase sampler (CKS-style, digit-by-digit Bernoulli decisions), kept
    /// as an independent exact reference for the tests.
    pub(super) fn sample_reference(&self, rng: &mut SecureRng) -> Result<i64, NoiseError> {
        loop {
            let j = rng.below(self.width);
            let negative = rng.next_bit();
            let j_sq = u128::from(j) * u128::from(j);
            if !bernoulli_exp_scaled(rng, j_sq, self.den, self.two_num) {
                continue;
            }
            let mut k: u64 = 0;
            while bernoulli_exp_scaled(rng, self.tail_num, 1, self.two_num) {
                k = k.checked_add(1).ok_or(NoiseError::SampleOverflow)?;
            }
            if k == 0 {
                if negative && j == 0 {
                    continue;
                }
                let x = j as i64;
                return Ok(if negative { -x } else { x });
            }
            let x = k
                .checked_mul(self.width)
                .and_then(|b| b.checked_add(j))
                .filter(|&x| x <= i64::MAX as u64)
                .ok_or(NoiseError::SampleOverflow)?;
            let x_sq = u128::from(x) * u128::from(x);
            let excess = x_sq - u128::from(k) * self.width_sq - j_sq;
            if bernoulli_exp_scaled(rng, excess, self.den, self.two_num) {
                let x = x as i64;
                return Ok(if negative { -x } else { x });
            }
        }
    }
}
