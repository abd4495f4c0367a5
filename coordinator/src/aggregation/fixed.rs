//! FedAvg's running sum in exactly reversible fixed-point arithmetic.
//!
//! Why integers rather than the `f64` sum: integer addition is associative and has an exact
//! inverse. Each weighted value `w·x` is quantized once, deterministically, to a multiple of
//! `2^-s` (an `i64` per parameter), so
//! * the aggregate is **bit-identical whatever the arrival order** of the updates (or of an
//!   update's coordinate ranges, or the threads that fold them);
//! * an update folded partly or wholly can be **subtracted exactly** ([`FixedPointAccumulator::unfold`]):
//!   folding then unfolding leaves the sum bit-for-bit as it was, so a broken or refused
//!   upload never changes the result, even when it was folded before it was refused.
//!
//! The scale ([`FixedScale`]) is chosen per round, before anything is folded, from the model
//! and the cohort: every value an update may carry is bounded by `2^E`, where
//! `2^E ≥ 2^HEADROOM_BITS · max(1, max|global|)` (the round's model may grow 256-fold in one
//! round), and the round's total weight by `2^W`, the smallest power of two at or above the
//! selected clients' registered sample counts together (an update may not claim more
//! samples than its client registered, so honest updates always fit; at most
//! `MAX_WEIGHT_BITS`). With `s = 62 − E − W` no partial sum can overflow:
//! `Σ|round(w·x·2^s)| ≤ Σw·2^(62−W) + n/2 < 2^63`. A value beyond the bound or a weight
//! beyond the budget is refused with an error that names it, and the sum is left as it was.
//!
//! Numeric error against the exact weighted mean: each term is off by at most half a unit
//! `2^-(s+1)`, so the average (a convex combination) is off by at most `2^-(s+1) =
//! 2^(E+W−63)` absolute before its final rounding to `f32`. For a model with parameters up
//! to 1 and a cohort of 10 clients with 1,000 samples each (`W = 14`) that is `2^-41`
//! (4.5e-13): values from about 1e-5 up come out as the exactly rounded mean, like the `f64`
//! sum it replaces, and a lone client's model comes back bit for bit. The worst case
//! (`W = 32`) is `2^(E−31)`, 2^-23 for such a model: below one `f32` ulp of values from 1
//! up, coarser than `f32` for much smaller ones. The `f64` sum is closer to the exact mean
//! for tiny values (53-bit relative error per addition) but is neither order-independent
//! bit for bit nor reversible. Private rounds keep the `f64` sum: their release's
//! sensitivity analysis assumes unquantized clipped updates.
//!
//! Large updates fold on every core: the coordinates are split into contiguous ranges, one
//! per thread, which is safe because ranges are disjoint and exact because the integers do
//! not care who added them.

use super::AggregationError;

/// Most bits of the total weight of a round (its sample counts together): `2^32`.
pub const MAX_WEIGHT_BITS: i32 = 32;
/// How much larger than the round's model (or 1, whichever is larger) an update's values may
/// be, in bits.
pub const HEADROOM_BITS: i32 = 8;
/// Updates with at least this many values fold on several threads.
pub const PARALLEL_MIN_VALUES: usize = 1 << 20;
/// Fixed-point units of the weight total (weights are summed as integers of `2^-WEIGHT_FRACTION`).
const WEIGHT_FRACTION: i32 = 20;

/// The fixed-point format of one round's sum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedScale {
    /// `E`: every folded value satisfies `|x| ≤ 2^E`.
    exponent: i32,
    /// `W`: the round's weights together are at most `2^W`.
    weight_bits: i32,
    /// `s`: a term `w·x` is stored as `round(w·x·2^s)`.
    shift: i32,
}

impl FixedScale {
    /// The scale for a round that starts from `global` and whose weights together are at
    /// most `max_total_weight`: values up to `2^HEADROOM_BITS · max(1, max|global|)`, both
    /// bounds rounded up to powers of two.
    pub fn for_round(global: &[f32], max_total_weight: f64) -> Self {
        let largest = global.iter().fold(1.0f32, |m, v| if v.abs() > m { v.abs() } else { m });
        // A non-finite global model cannot occur (publishing refuses it); 2^128 caps anyway.
        let largest = if largest.is_finite() { f64::from(largest) } else { f64::from(f32::MAX) };
        let weight_bits = if max_total_weight.is_finite() && max_total_weight > 1.0 {
            (max_total_weight.log2().ceil() as i32).min(MAX_WEIGHT_BITS)
        } else if max_total_weight.is_finite() {
            0
        } else {
            MAX_WEIGHT_BITS
        };
        Self::new(largest.log2().ceil() as i32 + HEADROOM_BITS, weight_bits)
    }

    /// Values up to `2^exponent`, weights together up to `2^weight_bits`.
    pub fn new(exponent: i32, weight_bits: i32) -> Self {
        let weight_bits = weight_bits.clamp(0, MAX_WEIGHT_BITS);
        Self { exponent, weight_bits, shift: 62 - weight_bits - exponent }
    }

    /// The largest magnitude a folded value may have.
    pub fn bound(&self) -> f64 {
        2f64.powi(self.exponent)
    }

    /// One unit of the sum: every term is rounded to a multiple of it.
    pub fn resolution(&self) -> f64 {
        2f64.powi(-self.shift)
    }

    /// Largest total weight of the round.
    pub fn weight_budget(&self) -> f64 {
        2f64.powi(self.weight_bits)
    }
}

/// Running sample-weighted sum of client models, in fixed point (see the module docs).
#[derive(Debug, Clone)]
pub struct FixedPointAccumulator {
    sum: Vec<i64>,
    scale: FixedScale,
    /// Σ round(w·2^WEIGHT_FRACTION): integer, so it too is order-independent and reversible.
    weight_units: u128,
    contributions: u32,
}

/// Which way a term goes.
#[derive(Clone, Copy)]
enum Sign {
    Add,
    Subtract,
}

impl Sign {
    fn inverse(self) -> Self {
        match self {
            Self::Add => Self::Subtract,
            Self::Subtract => Self::Add,
        }
    }
}

impl FixedPointAccumulator {
    /// An empty sum for a model of `len` parameters.
    pub fn new(len: usize, scale: FixedScale) -> Self {
        Self { sum: vec![0; len], scale, weight_units: 0, contributions: 0 }
    }

    pub fn len(&self) -> usize {
        self.sum.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sum.is_empty()
    }

    pub fn scale(&self) -> FixedScale {
        self.scale
    }

    pub fn contributions(&self) -> u32 {
        self.contributions
    }

    /// Σw of the counted updates.
    pub fn total_weight(&self) -> f64 {
        self.weight_units as f64 / 2f64.powi(WEIGHT_FRACTION)
    }

    fn weight_units(&self, weight: f64) -> Result<u128, AggregationError> {
        if !(weight.is_finite() && weight > 0.0) {
            return Err(AggregationError::Weight(weight));
        }
        let budget = self.scale.weight_budget();
        if weight > budget {
            return Err(AggregationError::WeightBudget { weight, budget });
        }
        Ok((weight * 2f64.powi(WEIGHT_FRACTION)).round().max(1.0) as u128)
    }

    /// Adds `weight · update` and counts the update.
    ///
    /// # Errors
    /// Wrong length, a non-positive weight, a total weight beyond the budget, or a value
    /// beyond the scale's bound (or not finite); the sum is as it was then.
    pub fn fold(&mut self, update: &[f32], weight: f64) -> Result<(), AggregationError> {
        self.check_len(update)?;
        let total = self.total_with(weight)?;
        self.fold_range(0, update, weight)?;
        self.weight_units = total;
        self.contributions += 1;
        Ok(())
    }

    /// Counts an update whose values were folded range by range ([`Self::fold_le_range`]):
    /// its weight joins the denominator.
    ///
    /// # Errors
    /// A bad weight, or a total weight beyond the budget; nothing is counted then.
    pub fn count(&mut self, weight: f64) -> Result<(), AggregationError> {
        self.weight_units = self.total_with(weight)?;
        self.contributions += 1;
        Ok(())
    }

    fn total_with(&self, weight: f64) -> Result<u128, AggregationError> {
        let total = self.weight_units + self.weight_units(weight)?;
        let budget = self.scale.weight_budget();
        if total as f64 > budget * 2f64.powi(WEIGHT_FRACTION) {
            return Err(AggregationError::WeightBudget { weight: total as f64 / 2f64.powi(WEIGHT_FRACTION), budget });
        }
        Ok(total)
    }

    /// Exactly undoes [`Self::fold`] of the same `update` and `weight`.
    ///
    /// # Errors
    /// As [`Self::fold`], or nothing of that weight was counted; the sum is as it was then.
    pub fn unfold(&mut self, update: &[f32], weight: f64) -> Result<(), AggregationError> {
        self.check_len(update)?;
        let units = self.weight_units(weight)?;
        if self.contributions == 0 || units > self.weight_units {
            return Err(AggregationError::Rule(format!("no update of weight {weight} was counted")));
        }
        self.unfold_range(0, update, weight)?;
        self.weight_units -= units;
        self.contributions -= 1;
        Ok(())
    }

    /// Adds `weight · values` to the coordinates `offset..offset + values.len()` without
    /// counting an update: the step of a streaming fold, undone by [`Self::unfold_range`].
    ///
    /// # Errors
    /// A range past the model's end, a bad weight, or a value beyond the bound (the range is
    /// left as it was).
    pub fn fold_range(&mut self, offset: usize, values: &[f32], weight: f64) -> Result<(), AggregationError> {
        self.apply(offset, values, weight, Sign::Add)
    }

    /// Subtracts what [`Self::fold_range`] with the same arguments added.
    ///
    /// # Errors
    /// As [`Self::fold_range`].
    pub fn unfold_range(&mut self, offset: usize, values: &[f32], weight: f64) -> Result<(), AggregationError> {
        self.apply(offset, values, weight, Sign::Subtract)
    }

    /// [`Self::fold_range`] straight from received little-endian `f32` bytes (one pass, no
    /// decoded copy): the step of a streaming upload.
    ///
    /// # Errors
    /// As [`Self::fold_range`], or a byte count that is not a multiple of 4.
    pub fn fold_le_range(&mut self, offset: usize, le: &[u8], weight: f64) -> Result<(), AggregationError> {
        self.apply_le(offset, le, weight, Sign::Add)
    }

    /// Subtracts what [`Self::fold_le_range`] with the same arguments added.
    ///
    /// # Errors
    /// As [`Self::fold_le_range`].
    pub fn unfold_le_range(&mut self, offset: usize, le: &[u8], weight: f64) -> Result<(), AggregationError> {
        self.apply_le(offset, le, weight, Sign::Subtract)
    }

    fn apply_le(&mut self, offset: usize, le: &[u8], weight: f64, sign: Sign) -> Result<(), AggregationError> {
        if !le.len().is_multiple_of(4) {
            return Err(AggregationError::Rule(format!("{} bytes are not whole f32 values", le.len())));
        }
        self.weight_units(weight)?;
        let bound = self.scale.bound() as f32;
        let factor = weight * 2f64.powi(self.scale.shift);
        let target = self.target(offset, le.len() / 4)?;
        if !apply_le_terms(target, le, factor, bound, sign) {
            apply_le_terms(target, le, factor, f32::INFINITY, sign.inverse());
            let (index, value) = le
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .enumerate()
                .find(|(_, v)| !within(*v, bound))
                .unwrap_or((0, f32::NAN));
            return Err(out_of_range(offset + index, value, bound));
        }
        Ok(())
    }

    fn target(&mut self, offset: usize, len: usize) -> Result<&mut [i64], AggregationError> {
        let end = offset
            .checked_add(len)
            .filter(|&e| e <= self.sum.len())
            .ok_or(AggregationError::Length { expected: self.sum.len(), got: offset.saturating_add(len) })?;
        Ok(&mut self.sum[offset..end])
    }

    fn check_len(&self, update: &[f32]) -> Result<(), AggregationError> {
        if update.len() != self.sum.len() {
            return Err(AggregationError::Length { expected: self.sum.len(), got: update.len() });
        }
        Ok(())
    }

    fn apply(&mut self, offset: usize, values: &[f32], weight: f64, sign: Sign) -> Result<(), AggregationError> {
        self.weight_units(weight)?;
        let bound = self.scale.bound() as f32;
        let factor = weight * 2f64.powi(self.scale.shift);
        let target = self.target(offset, values.len())?;
        let in_range = for_each_range(target, values, |s, v| apply_terms(s, v, factor, bound, sign));
        if !in_range {
            // Put back what went in: every term has an exact inverse.
            for_each_range(target, values, |s, v| apply_terms(s, v, factor, f32::INFINITY, sign.inverse()));
            let (index, value) =
                values.iter().enumerate().find(|(_, v)| !within(**v, bound)).map_or((0, f32::NAN), |(i, v)| (i, *v));
            return Err(out_of_range(offset + index, value, bound));
        }
        Ok(())
    }

    /// The weighted average `Σ wᵢ·xᵢ / Σ wᵢ`, rounded to `f32`, written into `out`'s
    /// allocation (the previous round's model buffer: no fourth model-sized buffer).
    ///
    /// # Errors
    /// [`AggregationError::Empty`] when nothing was counted.
    pub fn average_into(&self, mut out: Vec<f32>) -> Result<Vec<f32>, AggregationError> {
        if self.contributions == 0 || self.weight_units == 0 {
            return Err(AggregationError::Empty);
        }
        // sum·2^-s / (units·2^-F) = sum / (units · 2^(s−F)); one true division per value.
        let denominator = self.weight_units as f64 * 2f64.powi(self.scale.shift - WEIGHT_FRACTION);
        out.clear();
        out.resize(self.sum.len(), 0.0);
        for_each_range(&mut out, &self.sum, |o, s| {
            for (o, s) in o.iter_mut().zip(s) {
                *o = (*s as f64 / denominator) as f32;
            }
            true
        });
        Ok(out)
    }

    /// [`Self::average_into`] into a new buffer.
    ///
    /// # Errors
    /// [`AggregationError::Empty`] when nothing was counted.
    pub fn average(&self) -> Result<Vec<f32>, AggregationError> {
        self.average_into(Vec::new())
    }
}

/// [`apply_values`] over a slice.
#[inline]
fn apply_terms(sum: &mut [i64], values: &[f32], factor: f64, bound: f32, sign: Sign) -> bool {
    apply_values(sum, values.iter().copied(), factor, bound, sign)
}

/// Adds (or subtracts) `round(factor·v)` to each `s`; false when a value is beyond `bound`
/// or not finite (every term was applied all the same, so the caller can undo the lot).
#[inline(always)]
fn apply_values(sum: &mut [i64], values: impl Iterator<Item = f32>, factor: f64, bound: f32, sign: Sign) -> bool {
    let mut ok = true;
    match sign {
        Sign::Add => {
            for (s, v) in sum.iter_mut().zip(values) {
                ok &= within(v, bound);
                *s = s.wrapping_add(quantize(f64::from(v) * factor));
            }
        }
        Sign::Subtract => {
            for (s, v) in sum.iter_mut().zip(values) {
                ok &= within(v, bound);
                *s = s.wrapping_sub(quantize(f64::from(v) * factor));
            }
        }
    }
    ok
}

/// Why `value` at `index` was refused.
fn out_of_range(index: usize, value: f32, bound: f32) -> AggregationError {
    if value.is_finite() {
        AggregationError::OutOfRange { index, value, bound: f64::from(bound) }
    } else {
        AggregationError::NotFinite(index)
    }
}

/// `|v| ≤ bound`; false for NaN.
#[inline(always)]
fn within(v: f32, bound: f32) -> bool {
    v.abs() <= bound
}

/// [`apply_terms`] over little-endian `f32` bytes.
#[inline]
fn apply_le_terms(sum: &mut [i64], le: &[u8], factor: f64, bound: f32, sign: Sign) -> bool {
    let values = le.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    apply_values(sum, values, factor, bound, sign)
}

/// Rounds half away from zero with SSE2 operations only (`f64::round` is a libm call on
/// baseline x86-64). Deterministic: the same input gives the same integer, which is all
/// reversibility and order independence need. Saturates for non-finite input (`as`).
#[inline(always)]
fn quantize(x: f64) -> i64 {
    let t = x as i64;
    let r = x - t as f64;
    t.wrapping_add(i64::from(r >= 0.5)).wrapping_sub(i64::from(r <= -0.5))
}

/// Runs `f` over matching ranges of `a` and `b`, on several threads when they are large;
/// true when every call returned true.
fn for_each_range<A: Send, B: Sync>(a: &mut [A], b: &[B], f: impl Fn(&mut [A], &[B]) -> bool + Sync) -> bool {
    let threads = if a.len() >= PARALLEL_MIN_VALUES {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get).min(16)
    } else {
        1
    };
    if threads == 1 {
        return f(a, b);
    }
    let per = a.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = a.chunks_mut(per).zip(b.chunks(per)).map(|(a, b)| scope.spawn(|| f(a, b))).collect();
        // Every range is joined before any result is read: an early return would leave the
        // scope to join them anyway, but the `&` below must see them all.
        handles.into_iter().map(|h| h.join().expect("a fold thread panicked")).fold(true, |all, ok| all & ok)
    })
}

#[cfg(test)]
#[path = "fixed_tests.rs"]
mod tests;
