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
//!
//! Files: the rigorous enclosures of `e^{−γ}` (fast fixed-point and exact bignum) are in
//! `exact/enclosure.rs`, the small bignum they use in `exact/big.rs`, the reference sampler
//! in `exact/reference.rs` and the statistical tests in `exact/tests.rs`; this file holds the
//! sampler itself and its acceptance decision.

mod big;
mod enclosure;
#[cfg(test)]
mod reference;
#[cfg(test)]
mod tests;

use super::{NoiseError, SecureRng};
use enclosure::{ExpDenominator, big_shl_bits, exp_neg_enclosure};

/// Largest numerator or denominator accepted for `σ²`.
pub const MAX_SIGMA_SQ_TERM: u64 = 1 << 62;

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
            } else if k == self.blocks
                && let Some(x) = self.sample_tail(rng, j)?
            {
                return Ok(if negative { -x } else { x });
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
        let n = (u128::from(x) * u128::from(x)).saturating_mul(u128::from(self.den));
        let accept = accept_scaled_slow(rng, Vec::new(), self.heights[self.blocks], 32 + m, n, self.two_num);
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
