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
//! not care who added them. For the same reason different uploads fold at the same time:
//! the values are kept in shards of 2^18 behind their own locks, and a [`RangeFolder`]
//! lets the thread that received a streamed chunk fold it while the round's owner keeps
//! the count.

use super::AggregationError;
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

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

/// Values per shard of a sum: one 1 MiB chunk of `f32`s. A fold locks only the shards its
/// range covers, so uploads folding on different threads wait for each other only where
/// their chunks land on the same coordinates at the same moment.
const SHARD_VALUES: usize = 1 << 18;

/// The `i64` values of a sum, in shards that threads lock independently.
#[derive(Debug)]
struct Shards {
    parts: Box<[Mutex<ShardMem>]>,
    len: usize,
}

/// One shard's values, in an anonymous memory mapping of its own.
///
/// Why not a `Vec`: a shard (2 MiB) is below glibc's dynamic mmap threshold, so a `Vec`'s
/// memory would come from a malloc arena's heap, and stay resident after the round drops
/// its sum: the next round's sum then takes fresh memory (often from another worker
/// thread's arena), and the coordinator's peak RSS held two sums (measured: 305 instead of
/// 150 MiB at 10 × 10M, 5.5 instead of 2.9 GiB at 4 × 250M). A mapping goes back to the OS
/// when the sum is dropped, and its pages start zeroed.
#[derive(Debug)]
struct ShardMem(memmap2::MmapMut);

impl ShardMem {
    fn zeroed(values: usize) -> Result<Self, AggregationError> {
        let bytes = values * std::mem::size_of::<i64>();
        let map = memmap2::MmapMut::map_anon(bytes)
            .map_err(|e| AggregationError::Memory(format!("mapping {bytes} bytes for the round's sum: {e}")))?;
        // A whole shard is one 2 MiB huge page where the kernel offers them (THP in
        // `madvise` mode): one page fault instead of 512 when the round first touches it.
        // Only a hint: without huge pages the shard works the same.
        #[cfg(target_os = "linux")]
        let _ = map.advise(memmap2::Advice::HugePage);
        Ok(Self(map))
    }
}

impl std::ops::Deref for ShardMem {
    type Target = [i64];
    fn deref(&self) -> &[i64] {
        // A mapping is page-aligned and a whole number of `i64`s long.
        bytemuck::cast_slice(&self.0)
    }
}

impl std::ops::DerefMut for ShardMem {
    fn deref_mut(&mut self) -> &mut [i64] {
        bytemuck::cast_slice_mut(&mut self.0)
    }
}

impl Shards {
    fn zeros(len: usize) -> Result<Self, AggregationError> {
        let parts = (0..len.div_ceil(SHARD_VALUES))
            .map(|i| ShardMem::zeroed(SHARD_VALUES.min(len - i * SHARD_VALUES)).map(Mutex::new))
            .collect::<Result<_, _>>()?;
        Ok(Self { parts, len })
    }

    fn lock(&self, shard: usize) -> MutexGuard<'_, ShardMem> {
        // A fold that panicked left whole integers behind, and the round that owns the sum
        // fails on the panic; the lock itself stays usable.
        self.parts[shard].lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A copy of every value, in order.
    #[cfg(test)]
    fn to_vec(&self) -> Vec<i64> {
        (0..self.parts.len()).flat_map(|i| self.lock(i).to_vec()).collect()
    }

    /// Calls `f(values, range)` for each shard's piece of `start..start + n`, in order and
    /// with that shard locked; `range` indexes the caller's values (0 = `start`). True when
    /// every call returned true.
    fn for_range(&self, start: usize, n: usize, mut f: impl FnMut(&mut [i64], Range<usize>) -> bool) -> bool {
        let mut ok = true;
        let mut at = start;
        while at < start + n {
            let (shard, from) = (at / SHARD_VALUES, at % SHARD_VALUES);
            let take = (SHARD_VALUES - from).min(start + n - at);
            let mut values = self.lock(shard);
            ok &= f(&mut values[from..from + take], at - start..at - start + take);
            at += take;
        }
        ok
    }

    /// [`Self::for_range`] on several threads when the range is large: contiguous pieces of
    /// whole shards, one per thread ([`piece_len`]).
    fn for_range_parallel(&self, start: usize, n: usize, f: impl Fn(&mut [i64], Range<usize>) -> bool + Sync) -> bool {
        let per = piece_len(n);
        in_pieces((0..n).step_by(per), |lo| {
            let hi = (lo + per).min(n);
            self.for_range(start + lo, hi - lo, |s, r| f(s, r.start + lo..r.end + lo))
        })
    }
}

/// Values per piece when `n` values are split over threads: whole shards, about `n / cores`;
/// all of `n` (one piece, this thread) below [`PARALLEL_MIN_VALUES`], where spawning costs
/// more than it saves.
fn piece_len(n: usize) -> usize {
    if n < PARALLEL_MIN_VALUES {
        return n.max(1);
    }
    n.div_ceil(cores()).next_multiple_of(SHARD_VALUES)
}

/// Runs `f` on every piece: on this thread when there is one, else each on its own scoped
/// thread, all joined before any result is read. True when every call returned true.
fn in_pieces<P: Send>(pieces: impl Iterator<Item = P>, f: impl Fn(P) -> bool + Sync) -> bool {
    let mut pieces = pieces.peekable();
    let Some(first) = pieces.next() else { return true };
    if pieces.peek().is_none() {
        return f(first);
    }
    std::thread::scope(|scope| {
        let f = &f;
        let handles: Vec<_> = std::iter::once(first).chain(pieces).map(|p| scope.spawn(move || f(p))).collect();
        handles.into_iter().map(|h| h.join().expect("a fold thread panicked")).fold(true, |all, ok| all & ok)
    })
}

/// Running sample-weighted sum of client models, in fixed point (see the module docs).
///
/// The values live in shards behind locks, so ranges of updates can also be folded from
/// other threads through a [`RangeFolder`] while this owner keeps the count.
#[derive(Debug)]
pub struct FixedPointAccumulator {
    values: Arc<Shards>,
    scale: FixedScale,
    /// Σ round(w·2^WEIGHT_FRACTION): integer, so it too is order-independent and reversible.
    weight_units: u128,
    contributions: u32,
}

/// Folds ranges of one update, with one weight, into a [`FixedPointAccumulator`]'s values
/// from any thread (a streamed upload's chunks, on the thread that received them). The
/// owner counts the update (or has its folded ranges subtracted) once its ranges are in.
#[derive(Debug, Clone)]
pub struct RangeFolder {
    values: Arc<Shards>,
    factor: f64,
    bound: f32,
}

impl RangeFolder {
    /// [`FixedPointAccumulator::fold_le_range`] with this folder's weight.
    ///
    /// # Errors
    /// As [`FixedPointAccumulator::fold_le_range`]; the range is left as it was.
    pub fn fold_le_range(&self, offset: usize, le: &[u8]) -> Result<(), AggregationError> {
        apply_le(&self.values, offset, le, self.factor, self.bound, Sign::Add)
    }
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
    ///
    /// # Errors
    /// [`AggregationError::Memory`] when the system refuses the sum's memory.
    pub fn new(len: usize, scale: FixedScale) -> Result<Self, AggregationError> {
        Ok(Self { values: Arc::new(Shards::zeros(len)?), scale, weight_units: 0, contributions: 0 })
    }

    pub fn len(&self) -> usize {
        self.values.len
    }

    pub fn is_empty(&self) -> bool {
        self.values.len == 0
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

    /// What a term of `weight` is multiplied by, and the bound its values must keep.
    fn terms(&self, weight: f64) -> Result<(f64, f32), AggregationError> {
        self.weight_units(weight)?;
        Ok((weight * 2f64.powi(self.scale.shift), self.scale.bound() as f32))
    }

    /// A folder of ranges of one update of `weight` that works from any thread; the update
    /// is counted with [`Self::count`] once every range is in, or its ranges subtracted
    /// with [`Self::unfold_le_range`].
    ///
    /// # Errors
    /// A bad weight, or one beyond the round's budget.
    pub fn folder(&self, weight: f64) -> Result<RangeFolder, AggregationError> {
        let (factor, bound) = self.terms(weight)?;
        Ok(RangeFolder { values: Arc::clone(&self.values), factor, bound })
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
        let (factor, bound) = self.terms(weight)?;
        apply_le(&self.values, offset, le, factor, bound, Sign::Add)
    }

    /// Subtracts what [`Self::fold_le_range`] (or a [`RangeFolder`]) with the same arguments
    /// added.
    ///
    /// # Errors
    /// As [`Self::fold_le_range`].
    pub fn unfold_le_range(&mut self, offset: usize, le: &[u8], weight: f64) -> Result<(), AggregationError> {
        let (factor, bound) = self.terms(weight)?;
        apply_le(&self.values, offset, le, factor, bound, Sign::Subtract)
    }

    fn check_len(&self, update: &[f32]) -> Result<(), AggregationError> {
        if update.len() != self.values.len {
            return Err(AggregationError::Length { expected: self.values.len, got: update.len() });
        }
        Ok(())
    }

    fn apply(&mut self, offset: usize, values: &[f32], weight: f64, sign: Sign) -> Result<(), AggregationError> {
        let (factor, bound) = self.terms(weight)?;
        check_range(&self.values, offset, values.len())?;
        let shards = &self.values;
        let in_range =
            shards.for_range_parallel(offset, values.len(), |s, r| apply_terms(s, &values[r], factor, bound, sign));
        if !in_range {
            // Put back what went in: every term has an exact inverse.
            shards.for_range_parallel(offset, values.len(), |s, r| {
                apply_terms(s, &values[r], factor, f32::INFINITY, sign.inverse())
            });
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
        out.resize(self.values.len, 0.0);
        let per = piece_len(out.len());
        let shards = &self.values;
        in_pieces(out.chunks_mut(per).enumerate(), |(piece, out)| {
            for (i, o) in out.chunks_mut(SHARD_VALUES).enumerate() {
                let s = shards.lock(piece * per / SHARD_VALUES + i);
                for (o, s) in o.iter_mut().zip(s.iter()) {
                    *o = (*s as f64 / denominator) as f32;
                }
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

    /// The integer sum, value by value (tests compare sums bit for bit).
    #[cfg(test)]
    fn sum(&self) -> Vec<i64> {
        self.values.to_vec()
    }
}

/// `offset..offset + n` lies within the sum.
fn check_range(values: &Shards, offset: usize, n: usize) -> Result<(), AggregationError> {
    match offset.checked_add(n) {
        Some(end) if end <= values.len => Ok(()),
        _ => Err(AggregationError::Length { expected: values.len, got: offset.saturating_add(n) }),
    }
}

/// Adds (or subtracts) little-endian `f32` terms at `offset`; a value beyond `bound` undoes
/// the whole range and is named in the error.
fn apply_le(
    values: &Shards,
    offset: usize,
    le: &[u8],
    factor: f64,
    bound: f32,
    sign: Sign,
) -> Result<(), AggregationError> {
    if !le.len().is_multiple_of(4) {
        return Err(AggregationError::Rule(format!("{} bytes are not whole f32 values", le.len())));
    }
    let n = le.len() / 4;
    check_range(values, offset, n)?;
    let bytes = |r: Range<usize>| &le[r.start * 4..r.end * 4];
    if !values.for_range(offset, n, |s, r| apply_le_terms(s, bytes(r), factor, bound, sign)) {
        values.for_range(offset, n, |s, r| apply_le_terms(s, bytes(r), factor, f32::INFINITY, sign.inverse()));
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

/// Threads a large fold or average is split over.
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get).min(16)
}

#[cfg(test)]
#[path = "fixed_tests.rs"]
mod tests;
