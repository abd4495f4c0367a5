//! Exact sampling of the discrete Gaussian `N_Z(0, σ²)` for rational `σ² = p/q`, with integer
//! arithmetic only: every random decision compares uniform random digits with a number that is
//! known exactly or bracketed by a rigorous integer enclosure, and stops only when the
//! comparison is settled. No floating point is involved in sampling.
//!
//! # Algorithm (rejection from a fine dyadic staircase)
//!
//! Let `B = ⌈σ/8⌉`, block `k ≥ 0` be the magnitudes `[kB, (k+1)B)`, `a = B²/(2σ²)`, and
//! `γ(x) = x²/(2σ²) = x²q/(2p)`.
//!
//! * **Envelope.** Block `k < K` gets the height `h_k = H_k·2^{−32}`, where `H_k` is an integer
//!   with `H_k·2^{−32} ≥ e^{−a k²}` (rounded up from a rigorous enclosure, see below), and `K` is
//!   the first block with `a K² ≥ 40`. Blocks `k = K + m` get `h_K·2^{−m}`. For `x` in block
//!   `k`, `e^{−γ(x)} ≤ e^{−a k²} ≤ h_k` (`x ≥ kB`); in the tail, `e^{−a(K+m)²} ≤
//!   e^{−aK²}·e^{−2aKm} ≤ h_K·2^{−m}` because `2aK ≥ ln 2` (checked in integers as
//!   `10KB²q ≥ 7p`, i.e. `2aK ≥ 0.7`; it always holds since `2aK ≥ 2√(40a)` and `a ≥ 1/128`).
//! * **Proposal.** A block is chosen with probability proportional to its weight: `H_k` for
//!   `k < K` and `2H_K = Σ_m H_K 2^{−m}` for the whole tail (then `m` geometric of ratio 1/2 from
//!   fair bits), plus an integer "restart" weight that pads the total to `128·C`. These are
//!   integers, so Walker's alias table built in integer arithmetic draws them exactly (column
//!   from 7 bits, `y` uniform in `[0, C)` by Lemire's exact multiply-and-reject). Then `j`
//!   uniform in `[0, B)`, `x = kB + j`, sign uniform; `(x = 0, negative)` restarts so that 0 is
//!   not proposed twice. Every signed `x` in block `k` is proposed with probability `∝ h_k`.
//! * **Acceptance.** Accept with probability `e^{−γ(x)}/h_k ≤ 1`, otherwise restart. The output
//!   is `±x` with probability `∝ h_k·e^{−γ(x)}/h_k = e^{−x²/(2σ²)}`: exactly the discrete
//!   Gaussian, for any valid heights (their rounding only costs efficiency).
//!
//! Efficiency: about `1/(1 + B/(σ√(2π))) ≈ 0.95` of trials accept (the staircase overshoots by
//! about half a block), against 0.54 for the earlier CKS-style staircase of width `2σ`.
//!
//! # Exact decisions with a fast path
//!
//! The acceptance is `[V < e^{−γ}]` with `V = h_k·U` and `U = 0.B₁B₂…` a uniform real whose
//! binary digits are drawn lazily. With `U`'s first 32 bits `u`, `V ∈ [u·H_k, (u+1)·H_k)·2^{−64}`.
//! If an enclosure `lo ≤ e^{−γ}·2⁶⁴ ≤ hi` puts that interval entirely below `lo` (accept) or at
//! or above `hi` (reject), the comparison is settled by those digits, whatever the rest of `U`.
//! Otherwise more digits of *the same* `U` are drawn (to 64 bits, then word by word) and compared
//! against enclosures computed to ever higher precision with a small bignum, until settled. So
//! the outcome is always exactly `[V < e^{−γ}]` = Bernoulli(`e^{−γ}/h_k`); a wider enclosure
//! only means more digits are read. Termination: `e^{−γ}` is irrational for rational `γ > 0`
//! (and enclosed exactly for `γ = 0`), so the digits of `V` and of `e^{−γ}` eventually differ.
//!
//! Enclosures (all integer arithmetic, each rounding directed outward):
//! * **Fast (γ < 16)**: `γ·2⁵⁹` bracketed via a precomputed reciprocal of `2p`; `e^{−γ} =
//!   e^{−i/64}·e^{−ρ}` with a per-process table of 64-bit enclosures of `e^{−i/64}` and the
//!   alternating series `1 − ρ + ρ²/2 − ρ³/6 (+ ρ⁴/24)` for `ρ < 2^{−6}` (see
//!   `ExpDenominator::bounds64` for the error accounting). Width about `2^{−28}`, so the
//!   32-bit stage decides all but about `2^{−28}` of the decisions.
//! * **Exact fallback / tables**: `e^{−⌊γ⌋}·e^{−frac(γ)}` with the alternating Taylor series
//!   of `e^{−f}` (`f ≤ 1`, remainder bounded by the next term) and binary powering of an
//!   enclosure of `e^{−1}`, at any multiple of 64 bits (`exp_neg_enclosure`); for
//!   `⌊γ⌋ ≥` the precision it returns `[0, 1 ulp]` (`e^{−γ} ≤ 2^{−⌊γ⌋}`).
//!
//! Randomness per trial: two ChaCha12 words, each bit used once (plus more only after a
//! Lemire rejection or an unsettled comparison).
//!
//! # Bounds
//! `p, q ≤ 2⁶²`, so `2p ≤ 2⁶³`, `B ≤ 2²⁸ + 1`, `K ≤ 72` and a table block's `x < 2³⁵`; all
//! products are in `u128` or the bignum. A sample whose magnitude would exceed `i64::MAX`
//! (probability below `2^{−2⁶⁰}` for any allowed σ) is reported as
//! [`NoiseError::SampleOverflow`] instead of wrapping.
//!
//! The previous sampler (CKS 2020-style staircase with digit-by-digit Bernoulli decisions) is
//! kept for the tests as an independent exact reference (`sample_reference`).

use super::{NoiseError, SecureRng};

/// Largest numerator or denominator accepted for `σ²`.
pub const MAX_SIGMA_SQ_TERM: u64 = 1 << 62;

/// Bernoulli(`n/d`) for `d ≥ 1`; `n ≥ d` is certain success. Requires `d < 2¹²⁷`.
#[cfg(test)]
#[inline(always)]
fn bernoulli_ratio(rng: &mut SecureRng, n: u128, d: u128) -> bool {
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
#[cfg(test)]
const DIGIT_BITS: u32 = 8;

/// Bernoulli(`n/d`) for `0 < n < d < 2⁶⁴`, comparing `DIGIT_BITS`-bit digits of a uniform `U`
/// with `n/d`.
#[cfg(test)]
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
#[cfg(test)]
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
#[cfg(test)]
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
#[cfg(test)]
#[inline(always)]
fn bernoulli_exp(rng: &mut SecureRng, mut n: u128, d: u64) -> bool {
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
#[cfg(test)]
fn bernoulli_exp_scaled(rng: &mut SecureRng, m: u128, q: u64, d: u64) -> bool {
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

// ---------------------------------------------------------------------------------------------
// Single-uniform decisions `U < e^{−γ}` (the fast path) and their exact fallback.
// ---------------------------------------------------------------------------------------------

/// Arbitrary-precision unsigned integers (little-endian `u64` limbs) for the exact fallback and
/// for building the constant tables; never used on the fast path.
mod big {
    use std::cmp::Ordering;

    pub(super) type Big = Vec<u64>;

    fn trim(mut a: Big) -> Big {
        while a.last() == Some(&0) {
            a.pop();
        }
        a
    }

    #[cfg(test)]
    pub(super) fn from_u128(x: u128) -> Big {
        trim(vec![x as u64, (x >> 64) as u64])
    }

    /// `2^(64·limbs)`.
    pub(super) fn pow2_limbs(limbs: usize) -> Big {
        let mut v = vec![0; limbs];
        v.push(1);
        v
    }

    pub(super) fn cmp(a: &[u64], b: &[u64]) -> Ordering {
        let len = |x: &[u64]| x.len() - x.iter().rev().take_while(|&&l| l == 0).count();
        let (la, lb) = (len(a), len(b));
        if la != lb {
            return la.cmp(&lb);
        }
        for i in (0..la).rev() {
            match a[i].cmp(&b[i]) {
                Ordering::Equal => {}
                other => return other,
            }
        }
        Ordering::Equal
    }

    pub(super) fn add(a: &[u64], b: &[u64]) -> Big {
        let (a, b) = if a.len() >= b.len() { (a, b) } else { (b, a) };
        let mut out = Vec::with_capacity(a.len() + 1);
        let mut carry = 0u64;
        for i in 0..a.len() {
            let s = u128::from(a[i]) + u128::from(*b.get(i).unwrap_or(&0)) + u128::from(carry);
            out.push(s as u64);
            carry = (s >> 64) as u64;
        }
        out.push(carry);
        trim(out)
    }

    /// `max(a − b, 0)`.
    pub(super) fn sub_sat(a: &[u64], b: &[u64]) -> Big {
        if cmp(a, b) != Ordering::Greater {
            return Vec::new();
        }
        let mut out = Vec::with_capacity(a.len());
        let mut borrow = 0u64;
        for i in 0..a.len() {
            let (d1, b1) = a[i].overflowing_sub(*b.get(i).unwrap_or(&0));
            let (d2, b2) = d1.overflowing_sub(borrow);
            out.push(d2);
            borrow = u64::from(b1 || b2);
        }
        trim(out)
    }

    pub(super) fn mul_small(a: &[u64], m: u64) -> Big {
        let mut out = Vec::with_capacity(a.len() + 1);
        let mut carry = 0u64;
        for &l in a {
            let p = u128::from(l) * u128::from(m) + u128::from(carry);
            out.push(p as u64);
            carry = (p >> 64) as u64;
        }
        out.push(carry);
        trim(out)
    }

    /// `⌊a/d⌋` (`up = false`) or `⌈a/d⌉` (`up = true`), `d ≥ 1`.
    pub(super) fn div_small(a: &[u64], d: u64, up: bool) -> Big {
        let mut out = vec![0; a.len()];
        let mut rem = 0u128;
        let d = u128::from(d);
        for i in (0..a.len()).rev() {
            let cur = (rem << 64) | u128::from(a[i]);
            out[i] = (cur / d) as u64;
            rem = cur % d;
        }
        let out = trim(out);
        if up && rem != 0 { add(&out, &[1]) } else { out }
    }

    pub(super) fn mul(a: &[u64], b: &[u64]) -> Big {
        let mut out = vec![0u64; a.len() + b.len() + 1];
        for (i, &x) in a.iter().enumerate() {
            let mut carry = 0u128;
            for (j, &y) in b.iter().enumerate() {
                let t = u128::from(x) * u128::from(y) + u128::from(out[i + j]) + carry;
                out[i + j] = t as u64;
                carry = t >> 64;
            }
            let mut k = i + b.len();
            while carry != 0 {
                let t = u128::from(out[k]) + carry;
                out[k] = t as u64;
                carry = t >> 64;
                k += 1;
            }
        }
        trim(out)
    }

    /// `⌊a / 2^(64·limbs)⌋` or, with `up`, the ceiling.
    pub(super) fn shr_limbs(a: &[u64], limbs: usize, up: bool) -> Big {
        if a.len() <= limbs {
            return if up && a.iter().any(|&l| l != 0) { vec![1] } else { Vec::new() };
        }
        let out = trim(a[limbs..].to_vec());
        if up && a[..limbs].iter().any(|&l| l != 0) { add(&out, &[1]) } else { out }
    }

    /// `a · 2^(64·limbs)`.
    pub(super) fn shl_limbs(a: &[u64], limbs: usize) -> Big {
        let mut out = vec![0; limbs];
        out.extend_from_slice(a);
        trim(out)
    }

    /// The value as a `u128`, or `None` if it does not fit.
    pub(super) fn to_u128(a: &[u64]) -> Option<u128> {
        let a = trim(a.to_vec());
        match a.len() {
            0 => Some(0),
            1 => Some(u128::from(a[0])),
            2 => Some(u128::from(a[0]) | u128::from(a[1]) << 64),
            _ => None,
        }
    }
}

/// An enclosure `[lo, hi]·2^(−64·limbs)` of `e^{−n/d}` for `0 ≤ n ≤ d`, `d ≥ 1`, from the
/// alternating series `Σ (−f)^m/m!` (`f = n/d ≤ 1`, so its terms `t_m` decrease and the
/// remainder after `t_{m−1}` is at most `t_m`). Every term is bracketed by rounding down
/// (`⌊⌊t·n/d⌋/m⌋ = ⌊t·n/(dm)⌋`) and up; the sum of the computed terms is bracketed by pairing
/// lower bounds of positive terms with upper bounds of negative ones and vice versa.
fn exp_neg_frac_enclosure(n: u64, d: u64, limbs: usize) -> (big::Big, big::Big) {
    let one = big::pow2_limbs(limbs);
    if n == 0 {
        return (one.clone(), one);
    }
    let (mut t_lo, mut t_hi) = (one.clone(), one.clone());
    let (mut pos_lo, mut pos_hi) = (one.clone(), one.clone());
    let (mut neg_lo, mut neg_hi) = (big::Big::new(), big::Big::new());
    let mut m = 1u64;
    loop {
        t_lo = big::div_small(&big::div_small(&big::mul_small(&t_lo, n), d, false), m, false);
        t_hi = big::div_small(&big::div_small(&big::mul_small(&t_hi, n), d, true), m, true);
        if big::cmp(&t_hi, &[1]) != std::cmp::Ordering::Greater {
            break; // t_m ≤ one unit: the remainder bound
        }
        if m % 2 == 1 {
            neg_lo = big::add(&neg_lo, &t_lo);
            neg_hi = big::add(&neg_hi, &t_hi);
        } else {
            pos_lo = big::add(&pos_lo, &t_lo);
            pos_hi = big::add(&pos_hi, &t_hi);
        }
        m += 1;
    }
    let lo = big::sub_sat(&pos_lo, &big::add(&neg_hi, &t_hi));
    let hi = big::sub_sat(&big::add(&pos_hi, &t_hi), &neg_lo);
    let hi = if big::cmp(&hi, &one) == std::cmp::Ordering::Greater { one } else { hi };
    (lo, hi)
}

/// An enclosure `[lo, hi]·2^(−64·limbs)` of `e^{−num/den}` for any `num ≥ 0`, `den ≥ 1`:
/// `e^{−⌊γ⌋}·e^{−frac(γ)}`, the first by binary powering of an enclosure of `e^{−1}` (all
/// values in `[0, 1]`, products rounded down for `lo` and up for `hi`). For `⌊γ⌋ ≥ 64·limbs`
/// it is `[0, 1]`: `e^{−γ} ≤ 2^{−⌊γ⌋}` because `e > 2`.
fn exp_neg_enclosure(num: u128, den: u64, limbs: usize) -> (big::Big, big::Big) {
    let whole = num / u128::from(den);
    let frac = (num % u128::from(den)) as u64;
    if whole >= 64 * limbs as u128 {
        return (big::Big::new(), vec![1]);
    }
    let (mut lo, mut hi) = exp_neg_frac_enclosure(frac, den, limbs);
    if whole > 0 {
        let (mut base_lo, mut base_hi) = exp_neg_frac_enclosure(1, 1, limbs);
        let mut e = whole as u64;
        while e > 0 {
            if e & 1 == 1 {
                lo = big::shr_limbs(&big::mul(&lo, &base_lo), limbs, false);
                hi = big::shr_limbs(&big::mul(&hi, &base_hi), limbs, true);
            }
            e >>= 1;
            if e > 0 {
                base_lo = big::shr_limbs(&big::mul(&base_lo, &base_lo), limbs, false);
                base_hi = big::shr_limbs(&big::mul(&base_hi, &base_hi), limbs, true);
            }
        }
    }
    (lo, hi)
}

/// `e^{−i/64}` for `i < 1024` as `[lo, hi]·2^{−63}`, rounded outward: a chain of interval
/// products of an enclosure of `e^{−1/64}` at 128 bits, each rounded outward. Built once per
/// process (well under a millisecond).
fn exp_table() -> &'static [[u64; 2]; EXP_TABLE_LEN] {
    static TABLE: std::sync::OnceLock<Box<[[u64; 2]; EXP_TABLE_LEN]>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let (step_lo, step_hi) = exp_neg_enclosure(1, EXP_TABLE_STEPS_PER_UNIT, 2);
        let mut table = Box::new([[0u64; 2]; EXP_TABLE_LEN]);
        let (mut lo, mut hi) = (big::pow2_limbs(2), big::pow2_limbs(2));
        for entry in table.iter_mut() {
            // From 2^{−128} units to 2^{−63}: divide by 2^65 (down for lo, up for hi).
            let lo63 = big::to_u128(&lo).map_or(1 << 63, |v| (v >> 65) as u64);
            let hi63 = big::to_u128(&hi).map_or(1 << 63, |v| v.div_ceil(1 << 65) as u64);
            *entry = [lo63, hi63];
            lo = big::shr_limbs(&big::mul(&lo, &step_lo), 2, false);
            hi = big::shr_limbs(&big::mul(&hi, &step_hi), 2, true);
        }
        table
    })
}

/// Table steps per unit of `γ` (`e^{−i/64}`) and table length: the fast path covers `γ < 16`.
const EXP_TABLE_STEPS_PER_UNIT: u64 = 64;
const EXP_TABLE_LEN: usize = 1024;
/// Fast-path exponents are `γ < FAST_GAMMA_LIMIT`.
const FAST_GAMMA_LIMIT: u128 = (EXP_TABLE_LEN as u128) / (EXP_TABLE_STEPS_PER_UNIT as u128);

/// Fixed-point data for the fast path of `e^{−n/den}` with a fixed denominator.
#[derive(Clone, PartialEq, Eq)]
struct ExpDenominator {
    /// The shared table of [`exp_table`] (held here so the hot loop does not look it up).
    table: &'static [[u64; 2]; EXP_TABLE_LEN],
    den: u64,
    /// `⌊2¹²³/den⌋`: `γ·2⁵⁹ = n·2¹²³/den/2⁶⁴ ∈ [⌊n·R/2⁶⁴⌋, ⌊n·(R+1)/2⁶⁴⌋ + 1]`.
    recip: u128,
    /// `FAST_GAMMA_LIMIT·den`: numerators below it take the fast path.
    limit: u128,
}

impl std::fmt::Debug for ExpDenominator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExpDenominator").field("den", &self.den).finish_non_exhaustive()
    }
}

impl ExpDenominator {
    fn new(den: u64) -> Self {
        assert!((2..=1 << 63).contains(&den), "fast-path denominator {den} out of range");
        Self {
            table: exp_table(),
            den,
            recip: (1u128 << 123) / u128::from(den),
            limit: FAST_GAMMA_LIMIT * u128::from(den),
        }
    }

    /// An enclosure `[lo, hi]·2^{−64}` of `e^{−n/den}` for `n < limit` (so `γ < 16`), integer
    /// arithmetic only:
    ///
    /// * `γ ∈ [g_lo, g_hi]·2^{−59}` from the reciprocal (`n·R < 16·den·2¹²³/den = 2¹²⁷`, no
    ///   overflow; `g_hi − g_lo ≤ 10`);
    /// * `g_lo = i·2⁵³ + r`: `e^{−g_lo} = e^{−i/64}·e^{−ρ}` with `ρ = r·2^{−59} < 2^{−6}`; the
    ///   table brackets the first factor, and the alternating series brackets the second:
    ///   `1 − ρ + ρ²/2 − ρ³/6 ≤ e^{−ρ} ≤ 1 − ρ + ρ²/2 − ρ³/6 + ρ⁴/24` (for `0 ≤ ρ ≤ 1`). The
    ///   powers are computed rounded down in 2^{−63} units, `p₂ ∈ (ρ² − 1, ρ²]`,
    ///   `p₃ ∈ (ρ³ − 2, ρ³]`, `p₄ ∈ (ρ⁴ − 3, ρ⁴]`, and each rounding is covered by the `∓2`
    ///   below (`ρ³/6 < ⌊p₃/6⌋ + 2`, `ρ²/2 < ⌊p₂/2⌋ + 1`, `ρ⁴/24 < ⌊p₄/24⌋ + 1`);
    /// * `e^{−γ} ≤ e^{−g_lo}`, and `e^{−γ} ≥ e^{−g_hi} ≥ e^{−g_lo} − (g_hi − g_lo)·2^{−59}`
    ///   (`e^{−x}` is 1-Lipschitz on `x ≥ 0`).
    ///
    /// Width: about `ρ⁴/24 ≤ 2^{−28.5}` plus a few hundred units of `2^{−63}`.
    #[inline(always)]
    fn bounds64(&self, n: u128) -> (u128, u128) {
        let table = self.table;
        debug_assert!(n < self.limit);
        let g_lo = (n * self.recip) >> 64; // < 2⁶³
        let g_hi = ((n * self.recip + n) >> 64) + 1;
        let i = (g_lo >> 53) as usize; // < 1024
        let rho = u128::from((g_lo as u64) & ((1 << 53) - 1)) << 4; // ρ·2⁶³ < 2⁵⁷
        let p2 = (rho * rho) >> 63; // < 2⁵¹
        let p3 = ((p2 * rho) >> 63) as u64; // < 2⁴⁵; u64 so that /6 is a multiplication
        let p4 = ((u128::from(p3) * rho) >> 63) as u64;
        let common = (1u128 << 63) - rho + (p2 >> 1) - u128::from(p3 / 6); // > 2⁶² (ρ < 2⁻⁶)
        let poly_lo = common - 2;
        let poly_hi = common + u128::from(p4 / 24) + 2;
        let [t_lo, t_hi] = table[i];
        let lower = ((u128::from(t_lo) * poly_lo) >> 63).saturating_sub((g_hi - g_lo) << 4);
        let upper = (u128::from(t_hi) * poly_hi).div_ceil(1 << 63);
        (lower << 1, upper << 1)
    }
}

/// `a · 2^bits`.
fn big_shl_bits(a: &[u64], bits: u32) -> big::Big {
    let shifted = big::shl_limbs(a, (bits / 64) as usize);
    let r = bits % 64;
    if r == 0 { shifted } else { big::mul_small(&shifted, 1 << r) }
}

#[cfg(test)]
thread_local! {
    /// Test-only: widen every fast-path enclosure by this many units of `2^{−64}` on each side
    /// (they stay valid enclosures), so that the later stages and the exact fallback run often.
    static FAST_PATH_WIDENING: std::cell::Cell<u128> = const { std::cell::Cell::new(0) };
}

/// Bernoulli(`e^{−num/den}/h`) for `h = height·2^{−32}` (`e^{−num/den} ≤ h ≤ 1`), as
/// `V < e^{−γ}` with `V = h·U` for a fresh uniform `U = 0.B₁B₂…` (bits), given an enclosure
/// `lo·2^{−64} ≤ e^{−γ} ≤ hi·2^{−64}`. With `U`'s first 32 bits `u`,
/// `V ∈ [u·height, (u+1)·height)·2^{−64}`; if that interval lies below `lo` or at or above `hi`
/// the comparison is decided. Otherwise the next 32 bits of the same `U` narrow `V` to
/// `2^{−96}·height` ([`accept_scaled_64`]) and then [`accept_scaled_slow`] continues with
/// further words of the same `U` against ever finer enclosures. Every stage only reads more
/// digits of one `U`, so the result is exactly `[V < e^{−γ}]`, i.e. Bernoulli(`e^{−γ}/h`),
/// whatever the enclosure's width: the enclosure only decides how early the comparison stops.
/// `top` holds `U`'s first 32 bits (already drawn, unused elsewhere).
#[inline(always)]
fn accept_scaled(rng: &mut SecureRng, top: u64, height: u64, lo: u128, hi: u128, num: u128, den: u64) -> bool {
    #[cfg(test)]
    let (lo, hi) = {
        let w = FAST_PATH_WIDENING.with(std::cell::Cell::get);
        (lo.saturating_sub(w), hi.saturating_add(w))
    };
    debug_assert!(top < 1 << 32);
    let v = u128::from(top) * u128::from(height); // < 2⁶⁴·… ≤ 2⁶⁴
    let yes = v + u128::from(height) <= lo;
    let no = v >= hi;
    if yes | no { yes } else { accept_scaled_64(rng, top, height, lo, hi, num, den) }
}

/// The second stage of [`accept_scaled`]: `U`'s first 64 bits, `V` in units of `2^{−96}`.
#[cold]
#[inline(never)]
fn accept_scaled_64(rng: &mut SecureRng, top: u64, height: u64, lo: u128, hi: u128, num: u128, den: u64) -> bool {
    let w = (top << 32) | rng.next_bits::<32>();
    let v = u128::from(w) * u128::from(height); // < 2⁹⁶
    if v + u128::from(height) <= lo << 32 {
        true
    } else if v >= hi << 32 {
        false
    } else {
        accept_scaled_slow(rng, vec![w], height, 32, num, den)
    }
}

/// The exact comparison `V < e^{−num/den}` for `V = U·height·2^{−shift}` (`height < 2⁶⁴`),
/// where `U`'s first 64-bit words are `prefix` (little-endian: the newest word is limb 0; it
/// may be empty) and further words are drawn as needed. With `L` words known,
/// `V ∈ [P·height, (P+1)·height]·2^{−(64L + shift)}`; it is compared with an enclosure of
/// `e^{−γ}` at `64·limbs ≥ 64L + shift + 64` bits, and another word is drawn while the two
/// overlap. `e^{−γ}` is irrational for rational `γ > 0` (and `e^0 = 1` is enclosed exactly),
/// and both intervals shrink to points, so this ends with probability 1.
#[cold]
#[inline(never)]
fn accept_scaled_slow(rng: &mut SecureRng, mut prefix: big::Big, height: u64, shift: u32, num: u128, den: u64) -> bool {
    use std::cmp::Ordering;
    loop {
        let known = prefix.len() as u32;
        let limbs = (known + shift.div_ceil(64) + 1) as usize;
        let up = 64 * limbs as u32 - 64 * known - shift; // ≥ 64
        let (lo, hi) = exp_neg_enclosure(num, den, limbs);
        let v_lo = big_shl_bits(&big::mul_small(&prefix, height), up);
        let v_hi = big_shl_bits(&big::mul_small(&big::add(&prefix, &[1]), height), up);
        if big::cmp(&v_hi, &lo) != Ordering::Greater {
            return true; // V < v_hi ≤ lo ≤ e^{−γ}
        }
        if big::cmp(&v_lo, &hi) != Ordering::Less {
            return false; // V ≥ v_lo ≥ hi ≥ e^{−γ}
        }
        prefix.insert(0, rng.next_u64());
    }
}

/// An exact uniform draw from `[0, n)`, `1 ≤ n ≤ 2³²`, by Lemire's multiply-and-reject on
/// 32 random bits: `m = R·n`, reject when `m mod 2³² < 2³² mod n` (then every value has
/// exactly `⌊2³²/n⌋` accepted `R`s), return `⌊m/2³²⌋`. Rejection probability below `n·2^{−32}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Uniform32 {
    n: u64,
    /// `2³² mod n`.
    reject_below: u64,
}

impl Uniform32 {
    fn new(n: u64) -> Self {
        assert!((1..=1 << 32).contains(&n), "uniform range {n}");
        Self { n, reject_below: (1u64 << 32) % n }
    }

    /// The draw for the 32 random bits `first` (low bits of the argument), with fresh bits
    /// from `rng` only after a rejection.
    #[inline(always)]
    fn sample_from(self, first: u64, rng: &mut SecureRng) -> u64 {
        let mut m = (first & 0xffff_ffff) * self.n; // < 2⁶⁴
        while (m as u32 as u64) < self.reject_below {
            m = rng.next_bits::<32>() * self.n;
        }
        m >> 32
    }
}

/// Number of alias-table columns (outcomes), a power of two so a column is `ALIAS_BITS` bits.
const ALIAS_BITS: u32 = 7;
const ALIAS_COLUMNS: usize = 1 << ALIAS_BITS;

/// One column of Walker's alias table with integer weights: outcome `col` if `y < threshold`
/// for `y` uniform in `[0, capacity)`, else `alias`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct AliasColumn {
    threshold: u64,
    alias: u8,
}

/// Walker/Vose alias table for integer weights `w` (`w.len() == ALIAS_COLUMNS`,
/// `Σw = ALIAS_COLUMNS·capacity`), built in exact integer arithmetic: a column `s` with
/// `w_s < capacity` keeps `w_s` for itself and gives `capacity − w_s` to a column `l` with
/// `w_l ≥ capacity`, whose remaining weight drops by that much. Each step fills one column
/// exactly, so afterwards `P(outcome i) = w_i/Σw` exactly (the test
/// `alias_table_reproduces_weights_exactly` recounts it).
fn build_alias(mut w: Vec<u64>, capacity: u64) -> Vec<AliasColumn> {
    assert_eq!(w.len(), ALIAS_COLUMNS);
    assert_eq!(w.iter().map(|&x| u128::from(x)).sum::<u128>(), ALIAS_COLUMNS as u128 * u128::from(capacity));
    let mut table = vec![AliasColumn { threshold: capacity, alias: 0 }; ALIAS_COLUMNS];
    let mut small: Vec<usize> = (0..ALIAS_COLUMNS).filter(|&i| w[i] < capacity).collect();
    let mut large: Vec<usize> = (0..ALIAS_COLUMNS).filter(|&i| w[i] >= capacity).collect();
    while let (Some(&s), Some(&l)) = (small.last(), large.last()) {
        small.pop();
        table[s] = AliasColumn { threshold: w[s], alias: l as u8 };
        w[l] -= capacity - w[s];
        if w[l] < capacity {
            large.pop();
            small.push(l);
        }
    }
    // The weights sum to ALIAS_COLUMNS·capacity, so whatever is left has exactly `capacity`.
    debug_assert!(small.iter().chain(&large).all(|&i| w[i] == capacity));
    table
}

/// An exact sampler of the discrete Gaussian `N_Z(0, σ²)` with `σ² = num/den`, parameters
/// checked and tables built once so that [`DiscreteGaussian::sample`] only fails on a
/// probability-zero overflow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscreteGaussian {
    /// `p` in `σ² = p/q`.
    num: u64,
    /// `q` in `σ² = p/q`.
    den: u64,
    /// `2p`, the denominator of every exponent.
    two_num: u64,
    /// Block width `B = ⌈σ/8⌉ ≥ 1` of the proposal.
    block: u64,
    /// Number `K` of table blocks; blocks `k ≥ K` form the halving tail.
    blocks: usize,
    /// `H_k` for `k ≤ K`: block `k`'s height is `H_k·2^{−32} ≥ e^{−(kB)²/(2σ²)}`.
    heights: Vec<u64>,
    /// Alias table over outcomes `0..K` (blocks), `K` (tail) and `K + 1` (restart).
    alias: Vec<AliasColumn>,
    /// Alias-column capacity `C`: `y` is uniform in `[0, C)`.
    capacity: Uniform32,
    /// Offsets `j` within a block, uniform in `[0, B)`.
    offset: Uniform32,
    /// Fast-path data for exponents over `2p`.
    exp: ExpDenominator,
    /// Reference staircase sampler (tests only): width `W = ⌈2σ⌉ ≥ 1`.
    #[cfg(test)]
    width: u64,
    /// `W²q`: the reference sampler's block decay `a = W²q/(2p)`.
    #[cfg(test)]
    tail_num: u128,
    /// `W²`, for the reference sampler's acceptance exponent `(x² − kW²)q/(2p)`.
    #[cfg(test)]
    width_sq: u128,
}

/// Blocks up to this exponent `a·k²` come from the table; beyond, `e^{−40} < 2^{−57}`.
const TABLE_EXPONENT: u128 = 40;

impl DiscreteGaussian {
    /// A sampler for `σ² = num/den` (in lattice units: the output is an integer).
    ///
    /// # Errors
    /// [`NoiseError::InvalidSigma`] unless `1 ≤ num, den ≤ 2⁶²`.
    pub fn new(num: u64, den: u64) -> Result<Self, NoiseError> {
        if num == 0 || den == 0 || num > MAX_SIGMA_SQ_TERM || den > MAX_SIGMA_SQ_TERM {
            return Err(NoiseError::InvalidSigma(format!(
                "sigma^2 = {num}/{den}: numerator and denominator must be in [1, 2^62]"
            )));
        }
        let (p, q) = (u128::from(num), u128::from(den));
        // Smallest B ≥ 1 with 64·B²q ≥ p (B = ⌈σ/8⌉). Only efficiency depends on this choice.
        let mut block = (p / (64 * q)).isqrt().max(1);
        while 64 * block * block * q < p {
            block += 1;
        }
        let bsq_q = block * block * q; // ≤ (σ/8 + 1)²q ≤ 2(p/64 + q) < 2⁶⁴: a = bsq_q/(2p)
        // K: the first k ≥ 1 with a·k² ≥ 40. a ≥ 1/128 (B = 1 means σ ≤ 8), so K ≤ 72.
        let mut blocks: u128 = 1;
        while blocks * blocks * bsq_q < 2 * TABLE_EXPONENT * p {
            blocks += 1;
        }
        let blocks = blocks as usize;
        assert!(blocks + 2 <= ALIAS_COLUMNS, "table blocks {blocks}");
        // The tail's halving heights need e^{−2aK} ≤ 1/2, i.e. 2aK ≥ ln 2; 2aK ≥ 0.7 suffices.
        // (2aK ≥ 2√(40a) ≥ 1.1 always; checked anyway.)
        assert!(10 * blocks as u128 * bsq_q >= 7 * p, "tail condition");
        let heights: Vec<u64> = (0..=blocks as u128)
            .map(|k| {
                let (_, hi) = exp_neg_enclosure(k * k * bsq_q, 2 * num, 1);
                let hi = big::to_u128(&hi).expect("e^-x <= 1");
                hi.div_ceil(1 << 32) as u64 // ≤ 2³², ≥ e^{−a k²}·2³²
            })
            .collect();
        let mut weights = vec![0u64; ALIAS_COLUMNS];
        weights[..blocks].copy_from_slice(&heights[..blocks]);
        weights[blocks] = 2 * heights[blocks]; // Σ_{m≥0} H_K·2^{−m}
        let total: u64 = weights.iter().sum(); // ≤ (K + 2)·2³² < 2³⁹
        let capacity = total.div_ceil(ALIAS_COLUMNS as u64); // ≤ 2³²
        weights[blocks + 1] = capacity * ALIAS_COLUMNS as u64 - total; // restart
        let alias = build_alias(weights, capacity);

        // The reference sampler's staircase (tests only): smallest W ≥ 1 with W²q ≥ 4p.
        #[cfg(test)]
        let width = {
            let mut width = (4 * p / q).isqrt().max(1);
            while width * width * q < 4 * p {
                width += 1;
            }
            width
        };
        Ok(Self {
            num,
            den,
            two_num: 2 * num,
            block: block as u64,
            blocks,
            heights,
            alias,
            capacity: Uniform32::new(capacity),
            offset: Uniform32::new(block as u64), // B ≤ 2²⁸ + 1
            exp: ExpDenominator::new(2 * num),
            #[cfg(test)]
            width: width as u64,
            #[cfg(test)]
            tail_num: width * width * q,
            #[cfg(test)]
            width_sq: width * width,
        })
    }

    /// An integer `σ²` (the lattice case).
    ///
    /// # Errors
    /// As [`DiscreteGaussian::new`].
    pub fn with_integer_variance(sigma_sq: u64) -> Result<Self, NoiseError> {
        Self::new(sigma_sq, 1)
    }

    /// `σ²` as `(numerator, denominator)`.
    pub fn variance_ratio(&self) -> (u64, u64) {
        (self.num, self.den)
    }

    /// `σ²` as a float (for reporting only; sampling never uses it).
    pub fn variance(&self) -> f64 {
        self.num as f64 / self.den as f64
    }

    /// One exact draw from `N_Z(0, σ²)`.
    ///
    /// # Errors
    /// [`NoiseError::SampleOverflow`] if the magnitude would exceed `i64::MAX`; for any allowed
    /// σ this has probability below `e^{−2⁶⁰}`, i.e. it does not happen.
    #[inline]
    pub fn sample(&self, rng: &mut SecureRng) -> Result<i64, NoiseError> {
        loop {
            // A trial's randomness is two fresh words, each bit used once: w1 = (offset draw,
            // alias draw), w2 = (alias column, sign, 24 unused bits, U's first 32 bits).
            let w1 = rng.next_u64();
            let w2 = rng.next_u64();
            let col = (w2 >> (64 - ALIAS_BITS)) as usize;
            let negative = (w2 >> (63 - ALIAS_BITS)) & 1 == 1;
            let top = w2 & 0xffff_ffff;
            let entry = self.alias[col];
            let y = self.capacity.sample_from(w1, rng);
            let k = if y < entry.threshold { col } else { usize::from(entry.alias) };
            let j = self.offset.sample_from(w1 >> 32, rng);
            if k < self.blocks {
                if k == 0 && j == 0 && negative {
                    continue; // 0 must not be proposed twice
                }
                let x = k as u64 * self.block + j; // < 72·(2²⁸ + 1) < 2³⁵
                let height = self.heights[k];
                let n = (u128::from(x) * u128::from(x)).checked_mul(u128::from(self.den));
                let accept = match n {
                    Some(n) if n < self.exp.limit => {
                        let (lo, hi) = self.exp.bounds64(n);
                        accept_scaled(rng, top, height, lo, hi, n, self.two_num)
                    }
                    // γ ≥ 16 (|x| > 5.6σ) or x²q ≥ 2¹²⁸ (then γ > 2⁶⁵: any larger numerator
                    // gives the same enclosures, see `exp_neg_enclosure`).
                    _ => accept_scaled_slow(rng, Vec::new(), height, 32, n.unwrap_or(u128::MAX), self.two_num),
                };
                if accept {
                    let x = x as i64;
                    return Ok(if negative { -x } else { x });
                }
            } else if k == self.blocks {
                if let Some(x) = self.sample_tail(rng, j)? {
                    return Ok(if negative { -x } else { x });
                }
            }
            // k = K + 1: the alias table's padding outcome, restart.
        }
    }

    /// The tail (probability below `2^{−55}` per trial): block `K + m` with `m` geometric of
    /// ratio `1/2` and height `H_K·2^{−32−m}`, decided by the exact slow comparison.
    #[cold]
    #[inline(never)]
    fn sample_tail(&self, rng: &mut SecureRng, j: u64) -> Result<Option<i64>, NoiseError> {
        let mut m: u32 = 0;
        while rng.next_bit() {
            m = m.checked_add(1).ok_or(NoiseError::SampleOverflow)?;
        }
        let x = (self.blocks as u64)
            .checked_add(u64::from(m))
            .and_then(|k| k.checked_mul(self.block))
            .and_then(|b| b.checked_add(j))
            .filter(|&x| x <= i64::MAX as u64)
            .ok_or(NoiseError::SampleOverflow)?;
        let n = (u128::from(x) * u128::from(x)).checked_mul(u128::from(self.den)).unwrap_or(u128::MAX);
        let accept = accept_scaled_slow(rng, Vec::new(), self.heights[self.blocks], 32 + m, n, self.two_num);
        Ok(accept.then_some(x as i64))
    }

    /// The previous staircase sampler (CKS-style, digit-by-digit Bernoulli decisions), kept
    /// as an independent exact reference for the tests.
    #[cfg(test)]
    fn sample_reference(&self, rng: &mut SecureRng) -> Result<i64, NoiseError> {
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

/// One exact draw from the discrete Gaussian `N_Z(0, σ²)`, `σ² = sigma_sq_num/sigma_sq_den`.
/// Build a [`DiscreteGaussian`] once instead when drawing many values.
///
/// # Errors
/// As [`DiscreteGaussian::new`] and [`DiscreteGaussian::sample`].
pub fn sample_discrete_gaussian(rng: &mut SecureRng, sigma_sq_num: u64, sigma_sq_den: u64) -> Result<i64, NoiseError> {
    DiscreteGaussian::new(sigma_sq_num, sigma_sq_den)?.sample(rng)
}

/// The pmf of `N_Z(0, σ²)` at `x`, in floating point (tests only).
#[cfg(test)]
pub(crate) fn discrete_gaussian_pmf(sigma_sq: f64, x: i64) -> f64 {
    let reach = (sigma_sq.sqrt() * 40.0) as i64 + 2;
    let norm: f64 = (-reach..=reach).map(|y| (-(y * y) as f64 / (2.0 * sigma_sq)).exp()).sum();
    (-(x * x) as f64 / (2.0 * sigma_sq)).exp() / norm
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rng(seed: u64) -> SecureRng {
        SecureRng::seeded_for_tests(seed)
    }

    /// |observed − expected| of a Bernoulli frequency within 5 standard errors.
    fn assert_frequency(hits: usize, n: usize, p: f64, what: &str) {
        let se = (p * (1.0 - p) / n as f64).sqrt().max(1e-9);
        let got = hits as f64 / n as f64;
        assert!((got - p).abs() < 5.0 * se, "{what}: frequency {got}, expected {p} (se {se})");
    }

    #[test]
    fn bernoulli_ratio_matches_probability_on_both_paths() {
        let mut r = rng(2);
        let n = 100_000;
        for (num, den) in [(1u128, 3u128), (2, 7), (999_999, 1_000_000), (1, 1 << 40)] {
            let hits = (0..n).filter(|_| bernoulli_ratio(&mut r, num, den)).count();
            assert_frequency(hits, n, num as f64 / den as f64, "words");
        }
        // Denominators above 2⁶⁴ take the bit-by-bit path.
        let big = 3u128 << 100;
        for num in [1u128 << 100, (5u128 << 99) + 12345] {
            let hits = (0..n).filter(|_| bernoulli_ratio(&mut r, num, big)).count();
            assert_frequency(hits, n, num as f64 / big as f64, "bits");
        }
    }

    #[test]
    fn bernoulli_exp_matches_exp() {
        let mut r = rng(3);
        let n = 100_000;
        for (num, den) in [(0u128, 1u64), (1, 2), (1, 1), (7, 3), (5, 1), (123_456_789, 100_000_000)] {
            let hits = (0..n).filter(|_| bernoulli_exp(&mut r, num, den)).count();
            assert_frequency(hits, n, (-(num as f64) / den as f64).exp(), &format!("exp(-{num}/{den})"));
        }
        // The overflow-avoiding split gives the same law: exp(-m·q/d) with m·q > 2¹²⁸ is 0,
        // and a small case through both branches agrees with the closed form.
        assert!((0..1000).all(|_| !bernoulli_exp_scaled(&mut r, u128::MAX / 3, 1 << 62, 7)));
        let hits = (0..n).filter(|_| bernoulli_exp_scaled(&mut r, 3, 5, 9)).count();
        assert_frequency(hits, n, (-15.0f64 / 9.0).exp(), "scaled");
    }

    /// `e^{−x}` of an enclosure as f64 (for comparisons with `f64::exp` only).
    fn big_to_f64(a: &[u64], limbs: usize) -> f64 {
        a.iter().enumerate().map(|(i, &l)| l as f64 * 2f64.powi(64 * (i as i32 - limbs as i32))).sum()
    }

    #[test]
    fn exp_enclosure_brackets_exp_and_narrows_with_precision() {
        for (num, den) in
            [(0u128, 1u64), (1, 1), (1, 64), (7, 3), (123_456_789, 100_000_000), (45, 1), (5, 2), (1 << 70, 1 << 62)]
        {
            let exact = (-(num as f64) / den as f64).exp();
            let mut prev: Option<(big::Big, big::Big, usize)> = None;
            for limbs in 1..=4 {
                let (lo, hi) = exp_neg_enclosure(num, den, limbs);
                assert!(big::cmp(&lo, &hi) != std::cmp::Ordering::Greater, "{num}/{den}");
                let (l, h) = (big_to_f64(&lo, limbs), big_to_f64(&hi, limbs));
                assert!(l <= exact * (1.0 + 1e-12) && h >= exact * (1.0 - 1e-12), "{num}/{den}: [{l}, {h}] vs {exact}");
                assert!(h - l <= 2f64.powi(-64 * limbs as i32 + 12), "{num}/{den}: width {}", h - l);
                if let Some((plo, phi, pl)) = prev {
                    // Nested: the finer enclosure lies inside the coarser one.
                    let shift = limbs - pl;
                    assert!(big::cmp(&big::shl_limbs(&plo, shift), &lo) != std::cmp::Ordering::Greater);
                    assert!(big::cmp(&big::shl_limbs(&phi, shift), &hi) != std::cmp::Ordering::Less);
                }
                prev = Some((lo, hi, limbs));
            }
        }
        // e^{-1} to 192 bits: 0.36787944117144233...
        let (lo, _) = exp_neg_enclosure(1, 1, 3);
        assert!((big_to_f64(&lo, 3) - 0.367_879_441_171_442_33).abs() < 1e-16);
    }

    #[test]
    fn exp_table_entries_enclose_exp() {
        let table = exp_table();
        assert_eq!(table[0], [1 << 63, 1 << 63]);
        for (i, &[lo, hi]) in table.iter().enumerate() {
            let (elo, ehi) = exp_neg_enclosure(i as u128, 64, 3);
            // In 2^-192 units: lo·2^129 ≤ elo and hi·2^129 ≥ ehi.
            assert!(big::cmp(&big_shl_bits(&[lo], 129), &elo) != std::cmp::Ordering::Greater, "entry {i} lo");
            assert!(big::cmp(&big_shl_bits(&[hi], 129), &ehi) != std::cmp::Ordering::Less, "entry {i} hi");
            assert!(hi - lo <= 4, "entry {i}: width {}", hi - lo);
        }
    }

    /// The fast path's 64-bit bounds contain a 192-bit enclosure of e^{−n/den} (so they contain
    /// the true value) for random and edge-case numerators and denominators.
    #[test]
    fn fast_bounds_contain_exact_enclosure() {
        let mut r = rng(20);
        for den in [2u64, 3, 8, 1 << 20, 2 * 1_234_567_891, (1 << 63) - 25, 1 << 63] {
            let e = ExpDenominator::new(den);
            let mut ns: Vec<u128> = vec![0, 1, e.limit - 1, e.limit / 2, u128::from(den), u128::from(den) / 64];
            // Numerators at and just around table steps (ρ near 0 and near 2^-6).
            for i in [1u128, 63, 64, 500, 1023] {
                let at = i * u128::from(den) / 64;
                ns.extend([at.saturating_sub(1), at, at + 1]);
            }
            ns.extend((0..2000).map(|_| (u128::from(r.next_u64()) << 64 | u128::from(r.next_u64())) % e.limit));
            for n in ns.into_iter().filter(|&n| n < e.limit) {
                let (lo, hi) = e.bounds64(n);
                let (elo, ehi) = exp_neg_enclosure(n, den, 3);
                let (lo_b, hi_b) = (big::shl_limbs(&big::from_u128(lo), 2), big::shl_limbs(&big::from_u128(hi), 2));
                assert!(big::cmp(&lo_b, &elo) != std::cmp::Ordering::Greater, "lo for {n}/{den}");
                assert!(big::cmp(&hi_b, &ehi) != std::cmp::Ordering::Less, "hi for {n}/{den}");
                assert!(hi - lo < 1 << 40, "width {} for {n}/{den}", hi - lo);
            }
        }
    }

    #[test]
    fn alias_table_reproduces_weights_exactly() {
        let mut r = rng(21);
        for case in 0..50 {
            let mut w: Vec<u64> = (0..ALIAS_COLUMNS).map(|_| r.next_u64() >> (30 + case % 20)).collect();
            w[case % ALIAS_COLUMNS] = 0;
            let total: u64 = w.iter().sum();
            let capacity = total.div_ceil(ALIAS_COLUMNS as u64).max(1);
            w[(case + 1) % ALIAS_COLUMNS] += capacity * ALIAS_COLUMNS as u64 - total;
            let table = build_alias(w.clone(), capacity);
            let mut mass = vec![0u64; ALIAS_COLUMNS];
            for (col, c) in table.iter().enumerate() {
                assert!(c.threshold <= capacity);
                mass[col] += c.threshold;
                mass[usize::from(c.alias)] += capacity - c.threshold;
            }
            assert_eq!(mass, w, "case {case}");
        }
    }

    fn with_widening<T>(w: u128, f: impl FnOnce() -> T) -> T {
        FAST_PATH_WIDENING.with(|c| c.set(w));
        let out = f();
        FAST_PATH_WIDENING.with(|c| c.set(0));
        out
    }

    /// `accept_scaled` is Bernoulli(e^{−γ}/h) on the 32-bit stage, with the 64-bit stage and
    /// with the exact bignum fallback (forced by widening the fast enclosures).
    #[test]
    fn accept_scaled_matches_probability_on_every_stage() {
        for widening in [0u128, 1 << 62, u128::MAX] {
            // Every decision takes the bignum fallback under the last widening: fewer draws.
            let n = if widening == u128::MAX { 5_000 } else { 100_000 };
            let mut r = rng(22);
            for (num, den, height) in [
                (1u128, 2u64, 1u64 << 32),
                (7, 3, 1 << 32),
                (50, 64, 3_000_000_000),
                (0, 5, 1 << 32),
                (9, 8, 1_500_000_000),
            ] {
                let e = ExpDenominator::new(den);
                let (lo, hi) = e.bounds64(num);
                let hits = with_widening(widening, || {
                    (0..n)
                        .filter(|_| {
                            let top = r.next_bits::<32>();
                            accept_scaled(&mut r, top, height, lo, hi, num, den)
                        })
                        .count()
                });
                let p = (-(num as f64) / den as f64).exp() / (height as f64 / 2f64.powi(32));
                assert_frequency(hits, n, p, &format!("e^-{num}/{den}/h, widening {widening}"));
            }
        }
    }

    /// Pearson chi-square of N_Z(0, σ²) samples over |x| ≤ `reach` plus one tail bin; the
    /// statistic must stay below the 0.999 quantile for `2·reach + 1` degrees of freedom.
    fn chi_square_against_pmf(mut draw: impl FnMut() -> i64, sigma_sq: f64, reach: i64, n: usize, limit: f64) {
        let bins = (2 * reach + 1) as usize;
        let mut counts = vec![0usize; bins + 1];
        for _ in 0..n {
            let x = draw();
            counts[if x.abs() <= reach { (x + reach) as usize } else { bins }] += 1;
        }
        let mut chi2 = 0.0;
        let mut body = 0.0;
        for (i, &c) in counts.iter().take(bins).enumerate() {
            let p = discrete_gaussian_pmf(sigma_sq, i as i64 - reach);
            body += p;
            chi2 += (c as f64 - n as f64 * p).powi(2) / (n as f64 * p);
        }
        let tail = ((1.0 - body) * n as f64).max(1e-9);
        chi2 += (counts[bins] as f64 - tail).powi(2) / tail;
        assert!(chi2 < limit, "chi2 {chi2}, counts {counts:?}");
    }

    /// With the fast enclosures widened so that about a quarter of the acceptance decisions
    /// go to the 64-bit stage and the bignum fallback, the samples still follow the exact pmf.
    #[test]
    fn forced_fallback_matches_exact_pmf() {
        let sampler = DiscreteGaussian::new(5, 2).unwrap(); // σ² = 2.5
        let mut r = rng(23);
        with_widening(1 << 62, || {
            chi_square_against_pmf(|| sampler.sample(&mut r).unwrap(), 2.5, 6, 100_000, 34.5); // 14 dof
        });
        let sampler = DiscreteGaussian::new(1, 3).unwrap(); // σ² = 1/3 (B = 1, K = 4)
        with_widening(u128::MAX, || {
            chi_square_against_pmf(|| sampler.sample(&mut r).unwrap(), 1.0 / 3.0, 2, 50_000, 20.5); // 6 dof
        });
    }

    /// The new sampler against the previous (digit-by-digit) exact sampler: both against the
    /// exact pmf, for several σ², including σ = 8·B boundaries of the block width.
    #[test]
    fn matches_reference_sampler_and_pmf() {
        for (num, den, reach, limit) in
            [(2u64, 1u64, 5, 31.3), (64, 1, 20, 68.0), (65, 1, 20, 68.0), (1, 4, 2, 20.5), (300, 7, 16, 58.4)]
        {
            let sampler = DiscreteGaussian::new(num, den).unwrap();
            let sigma_sq = num as f64 / den as f64;
            let mut r = rng(24 + num);
            chi_square_against_pmf(|| sampler.sample(&mut r).unwrap(), sigma_sq, reach, 200_000, limit);
            chi_square_against_pmf(|| sampler.sample_reference(&mut r).unwrap(), sigma_sq, reach, 50_000, limit);
        }
    }

    /// The halving tail, tested directly: with K = 1 at σ² = 1/2 (a = 1, so 2aK ≥ ln 2), the
    /// tail accepts x ≥ 1 with probability e^{−x²}/(2h), h = H₁·2^{−32}.
    #[test]
    fn tail_blocks_follow_the_gaussian() {
        let mut sampler = DiscreteGaussian::new(1, 2).unwrap();
        assert_eq!(sampler.block, 1);
        sampler.blocks = 1;
        let h = sampler.heights[1] as f64 / 2f64.powi(32);
        assert!(h >= (-1f64).exp());
        let mut r = rng(25);
        let n = 200_000;
        let mut counts = [0usize; 4];
        for _ in 0..n {
            if let Some(x) = sampler.sample_tail(&mut r, 0).unwrap() {
                counts[(x as usize).min(3)] += 1;
            }
        }
        assert_eq!(counts[0], 0);
        for x in 1..=2 {
            let p = (-((x * x) as f64)).exp() / (2.0 * h);
            assert_frequency(counts[x], n, p, &format!("tail x = {x}"));
        }
    }

    #[test]
    fn table_covers_to_exponent_40_and_heights_dominate() {
        for (num, den) in [
            (1u64, 1u64),
            (2, 1),
            (64, 1),
            (1 << 44, 1),
            (MAX_SIGMA_SQ_TERM, 1),
            (1, MAX_SIGMA_SQ_TERM),
            (5_300_000, 1 << 20),
        ] {
            let s = DiscreteGaussian::new(num, den).unwrap();
            let sigma = (num as f64 / den as f64).sqrt();
            assert!(s.block as f64 >= sigma / 8.0 && (s.block == 1 || (s.block - 1) as f64 <= sigma / 8.0));
            assert!(s.blocks >= 1 && s.blocks + 2 <= ALIAS_COLUMNS);
            for (k, &h) in s.heights.iter().enumerate() {
                let gamma = ((k as f64) * s.block as f64).powi(2) / (2.0 * sigma * sigma);
                assert!(h as f64 >= (-gamma).exp() * 2f64.powi(32) * (1.0 - 1e-9) && h <= 1 << 32, "k {k}");
            }
        }
    }

    #[test]
    fn rejects_invalid_sigma() {
        for (num, den) in [(0, 1), (1, 0), (MAX_SIGMA_SQ_TERM + 1, 1), (1, MAX_SIGMA_SQ_TERM + 1)] {
            assert!(matches!(DiscreteGaussian::new(num, den), Err(NoiseError::InvalidSigma(_))), "{num}/{den}");
        }
        assert!(DiscreteGaussian::new(MAX_SIGMA_SQ_TERM, 1).is_ok());
        assert!(DiscreteGaussian::new(1, MAX_SIGMA_SQ_TERM).is_ok());
    }

    #[test]
    fn width_is_ceil_two_sigma() {
        assert_eq!(DiscreteGaussian::new(2, 1).unwrap().width, 3); // 2√2 = 2.83
        assert_eq!(DiscreteGaussian::new(4, 1).unwrap().width, 4);
        assert_eq!(DiscreteGaussian::new(1, 100).unwrap().width, 1);
        assert_eq!(DiscreteGaussian::new(1 << 40, 1).unwrap().width, 1 << 21);
    }

    /// Empirical frequencies of N_Z(0, 2) against its exact pmf: Pearson chi-square over
    /// |x| ≤ 5 plus one tail bin.
    #[test]
    fn small_sigma_matches_exact_pmf() {
        let sigma_sq = 2.0;
        let sampler = DiscreteGaussian::new(2, 1).unwrap();
        let mut r = rng(4);
        let n = 200_000;
        let mut counts = [0usize; 12]; // bins -5..=5, then the tail
        for _ in 0..n {
            let x = sampler.sample(&mut r).unwrap();
            counts[if x.abs() <= 5 { (x + 5) as usize } else { 11 }] += 1;
        }
        let mut chi2 = 0.0;
        let mut body = 0.0;
        for (i, &c) in counts.iter().take(11).enumerate() {
            let p = discrete_gaussian_pmf(sigma_sq, i as i64 - 5);
            body += p;
            chi2 += (c as f64 - n as f64 * p).powi(2) / (n as f64 * p);
        }
        let tail = (1.0 - body) * n as f64; // ≈ 0.9 expected counts
        chi2 += (counts[11] as f64 - tail).powi(2) / tail.max(1e-9);
        // 11 degrees of freedom: 0.999 quantile 31.3.
        assert!(chi2 < 31.3, "chi2 {chi2}, counts {counts:?}");
    }

    /// Rational σ² (here 1/4, below one lattice step) also matches the exact pmf.
    #[test]
    fn fractional_sigma_matches_exact_pmf() {
        let sampler = DiscreteGaussian::new(1, 4).unwrap();
        let mut r = rng(5);
        let n = 100_000;
        let mut counts = [0usize; 5];
        for _ in 0..n {
            let x = sampler.sample(&mut r).unwrap();
            assert!(x.abs() <= 2, "implausible sample {x} for sigma^2 = 1/4");
            counts[(x + 2) as usize] += 1;
        }
        for (i, &c) in counts.iter().enumerate() {
            let p = discrete_gaussian_pmf(0.25, i as i64 - 2);
            assert_frequency(c, n, p, &format!("x = {}", i as i64 - 2));
        }
    }

    /// Mean and variance for σ² = 2⁴⁰ (σ = 2²⁰), within 5 standard errors.
    #[test]
    fn large_sigma_mean_and_variance() {
        let sigma_sq = (1u64 << 40) as f64;
        let sampler = DiscreteGaussian::with_integer_variance(1 << 40).unwrap();
        let mut r = rng(6);
        let n = 100_000;
        let xs: Vec<f64> = (0..n).map(|_| sampler.sample(&mut r).unwrap() as f64).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        let sigma = sigma_sq.sqrt();
        assert!(mean.abs() < 5.0 * sigma / (n as f64).sqrt(), "mean {mean}");
        // Var of the sample variance of a Gaussian is 2σ⁴/(n − 1).
        let se = sigma_sq * (2.0 / (n - 1) as f64).sqrt();
        assert!((var - sigma_sq).abs() < 5.0 * se, "variance {var} vs {sigma_sq} (se {se})");
        // Kurtosis 3 (tails of the right weight, not just the right variance).
        let m4 = xs.iter().map(|x| (x - mean).powi(4)).sum::<f64>() / n as f64;
        let kurt = m4 / (var * var);
        assert!((kurt - 3.0).abs() < 5.0 * (24.0 / n as f64).sqrt(), "kurtosis {kurt}");
    }

    #[test]
    fn huge_sigma_does_not_overflow() {
        let sampler = DiscreteGaussian::new(MAX_SIGMA_SQ_TERM, 1).unwrap();
        let mut r = rng(7);
        for _ in 0..1000 {
            let x = sampler.sample(&mut r).unwrap();
            assert!(x.unsigned_abs() < 10 * (1u64 << 31), "{x}");
        }
    }
}
