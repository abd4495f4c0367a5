//! Exact sampling of the discrete Gaussian `N_Z(0, σ²)` for rational `σ²`, with integer
//! arithmetic only.
//!
//! # Algorithm
//!
//! A rejection sampler in the style of Canonne, Kamath and Steinke 2020 ("The Discrete
//! Gaussian for Differential Privacy", Algorithms 1–3): every decision is a Bernoulli of a
//! rational probability or of `exp(−γ)` for a rational `γ`, decided exactly. CKS propose from
//! a discrete Laplace; we propose from the *staircase* that the discrete Laplace sampler is
//! built on (uniform inside blocks of width `W`, geometric over blocks) and fold the whole
//! correction into a single `exp(−γ)` acceptance, which needs fewer random decisions:
//!
//! 1. block `k ≥ 0` with `P(k) = (1 − e^{−a}) e^{−a k}`, where `a = W²/(2σ²)`
//!    (`k` = number of successive successes of Bernoulli(`e^{−a}`));
//! 2. offset `j` uniform in `[0, W)`, magnitude `x = kW + j`, sign uniform;
//!    `(x = 0, negative)` restarts, so that 0 is not proposed twice;
//! 3. accept with probability `exp(−γ)`, `γ = x²/(2σ²) − a k = (x² − kW²)/(2σ²)`,
//!    otherwise restart from 1.
//!
//! (The implementation draws `j` first and decides the factor `exp(−j²/(2σ²))` of step 3
//! before drawing `k`; since `k` is independent of `j` this is the same law, and most
//! rejections then cost no block draw.)
//!
//! `γ ≥ 0` because `x ≥ kW ≥ √k·W`, so step 3 is a probability. A signed value `±x` is
//! proposed with probability `∝ e^{−ak}/W` and accepted with `e^{−x²/(2σ²) + ak}`, i.e. output
//! with probability `∝ e^{−x²/(2σ²)}`: exactly the discrete Gaussian, for every `W ≥ 1`.
//! `W = ⌈2σ⌉` gives an acceptance rate of about `(1 − e^{−2})·√(2π)/4 ≈ 0.54`.
//!
//! With `σ² = p/q`, every `γ` is `n/(2p)` for an integer `n`, and the only irrational
//! quantities ever involved are `e^{−γ}`, decided by von Neumann's series (CKS Algorithm 1):
//! for `γ ∈ [0, 1]` draw Bernoulli(`γ/K`) for `K = 1, 2, …` until one fails and return whether
//! `K` is odd; larger `γ` is split into `⌊γ⌋` factors `e^{−1}` and a remainder.
//!
//! # Speed
//! Each Bernoulli(`n/d`) compares a uniform real `U = 0.R₁R₂…` (8-bit digits `Rᵢ`) with
//! `n/d` lazily, one multiplication per digit; the comparison is decided by the first digit
//! except with probability `2⁻⁸`, when the next digit is compared (exactly, no truncation).
//! Denominators stay below `2⁶⁴` in the common case; larger ones fall back to a bit-by-bit
//! long division in `u128`, also exact.
//!
//! # Bounds
//! `p, q ≤ 2⁶²`, so `2p < 2⁶³`, `2p·K < 2¹²⁷` for any `u64` counter `K`, and all products
//! are formed in `u128` with checked arithmetic. A sample whose magnitude would exceed
//! `i64::MAX` (probability below `e^{−2⁶⁰}` for any allowed σ) is reported as
//! [`NoiseError::SampleOverflow`] instead of wrapping.

use super::{NoiseError, SecureRng};

/// Largest numerator or denominator accepted for `σ²`.
pub const MAX_SIGMA_SQ_TERM: u64 = 1 << 62;

/// Bernoulli(`n/d`) for `d ≥ 1`; `n ≥ d` is certain success. Requires `d < 2¹²⁷`.
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

/// The exact fallback of [`bernoulli_exp_fast`]: decides `U < e^{−num/den}` for the uniform
/// `U = 0.W₁W₂W₃…` (64-bit words) whose first word `first` is already drawn, drawing further
/// words only as needed. With `L` words of `U` known, `U ∈ [u, u+1)·2^{−64L}`; it is compared
/// with an enclosure of `e^{−γ}` at `64(L+1)` bits, and another word is drawn while the two
/// intervals overlap. `e^{−γ}` is irrational for rational `γ > 0` (and the enclosure of
/// `e^0 = 1` is exact), and the enclosure's width tends to 0, so this ends with probability 1.
#[cold]
#[inline(never)]
fn exp_compare_slow(rng: &mut SecureRng, first: u64, num: u128, den: u64) -> bool {
    let mut prefix: big::Big = vec![first]; // little-endian: the newest word is the lowest limb
    loop {
        let limbs = prefix.len();
        let (lo, hi) = exp_neg_enclosure(num, den, limbs + 1);
        let below = big::shl_limbs(&prefix, 1);
        let above = big::shl_limbs(&big::add(&prefix, &[1]), 1);
        if big::cmp(&above, &lo) != std::cmp::Ordering::Greater {
            return true; // U < (u+1)·2^{−64L} ≤ lo ≤ e^{−γ}
        }
        if big::cmp(&below, &hi) != std::cmp::Ordering::Less {
            return false; // U ≥ u·2^{−64L} ≥ hi ≥ e^{−γ}
        }
        prefix.insert(0, rng.next_u64());
    }
}

/// `e^{−i/64}` for `i < 1024` as `[lo, hi]·2^{−63}`, rounded outward: a chain of interval
/// products of an enclosure of `e^{−1/64}` at 128 bits, each rounded outward.
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
#[derive(Debug, Clone, PartialEq, Eq)]
struct ExpDenominator {
    den: u64,
    /// `⌊2¹²³/den⌋`: `γ·2⁵⁹ = n·2¹²³/den/2⁶⁴ ∈ [⌊n·R/2⁶⁴⌋, ⌊n·(R+1)/2⁶⁴⌋ + 1]`.
    recip: u128,
    /// `FAST_GAMMA_LIMIT·den`: numerators below it take the fast path.
    limit: u128,
}

impl ExpDenominator {
    fn new(den: u64) -> Self {
        assert!((2..=1 << 63).contains(&den), "fast-path denominator {den} out of range");
        Self { den, recip: (1u128 << 123) / u128::from(den), limit: FAST_GAMMA_LIMIT * u128::from(den) }
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
    fn bounds64(&self, n: u128, table: &[[u64; 2]; EXP_TABLE_LEN]) -> (u128, u128) {
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

#[cfg(test)]
thread_local! {
    /// Test-only: widen every fast-path enclosure by this many units of `2^{−64}` on each side
    /// (still valid enclosures), so that the exact fallback runs often.
    static FAST_PATH_WIDENING: std::cell::Cell<u128> = const { std::cell::Cell::new(0) };
}

/// Bernoulli(`p`) as `U < p` for a fresh uniform `U = 0.B₁B₂…` (bits), given an enclosure
/// `lo·2^{−64} ≤ p ≤ hi·2^{−64}` with `p = e^{−num/den}`: decided by the first 32 bits of `U`
/// unless they leave it open (`U`'s interval `[u, u+1)·2^{−32}` meets `[lo, hi)`), then by the
/// first 64, and after that [`exp_compare_slow`] continues the same comparison with further
/// words of the same `U`. Each stage only reads more digits of one `U`, so the result is
/// exactly `[U < p]` whatever the enclosure's width: the enclosure only decides how early the
/// comparison can stop.
#[inline(always)]
fn bernoulli_exp_decide(rng: &mut SecureRng, lo: u128, hi: u128, num: u128, den: u64) -> bool {
    #[cfg(test)]
    let (lo, hi) = {
        let w = FAST_PATH_WIDENING.with(std::cell::Cell::get);
        (lo.saturating_sub(w), hi.saturating_add(w))
    };
    let top = rng.next_bits::<32>();
    let u = u128::from(top) << 32;
    let yes = u + (1 << 32) <= lo; // U < (u + 1)·2^{−32} ≤ lo·2^{−64} ≤ p
    let no = u >= hi; // U ≥ u·2^{−32} ≥ hi·2^{−64} ≥ p
    if yes | no { yes } else { bernoulli_exp_decide_64(rng, top, lo, hi, num, den) }
}

/// The second stage of [`bernoulli_exp_decide`]: `U`'s first 64 bits (probability about
/// `(hi − lo)·2^{−64} + 2^{−31}` per decision to get here).
#[cold]
#[inline(never)]
fn bernoulli_exp_decide_64(rng: &mut SecureRng, top: u64, lo: u128, hi: u128, num: u128, den: u64) -> bool {
    let w = (top << 32) | rng.next_bits::<32>();
    let u = u128::from(w);
    if u < lo {
        true
    } else if u >= hi {
        false
    } else {
        exp_compare_slow(rng, w, num, den)
    }
}

/// Uniform `j ∈ [0, n)`, `1 ≤ n`, exactly (Lemire's multiply-and-reject): 32 random bits when
/// `n ≤ 2³²` (rejection probability below `n·2^{−32}`), otherwise [`SecureRng::below`].
#[inline(always)]
fn uniform_below(rng: &mut SecureRng, n: u64) -> u64 {
    if n > 1 << 32 {
        return rng.below(n);
    }
    let mut m = rng.next_bits::<32>() * n; // < 2⁶⁴
    if (m as u32 as u64) < n {
        let threshold = (1u64 << 32) % n; // 2³² mod n: the low words to reject
        while (m as u32 as u64) < threshold {
            m = rng.next_bits::<32>() * n;
        }
    }
    m >> 32
}

/// An exact sampler of the discrete Gaussian `N_Z(0, σ²)` with `σ² = num/den`, parameters
/// checked once so that [`DiscreteGaussian::sample`] only fails on a probability-zero overflow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscreteGaussian {
    /// `p` in `σ² = p/q`.
    num: u64,
    /// `q` in `σ² = p/q`.
    den: u64,
    /// Block width `W = ⌈2σ⌉ ≥ 1`.
    width: u64,
    /// `2p`, the denominator of every exponent.
    two_num: u64,
    /// `W²q`: the block decay `a = W²q/(2p)`.
    tail_num: u128,
    /// `W²`, for the acceptance exponent `(x² − kW²)q/(2p)`.
    width_sq: u128,
    /// Fast-path data for exponents over `2p`.
    exp: ExpDenominator,
    /// Enclosure `[lo, hi]·2^{−64}` of the block decay `e^{−a}`.
    tail_lo: u128,
    tail_hi: u128,
}

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
        // Smallest W ≥ 1 with W²q ≥ 4p (W = ⌈2σ⌉). Only efficiency depends on this choice.
        let (p, q) = (u128::from(num), u128::from(den));
        let mut width = (4 * p / q).isqrt().max(1);
        while width * width * q < 4 * p {
            width += 1;
        }
        let tail_num = width * width * q; // ≤ (2σ + 1)²q ≤ 4p + 4√(pq) + q < 2⁶⁶
        let (tail_lo, tail_hi) = exp_neg_enclosure(tail_num, 2 * num, 2);
        let tail_lo = big::to_u128(&big::shr_limbs(&tail_lo, 1, false)).expect("e^-a <= 1");
        let tail_hi = big::to_u128(&big::shr_limbs(&tail_hi, 1, true)).expect("e^-a <= 1");
        Ok(Self {
            num,
            den,
            width: width as u64, // ≤ 2·2³¹ + 1
            two_num: 2 * num,
            tail_num,
            width_sq: width * width,
            exp: ExpDenominator::new(2 * num),
            tail_lo,
            tail_hi,
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
        let table = exp_table();
        loop {
            let j = uniform_below(rng, self.width);
            let negative = rng.next_bit();
            // Block k: successive successes of Bernoulli(e^{−a}), each one uniform word.
            let mut k: u64 = 0;
            while bernoulli_exp_decide(rng, self.tail_lo, self.tail_hi, self.tail_num, self.two_num) {
                k = k.checked_add(1).ok_or(NoiseError::SampleOverflow)?;
            }
            if k == 0 && negative && j == 0 {
                continue; // 0 must not be proposed twice
            }
            let x = k
                .checked_mul(self.width)
                .and_then(|b| b.checked_add(j))
                .filter(|&x| x <= i64::MAX as u64)
                .ok_or(NoiseError::SampleOverflow)?;
            // x < 2⁶³ so x² < 2¹²⁶; kW² ≤ x² because x ≥ kW and k² ≥ k; kW² ≤ xW < 2⁹⁶.
            let excess = u128::from(x) * u128::from(x) - u128::from(k) * self.width_sq;
            // Accept with e^{−γ}, γ = excess·q/(2p): one word when γ < 16, else the
            // digit-by-digit series (rare: it needs k ≥ 2).
            let accept = match excess.checked_mul(u128::from(self.den)) {
                Some(n) if n < self.exp.limit => {
                    let (lo, hi) = self.exp.bounds64(n, table);
                    bernoulli_exp_decide(rng, lo, hi, n, self.two_num)
                }
                _ => bernoulli_exp_scaled(rng, excess, self.den, self.two_num),
            };
            if accept {
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
