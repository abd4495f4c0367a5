//! Rigorous integer enclosures `lo ≤ e^{−γ}·2^k ≤ hi` for the sampler's acceptance decisions:
//! a fixed-point fast path for `γ < 16` (a per-process table of `e^{−i/64}` and a short
//! alternating series) and an exact bignum path at any precision.
//!
//! Why enclosures rather than `f64::exp`: the decision compares random digits with `e^{−γ}`
//! and must never be wrong, only sometimes undecided; an interval that is certain to contain
//! the true value, rounded outward at every step, gives exactly that.

use super::big;

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
pub(super) fn exp_neg_enclosure(num: u128, den: u64, limbs: usize) -> (big::Big, big::Big) {
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
pub(super) fn exp_table() -> &'static [[u64; 2]; EXP_TABLE_LEN] {
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
pub(super) struct ExpDenominator {
    /// The shared table of [`exp_table`] (held here so the hot loop does not look it up).
    table: &'static [[u64; 2]; EXP_TABLE_LEN],
    den: u64,
    /// `⌊2¹²³/den⌋`: `γ·2⁵⁹ = n·2¹²³/den/2⁶⁴ ∈ [⌊n·R/2⁶⁴⌋, ⌊n·(R+1)/2⁶⁴⌋ + 1]`.
    recip: u128,
    /// `FAST_GAMMA_LIMIT·den`: numerators below it take the fast path.
    pub(super) limit: u128,
}

impl std::fmt::Debug for ExpDenominator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExpDenominator").field("den", &self.den).finish_non_exhaustive()
    }
}

impl ExpDenominator {
    pub(super) fn new(den: u64) -> Self {
        assert!((2..=1 << 63).contains(&den), "fast-path denominator {den} out of range");
        Self {
            table: exp_table(),
            den,
            recip: (1u128 << 123) / u128::from(den),
            limit: FAST_GAMMA_LIMIT * u128::from(den),
        }
    }

    /// The denominator `den` of the exponents `n/den`.
    pub(super) fn den(&self) -> u64 {
        self.den
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
    pub(super) fn bounds64(&self, n: u128) -> (u128, u128) {
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
pub(super) fn big_shl_bits(a: &[u64], bits: u32) -> big::Big {
    let shifted = big::shl_limbs(a, (bits / 64) as usize);
    let r = bits % 64;
    if r == 0 { shifted } else { big::mul_small(&shifted, 1 << r) }
}
