//! Streaming FedAvg aggregation in O(model) memory.
//!
//! Memory contract: the coordinator holds the round's global model (`f32` per parameter,
//! shared with every download in flight) and one running weighted sum (8 bytes per
//! parameter: fixed-point `i64` for plain rounds, see [`fixed`], `f64` for private ones) —
//! together 3 × the model — plus what uploads in flight hold, bounded by a byte budget
//! ([`StagingPool`]) however many clients report. The new model is written into the old
//! model's allocation when no download still holds it, so publishing adds no fourth copy.
//!
//! Two ways an upload reaches the sum:
//! - **streamed** (plain rounds, the default for sidecars that announce their sample count):
//!   each chunk is folded from the received gRPC buffer as it arrives, after it is appended
//!   to the upload's spill file; an upload that breaks or is refused is subtracted exactly
//!   (see [`crate::round::stream`]). An upload holds one chunk and a slot of the budget.
//! - **staged** (private, compressed or robust rounds, and clients that do not announce):
//!   the chunks are decoded into a staging buffer of the model's size; only when the trailer
//!   has been verified is the buffer folded, with one pass, and handed back to the pool.
//!
//! Either way a broken upload never changes the result. A plain round's sum is fixed point
//! ([`FixedPointAccumulator`]): bit-identical whatever the order in which clients report,
//! and exactly reversible. A private round's stays `f64` ([`FedAvgAccumulator`]), as its
//! release's sensitivity analysis assumes.

pub mod fixed;
pub mod robust;
pub mod server_opt;
mod staging;

pub use fixed::{FixedPointAccumulator, FixedScale, RangeFolder};
pub use robust::{RobustOutcome, SpillStage};
pub use staging::{DEFAULT_STAGING_BUDGET_BYTES, StagingBuffer, StagingPool, StreamSlot};

/// Folding an update was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AggregationError {
    #[error("update has {got} values, the model has {expected}")]
    Length { expected: usize, got: usize },
    #[error("update weight {0} must be finite and positive")]
    Weight(f64),
    #[error("no update was aggregated")]
    Empty,
    #[error(
        "update value {value} at index {index} is beyond the round's fixed-point range ±{bound} \
         (256 × the round's largest parameter, at least 256)"
    )]
    OutOfRange { index: usize, value: f32, bound: f64 },
    #[error("update value at index {0} is not finite")]
    NotFinite(usize),
    #[error(
        "update weight {weight} would take the round's total weight beyond its budget {budget} (the selected \
         clients' registered samples together, rounded up to a power of two)"
    )]
    WeightBudget { weight: f64, budget: f64 },
    #[error("scratch file: {0}")]
    Scratch(String),
    #[error("memory: {0}")]
    Memory(String),
    #[error("{0}")]
    Rule(String),
}

/// What a round collects its updates into: FedAvg's running sum (streaming, the default:
/// fixed point for plain rounds, `f64` for private ones), or a robust rule's spilled updates
/// (see [`robust`]).
#[derive(Debug)]
pub enum RoundSum {
    Mean(FixedPointAccumulator),
    Private(FedAvgAccumulator),
    Robust(SpillStage),
}

impl RoundSum {
    /// The collector `rule` needs for a round that starts from `global` with weights up to
    /// `max_total_weight` together: a robust rule's scratch file goes into `scratch_dir`; a
    /// private round sums in `f64`.
    ///
    /// # Errors
    /// The scratch file cannot be created.
    pub fn for_rule(
        rule: &fedra_types::aggregator::Aggregator,
        private: bool,
        global: &[f32],
        max_total_weight: f64,
        scratch_dir: &std::path::Path,
    ) -> Result<Self, AggregationError> {
        let len = global.len();
        if rule.is_robust() {
            SpillStage::new(scratch_dir, len).map(Self::Robust)
        } else if private {
            Ok(Self::Private(FedAvgAccumulator::new(len)))
        } else {
            FixedPointAccumulator::new(len, FixedScale::for_round(global, max_total_weight)).map(Self::Mean)
        }
    }

    /// Adds a verified update with its FedAvg weight.
    ///
    /// # Errors
    /// As [`FedAvgAccumulator::fold`] and [`SpillStage::append`]: nothing is counted then.
    pub fn fold(&mut self, update: &[f32], weight: f64) -> Result<(), AggregationError> {
        match self {
            Self::Mean(acc) => acc.fold(update, weight),
            Self::Private(acc) => acc.fold(update, weight),
            Self::Robust(stage) => stage.append(update, weight),
        }
    }
}

/// Running sample-weighted sum of client models.
#[derive(Debug, Clone)]
pub struct FedAvgAccumulator {
    sum: Vec<f64>,
    total_weight: f64,
    contributions: u32,
}

impl FedAvgAccumulator {
    /// An empty accumulator for a model of `len` parameters.
    pub fn new(len: usize) -> Self {
        Self { sum: vec![0.0; len], total_weight: 0.0, contributions: 0 }
    }

    pub fn len(&self) -> usize {
        self.sum.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sum.is_empty()
    }

    pub fn contributions(&self) -> u32 {
        self.contributions
    }

    pub fn total_weight(&self) -> f64 {
        self.total_weight
    }

    /// Adds `weight · update` to the sum.
    ///
    /// # Errors
    /// Wrong length or a non-positive weight; the sum is untouched then.
    pub fn fold(&mut self, update: &[f32], weight: f64) -> Result<(), AggregationError> {
        if update.len() != self.sum.len() {
            return Err(AggregationError::Length { expected: self.sum.len(), got: update.len() });
        }
        if !(weight.is_finite() && weight > 0.0) {
            return Err(AggregationError::Weight(weight));
        }
        // A plain zip over slices: bounds checks vanish and the loop vectorises.
        for (s, u) in self.sum.iter_mut().zip(update) {
            *s += weight * f64::from(*u);
        }
        self.total_weight += weight;
        self.contributions += 1;
        Ok(())
    }

    /// The raw weighted sum `Σ wᵢ·xᵢ` (DP-FedAvg noises it and divides by a fixed
    /// denominator instead of `Σ wᵢ`).
    pub fn into_sum(self) -> Vec<f64> {
        self.sum
    }

    /// The weighted average `Σ wᵢ·xᵢ / Σ wᵢ`, rounded to `f32`.
    ///
    /// # Errors
    /// [`AggregationError::Empty`] when nothing was folded.
    pub fn average(&self) -> Result<Vec<f32>, AggregationError> {
        self.average_into(Vec::new())
    }

    /// [`Self::average`] written into `out`'s allocation (reusing the previous round's model
    /// buffer keeps publishing from allocating a fourth model-sized buffer).
    ///
    /// # Errors
    /// [`AggregationError::Empty`] when nothing was folded.
    pub fn average_into(&self, mut out: Vec<f32>) -> Result<Vec<f32>, AggregationError> {
        if self.contributions == 0 {
            return Err(AggregationError::Empty);
        }
        // A true division (not a multiplication by 1/Σw) keeps one client's model exact.
        let total = self.total_weight;
        out.clear();
        out.extend(self.sum.iter().map(|s| (s / total) as f32));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn reference(updates: &[(Vec<f32>, f64)]) -> Vec<f64> {
        let total: f64 = updates.iter().map(|(_, w)| w).sum();
        (0..updates[0].0.len()).map(|i| updates.iter().map(|(u, w)| w * f64::from(u[i])).sum::<f64>() / total).collect()
    }

    fn updates_strategy() -> impl Strategy<Value = Vec<(Vec<f32>, f64)>> {
        (1usize..40).prop_flat_map(|len| {
            proptest::collection::vec((proptest::collection::vec(-1e3f32..1e3, len), 1.0f64..1e4), 1..30)
        })
    }

    proptest! {
        #[test]
        fn matches_reference_and_is_order_invariant(updates in updates_strategy(), seed in any::<u64>()) {
            let len = updates[0].0.len();
            let mut acc = FedAvgAccumulator::new(len);
            for (u, w) in &updates {
                acc.fold(u, *w).unwrap();
            }
            let avg = acc.average().unwrap();
            let want = reference(&updates);
            for (a, b) in avg.iter().zip(&want) {
                prop_assert!((f64::from(*a) - b).abs() <= 1e-6 * b.abs().max(1.0));
            }
            // Any permutation gives the same f32 result up to one ulp-level difference.
            let mut shuffled = updates.clone();
            let n = shuffled.len();
            for i in 0..n {
                let j = ((seed.wrapping_mul(6364136223846793005).wrapping_add(i as u64)) % n as u64) as usize;
                shuffled.swap(i, j);
            }
            let mut acc2 = FedAvgAccumulator::new(len);
            for (u, w) in &shuffled {
                acc2.fold(u, *w).unwrap();
            }
            for (a, b) in avg.iter().zip(acc2.average().unwrap()) {
                prop_assert!((a - b).abs() <= 1e-5 * a.abs().max(1.0));
            }
        }
    }

    #[test]
    fn one_client_is_returned_exactly() {
        let u: Vec<f32> = (0..100).map(|i| (i as f32).sin() * 3.7).collect();
        let mut acc = FedAvgAccumulator::new(100);
        acc.fold(&u, 42.0).unwrap();
        assert_eq!(acc.average().unwrap(), u);
        let reused = acc.average_into(vec![7.0; 3]).unwrap();
        assert_eq!(reused, u);
    }

    #[test]
    fn refusals_leave_the_sum_untouched() {
        let mut acc = FedAvgAccumulator::new(3);
        acc.fold(&[1.0, 2.0, 3.0], 1.0).unwrap();
        assert_eq!(acc.fold(&[1.0], 1.0), Err(AggregationError::Length { expected: 3, got: 1 }));
        assert_eq!(acc.fold(&[1.0, 1.0, 1.0], 0.0), Err(AggregationError::Weight(0.0)));
        assert!(acc.fold(&[1.0, 1.0, 1.0], f64::NAN).is_err());
        assert_eq!(acc.contributions(), 1);
        assert_eq!(acc.average().unwrap(), vec![1.0, 2.0, 3.0]);
        assert_eq!(FedAvgAccumulator::new(3).average(), Err(AggregationError::Empty));
    }
}
