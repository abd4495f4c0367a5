//! Exact sampling of the discrete Gaussian `N_Z(0, σ²)` for rational `σ² = p/q`, with integer
//! arithmetic only: every random decision compares uniform random digits with a number that is
//! known exactly or bracketed by a rigorous integer enclosure, and stops only when the
//! comparison is settled. No floating point is involved in sampling (it only picks a scale
//! factor when the tables are built, which affects speed, never the distribution).
//!
//! # Algorithm (rejection from a fine dyadic staircase)
//!
//! Let `B = 2^b` be the largest power of two with `B ≤ σ/8` (`B = 1` for `σ < 8`), block
//! `k ≥ 0` the magnitudes `[kB, (k+1)B)`, `a = B²/(2σ²)` (so `1/512 < a ≤ 1/128` when
//! `σ ≥ 8`) and `γ(x) = x²/(2σ²) = x²q/(2p)`.
//!
//! * **Envelope.** Block `k < K` gets the height `h_k = H_k/S`, where `S` is an integer scale
//!   and `H_k = ⌈S·e^{−ak²}⌉` (rounded up from a rigorous enclosure, so `h_k ≥ e^{−ak²}`, and
//!   `H_0 = S`), and `K` is the first block with `aK² ≥ 64`. Blocks `k = K + m` get
//!   `h_K·2^{−m}`. For `x` in block `k`, `e^{−γ(x)} ≤ e^{−ak²} ≤ h_k`; in the tail,
//!   `e^{−a(K+m)²} ≤ e^{−aK²}·e^{−2aKm} ≤ h_K·2^{−m}` because `2aK ≥ ln 2` (checked in
//!   integers as `10KB²q ≥ 7p`, i.e. `2aK ≥ 0.7`; it always holds since `2aK ≥ 2√(64a)` and
//!   `a > 1/512`).
//! * **Proposal.** A block is chosen with probability proportional to its weight: `H_k` for
//!   `k < K` and `2H_K = Σ_m H_K 2^{−m}` for the whole tail (then `m` geometric of ratio 1/2 from
//!   fair bits), plus an integer "restart" weight that pads the total to exactly `2²⁰`. `S` is
//!   chosen (once, when the tables are built) as large as that padding allows, so restarts are
//!   rare (below `2^{−10}` of trials). The weights are integers summing to a power of two, so
//!   Walker's alias table with 256 columns of capacity `2¹²`, built in integer arithmetic,
//!   draws them exactly from 20 random bits, without multiplication or rejection. Then `j`
//!   uniform in `[0, B)` from `b` bits, `x = kB + j`, sign uniform; `(x = 0, negative)`
//!   restarts so that 0 is not proposed twice. Every signed `x` in block `k` is proposed with
//!   probability `∝ h_k`.
//! * **Acceptance.** Accept with probability `e^{−γ(x)}/h_k ≤ 1`, otherwise restart. The output
//!   is `±x` with probability `∝ h_k·e^{−γ(x)}/h_k = e^{−x²/(2σ²)}`: exactly the discrete
//!   Gaussian, for any valid heights and any scale (they only cost efficiency).
//!
//! Efficiency: about `1/(1 + B/(σ√(2π)))`, 0.95 to 0.975, of trials accept.
//!
//! # Exact decisions, decided from a table in almost every trial
//!
//! The acceptance is `[V < e^{−γ}]` with `V = h_k·U` and `U = 0.B₁B₂…` a uniform real whose
//! binary digits are drawn lazily. Every stage below only reads more digits of *the same* `U`
//! and settles the comparison only when the digits read prove it, so the outcome is always
//! exactly `[V < e^{−γ}]` = Bernoulli(`e^{−γ}/h_k`); a wider enclosure or a coarser table only
//! means more digits are read. Termination: `e^{−γ}` is irrational for rational `γ > 0` (and
//! enclosed exactly for `γ = 0`), so the digits of `V` and of `e^{−γ}` eventually differ.
//!
//! 1. **Squeeze table** (about 99.5 % of trials): each block is cut into up to 16 sub-blocks.
//!    `e^{−γ}` decreases in `|x|`, so on a sub-block `[x₀, x₁]` it lies between
//!    `e^{−γ(x₁)}` and `e^{−γ(x₀)}`. From rigorous enclosures of those two values the table
//!    stores, per sub-block, integers `A ≤ R` such that for `U`'s first `t` bits `u`
//!    (`15 ≤ t ≤ 31`): `u < A` proves `V < e^{−γ(x₁)} ≤ e^{−γ(x)}` (accept) and `u ≥ R` proves
//!    `V ≥ e^{−γ(x₀)} ≥ e^{−γ(x)}` (reject). One load and two comparisons; no arithmetic on `x`.
//! 2. **Fixed-point enclosure** (`u` in `[A, R)`, about 0.5 % of trials): 64 − t more digits
//!    of `U` and a 64-bit enclosure of `e^{−γ(x)}` (`ExpDenominator::bounds64`, `γ < 16`,
//!    width about `2^{−28}`).
//! 3. **Bignum fallback** (about `2^{−28}` of the stage-2 decisions, and `γ ≥ 16`): further
//!    words of `U` against enclosures at ever higher precision (`exp_neg_enclosure`).
//!
//! Enclosures (all integer arithmetic, each rounding directed outward):
//! * **Fast (γ < 16)**: `γ·2⁵⁹` bracketed via a precomputed reciprocal of `2p`; `e^{−γ} =
//!   e^{−i/64}·e^{−ρ}` with a per-process table of 64-bit enclosures of `e^{−i/64}` and the
//!   alternating series `1 − ρ + ρ²/2 − ρ³/6 (+ ρ⁴/24)` for `ρ < 2^{−6}` (see
//!   `ExpDenominator::bounds64` for the error accounting).
//! * **Exact fallback / tables**: `e^{−⌊γ⌋}·e^{−frac(γ)}` with the alternating Taylor series
//!   of `e^{−f}` (`f ≤ 1`, remainder bounded by the next term) and binary powering of an
//!   enclosure of `e^{−1}`, at any multiple of 64 bits (`exp_neg_enclosure`); for
//!   `⌊γ⌋ ≥` the precision it returns `[0, 1 ulp]` (`e^{−γ} ≤ 2^{−⌊γ⌋}`).
//!
//! Randomness per trial: one ChaCha12 word, cut into disjoint bit fields (8 bits alias
//! column, 12 bits alias threshold, 1 sign bit, `b ≤ 28` offset bits, `t = min(31, 43 − b)`
//! bits of `U`); more words only in stages 2 and 3 and in the tail. Disjoint bit fields of a
//! uniform word are independent and uniform, and bits left over are dropped whatever their
//! value, so no draw depends on another.
//!
//! Throughput (this machine, one core, see `BENCHMARKS.md`): about 7–8 ns per sample
//! (125–150M samples per CPU-second, for any σ²; the previous design, with two words, two
//! Lemire draws and a fixed-point `e^{−γ}` bound on every trial, took ~40 ns). About 3 ns of
//! it is the ChaCha12 word (kept at 12 rounds: the generator is not weakened for speed); the
//! rest is the dependent chain word → alias entry → squeeze entry → accept branch, which
//! mispredicts on the 3–5 % of trials that restart. The hot loop has no other branch on
//! random bits (the alias select is a mask; see `sample`).
//!
//! # Bounds
//! `p, q ≤ 2⁶²`, so `B²q ≤ 2⁶²`, `B ≤ 2²⁸`, `K ≤ 182` and a table block's `x²q < 2⁷⁸`; all
//! products are in `u128` or the bignum. A sample whose magnitude would exceed `i64::MAX`
//! (probability below `2^{−2⁶⁰}` for any allowed σ) is reported as
//! [`NoiseError::SampleOverflow`] instead of wrapping.
//!
//! The first sampler of this crate (CKS 2020-style staircase with digit-by-digit Bernoulli
//! decisions) is kept for the tests as an independent exact reference (`sample_reference`).
//!
//! Files: the tables (scale, heights, alias table, squeeze thresholds) are built in
//! `exact/plan.rs`, the rigorous enclosures of `e^{−γ}` are in `exact/enclosure.rs`, the
//! small bignum they use in `exact/big.rs`, the reference sampler in `exact/reference.rs` and
//! the statistical tests in `exact/tests.rs`; this file holds the sampler and its decisions.

mod big;
mod enclosure;
mod plan;
#[cfg(test)]
mod reference;
#[cfg(test)]
mod tests;

use super::{NoiseError, SecureRng};
use enclosure::{ExpDenominator, big_shl_bits, exp_neg_enclosure};
use plan::{ALIAS_BITS, AliasColumn, CAP_BITS, SUB_BITS};

/// Largest numerator or denominator accepted for `σ²`.
pub const MAX_SIGMA_SQ_TERM: u64 = 1 << 62;

#[cfg(test)]
thread_local! {
    /// Test-only: widen every fast-path enclosure by this many units of `2^{−64}` on each side
    /// (they stay valid enclosures), so that the later stages and the exact fallback run often.
    static FAST_PATH_WIDENING: std::cell::Cell<u128> = const { std::cell::Cell::new(0) };
    /// Test-only: treat every squeeze-table lookup as undecided, so that every acceptance goes
    /// through stage 2 (and, with widening, stage 3).
    static SKIP_SQUEEZE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The exact comparison `V < e^{−n/den}` for `V = U·height/scale` (`height, scale < 2⁶⁴`),
/// given `U`'s first 64 bits `w`, as stage 2 (64-bit fixed-point enclosure, when
/// `n < exp.limit`) and then stage 3 ([`accept_scaled_slow`]). `V·scale ∈
/// [w·height, (w+1)·height)·2^{−64}` is compared with `scale·[lo, hi]·2^{−64}`.
#[cold]
#[inline(never)]
fn accept_from_prefix(rng: &mut SecureRng, w: u64, height: u64, scale: u64, n: u128, exp: &ExpDenominator) -> bool {
    if n < exp.limit {
        let (lo, hi) = exp.bounds64(n);
        #[cfg(test)]
        let (lo, hi) = {
            let w = FAST_PATH_WIDENING.with(std::cell::Cell::get);
            (lo.saturating_sub(w), hi.saturating_add(w))
        };
        let v = u128::from(w) * u128::from(height); // < 2¹²⁸ (w, height < 2⁶⁴)
        let (lo, hi) = (lo.saturating_mul(u128::from(scale)), hi.saturating_mul(u128::from(scale)));
        if v.saturating_add(u128::from(height)) <= lo {
            return true; // V < (w+1)·height/scale·2^{−64} ≤ lo ≤ e^{−γ}
        }
        if v >= hi && hi != u128::MAX {
            return false; // V ≥ w·height/scale·2^{−64} ≥ hi ≥ e^{−γ}
        }
    }
    accept_scaled_slow(rng, vec![w], height, scale, 0, n, exp.den())
}

/// The exact comparison `V < e^{−num/den}` for `V = U·height·2^{−shift}/scale` (`height, scale
/// < 2⁶⁴`), where `U`'s first 64-bit words are `prefix` (little-endian: the newest word is
/// limb 0; it may be empty) and further words are drawn as needed. With `L` words known,
/// `V·scale ∈ [P·height, (P+1)·height]·2^{−(64L + shift)}`; it is compared with `scale` times
/// an enclosure of `e^{−γ}` at `64·limbs ≥ 64L + shift + 64` bits, and another word is drawn
/// while the two overlap. `e^{−γ}` is irrational for rational `γ > 0` (and `e^0 = 1` is
/// enclosed exactly), and both intervals shrink to points, so this ends with probability 1.
#[cold]
#[inline(never)]
fn accept_scaled_slow(
    rng: &mut SecureRng,
    mut prefix: big::Big,
    height: u64,
    scale: u64,
    shift: u32,
    num: u128,
    den: u64,
) -> bool {
    use std::cmp::Ordering;
    loop {
        let known = prefix.len() as u32;
        let limbs = (known + shift.div_ceil(64) + 1) as usize;
        let up = 64 * limbs as u32 - 64 * known - shift; // ≥ 64
        let (lo, hi) = exp_neg_enclosure(num, den, limbs);
        let (lo, hi) = (big::mul_small(&lo, scale), big::mul_small(&hi, scale));
        let v_lo = big_shl_bits(&big::mul_small(&prefix, height), up);
        let v_hi = big_shl_bits(&big::mul_small(&big::add(&prefix, &[1]), height), up);
        if big::cmp(&v_hi, &lo) != Ordering::Greater {
            return true; // V·scale < v_hi ≤ lo ≤ scale·e^{−γ}
        }
        if big::cmp(&v_lo, &hi) != Ordering::Less {
            return false; // V·scale ≥ v_lo ≥ hi ≥ scale·e^{−γ}
        }
        prefix.insert(0, rng.next_u64());
    }
}

/// An exact sampler of the discrete Gaussian `N_Z(0, σ²)` with `σ² = num/den`, parameters
/// checked and tables built once (well under a millisecond to a few milliseconds) so that
/// [`DiscreteGaussian::sample`] only fails on a probability-zero overflow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscreteGaussian {
    /// `p` in `σ² = p/q`.
    num: u64,
    /// `q` in `σ² = p/q`.
    den: u64,
    /// `2p`, the denominator of every exponent.
    two_num: u64,
    /// `b`: the block width is `B = 2^b ≤ 2²⁸`.
    block_log2: u32,
    /// Number `K` of table blocks; blocks `k ≥ K` form the halving tail.
    blocks: usize,
    /// `S`: block `k`'s height is `H_k/S`.
    scale: u64,
    /// `H_k` for `k ≤ K` (`H_0 = S`, `H_k ≥ S·e^{−ak²}`).
    heights: Vec<u64>,
    /// Alias table over outcomes `0..K` (blocks), `K` (tail) and `K + 1` (restart), 256
    /// columns of capacity `2¹²`.
    alias: Vec<AliasColumn>,
    /// `log2` of the number of sub-blocks per block (`min(b, 4)`).
    sub_log2: u32,
    /// `t`: bits of `U` drawn with the proposal, `min(31, 43 − b)`.
    u_bits: u32,
    /// Squeeze thresholds `[A, R]` for block `k`, sub-block `s` at `k·16 + s`.
    squeeze: Vec<[u32; 2]>,
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
        Ok(plan::build(num, den))
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
    #[inline(always)]
    pub fn sample(&self, rng: &mut SecureRng) -> Result<i64, NoiseError> {
        let b = self.block_log2;
        let t = self.u_bits;
        loop {
            // One word per trial, in disjoint bit fields (high to low): alias column (8),
            // alias threshold draw (12), sign (1), offset j (b), then U's first t bits from
            // the bottom. 8 + 12 + 1 + b + t ≤ 64 by the choice of t.
            let w = rng.next_u64();
            let col = (w >> (64 - ALIAS_BITS)) as usize;
            let y = (w >> (64 - ALIAS_BITS - CAP_BITS)) & ((1 << CAP_BITS) - 1);
            let negative = (w >> 43) & 1 == 1;
            let j = (w >> (43 - b)) & ((1u64 << b) - 1);
            let u = w & ((1u64 << t) - 1);
            let entry = self.alias[col];
            // Branch-free select: `y < threshold` is close to a coin flip in split columns,
            // and a mispredicted branch costs more than both loads.
            let own = usize::from(y < u64::from(entry.threshold)).wrapping_neg();
            let k = (col & own) | (usize::from(entry.alias) & !own);
            if k < self.blocks {
                let x = ((k as u64) << b) | j; // < 182·2²⁸ < 2³⁶
                // `x == 0 && negative` as one test: a branch on the sign alone (which the
                // compiler otherwise puts first) would be a coin flip, mispredicted half the time.
                if x | u64::from(!negative) == 0 {
                    continue; // 0 must not be proposed twice
                }
                let [accept_below, reject_from] = self.squeeze[(k << SUB_BITS) | (j >> (b - self.sub_log2)) as usize];
                #[cfg(test)]
                let (accept_below, reject_from) =
                    if SKIP_SQUEEZE.with(std::cell::Cell::get) { (0, u32::MAX) } else { (accept_below, reject_from) };
                let accept = if u < u64::from(accept_below) {
                    true
                } else if u >= u64::from(reject_from) {
                    false
                } else {
                    self.accept_unsettled(rng, u, k, x)
                };
                if accept {
                    let x = x as i64;
                    return Ok(if negative { -x } else { x });
                }
            } else if k == self.blocks
                && let Some(x) = self.sample_tail(rng, j)?
            {
                return Ok(if negative { -x } else { x });
            }
            // k = K + 1: the alias table's padding outcome, restart.
        }
    }

    /// Stages 2 and 3 for a table block: `U`'s first `t` bits `u` did not settle
    /// `V < e^{−γ(x)}`; complete `U`'s first 64 bits and decide exactly.
    #[cold]
    #[inline(never)]
    fn accept_unsettled(&self, rng: &mut SecureRng, u: u64, k: usize, x: u64) -> bool {
        let t = self.u_bits;
        let w = (u << (64 - t)) | (rng.next_u64() >> t);
        // x²q < 2⁷⁸ for a table block (x < K·B, K²B²q < 183²·2⁶²/… see the module bounds).
        let n = u128::from(x) * u128::from(x) * u128::from(self.den);
        accept_from_prefix(rng, w, self.heights[k], self.scale, n, &self.exp)
    }

    /// The tail: block `K + m` with `m` geometric of ratio `1/2` and height `h_K·2^{−m}`,
    /// decided by the exact slow comparison. Proposed in `2^{−19}` of trials (its weight is
    /// `2H_K = 2`, the smallest an integer height can be) and accepted with probability below
    /// `S·e^{−64} < 2^{−72}`, so its cost does not show.
    #[cold]
    #[inline(never)]
    fn sample_tail(&self, rng: &mut SecureRng, j: u64) -> Result<Option<i64>, NoiseError> {
        let mut m: u32 = 0;
        while rng.next_bit() {
            m = m.checked_add(1).ok_or(NoiseError::SampleOverflow)?;
        }
        let x = (self.blocks as u64)
            .checked_add(u64::from(m))
            .and_then(|k| k.checked_mul(1 << self.block_log2))
            .and_then(|b| b.checked_add(j))
            .filter(|&x| x <= i64::MAX as u64)
            .ok_or(NoiseError::SampleOverflow)?;
        let n = (u128::from(x) * u128::from(x)).saturating_mul(u128::from(self.den));
        let height = self.heights[self.blocks];
        let accept = accept_scaled_slow(rng, Vec::new(), height, self.scale, m, n, self.two_num);
        Ok(accept.then_some(x as i64))
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
