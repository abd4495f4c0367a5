//! Building a sampler's tables once per `σ²`: block width, heights and their scale, the
//! integer alias table and the squeeze thresholds (see the module documentation of
//! `exact.rs` for what each is and why the output stays exact whatever their values).
//!
//! Everything here that the distribution depends on is integer arithmetic on rigorous
//! enclosures. Floating point is used in one place only, to *guess* the scale `S` that makes
//! the proposal weights fill `2²⁰` closely; the guess is then checked (and lowered) in
//! integers, and any `S` gives the same output distribution.

use super::enclosure::{ExpDenominator, exp_neg_enclosure};
use super::{DiscreteGaussian, big};

/// Bits of the alias column: 256 columns, room for `K ≤ 182` blocks, the tail and restarts.
pub(super) const ALIAS_BITS: u32 = 8;
pub(super) const ALIAS_COLUMNS: usize = 1 << ALIAS_BITS;
/// Bits of the draw within a column: every column has capacity `2¹²`, so the proposal
/// weights sum to exactly `2²⁰` and one 20-bit field picks an outcome exactly.
pub(super) const CAP_BITS: u32 = 12;
const TOTAL_WEIGHT: u64 = (ALIAS_COLUMNS as u64) << CAP_BITS;
/// Up to `2⁴ = 16` squeeze sub-blocks per block (stride of the squeeze table).
pub(super) const SUB_BITS: u32 = 4;
/// Blocks up to this exponent `a·k²` come from the table; beyond, `e^{−64} < 2^{−92}`, and
/// `aK² ≥ 64` with `a > 1/512` gives the tail condition `2aK ≥ 2√(64a) > 0.7`.
const TABLE_EXPONENT: u128 = 64;

/// One column of Walker's alias table with integer weights: outcome `col` if `y < threshold`
/// for `y` uniform in `[0, capacity)`, else `alias`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct AliasColumn {
    pub(super) threshold: u32,
    pub(super) alias: u8,
}

/// Walker/Vose alias table for integer weights `w` (`w.len() == ALIAS_COLUMNS`,
/// `Σw = ALIAS_COLUMNS·capacity`, `capacity < 2³²`), built in exact integer arithmetic: a
/// column `s` with `w_s < capacity` keeps `w_s` for itself and gives `capacity − w_s` to a
/// column `l` with `w_l ≥ capacity`, whose remaining weight drops by that much. Each step
/// fills one column exactly, so afterwards `P(outcome i) = w_i/Σw` exactly (the test
/// `alias_table_reproduces_weights_exactly` recounts it).
pub(super) fn build_alias(mut w: Vec<u64>, capacity: u64) -> Vec<AliasColumn> {
    assert_eq!(w.len(), ALIAS_COLUMNS);
    assert!(capacity < 1 << 32, "alias capacity {capacity}");
    assert_eq!(w.iter().map(|&x| u128::from(x)).sum::<u128>(), ALIAS_COLUMNS as u128 * u128::from(capacity));
    let mut table = vec![AliasColumn { threshold: capacity as u32, alias: 0 }; ALIAS_COLUMNS];
    let mut small: Vec<usize> = (0..ALIAS_COLUMNS).filter(|&i| w[i] < capacity).collect();
    let mut large: Vec<usize> = (0..ALIAS_COLUMNS).filter(|&i| w[i] >= capacity).collect();
    while let (Some(&s), Some(&l)) = (small.last(), large.last()) {
        small.pop();
        table[s] = AliasColumn { threshold: w[s] as u32, alias: l as u8 };
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

/// A rigorous enclosure `[lo, hi]·2^{−64}` of `e^{−n/den}`: the fixed-point fast path where it
/// applies, the bignum otherwise. Both bounds are at most `2⁶⁴ + 2⁴⁰`.
fn enclose64(n: u128, exp: &ExpDenominator) -> (u128, u128) {
    if n < exp.limit {
        return exp.bounds64(n);
    }
    let (lo, hi) = exp_neg_enclosure(n, exp.den(), 1);
    (big::to_u128(&lo).expect("e^-x <= 1"), big::to_u128(&hi).expect("e^-x <= 1"))
}

/// Squeeze thresholds `[A, R]` for a sub-block on which `e^{−γ}` lies in `[lo, hi]·2^{−64}`,
/// height `height/scale` and `t` bits of `U` (`u`): `u < A` implies
/// `V < (u + 1)·2^{−t}·height/scale ≤ lo·2^{−64}` and `u ≥ R` implies
/// `V ≥ u·2^{−t}·height/scale ≥ hi·2^{−64}`, rounding `A` down and `R` up. Both are capped
/// at `2^t` (no `u` reaches it), which keeps each implication true.
fn thresholds(lo: u128, hi: u128, height: u64, scale: u64, t: u32) -> [u32; 2] {
    let unit = u128::from(height) << (64 - t); // height·2^{64−t} < 2⁷⁰
    let cap = 1u128 << t;
    let accept_below = (lo * u128::from(scale) / unit).min(cap);
    let reject_from = (hi * u128::from(scale)).div_ceil(unit).min(cap);
    [accept_below as u32, reject_from as u32]
}

/// All tables for `σ² = num/den` (`1 ≤ num, den ≤ 2⁶²`, checked by the caller).
pub(super) fn build(num: u64, den: u64) -> DiscreteGaussian {
    let (p, q) = (u128::from(num), u128::from(den));
    // b: the largest with 64·4^b·q ≤ p (B = 2^b ≤ σ/8), or 0 when σ < 8. Then B²q ≤ p/64 or
    // B²q = q, so B²q ≤ 2⁶², and a = B²q/(2p) > 1/512. Only efficiency depends on b.
    let mut block_log2 = 0u32;
    while 64 * (q << (2 * (block_log2 + 1))) <= p {
        block_log2 += 1;
    }
    let bsq_q = q << (2 * block_log2);
    // K: the first k ≥ 1 with a·k² ≥ 64, i.e. k²B²q ≥ 128p. a > 1/512, so K ≤ 182.
    let mut blocks: u128 = 1;
    while blocks * blocks * bsq_q < 2 * TABLE_EXPONENT * p {
        blocks += 1;
    }
    let blocks = blocks as usize;
    assert!(blocks + 2 <= ALIAS_COLUMNS, "table blocks {blocks}");
    // The tail's halving heights need e^{−2aK} ≤ 1/2, i.e. 2aK ≥ ln 2; 2aK ≥ 0.7 suffices.
    assert!(10 * blocks as u128 * bsq_q >= 7 * p, "tail condition");
    let exp = ExpDenominator::new(2 * num);

    // Upper enclosures of e^{−ak²}·2⁶⁴, k ≤ K (K²B²q < 2⁷⁸).
    let tops: Vec<u128> = (0..=blocks as u128)
        .map(|k| big::to_u128(&exp_neg_enclosure(k * k * bsq_q, 2 * num, 1).1).expect("e^-x <= 1"))
        .collect();
    // The scale: guessed in floating point so that Σ weights ≈ 2²⁰(1 − 2⁻¹¹), then lowered
    // in integers until the exact weights fit.
    let guess_sum = tops[..blocks].iter().map(|&h| h as f64).sum::<f64>() + 2.0 * tops[blocks] as f64;
    // (Rounding each height up adds below one unit per weight, K + 1 in all.)
    let room = TOTAL_WEIGHT as f64 * (1.0 - 1.0 / 2048.0) - (blocks + 2) as f64;
    let mut scale = ((room * 2f64.powi(64) / guess_sum) as u64).clamp(1, TOTAL_WEIGHT);
    let heights = loop {
        let heights: Vec<u64> = tops.iter().map(|&h| (h * u128::from(scale)).div_ceil(1 << 64) as u64).collect(); // ≥ S·e^{−ak²}
        let total: u64 = heights[..blocks].iter().sum::<u64>() + 2 * heights[blocks];
        if total <= TOTAL_WEIGHT {
            break heights;
        }
        scale -= scale / 4096 + 1;
    };
    debug_assert_eq!(heights[0], scale);
    let mut weights = vec![0u64; ALIAS_COLUMNS];
    weights[..blocks].copy_from_slice(&heights[..blocks]);
    weights[blocks] = 2 * heights[blocks]; // Σ_{m≥0} H_K·2^{−m}
    weights[blocks + 1] = TOTAL_WEIGHT - weights.iter().sum::<u64>(); // restart
    let alias = build_alias(weights, 1 << CAP_BITS);

    // Squeeze thresholds: 2^sub_log2 sub-blocks of width 2^{b − sub_log2} per block, or one
    // (repeated) for blocks that reach γ ≥ 16, which are too rare to need more.
    let sub_log2 = block_log2.min(SUB_BITS);
    let u_bits = (43 - block_log2).min(31);
    let sub_width = 1u64 << (block_log2 - sub_log2);
    let n_of = |x: u64| u128::from(x) * u128::from(x) * q; // < 2⁷⁸ in table blocks
    let mut squeeze = vec![[0u32; 2]; blocks << SUB_BITS];
    for (k, row) in squeeze.chunks_exact_mut(1 << SUB_BITS).enumerate() {
        let first = (k as u64) << block_log2;
        let last = first + (1 << block_log2) - 1;
        if n_of(last) >= exp.limit {
            let entry =
                thresholds(enclose64(n_of(last), &exp).0, enclose64(n_of(first), &exp).1, heights[k], scale, u_bits);
            row.fill(entry);
            continue;
        }
        for (s, entry) in row.iter_mut().take(1 << sub_log2).enumerate() {
            let x0 = first + s as u64 * sub_width;
            let x1 = x0 + sub_width - 1;
            *entry = thresholds(enclose64(n_of(x1), &exp).0, enclose64(n_of(x0), &exp).1, heights[k], scale, u_bits);
        }
    }

    // The reference sampler's staircase (tests only): smallest W ≥ 1 with W²q ≥ 4p.
    #[cfg(test)]
    let width = {
        let mut width = (4 * p / q).isqrt().max(1);
        while width * width * q < 4 * p {
            width += 1;
        }
        width
    };
    DiscreteGaussian {
        num,
        den,
        two_num: 2 * num,
        block_log2,
        blocks,
        scale,
        heights,
        alias,
        sub_log2,
        u_bits,
        squeeze,
        exp,
        #[cfg(test)]
        width: width as u64,
        #[cfg(test)]
        tail_num: width * width * q,
        #[cfg(test)]
        width_sq: width * width,
    }
}
